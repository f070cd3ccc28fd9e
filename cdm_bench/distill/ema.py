"""Parameter averaging: the student's EMA and the fake teacher <- student merge.

Both act parameter by parameter on models of the same architecture that are wrapped the same
way, so they work unchanged on FSDP2-sharded models (each rank averages its own shards).
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def lerp_parameters(target: nn.Module, source: nn.Module, weight: float) -> None:
    """``target <- (1 - weight) * target + weight * source`` for every parameter."""
    tgt, src = list(target.parameters()), list(source.parameters())
    if len(tgt) != len(src):
        raise ValueError("lerp_parameters needs two models of the same architecture")
    if weight == 0.0:
        return
    for t, s in zip(tgt, src):
        t.lerp_(s.to(t.dtype), weight)


class EMA:
    """Exponential moving average of ``source`` kept in ``model`` (``decay`` per update).

    With ``warmup`` the decay of the n-th update is ``min(decay, (1 + n) / (10 + n))``.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False):
        self.model = model.eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    def update(self, source: nn.Module) -> float:
        decay = self.current_decay()
        lerp_parameters(self.model, source, 1.0 - decay)
        self.num_updates += 1
        return decay

    def state_dict(self) -> dict:
        return {"num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.num_updates = int(state["num_updates"])
