"""The fake teacher's loss: plain flow matching on the student's x0 predictions.

Given ``x0`` (the student's prediction at a random recorded step, no gradient), draw
``s ~ U[sigma_range]`` and fresh noise, ``x_s = (1 - s) x0 + s eps``, and regress the fake
teacher's velocity onto ``eps - x0`` (MSE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from torch import nn

from cdm_bench.distill.losses.base import bview, uniform


@dataclass
class FakeFMParams:
    sigma_range: list = field(default_factory=lambda: [0.02, 0.98])

    def __post_init__(self):
        from cdm_bench.distill.schedules import check_sigma_range
        check_sigma_range("fake.loss.sigma_range", self.sigma_range)


class FakeFlowMatchingLoss(nn.Module):
    role: ClassVar[str] = "fake"
    Params = FakeFMParams

    def __init__(self, params=None, name: str = "fake_fm"):
        super().__init__()
        self.params = params if params is not None else self.Params()
        self.name = name

    def forward(self, velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """``velocity(x_s, s) -> v`` is the fake teacher (prompt-conditioned)."""
        lo, hi = self.params.sigma_range
        x0 = x0.detach()
        s = uniform(x0.shape[0], lo, hi, generator)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        x_s = (1 - bview(s, x0)) * x0 + bview(s, x0) * eps
        v = velocity(x_s, s)
        loss = torch.mean((v.float() - (eps - x0).float()) ** 2)
        return loss, {"sigma": s.mean().item()}
