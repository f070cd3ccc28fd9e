"""CA: CFG augmentation, on-trajectory (Decoupled DMD).

The student at ``(x_i, s_i)`` predicts ``x0_s``. ``sg(x0_s)`` is re-noised at
``s_t ~ U(0, s_i)`` clamped to ``clamp`` (with either ``train.sigma_draw``); the real teacher with and without the prompt gives
``x0_c``, ``x0_u`` there; the update is ``d = guidance * (x0_c - x0_u)`` normalised per sample
by ``max(mean|x0_c - sg(x0_s)|, norm_floor)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cdm_bench.distill.losses.base import Plan, Query, StudentLoss, normalized_update, renoise


@dataclass
class CAParams:
    guidance: float = 7.0               # w in d = w * (x0_c - x0_u); the paper's SD3 value
    clamp: list = field(default_factory=lambda: [0.02, 0.98])  # s_t ~ U(0, s_i), clamped here
    norm_floor: float = 0.1

    def __post_init__(self):
        from cdm_bench.distill.schedules import check_sigma_range
        check_sigma_range("ca.clamp", self.clamp)
        _check_floor(self.norm_floor)


class CFGAugmentationLoss(StudentLoss):
    Params = CAParams

    def plan(self, x0_sg: torch.Tensor, sigma_in: torch.Tensor, generator: torch.Generator) -> Plan:
        s_t = self.draw_sigmas(x0_sg.shape[0], self.params.clamp, generator, cap=sigma_in)
        x_t = renoise(x0_sg, s_t, generator)
        return Plan({"cond": Query("real", x_t, s_t), "uncond": Query("real", x_t, s_t, uncond=True)},
                    {"sigma_t": s_t})

    def forward(self, x0_student, plan, answers):
        x0_c, x0_u = answers["cond"], answers["uncond"]
        loss, logs = normalized_update(x0_student, self.params.guidance * (x0_c - x0_u), x0_c,
                                       self.params.norm_floor)
        logs["sigma_t"] = plan.state["sigma_t"].mean().item()
        return loss, logs


def _check_floor(value: float) -> None:
    from cdm_bench.errors import RecipeError
    if not isinstance(value, (int, float)) or not value > 0:
        raise RecipeError(f"norm_floor must be > 0, got {value!r}")
