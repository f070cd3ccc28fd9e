"""The fake teacher's loss: plain flow matching on the student's x0 predictions.

Given ``x0`` (the student's prediction at a random recorded step, no gradient), draw ``s`` in
``sigma_range`` (how: ``train.sigma_draw``, see :func:`~.base.draw_sigmas`) and fresh noise, ``x_s = (1 - s) x0 + s eps``, and regress the fake
teacher's velocity onto ``eps - x0`` (MSE).

``offtraj_fraction`` (default 0, the paper's algorithm) lets that share of the samples use the
student's prediction at an off-trajectory point ``x' = x_i + (s' - s_i) v_i`` instead, so that
the fake teacher also covers the outputs the off-trajectory loss is computed on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from torch import nn

from cdm_bench.distill.losses.base import bview, draw_sigmas
from cdm_bench.distill.simulate import TrajectoryPoint, extrapolate

StudentX0 = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x, sigma, rows) -> x0


@dataclass
class FakeFMParams:
    sigma_range: list = field(default_factory=lambda: [0.02, 0.98])
    offtraj_fraction: float = 0.0
    extrapolate_range: list = field(default_factory=lambda: [0.02, 0.98])

    def __post_init__(self):
        from cdm_bench.errors import RecipeError
        from cdm_bench.distill.schedules import check_sigma_range
        check_sigma_range("fake.loss.sigma_range", self.sigma_range)
        check_sigma_range("fake.loss.extrapolate_range", self.extrapolate_range)
        if not 0.0 <= self.offtraj_fraction <= 1.0:
            raise RecipeError(f"fake.loss.offtraj_fraction must be in [0, 1], got {self.offtraj_fraction}")


class FakeFlowMatchingLoss(nn.Module):
    role: ClassVar[str] = "fake"
    Params = FakeFMParams

    def __init__(self, params=None, name: str = "fake_fm", sigma_draw: str = "clamp"):
        super().__init__()
        self.params = params if params is not None else self.Params()
        self.name = name
        self.sigma_draw = sigma_draw

    @property
    def needs_student(self) -> bool:
        """Whether :meth:`select_x0` calls the student (exactly once; see there)."""
        return self.params.offtraj_fraction > 0

    def select_x0(self, point: TrajectoryPoint, student_x0: StudentX0, generator: torch.Generator) -> torch.Tensor:
        """The x0 samples to learn: ``x0_i``, or for ``offtraj_fraction`` of the samples the
        student's prediction at an extrapolated point. Calls ``student_x0`` exactly once when
        ``needs_student`` (possibly with zero rows), never otherwise."""
        if not self.needs_student:
            return point.x0
        n = point.x0.shape[0]
        mask = torch.rand(n, generator=generator) < self.params.offtraj_fraction
        s_new = draw_sigmas(n, self.params.extrapolate_range, generator, self.sigma_draw).to(point.x.device)
        rows = mask.nonzero().flatten().to(point.x.device)
        x_new = extrapolate(point, s_new)
        x0 = point.x0.clone()
        x0[rows] = student_x0(x_new[rows], s_new[rows], rows).to(x0.dtype)
        return x0

    def forward(self, velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """``velocity(x_s, s) -> v`` is the fake teacher (prompt-conditioned)."""
        x0 = x0.detach()
        s = draw_sigmas(x0.shape[0], self.params.sigma_range, generator, self.sigma_draw).to(x0.device)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        x_s = (1 - bview(s, x0)) * x0 + bview(s, x0) * eps
        v = velocity(x_s, s)
        loss = torch.mean((v.float() - (eps - x0).float()) ** 2)
        return loss, {"sigma": s.mean().item()}
