"""CDM's off-trajectory loss: DM at points extrapolated along the recorded velocity.

Draw ``s'`` in ``extrapolate_range`` and set ``x' = x_i + (s' - s_i) * v_i``; the student at
``(x', s')`` predicts ``x0'``; ``sg(x0')`` is re-noised at an independent ``s_t`` in
``sigma_range`` with fresh noise (both drawn as ``train.sigma_draw`` says) and the DM update is applied as in
:class:`~cdm_bench.distill.losses.dm.DistributionMatchingLoss`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cdm_bench.distill.losses.base import StudentInput
from cdm_bench.distill.losses.dm import DistributionMatchingLoss, DMParams
from cdm_bench.distill.simulate import TrajectoryPoint, extrapolate


@dataclass
class OffTrajectoryParams(DMParams):
    extrapolate_range: list = field(default_factory=lambda: [0.02, 0.98])  # s' drawn in [...]

    def __post_init__(self):
        super().__post_init__()
        from cdm_bench.distill.schedules import check_sigma_range
        check_sigma_range("extrapolate_range", self.extrapolate_range)


class OffTrajectoryDMLoss(DistributionMatchingLoss):
    Params = OffTrajectoryParams

    def student_input(self, point: TrajectoryPoint, generator: torch.Generator) -> StudentInput:
        s_new = self.draw_sigmas(point.x.shape[0], self.params.extrapolate_range, generator).to(point.x.device)
        return StudentInput(f"off:{self.name}", extrapolate(point, s_new), s_new)
