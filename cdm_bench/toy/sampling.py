"""Sampling a ``ToyFlowModel``: per-seed noise, the Euler flow-matching sampler, CFG.

Batch invariance (a hard requirement: the same (prompt, seed) gives byte-identical images
whatever the batch size or the number of processes). Measured on the 2-core CPU with
torch 2.13: the network's float32 output differs by ~1e-6 between batch sizes 1, 4 and 16,
and between 1 and 2 intra-op threads at the same batch size, while at a *fixed* batch size and
thread count a sample's output does not depend on its position in the batch or on the other
samples in it. Hence :func:`euler_sample`

* draws each sample's noise from its own ``torch.Generator().manual_seed(seed)``;
* runs the network on chunks of exactly ``chunk_size`` samples (8), padding the last chunk
  with zeros, and with CFG on exactly ``2 * chunk_size`` rows (cond then uncond, one
  forward);
* pins torch's intra-op thread count to ``threads`` (1) for the duration of the call and
  restores it afterwards (``torchrun`` gives each process ``OMP_NUM_THREADS=1``, a plain run
  has 2; at batch 8 one thread is as fast as two on this machine);
* runs ``torch.get_num_threads() // threads`` chunks concurrently (Python threads; torch
  releases the GIL), so a plain run still uses every core it was given while each chunk's
  arithmetic stays exactly the same.

Schedules: :func:`effective_sigmas` passes the requested sigmas through diffusers'
``FlowMatchEulerDiscreteScheduler`` (which applies ``shift``) and returns what the scheduler
really uses, including the final 0.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch

DEFAULT_CHUNK = 8
DEFAULT_THREADS = 1


def make_noise(seeds: Sequence[int], shape: tuple = (3, 32, 32)) -> torch.Tensor:
    """(B, *shape) float32 standard normal; sample i depends only on seeds[i]."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)))
                        for s in seeds]) if len(seeds) else torch.zeros((0, *shape))


def default_sigmas(nfe: int) -> list[float]:
    """The un-shifted schedule used when none is given: ``[1, 1 - 1/n, ..., 1/n]``."""
    return [1.0 - i / nfe for i in range(nfe)]


def effective_sigmas(nfe: int, sigmas: Sequence[float] | None = None, shift: float = 1.0) -> list[float]:
    """The sigmas the Euler sampler visits: ``nfe`` levels followed by a final 0.

    ``sigmas`` (length ``nfe``, descending, before the shift) defaults to
    :func:`default_sigmas`. Read back from ``FlowMatchEulerDiscreteScheduler.sigmas`` after
    ``set_timesteps``, so the scheduler's shift is applied exactly as diffusers does.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    if sigmas is None:
        sigmas = default_sigmas(int(nfe))
    sigmas = [float(s) for s in sigmas]
    if len(sigmas) != int(nfe):
        raise ValueError(f"got {len(sigmas)} sigmas for nfe={nfe}")
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=float(shift))
    sched.set_timesteps(sigmas=sigmas)
    out = [float(s) for s in sched.sigmas.tolist()]
    if out[-1] != 0.0:
        out.append(0.0)
    return out


@contextlib.contextmanager
def pinned_threads(n: int | None):
    """Temporarily set torch's intra-op thread count (None: leave it)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _as_tokens(tokens) -> torch.Tensor:
    if isinstance(tokens, np.ndarray):
        tokens = torch.from_numpy(tokens)
    return tokens.long()


