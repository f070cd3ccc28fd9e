"""Loss modules, registered by name; a recipe configures them, the trainer only sums them.

========================  =====================================================  ========
name                      what                                                   role
========================  =====================================================  ========
``ca``                    CFG augmentation, on-trajectory (Decoupled DMD)        student
``dm``                    distribution matching, on-trajectory                   student
``dmd2``                  DM with a CFG real score (DMD2)                        student
``cdm_offtraj``           DM at velocity-extrapolated off-trajectory points      student
``fake_fm``               fake teacher's flow-matching loss                      fake
========================  =====================================================  ========

Add one with ``LOSSES.register("name", MyLoss)`` (a ``StudentLoss`` subclass with a
``Params`` dataclass); recipes can then use it by name.
"""

from cdm_bench.distill.losses.base import (Plan, Query, StudentInput, StudentLoss, normalized_update,
                                           run_queries)
from cdm_bench.distill.losses.ca import CFGAugmentationLoss
from cdm_bench.distill.losses.dm import DistributionMatchingLoss, DMD2Loss
from cdm_bench.distill.losses.fake_fm import FakeFlowMatchingLoss
from cdm_bench.distill.losses.offtraj import OffTrajectoryDMLoss
from cdm_bench.registry import Registry

LOSSES = Registry("loss")
LOSSES.register("ca", CFGAugmentationLoss)
LOSSES.register("dm", DistributionMatchingLoss)
LOSSES.register("dmd2", DMD2Loss)
LOSSES.register("cdm_offtraj", OffTrajectoryDMLoss)
LOSSES.register("fake_fm", FakeFlowMatchingLoss)

__all__ = ["LOSSES", "CFGAugmentationLoss", "DistributionMatchingLoss", "DMD2Loss",
           "OffTrajectoryDMLoss", "FakeFlowMatchingLoss", "StudentLoss", "Plan", "Query",
           "StudentInput", "normalized_update", "run_queries"]
