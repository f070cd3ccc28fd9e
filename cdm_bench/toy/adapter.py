"""The embedded world's model adapter: :class:`ToyFlowModel` teachers for distillation.

Recipe keys (``model:``)::

    adapter: toy
    teacher: quick        # a preset of cdm_bench.toy.artifacts (demo / quick / tiny), a
                          # ToyFlowModel.save_pretrained directory, or "random"
    model_config: {}      # with teacher: random, ToyFlowModel kwargs (tiny models for tests)
    init_seed: 0          # with teacher: random
    shift: null           # the sampler's sigma shift; default: the preset's (bench: 3.0, else 1.0)

Exported students are ``ToyFlowModel.save_pretrained`` directories, loaded by the toy generator
with ``{"generator": "toy", "model": "<dir>"}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from cdm_bench.distill.adapter import ModelAdapter


class ToyAdapter(ModelAdapter):
    name = "toy"
    #: LoRA target layers (the FiLM and time-embedding layers; feed-forward: the text blocks' MLPs)
    lora_targets = (("res.film", "time_mlp.0", "time_mlp.2"), ("mlp.0", "mlp.2"))

    def __init__(self, teacher: str = "quick", model_config: dict | None = None, init_seed: int = 0,
                 shift: float | None = None):
        from cdm_bench.toy.train import preset_shift

        self.teacher = str(teacher)
        self.model_config = dict(model_config or {})
        self.init_seed = int(init_seed)
        self.shift = float(preset_shift(self.teacher) if shift is None else shift)
        if self.model_config and self.teacher != "random":
            raise ValueError("model.model_config is only used with model.teacher: random")

    # -- models ------------------------------------------------------------------------------
    def load_teacher(self) -> nn.Module:
        from cdm_bench.toy.model import ToyFlowModel

        if self.teacher == "random":
            return random_toy_model(self.model_config, self.init_seed)
        path = Path(self.teacher).expanduser()
        if path.is_dir():
            return _fp32(ToyFlowModel.from_pretrained(str(path))).eval()
        from cdm_bench.toy import artifacts  # a preset name; trains and caches on first use

        model = artifacts.get_teacher(self.teacher)
        if isinstance(model, (str, Path)):
            model = ToyFlowModel.from_pretrained(str(model))
        return _fp32(model).eval()

    # -- conditioning ----------------------------------------------------------------------------
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        from cdm_bench.toy import world

        return torch.from_numpy(np.asarray(world.tokenize(list(prompts)), dtype=np.int64))

    def sample_prompts(self, n: int, seed: int) -> list[str]:
        from cdm_bench.toy import world

        return world.sample_prompts(n, seed)

    # -- velocities, latents ---------------------------------------------------------------------
    def forward(self, model: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return model(x, sigma, cond)

    def latent_shape(self, model: nn.Module) -> tuple[int, ...]:
        cfg = model.config
        return (cfg.in_channels, cfg.sample_size, cfg.sample_size)

    def effective_sigmas(self, sigmas: torch.Tensor) -> torch.Tensor:
        """Read back from the toy sampler's scheduler (diffusers' FlowMatchEulerDiscreteScheduler)."""
        from cdm_bench.toy.sampling import effective_sigmas

        out = effective_sigmas(len(sigmas), [float(s) for s in sigmas], self.shift)[:-1]  # drop the final 0
        return torch.tensor(out, dtype=torch.float32)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Data space (pixels / 127.5 - 1) -> uint8 (B, H, W, 3)."""
        img = ((latents.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return img.permute(0, 2, 3, 1)

    def validation_generator(self, model: nn.Module, entry):
        from cdm_bench.toy.generator import ToyGenerator
        from cdm_bench.toy.train import PRESETS

        return ToyGenerator.from_module(model, preset=self.teacher if self.teacher in PRESETS else "demo",
                                        nfe=entry.steps, guidance=entry.guidance, sigmas=entry.sigmas, shift=self.shift)

    def save_pretrained(self, model: nn.Module, out_dir: Path) -> dict:
        """The student's weights in ``out_dir`` and its generator spec: its sampling settings
        (:attr:`student_sampling`, the sampler's shift and the teacher's preset) and its folder
        as ``.`` (relative to the generator.yaml written beside it)."""
        from cdm_bench.toy.train import PRESETS

        model.save_pretrained(str(out_dir))
        preset = {"preset": self.teacher} if self.teacher in PRESETS else {}
        return {"generator": "toy", "model": ".", **preset, **self.student_sampling, "shift": self.shift}


def random_toy_model(model_config: dict, seed: int = 0) -> nn.Module:
    """A randomly initialised ToyFlowModel whose zero-initialised output layers are perturbed
    too (so that a random "teacher" is a non-trivial function; for tests and cost benchmarks)."""
    from cdm_bench.toy.model import ToyFlowModel

    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = ToyFlowModel(**model_config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.abs().sum() == 0 and p.ndim > 1:
                    p.normal_(0, 0.02)
    finally:
        torch.random.set_rng_state(gen_state)
    return model.eval()


def _fp32(model: nn.Module) -> nn.Module:
    if any(p.dtype != torch.float32 for p in model.parameters()):
        model = model.to(torch.float32)
    return model
