"""Any diffusers text-to-image pipeline, by local folder or hub id (registry name ``diffusers``).

Spec keys (all but ``model`` optional; unknown keys are an error)::

    generator: diffusers
    model: stabilityai/stable-diffusion-3-medium-diffusers   # pipeline folder or hub id
    transformer: runs/student/export      # a transformer saved with save_pretrained (a distilled
                                          # student) loaded into the ``model`` pipeline
    nfe: 28                               # inference steps (the NFE per image doubles with CFG)
    guidance: 4.5                         # CFG scale (1.0: no CFG)
    sigmas: [1.0, 0.75, 0.5, 0.25]        # custom schedule given to the pipeline (its scheduler
                                          # may shift it: the effective sigmas are recorded)
    resolution: 1024                      # height = width (default: the pipeline's)
    dtype: auto                           # auto (bfloat16 on CUDA, float32 on CPU) / float32 / ...
    device: null                          # default cuda:LOCAL_RANK (torchrun, accelerate) or cpu
    offload: none                         # none / model / sequential (diffusers CPU offload)
    attention_backend: null               # a diffusers attention backend (native, flash, sage...)
                                          # for transformers that use diffusers' dispatcher
                                          # (LongCat; SD3's processors do not: refused); *_hub
                                          # backends fetch kernels from the hub
    pretrained_kwargs: {variant: fp16, revision: main, text_encoder_3: null, tokenizer_3: null}
    call_kwargs: {}                       # extra pipeline-call arguments
    micro_batch: 1                        # samples per pipeline call (see below)

``micro_batch``: every pipeline call gets exactly this many samples (the caller's batch is split,
a short last chunk padded), because float results depend on the batch shape (a batch-1 matmul
is a GEMV; oneDNN convolutions pick algorithms by batch). With the default 1 a sample's pixels
are independent of ``--batch-size`` and of its neighbours; a larger value buys throughput on
small models, and then only the batch shape is fixed (measured identical on CPU, not guaranteed).

A ``null`` component in ``pretrained_kwargs`` is passed as ``None`` (the pipeline is built
without it, e.g. SD3 without T5). Seeds: one CPU ``torch.Generator`` per sample, so a sample
depends only on its own seed. Missing weights raise :class:`~cdm_bench.errors.MissingWeightsError`
before anything is written. ``generation.json`` records the effective sigmas (read back from the
scheduler), the model's source and commit hash and the transformer's safetensors sha256.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cdm_bench.errors import MissingWeightsError, SpecError
from cdm_bench.generator import Generator, NFECounter
from cdm_bench.generators import hf_weights as hf

OFFLOAD = ("none", "model", "sequential")
#: bounds of the spec's sizes: what one GPU can hold (a 16k x 16k image is 768 MB of pixels alone)
MAX_STEPS, MAX_MICRO_BATCH, MAX_RESOLUTION = 10_000, 1024, 16_384
#: from_pretrained arguments that have their own spec keys
RESERVED = {"torch_dtype": "dtype", "dtype": "dtype", "transformer": "transformer",
            "local_files_only": "HF_HUB_OFFLINE"}


class DiffusersGenerator(Generator):
    recipe = "teacher"
    path_keys = ("model", "transformer")
    nested_path_keys = {"lora": "path", "vae": "path", "scheduler": "from"}  # (see swaps)
    #: a diffusers pipeline class name; None: whatever the folder's model_index.json names
    pipeline_class: str | None = None
    #: the transformer class a ``transformer:`` folder must hold (None: any diffusers model)
    transformer_class: str | None = None
    #: defaults of the keys left out of a spec (subclasses override; every one stays settable)
    defaults: dict = {"nfe": 28, "guidance": 4.5, "dtype": "auto", "offload": "none"}

    def __init__(self, model: str | None = None, transformer: str | None = None, nfe: int | None = None,
                 guidance: float | None = None, sigmas: list | None = ..., resolution: int | None = None,
                 dtype: str | None = None, device: str | None = None, offload: str | None = None,
                 attention_backend: str | None = None, pretrained_kwargs: dict | None = None,
                 call_kwargs: dict | None = None, micro_batch: int | None = None, lora: list | dict | None = None,
                 scheduler: dict | str | None = None, vae: dict | None = None):
        from cdm_bench.generators import swaps

        d = self.defaults  # (sigmas=...: "not given", as null means "the scheduler's own schedule")
        self.model = model if model is not None else d.get("model")
        if not self.model:
            raise SpecError(f"generator {type(self).__name__}: `model` (a pipeline folder or hub id) is required")
        self.model = str(self.model)
        self.transformer = None if transformer is None else str(transformer)
        self.steps = int(nfe if nfe is not None else d["nfe"])
        self.guidance = float(guidance if guidance is not None else d["guidance"])
        self.sigmas = d.get("sigmas") if sigmas is ... else sigmas
        self.resolution = resolution if resolution is not None else d.get("resolution")
        self.device = hf.rank_device(device)
        self.dtype = hf.resolve_dtype(dtype or d["dtype"], self.device)
        self.offload = offload or d["offload"]
        self.attention_backend = attention_backend
        self.pretrained_kwargs = {**d.get("pretrained_kwargs", {}), **(pretrained_kwargs or {})}
        self.call_kwargs = dict(call_kwargs or {})
        self.micro_batch = micro_batch if micro_batch is not None else d.get("micro_batch", 1)
        self.lora = swaps.parse_lora(lora if lora is not None else d.get("lora"))
        self.scheduler = swaps.parse_scheduler(scheduler if scheduler is not None else d.get("scheduler"))
        self.vae = swaps.parse_vae(vae if vae is not None else d.get("vae"))
        self._validate()
        self._pipe = None
        self._source: hf.Source | None = None
        self._sigmas_used: list[float] | None = None
        self._nfe = NFECounter(type(self).__name__)

    def _validate(self) -> None:
        from cdm_bench.validate import int_in_range

        int_in_range(self.steps, "nfe", 1, MAX_STEPS)
        self.micro_batch = int_in_range(self.micro_batch, "micro_batch", 1, MAX_MICRO_BATCH)
        if self.sigmas is not None:
            if not isinstance(self.sigmas, (list, tuple)) or any(
                    isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s <= 1.0 for s in self.sigmas):
                raise SpecError(f"sigmas must be a list of numbers in [0, 1], got {self.sigmas!r}")
            if len(self.sigmas) != self.steps:
                raise SpecError(f"sigmas has {len(self.sigmas)} entries but nfe is {self.steps}; give one sigma "
                                f"per step, or `sigmas: null` for the scheduler's own schedule")
            self.sigmas = [float(s) for s in self.sigmas]
        if self.resolution is not None:
            self.resolution = int_in_range(self.resolution, "resolution", 8, MAX_RESOLUTION)
        if self.offload not in OFFLOAD:
            raise SpecError(f"offload must be one of {list(OFFLOAD)}, got {self.offload!r}")
        if self.attention_backend is not None:
            from diffusers.models.attention_dispatch import AttentionBackendName

            names = [b.value for b in AttentionBackendName]
            if self.attention_backend not in names:
                raise SpecError(f"attention_backend must be one of {names}, got {self.attention_backend!r}")
        for key, value in (("pretrained_kwargs", self.pretrained_kwargs), ("call_kwargs", self.call_kwargs)):
            if any(not isinstance(k, str) for k in value):
                raise SpecError(f"{key} must map names to values, got {value!r}")
        clash = sorted(set(self.pretrained_kwargs) & set(RESERVED))
        if clash:
            raise SpecError(f"pretrained_kwargs {clash}: use the `{RESERVED[clash[0]]}` spec key instead")

    @classmethod
    def from_pipeline(cls, pipe, **kwargs) -> "DiffusersGenerator":
        """A generator over a pipeline in memory (validation during training: its transformer is
        the student); its identity holds the transformer's content hash."""
        from cdm_bench.generator import module_sha256

        gen = cls(model="in-memory", **kwargs)
        gen._source = hf.Source("in-memory", None)
        gen._pipe = pipe
        gen._nfe.attach(getattr(pipe, "transformer", None) or getattr(pipe, "unet", None))
        gen._weights = module_sha256(pipe.transformer)
        return gen

    # -- identity -----------------------------------------------------------------------------
    def spec(self) -> dict:
        weights = {"weights_sha256": self._weights} if getattr(self, "_weights", None) else {}
        return {**weights, "model": self.model, "transformer": self.transformer, "steps": self.steps,
                "guidance": self.guidance, "sigmas": self.sigmas, "resolution": self.resolution,
                "dtype": self.dtype, "attention_backend": self.attention_backend,
                "pretrained_kwargs": self.pretrained_kwargs, "call_kwargs": self.all_call_kwargs(),
                "micro_batch": self.micro_batch, **self._swap_spec()}

    def _swap_spec(self) -> dict:
        """The swaps, with the sha256 of each file they load when it is here (identity)."""
        if not (self.lora or self.scheduler or self.vae):
            return {}
        from cdm_bench.generators import swaps

        return {"lora": self.lora, "scheduler": self.scheduler, "vae": self.vae, "swap_sha256": swaps.files_sha256(self)}

    def all_call_kwargs(self) -> dict:
        """Pipeline-call arguments beyond the common ones (subclasses add theirs)."""
        return dict(self.call_kwargs)

    @property
    def nfe(self) -> int:
        return self.steps * (2 if self.guidance > 1.0 else 1)

    @property
    def cfg(self) -> float:
        return self.guidance

    # -- weights ------------------------------------------------------------------------------
    def check_ready(self) -> None:
        from cdm_bench.generators import swaps

        missing = []
        for check in (self.source, lambda: self.transformer and hf.transformer_dir(Path(self.transformer)),
                      lambda: swaps.check_files(self)):
            try:
                check()
            except MissingWeightsError as exc:
                missing.append(str(exc))
        if missing:  # every missing repo and file in one line
            raise MissingWeightsError(" | ".join(missing))

    def source(self) -> hf.Source:
        if self._source is None:
            self._source = hf.locate(self.model, self.pretrained_kwargs.get("revision"),
                                     self.pretrained_kwargs.get("cache_dir"))
        return self._source

    def component_hashes(self) -> dict[str, str]:
        """sha256 of every pipeline component that holds weights (the ``transformer`` folder in
        place of the pipeline's own); {} when the pipeline is not found locally."""
        if self._source is None or self._source.kind == "hub":  # (downloaded while loading?)
            self._source = None
            try:
                self.source()
            except MissingWeightsError:
                return {}
        out = hf.component_sha256(self._source.path) if self._source.path else {}
        if self.transformer is not None:
            out["transformer"] = hf.safetensors_sha256(hf.transformer_dir(Path(self.transformer)))
        return out

    def weights_hash(self) -> str | None:
        """sha256 of the denoiser actually used (the ``transformer`` folder, else the pipeline's
        ``transformer/`` or ``unet/``); None when it cannot be found locally. Every component's
        hash is in the provenance (``component_sha256``)."""
        if self.transformer is not None:
            return hf.safetensors_sha256(hf.transformer_dir(Path(self.transformer)))
        if getattr(self, "_weights", None):
            return self._weights
        comps = self.component_hashes()
        return comps.get("transformer") or comps.get("unet")

    def provenance(self) -> dict:
        src = self._source
        out = {"pipeline_class": type(self._pipe).__name__ if self._pipe is not None else self.pipeline_class,
               "model": self.model, "model_source": src.kind if src else None,
               "model_commit": src.commit if src else None, "transformer": self.transformer,
               "device": self.device, "dtype": self.dtype, "offload": self.offload,
               "steps": self.steps, "guidance": self.guidance, "component_sha256": self.component_hashes()}
        if self._sigmas_used is not None:
            out["effective_sigmas"] = self._sigmas_used
        if self._pipe is not None and (self.lora or self.scheduler or self.vae):
            from cdm_bench.generators import swaps

            out.update(swap_sha256=swaps.files_sha256(self), scheduler_class=type(self._pipe.scheduler).__name__,
                       vae_class=type(self._pipe.vae).__name__ if getattr(self._pipe, "vae", None) is not None else None)
        out.update(self._nfe.provenance(self.steps, self.guidance))
        return out if self._pipe is not None else {}

    @property
    def pipe(self):
        if self._pipe is None:
            self._pipe = self._load()
            self._nfe.attach(getattr(self._pipe, "transformer", None) or getattr(self._pipe, "unet", None))
        return self._pipe

    def _load(self):
        from cdm_bench.generators.loading import load_pipeline

        return load_pipeline(self, self.source())

    # -- sampling -----------------------------------------------------------------------------
    def generate(self, prompts, seeds) -> np.ndarray:
        """Pipeline calls of exactly ``micro_batch`` samples (a short last chunk is padded with
        copies of its last sample, dropped afterwards), so the kernels a sample goes through do
        not depend on how the caller batched it (batch-1 matmuls take a different path)."""
        n, out = self.micro_batch, []
        for start in range(0, len(prompts), n):
            chunk_p, chunk_s = list(prompts[start:start + n]), [int(s) for s in seeds[start:start + n]]
            k = len(chunk_p)
            with self._nfe.images(k, padded=n):
                images = self._call(chunk_p + chunk_p[-1:] * (n - k), chunk_s + chunk_s[-1:] * (n - k))
            out.append(images[:k])
        return np.concatenate(out)

    def _call(self, prompts: list[str], seeds: list[int]) -> np.ndarray:
        import torch

        pipe = self.pipe
        gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        kwargs = dict(prompt=prompts, num_inference_steps=self.steps, guidance_scale=self.guidance,
                      generator=gens, output_type="np", **self.all_call_kwargs())
        if self.sigmas is not None:
            kwargs["sigmas"] = list(self.sigmas)
        if self.resolution:
            kwargs["height"] = kwargs["width"] = int(self.resolution)
        with torch.inference_mode():
            images = pipe(**kwargs).images
        sigmas = getattr(pipe.scheduler, "sigmas", None)
        if sigmas is not None:
            self._sigmas_used = [round(float(s), 6) for s in sigmas]
        return (np.clip(np.asarray(images), 0, 1) * 255).round().astype(np.uint8)

