"""The trainer's random streams: every draw of iteration ``n`` on rank ``r`` comes from a generator
seeded by ``(seed, n, r, ...)``, so a resumed run reproduces an uninterrupted one exactly."""

from __future__ import annotations

import numpy as np
import torch


def derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) % (2 ** 32) for p in parts]).generate_state(1)[0])


def make_generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


def draw_schedule(schedule, seed: int, iteration: int, rank: int, shift_fn) -> torch.Tensor:
    """Iteration ``iteration``'s effective sigmas on ``rank``: drawn from a stream all ranks share,
    except per-rank inner sigmas (``schedule.per_rank_sigmas``), which come from the rank's own
    stream; rank 0's own stream is the shared one, so one process draws the same either way."""
    shared = make_generator(seed, iteration, 1 << 20)
    own = shared if rank == 0 else make_generator(seed, iteration, 1 << 20, rank)
    return schedule.draw(shared, shift_fn, own)