@torch.no_grad()
def euler_sample(model: torch.nn.Module, tokens, noise: torch.Tensor, sigmas: Sequence[float],
                 guidance: float = 1.0, chunk_size: int = DEFAULT_CHUNK,
                 threads: int | None = DEFAULT_THREADS) -> torch.Tensor:
    """Euler flow-matching sampler; returns x0 (B, 3, H, W) float32 in data space.

    Args:
        model: a ``ToyFlowModel`` (or anything with ``model(x, sigma, tokens) -> v``).
        tokens: (B, L) int64 (numpy or torch), e.g. ``world.tokenize(prompts)``.
        noise: (B, 3, H, W) from :func:`make_noise`.
        sigmas: the visited levels, e.g. :func:`effective_sigmas`; a final 0 is appended if
            missing. Steps: ``x <- x + (s_next - s) * v``.
        guidance: CFG scale; ``v = v_u + g (v_c - v_u)`` with the empty prompt (all pad) as
            the unconditional branch, computed in one batched forward. 1.0: no uncond pass.
        chunk_size / threads: see the module docstring (batch invariance).
    """
    sig = [float(s) for s in sigmas]
    if sig[-1] != 0.0:
        sig.append(0.0)
    tokens = _as_tokens(tokens)
    b = noise.shape[0]
    if tokens.shape[0] != b:
        raise ValueError(f"{tokens.shape[0]} prompts for {b} noise samples")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    use_cfg = float(guidance) != 1.0

    @torch.no_grad()  # grad mode is thread-local: worker threads need it too
    def run_chunk(start: int) -> torch.Tensor:
        n = min(chunk_size, b - start)
        x = torch.zeros((chunk_size, *noise.shape[1:]), dtype=torch.float32)
        x[:n] = noise[start:start + n].float()
        tok = torch.zeros((chunk_size, tokens.shape[1]), dtype=torch.long)
        tok[:n] = tokens[start:start + n]
        if use_cfg:
            tok = torch.cat([tok, torch.zeros_like(tok)])
        x, tok = x.to(device), tok.to(device)
        for s, s_next in zip(sig[:-1], sig[1:]):
            xin = torch.cat([x, x]) if use_cfg else x
            sv = torch.full((xin.shape[0],), s, device=device, dtype=dtype)
            v = model(xin.to(dtype), sv, tok).float()
            if use_cfg:
                vc, vu = v.chunk(2)
                v = vu + float(guidance) * (vc - vu)
            x = x + (s_next - s) * v
        return x[:n].cpu()

    starts = list(range(0, b, chunk_size))
    # chunks run concurrently, each on `threads` intra-op threads, so the cores the caller had
    # are used without changing any chunk's arithmetic (same size, same thread count)
    workers = 1 if threads is None or device.type != "cpu" else max(1, torch.get_num_threads() // threads)
    with pinned_threads(threads):
        if workers == 1 or len(starts) == 1:
            outs = [run_chunk(s) for s in starts]
        else:
            with ThreadPoolExecutor(min(workers, len(starts)), initializer=torch.set_num_threads,
                                    initargs=(threads,)) as pool:  # OpenMP's thread count is per thread
                outs = list(pool.map(run_chunk, starts))
    return torch.cat(outs) if outs else noise.new_zeros((0, *noise.shape[1:]))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Data-space (B, 3, H, W) -> uint8 (B, H, W, 3)."""
    x = ((x.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> data-space float32 (B, 3, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def sample_images(model: torch.nn.Module, prompts: Sequence[str], seeds: Sequence[int], nfe: int,
                  guidance: float = 1.0, sigmas: Sequence[float] | None = None, shift: float = 1.0,
                  chunk_size: int = DEFAULT_CHUNK, threads: int | None = DEFAULT_THREADS) -> np.ndarray:
    """prompts + seeds -> uint8 (B, H, W, 3): tokenize, noise, effective sigmas, Euler, uint8."""
    from cdm_bench.toy import world

    cfg = getattr(model, "config", None)
    size = getattr(cfg, "sample_size", 32) if cfg is not None else 32
    max_tokens = getattr(cfg, "max_tokens", None) if cfg is not None else None
    tokens = world.tokenize(list(prompts), max_tokens=max_tokens)
    noise = make_noise(list(seeds), (3, size, size))
    x0 = euler_sample(model, tokens, noise, effective_sigmas(nfe, sigmas, shift), guidance,
                      chunk_size=chunk_size, threads=threads)
    return to_uint8(x0)
