"""Any diffusers text-to-image pipeline, by local path or hub id.

Spec keys: ``model`` (path or hub id), ``nfe`` (inference steps), ``guidance``, ``sigmas``
(custom schedule, passed to the pipeline; the scheduler may shift it — the effective sigmas are
recorded), ``resolution``, ``dtype``, ``device``, ``call_kwargs`` (extra pipeline arguments).

Seeds: one ``torch.Generator`` per sample, so a sample depends only on its own seed.
Offline use: set ``HF_HUB_OFFLINE=1`` (or pass a local directory); missing weights raise an
error that names the model and how to provide it.
"""

from __future__ import annotations

import os

import numpy as np

from cdm_bench.generator import Generator
from cdm_bench.provenance import file_sha256

DTYPES = ("float32", "float16", "bfloat16")


class MissingWeightsError(FileNotFoundError):
    pass


class DiffusersGenerator(Generator):
    recipe = "teacher"

    def __init__(self, model: str, nfe: int = 28, guidance: float = 4.5, sigmas: list | None = None,
                 resolution: int | None = None, dtype: str = "float32", device: str | None = None,
                 call_kwargs: dict | None = None):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if sigmas is not None and any(not 0.0 <= s <= 1.0 for s in sigmas):
            raise ValueError(f"sigmas must lie in [0, 1], got {sigmas}")
        self.model, self.steps, self.guidance, self.sigmas = model, int(nfe), float(guidance), sigmas
        self.resolution, self.dtype, self.call_kwargs = resolution, dtype, dict(call_kwargs or {})
        self.device = device
        self._pipe = None

    def spec(self) -> dict:
        return {"model": self.model, "steps": self.steps, "guidance": self.guidance, "sigmas": self.sigmas,
                "resolution": self.resolution, "dtype": self.dtype, "call_kwargs": self.call_kwargs}

    @property
    def nfe(self) -> int:
        return self.steps * (2 if self.guidance > 1.0 else 1)

    @property
    def cfg(self) -> float:
        return self.guidance

    @property
    def pipe(self):
        if self._pipe is None:
            self._pipe = load_pipeline(self.model, self.dtype, self.device)
        return self._pipe

    def weights_hash(self) -> str | None:
        if not os.path.isdir(self.model):
            return None
        files = sorted(f for root, _, fs in os.walk(self.model) for f in
                       (os.path.join(root, x) for x in fs) if f.endswith(".safetensors"))
        return file_sha256(files[0]) if len(files) == 1 else None

    def generate(self, prompts, seeds) -> np.ndarray:
        import torch

        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        kwargs = dict(prompt=list(prompts), num_inference_steps=self.steps, guidance_scale=self.guidance,
                      generator=gens, output_type="np", **self.call_kwargs)
        if self.sigmas is not None:
            kwargs["sigmas"] = list(self.sigmas)
        if self.resolution:
            kwargs["height"] = kwargs["width"] = int(self.resolution)
        with torch.inference_mode():
            images = self.pipe(**kwargs).images
        return (np.clip(np.asarray(images), 0, 1) * 255).round().astype(np.uint8)


def load_pipeline(model: str, dtype: str = "float32", device: str | None = None):
    import torch
    from diffusers import DiffusionPipeline

    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.path.isdir(model)
    try:
        pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=getattr(torch, dtype),
                                                 local_files_only=offline)
    except (OSError, EnvironmentError) as exc:
        raise MissingWeightsError(
            f"could not load diffusers pipeline {model!r} ({exc}). Provide the weights as a local "
            f"directory (`huggingface-cli download {model} --local-dir DIR` on a machine with "
            f"internet, then `model: DIR`), or put them in the HF cache (HF_HOME) and set "
            f"HF_HUB_OFFLINE=1.") from exc
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
