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
    if weight == 0.0:
        return
    tgt, src = local_parameters(target), local_parameters(source)
    if len(tgt) != len(src) or any(t.shape != s.shape for t, s in zip(tgt, src)):
        raise ValueError("lerp_parameters needs two models of the same architecture and sharding")
    torch._foreach_lerp_(tgt, [s.to(t.dtype) for t, s in zip(tgt, src)], weight)


def local_parameters(model: nn.Module) -> list[torch.Tensor]:
    """This rank's parameter tensors. FSDP2 modules are resharded first: after a forward without
    backward the root keeps unsharded copies, and writes to those would be lost. A LoRA view's
    shared base is resharded (its parameters are the sharded adapter weights)."""
    for m in getattr(model, "shared_base", model).modules():
        if hasattr(m, "reshard") and type(m).__name__.startswith("FSDP"):
            m.reshard()
    return [p.to_local() if hasattr(p, "to_local") else p for p in model.parameters()]


class EMA:
    """Exponential moving average of ``source`` kept in ``model`` (``decay`` per update).

    With ``warmup`` the decay of update ``n = 0, 1, ...`` is ``min(decay, (1 + m) / (10 + m))``
    with ``m = n + warmup_offset``. The reference (cdm/models/ema.py ``get_current_decay``, called
    by scripts/train.py with the student step counted *after* the optimiser step) uses offset 1:
    its first update has decay 2/11. Offset 0 (first decay 1/10) is this trainer's earlier schedule.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False, warmup_offset: int = 0):
        self.model = model.eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.warmup_offset = warmup_offset
        self.num_updates = 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        m = self.num_updates + self.warmup_offset
        return min(self.decay, (1 + m) / (10 + m))

    def update(self, source: nn.Module) -> float:
        decay = self.current_decay()
        lerp_parameters(self.model, source, 1.0 - decay)
        self.num_updates += 1
        return decay

    def state_dict(self) -> dict:
        return {"num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.num_updates = int(state["num_updates"])
