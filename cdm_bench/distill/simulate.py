"""Backward simulation: run the student's Euler sampler from noise and record every step.

For step ``i`` of a schedule ``s_0 = 1 > s_1 > ... > s_{K-1}`` (then 0), the record holds the
latent ``x_i`` at ``s_i``, the student velocity ``v_i`` and the prediction
``x0_i = x_i - s_i * v_i``; ``x_{i+1} = x_i + (s_{i+1} - s_i) * v_i``.

A sample only needs to be simulated up to the largest step index any loss will read for it
(``upto``); samples that are done drop out of the batch, so the expected cost of a schedule
of length K is about (K + 1) / 2 batched evaluations per index drawn rather than K, and the
recorded values (hence every loss) are exactly those of the full simulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x, sigma, rows) -> v


@dataclass
class TrajectoryPoint:
    """One recorded step per sample: latent, velocity, x0 prediction at sigma (all (B, ...))."""

    x: torch.Tensor
    v: torch.Tensor
    x0: torch.Tensor
    sigma: torch.Tensor


@dataclass
class Trajectory:
    """Per-step records: ``latents``/``velocities``/``x0`` are (K, B, ...); ``sigmas`` (K+1,)."""

    sigmas: torch.Tensor
    latents: torch.Tensor
    velocities: torch.Tensor
    x0: torch.Tensor
    computed: torch.Tensor  # (K, B) bool: which records were simulated
    final: torch.Tensor | None = None  # the sample after the last step (full simulations only)

    @property
    def num_steps(self) -> int:
        return self.latents.shape[0]

    def at(self, index: torch.Tensor) -> TrajectoryPoint:
        """Gather step ``index[b]`` for every sample ``b``."""
        b = torch.arange(index.shape[0])
        if not bool(self.computed[index, b].all()):
            raise IndexError("a requested step was not simulated (raise `upto`)")
        return TrajectoryPoint(self.latents[index, b], self.velocities[index, b],
                               self.x0[index, b], self.sigmas[index])


@torch.no_grad()
def simulate(velocity: VelocityFn, noise: torch.Tensor, sigmas: torch.Tensor,
             upto: torch.Tensor | None = None, num_calls: int | None = None) -> Trajectory:
    """Simulate the student along ``sigmas`` (K,) from ``noise`` (B, ...).

    Args:
        velocity: ``(x, sigma, rows) -> v`` for the batch rows ``rows`` (a LongTensor).
        upto: (B,) last step index needed per sample (default: all K steps, and ``final``).
        num_calls: make exactly this many velocity calls (>= the steps needed). Under FSDP every
            rank must call the sharded model equally often; a call with no active sample then
            evaluates row 0 and discards it.
    """
    k, bsz = sigmas.shape[0], noise.shape[0]
    full = upto is None
    upto = torch.full((bsz,), k - 1, dtype=torch.long) if full else upto.clamp(max=k - 1)
    steps = int(upto.max()) + 1
    num_calls = steps if num_calls is None else num_calls
    if num_calls < steps:
        raise ValueError(f"num_calls={num_calls} < {steps} steps needed")
    sig = torch.cat([sigmas.float(), sigmas.new_zeros(1).float()])
    latents = noise.new_zeros((k, *noise.shape))
    velocities, x0 = torch.zeros_like(latents), torch.zeros_like(latents)
    computed = torch.zeros(k, bsz, dtype=torch.bool)
    x = noise.clone()
    for i in range(num_calls):
        rows = (upto >= i).nonzero().flatten() if i < k else noise.new_zeros(0, dtype=torch.long)
        if rows.numel() == 0:
            velocity(x[:1], sig[:1].expand(1), torch.zeros(1, dtype=torch.long))  # keep ranks in step
            continue
        xr = x[rows]
        s = sig[i].expand(rows.numel())
        v = velocity(xr, s, rows).float()
        latents[i, rows], velocities[i, rows] = xr, v
        x0[i, rows] = xr - sig[i] * v
        computed[i, rows] = True
        x[rows] = xr + (sig[i + 1] - sig[i]) * v
    return Trajectory(sig, latents, velocities, x0, computed, x if full else None)


def extrapolate(point: TrajectoryPoint, sigma_new: torch.Tensor) -> torch.Tensor:
    """Off-trajectory latent along the recorded velocity: ``x' = x_i + (s' - s_i) * v_i``."""
    shape = (-1,) + (1,) * (point.x.ndim - 1)
    return point.x + (sigma_new - point.sigma).view(shape) * point.v
