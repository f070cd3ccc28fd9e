"""Generators of the embedded toy world.

* ``ToyGenerator`` - a ``ToyFlowModel`` (the preset's cached teacher, or a
  ``save_pretrained`` folder such as an exported student) sampled with the Euler
  flow-matching sampler (:mod:`cdm_bench.toy.sampling`), optionally with CFG. Images are
  batch-invariant: a sample depends only on (prompt, seed), whatever ``batch_size`` or the
  number of processes.
* ``ToyRealGenerator`` - real world images rendered for each prompt from its seed; the
  ceiling ("reference") row of a leaderboard.

Spec example::

    generator: toy
    model: teacher      # or a path to a save_pretrained ToyFlowModel folder
    preset: demo
    nfe: 50             # Euler steps (the ``nfe`` property counts CFG as 2 per step)
    guidance: 1.5
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cdm_bench.errors import RunNotFoundError, SpecError
from cdm_bench.generator import Generator, NFECounter
from cdm_bench.hashing import file_sha256 as _sha256_file

SAMPLER_ID = "euler-v1-chunk8-threads1"  # what makes pixels reproducible; see toy.sampling


def _weights_file(folder: Path) -> Path:
    for name in ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise RunNotFoundError(f"no weights file in {folder}")


class ToyGenerator(Generator):
    """A toy-world flow model sampled with Euler steps (+ optional CFG)."""

    recipe = "teacher"
    path_keys = ("model",)

    def __init__(self, model: str = "teacher", preset: str = "demo", nfe: int = 50, guidance: float = 1.0,
                 sigmas: Sequence[float] | None = None, shift: float | None = None, resolution: int = 32,
                 dtype: str = "float32", device: str = "cpu", batch_size: int = 64):
        from cdm_bench.toy.train import PRESETS

        if preset not in PRESETS:
            raise SpecError(f"unknown toy preset {preset!r}; known: {sorted(PRESETS)}")
        from cdm_bench.validate import MAX_BATCH, int_in_range

        nfe = int_in_range(nfe, "nfe", 1, 10_000)
        batch_size = int_in_range(batch_size, "batch_size", 1, MAX_BATCH)
        if sigmas is not None and len(sigmas) != int(nfe):
            raise SpecError(f"sigmas has {len(sigmas)} entries but nfe={nfe}")
        if dtype not in ("float32", "bfloat16"):
            raise SpecError(f"dtype must be float32 or bfloat16, got {dtype!r}")
        if model != "teacher" and not Path(model).is_dir():
            raise SpecError(f"model must be 'teacher' or a save_pretrained folder; not found: {model}")
        world_size = PRESETS[preset][1].world.size
        if int(resolution) != world_size:
            raise SpecError(f"the toy world is {world_size}x{world_size}; resolution={resolution}")
        self.model_spec = model
        self.preset = preset
        self.steps = int(nfe)
        self.guidance = float(guidance)
        self.sigmas = [float(s) for s in sigmas] if sigmas is not None else None
        from cdm_bench.toy.train import preset_shift

        self.shift = float(preset_shift(preset) if shift is None else shift)  # bench: 3, else 1
        self.resolution = int(resolution)
        self.dtype = dtype
        self.device = device
        self.batch_size = int(batch_size)
        self.recipe = "teacher" if model == "teacher" else "student"
        self._model = None
        self._nfe = NFECounter(f"toy {self.recipe}")

    @classmethod
    def from_module(cls, module, preset: str = "demo", **kwargs) -> "ToyGenerator":
        """A generator over a ToyFlowModel in memory (validation during training); its identity
        holds the weights' content hash."""
        from cdm_bench.generator import module_sha256

        gen = cls(preset=preset, **kwargs)
        gen.model_spec, gen.recipe = "in-memory", "student"
        gen._model = module.eval()
        gen._nfe.attach(gen._model)
        gen._weights = module_sha256(module)
        return gen

    # -- identity ----------------------------------------------------------------------------
    def _folder(self) -> Path:
        if self.model_spec == "teacher":
            from cdm_bench.toy.artifacts import teacher_dir

            return teacher_dir(self.preset)
        return Path(self.model_spec)

    def spec(self) -> dict:
        from cdm_bench.toy.sampling import effective_sigmas
        from cdm_bench.toy.train import PRESETS

        d = {"model": self.model_spec, "preset": self.preset, "nfe": self.steps, "guidance": self.guidance,
             "sigmas": self.sigmas, "shift": self.shift, "resolution": self.resolution, "dtype": self.dtype,
             "effective_sigmas": effective_sigmas(self.steps, self.sigmas, self.shift),
             "sampler": SAMPLER_ID}
        if self.model_spec == "teacher":
            d["teacher_config"] = PRESETS[self.preset][1].hash()
        else:
            d["weights_sha256"] = self.weights_hash()
        return d

    @property
    def nfe(self) -> int:
        return self.steps * (2 if self.guidance != 1.0 else 1)

    @property
    def cfg(self) -> float:
        return self.guidance

    def weights_hash(self) -> str:
        if getattr(self, "_weights", None):
            return self._weights
        return _sha256_file(_weights_file(self._folder()))

    # -- generation --------------------------------------------------------------------------
    @property
    def model(self):
        if self._model is None:
            import torch

            from cdm_bench.toy.model import ToyFlowModel

            m = ToyFlowModel.from_pretrained(str(self._folder()), torch_dtype=getattr(torch, self.dtype))
            self._model = m.to(device=self.device).eval()
            self._nfe.attach(self._model)
        return self._model

    def provenance(self) -> dict:
        return self._nfe.provenance(self.steps, self.guidance)

    def generate(self, prompts: list[str], seeds: list[int]) -> np.ndarray:
        from cdm_bench.toy.sampling import sample_images

        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        from cdm_bench.toy.sampling import DEFAULT_CHUNK

        out = []
        for i in range(0, len(prompts), self.batch_size):
            p, s = prompts[i:i + self.batch_size], seeds[i:i + self.batch_size]
            with self._nfe.images(len(p), padded=-(-len(p) // DEFAULT_CHUNK) * DEFAULT_CHUNK):  # fixed-size chunks
                out.append(sample_images(self.model, p, s, self.steps, self.guidance, self.sigmas, self.shift))
        if not out:
            return np.zeros((0, self.resolution, self.resolution, 3), np.uint8)
        return np.concatenate(out)


class ToyRealGenerator(Generator):
    """Real toy-world images for each (prompt, seed): the leaderboard's ceiling row."""

    recipe = "reference"

    def __init__(self, preset: str = "demo"):
        from cdm_bench.toy.train import PRESETS

        if preset not in PRESETS:
            raise SpecError(f"unknown toy preset {preset!r}; known: {sorted(PRESETS)}")
        self.preset = preset
        self.world = PRESETS[preset][1].world

    def spec(self) -> dict:
        return {"preset": self.preset, "world": self.world.hash()}

    def generate(self, prompts: list[str], seeds: list[int]) -> np.ndarray:
        from cdm_bench.toy import world

        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        if not prompts:
            return np.zeros((0, self.world.size, self.world.size, 3), np.uint8)
        return np.stack([world.render_for_prompt(p, int(s), self.world) for p, s in zip(prompts, seeds)])
