"""Distillation adapters for diffusers text-to-image pipelines (SD3, LongCat-Image, ...).

The pipeline is loaded once per process *without* its transformer (text encoders, VAE,
scheduler, tokenizers): prompts are encoded on the rank's device (the empty prompt is the
unconditional input) and cached per prompt; the VAE decodes latents. The transformer, the
teacher, is built separately: its architecture from the config alone (:meth:`teacher_spec`,
used to build every working copy on the meta device) and its weights only where the trainer asks
for them (:meth:`load_teacher_state`, rank 0 under FSDP2, broadcast to the others).

Recipe keys (``model:``), common to every pipeline adapter::

    adapter: sd3                  # or longcat
    pretrained: stabilityai/stable-diffusion-3-medium-diffusers   # hub id or local folder
    pretrained_kwargs: {}         # from_pretrained arguments: variant, revision, text_encoder_3: null
    prompts: mixed-200k           # the training prompt set (a registered name or a prompt file)
    resolution: 1024              # training latents are resolution / vae_scale_factor per side
    teacher_dtype: bfloat16       # the frozen teacher's weights (the reference keeps it in bf16)
    text_dtype: auto              # text encoders / VAE: bf16 on GPU, fp32 on CPU
    max_sequence_length: 256      # T5 tokens (SD3) / text tokens (LongCat: 512)
    prompt_cache: 1024            # encoded prompts kept in memory (0: no cache)

Missing weights offline raise :class:`cdm_bench.errors.MissingWeightsError` (one line naming the
repo id and how to provide a local folder).
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from cdm_bench.distill.adapter import ModelAdapter
from cdm_bench.errors import MissingWeightsError, RecipeError

# diffusers' config loader passes an argument huggingface_hub deprecated; the warning says nothing to users
warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: torch.device | str | None = None) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.device(device or "cpu").type == "cuda" else torch.float32
    if name not in DTYPES:
        raise RecipeError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def missing_weights(repo: str, what: str, exc: Exception) -> MissingWeightsError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return MissingWeightsError(
        f"cannot load {what} {repo!r} ({reason[:200]}). Provide the weights as a local folder "
        f"(`huggingface-cli download {repo} --local-dir DIR` on a machine with internet, then "
        f"`model.pretrained: DIR`), or put them in the Hugging Face cache (HF_HOME) and set HF_HUB_OFFLINE=1")


def hub_kwargs(repo: str, extra: dict) -> dict:
    """``from_pretrained`` options: offline when asked to (or for a folder), nulls -> None."""
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or Path(repo).expanduser().is_dir()
    return {"local_files_only": offline, **{k: v for k, v in extra.items()}}


class PipelineAdapter(ModelAdapter):
    """Shared machinery; subclasses set the classes and the model-specific calls."""

    pipeline_class: str = ""  # diffusers class name
    transformer_class: str = ""
    #: the generator registry name that samples this model family (export writes it)
    generator: str = "diffusers"
    block_classes: tuple = ()
    default_max_sequence_length = 256

    #: the hub id used when a recipe names no ``pretrained``
    default_pretrained: str = ""

    def __init__(self, pretrained: str | None = None, prompts: str = "mixed-200k", resolution: int = 1024,
                 pretrained_kwargs: dict | None = None, teacher_dtype: str = "bfloat16",
                 text_dtype: str = "auto", max_sequence_length: int | None = None, prompt_cache: int = 1024):
        self.pretrained = str(pretrained or self.default_pretrained)
        self.prompts_name = str(prompts)
        self.resolution = int(resolution)
        self.pretrained_kwargs = dict(pretrained_kwargs or {})
        self.teacher_dtype = resolve_dtype(teacher_dtype)
        self.text_dtype_name = str(text_dtype)
        resolve_dtype(self.text_dtype_name)  # validate early
        self.max_sequence_length = int(max_sequence_length or self.default_max_sequence_length)
        self.prompt_cache = int(prompt_cache)
        if self.resolution <= 0 or self.prompt_cache < 0:
            raise RecipeError("model.resolution must be > 0 and model.prompt_cache >= 0")
        self.device = torch.device("cpu")  # the trainer sets the rank's device
        self._pipe = None
        self._cache: OrderedDict = OrderedDict()
        self._prompt_list: list[str] | None = None

    # -- loading --------------------------------------------------------------------------------
    def _diffusers(self, name: str):
        import diffusers

        return getattr(diffusers, name)

    @property
    def pipe(self):
        """The pipeline without its transformer, on this rank's device."""
        if self._pipe is None:
            dtype = resolve_dtype(self.text_dtype_name, self.device)
            cls = self._diffusers(self.pipeline_class)
            try:
                pipe = cls.from_pretrained(self.pretrained, transformer=None, dtype=dtype,
                                           **hub_kwargs(self.pretrained, self.pretrained_kwargs))
            except (OSError, ValueError) as exc:
                raise missing_weights(self.pretrained, f"{self.pipeline_class}", exc) from None
            pipe.set_progress_bar_config(disable=True)
            for module in pipe.components.values():
                if isinstance(module, nn.Module):
                    module.to(self.device).eval().requires_grad_(False)
            self._pipe = pipe
        return self._pipe

    @property
    def scheduler(self):
        return self.pipe.scheduler

    @property
    def shift(self) -> float:  # read from the scheduler's config (SD3-Medium: 3.0)
        return float(self.scheduler.config.get("shift", 1.0))

    def _transformer_kwargs(self) -> dict:
        kw = hub_kwargs(self.pretrained, {k: v for k, v in self.pretrained_kwargs.items()
                                          if k in ("revision", "variant")})
        return {"subfolder": "transformer", **kw}

    def teacher_spec(self) -> dict:
        cls = self._diffusers(self.transformer_class)
        try:
            config = cls.load_config(self.pretrained, **self._transformer_kwargs())
        except (OSError, ValueError) as exc:
            raise missing_weights(self.pretrained, "the transformer config of", exc) from None
        config = {k: v for k, v in dict(config).items() if not k.startswith("_")}
        return {"class": f"diffusers:{self.transformer_class}", "config": config}

    def load_teacher(self) -> nn.Module:
        """The pretrained transformer in float32 (the frozen copy is cast to ``teacher_dtype``)."""
        cls = self._diffusers(self.transformer_class)
        try:
            model = cls.from_pretrained(self.pretrained, dtype=torch.float32, **self._transformer_kwargs())
        except (OSError, ValueError) as exc:
            raise missing_weights(self.pretrained, "the transformer of", exc) from None
        return model.eval()

    def model_spec(self, model: nn.Module) -> dict:
        return self.teacher_spec()

    def fsdp_block_classes(self, model: nn.Module) -> list[str]:
        return list(self.block_classes)

    # -- prompts ----------------------------------------------------------------------------------
    def sample_prompts(self, n: int, seed: int) -> list[str]:
        if self._prompt_list is None:
            from cdm_bench.prompts import load_prompt_set

            self._prompt_list = [p["prompt"] for p in load_prompt_set(self.prompts_name).prompts]
        rng = np.random.default_rng(seed)
        return [self._prompt_list[i] for i in rng.integers(0, len(self._prompt_list), n)]

    def encode_prompts(self, prompts: Sequence[str]) -> dict:
        """Per-prompt embeddings, computed in one batch for the uncached ones, cached on CPU."""
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            with torch.no_grad():
                encoded = self._encode(missing)
            for i, p in enumerate(missing):
                self._cache[p] = {k: v[i:i + 1].detach().to("cpu", torch.float32) for k, v in encoded.items()}
        rows = [self._cache[p] for p in prompts]
        for p in prompts:
            self._cache.move_to_end(p)
        while len(self._cache) > max(self.prompt_cache, len(set(prompts))):
            self._cache.popitem(last=False)
        return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}

    def _encode(self, prompts: list[str]) -> dict:
        raise NotImplementedError

    # -- latents -----------------------------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    def _model_dtype(self, model: nn.Module) -> torch.dtype:
        # the weights' dtype (a LoRA view: its base's); under FSDP2 a mixed-precision policy casts
        # the inputs to its param_dtype itself
        return next(getattr(model, "shared_base", model).parameters()).dtype

    def _vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        z = latents.to(self.device, vae.dtype) / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        with torch.no_grad():
            img = vae.decode(z, return_dict=False)[0]
        img = ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return img.permute(0, 2, 3, 1).cpu()

    def effective_sigmas(self, sigmas: torch.Tensor) -> torch.Tensor:
        """What the pipeline's scheduler really samples when given ``sigmas`` (read back from a
        copy of the scheduler, so any shift, static or dynamic, is the model's own)."""
        sched = type(self.scheduler).from_config(self.scheduler.config)
        kwargs = {"mu": self._mu()} if sched.config.get("use_dynamic_shifting") else {}
        sched.set_timesteps(sigmas=[float(s) for s in sigmas], device="cpu", **kwargs)
        return sched.sigmas[:-1].to(torch.float32).clone()

    def _mu(self) -> float | None:
        return None

    def validation_generator(self, model: nn.Module, entry):
        """The export's generator class over this adapter's pipeline with ``model`` as its
        transformer (in memory: nothing is written or read)."""
        from cdm_bench.registry import GENERATORS

        pipe = self._diffusers(self.pipeline_class)(**{**self.pipe.components, "transformer": model})
        pipe.set_progress_bar_config(disable=True)
        return GENERATORS.get(self.generator).from_pipeline(
            pipe, nfe=entry.steps, guidance=entry.guidance, sigmas=entry.sigmas, resolution=self.resolution,
            device=str(self.device))

    # -- export -------------------------------------------------------------------------------------
    def save_pretrained(self, model: nn.Module, out_dir: Path, copy_base: bool = False) -> dict:
        """The student transformer in ``out_dir/transformer``; with ``copy_base`` the whole pipeline
        (the base's other components) too, so ``out_dir`` loads with ``from_pretrained``."""
        out_dir = Path(out_dir)
        spec = {"generator": self.generator, **self.student_sampling, "resolution": self.resolution}
        if copy_base:  # paths relative to the generator.yaml beside them
            pipe = self.pipe
            pipe.register_modules(transformer=model)
            pipe.save_pretrained(str(out_dir))
            pipe.register_modules(transformer=None)
            return {**spec, "model": "."}
        model.save_pretrained(str(out_dir / "transformer"))
        return {**spec, **self._base_spec(), "transformer": "transformer"}

    def _base_spec(self) -> dict:
        extra = {"pretrained_kwargs": self.pretrained_kwargs} if self.pretrained_kwargs else {}
        base = self.pretrained if not Path(self.pretrained).expanduser().exists() else str(Path(self.pretrained).resolve())
        return {"model": base, **extra}

    def save_lora(self, model: nn.Module, out_dir: Path, adapter_name: str) -> dict:
        """``model``'s LoRA adapter in diffusers' layout (``pytorch_lora_weights.safetensors``, rank
        and alpha in its metadata): the pipeline class's ``save_lora_weights`` where it has one
        (``pipe.load_lora_weights(out_dir)``), else the transformer's ``save_lora_adapter``
        (``transformer.load_lora_adapter(out_dir, prefix=None)``); the spec: the base + a ``lora`` entry."""
        import diffusers
        from peft.utils import get_peft_model_state_dict

        out_dir = Path(out_dir)
        pipe_cls = getattr(diffusers, self.pipeline_class)
        if hasattr(pipe_cls, "save_lora_weights"):
            meta = model.peft_config[adapter_name].to_dict()
            meta = {k: sorted(v) if isinstance(v, set) else v for k, v in meta.items()}
            pipe_cls.save_lora_weights(str(out_dir), transformer_lora_layers=get_peft_model_state_dict(
                model, adapter_name=adapter_name), transformer_lora_adapter_metadata=meta)
        else:
            model.save_lora_adapter(str(out_dir), adapter_name=adapter_name)
        entry = {"path": ".", "format": "diffusers", "scale": 1.0, "adapter_name": "student", "fuse": False}
        return {"generator": self.generator, **self.student_sampling, "resolution": self.resolution,
                **self._base_spec(), "lora": [entry]}
