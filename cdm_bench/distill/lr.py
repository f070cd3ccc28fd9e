"""Learning-rate warm-up of the student's and the fake teacher's optimisers.

The reference implementation (scripts/train.py, ``create_lr_lambda`` in
cdm/training/model_utils.py) wraps each AdamW in ``LambdaLR`` with the multiplier
``t / warmup_steps`` for ``t < warmup_steps``, then 1.0 (its "constant" and
"constant_with_warmup" types are the same: the warm-up branch is taken first). ``LambdaLR``
evaluates the multiplier at ``t = 0`` when it is built, so the first optimiser step runs at
lr 0, and the scheduler is stepped after every optimiser step. The scheduler is prepared by
``accelerate``, whose ``AcceleratedScheduler`` (``split_batches=False``, the default) steps it
once per *process* per optimiser step: with W processes the counter ``t`` advances by W per
optimiser step, so 100 warm-up steps on 8 GPUs end after 13 optimiser steps.

:class:`LinearWarmup` reproduces that: ``lr_n = lr * min(1, t_n / warmup_steps)`` for the n-th
optimiser step (``n = 0, 1, ...``) with ``t_n = n * ticks_per_step``; ``ticks_per_step`` is the
world size (``optim.warmup_scale_world: true``) or 1. ``warmup_steps: 0`` keeps ``lr``
throughout. The counter is checkpointed, so a resumed run continues the warm-up exactly.
"""

from __future__ import annotations

import torch


class LinearWarmup:
    """Sets ``optimizer``'s learning rate before each step; see the module docstring."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, warmup_steps: int, ticks_per_step: int = 1):
        if warmup_steps < 0 or ticks_per_step < 1:
            raise ValueError(f"warmup_steps must be >= 0 and ticks_per_step >= 1, got "
                             f"{warmup_steps}, {ticks_per_step}")
        self.optimizer, self.lr = optimizer, lr
        self.warmup_steps, self.ticks_per_step = warmup_steps, ticks_per_step
        self.ticks = 0

    def factor(self) -> float:
        """The multiplier of the next optimiser step."""
        if self.ticks >= self.warmup_steps:
            return 1.0
        return self.ticks / self.warmup_steps

    def apply(self) -> float:
        """Set the learning rate of the next optimiser step (call it before ``optimizer.step()``)."""
        lr = self.lr * self.factor()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def step(self) -> None:
        """Advance after an optimiser step."""
        self.ticks += self.ticks_per_step

    def state_dict(self) -> dict:
        return {"ticks": self.ticks}

    def load_state_dict(self, state: dict) -> None:
        self.ticks = int(state["ticks"])
