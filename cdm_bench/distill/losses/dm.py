"""DM: the distribution-matching update, on-trajectory; and its DMD2 form with a CFG real score.

The student at ``(x_i, s_i)`` predicts ``x0_s``. ``sg(x0_s)`` is re-noised at ``s_t`` drawn in
``sigma_range`` (``train.sigma_draw``: ``clamp(U(0, 1))`` or ``U[sigma_range]``; see
:func:`~cdm_bench.distill.losses.base.draw_sigmas`); the real teacher (with ``real_guidance`` CFG; 1.0 = none) and the
fake teacher (prompt-conditioned) give ``x0_real``, ``x0_fake``; the update is
``d = x0_real - x0_fake`` normalised per sample by ``max(mean|x0_real - sg(x0_s)|, norm_floor)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cdm_bench.distill.losses.base import Plan, Query, StudentLoss, normalized_update, renoise
from cdm_bench.distill.losses.ca import _check_floor


@dataclass
class DMParams:
    sigma_range: list = field(default_factory=lambda: [0.02, 0.98])
    real_guidance: float = 1.0  # CFG of the real score (1.0: conditional only)
    norm_floor: float = 0.1

    def __post_init__(self):
        from cdm_bench.distill.schedules import check_sigma_range
        check_sigma_range("sigma_range", self.sigma_range)
        _check_floor(self.norm_floor)


class DistributionMatchingLoss(StudentLoss):
    Params = DMParams

    def plan(self, x0_sg: torch.Tensor, sigma_in: torch.Tensor, generator: torch.Generator) -> Plan:
        s_t = self.draw_sigmas(x0_sg.shape[0], self.params.sigma_range, generator).to(x0_sg.device)
        x_t = renoise(x0_sg, s_t, generator)
        queries = {"real": Query("real", x_t, s_t), "fake": Query("fake", x_t, s_t)}
        if self.params.real_guidance != 1.0:
            queries["real_uncond"] = Query("real", x_t, s_t, uncond=True)
        return Plan(queries, {"sigma_t": s_t})

    def real_x0(self, answers: dict) -> torch.Tensor:
        if self.params.real_guidance == 1.0:
            return answers["real"]
        x0_u = answers["real_uncond"]
        return x0_u + self.params.real_guidance * (answers["real"] - x0_u)

    def forward(self, x0_student, plan, answers):
        x0_real = self.real_x0(answers)
        loss, logs = normalized_update(x0_student, x0_real - answers["fake"], x0_real,
                                       self.params.norm_floor)
        logs["sigma_t"] = plan.state["sigma_t"].mean().item()
        return loss, logs


@dataclass
class DMD2Params(DMParams):
    real_guidance: float = 4.0


class DMD2Loss(DistributionMatchingLoss):
    """DMD2-style DM: the real score under CFG (the ``dmd`` baseline's only student loss)."""

    Params = DMD2Params
