"""Memory measuring tools for ``sd3_memory.py``: live bytes of the storages ops create
(:class:`LiveBytes`), the bytes autograd saves for backward (:func:`saved_bytes`), CUDA's bf16
autocast policy emulated on CPU (:func:`cuda_autocast_policy`) and the process's RSS high-water
mark (:func:`peak_rss`)."""

from __future__ import annotations

import contextlib
import weakref
from pathlib import Path

import torch


class LiveBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Live bytes of the storages created by ops while active (one count per storage; freed when
    its last tensor dies). Tensors that existed before (parameters, inputs) are not counted."""

    def __init__(self):
        super().__init__()
        self.refs, self.size, self.now, self.peak = {}, {}, 0, 0

    def _drop(self, key):
        self.refs[key] -= 1
        if self.refs[key] == 0:
            self.now -= self.size.pop(key)
            del self.refs[key]

    def reset_peak(self):
        self.peak = self.now

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = storages(torch.utils._pytree.tree_leaves((args, kwargs)))
        for t in torch.utils._pytree.tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            key = t.untyped_storage().data_ptr()
            if key == 0 or (key in given and key not in self.refs):
                continue  # a view of (or in-place op on) a tensor made before: not a new allocation
            if key not in self.refs:
                self.refs[key], self.size[key] = 0, t.untyped_storage().nbytes()
                self.now += self.size[key]
                self.peak = max(self.peak, self.now)
            self.refs[key] += 1
            weakref.finalize(t, self._drop, key)
        return out


def storages(tensors) -> set:
    return {t.untyped_storage().data_ptr() for t in tensors if isinstance(t, torch.Tensor)}


def saved_bytes(fn, exclude: set) -> int:
    """Bytes autograd saves for backward while ``fn()`` runs (distinct storages, minus ``exclude``)."""
    seen: dict = {}

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in exclude:
            seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


@contextlib.contextmanager
def cuda_autocast_policy():
    """CPU autocast to bf16 with CUDA's float32 layer_norm (CPU autocast leaves it in bf16): what the
    trainer's ``precision: bf16`` autocast does to a block on the GPU."""
    plain = torch.nn.functional.layer_norm

    def layer_norm(x, shape, weight=None, bias=None, eps=1e-5):
        up = lambda t: None if t is None else t.float()  # noqa: E731
        with torch.autocast("cpu", enabled=False):
            return plain(x.float(), shape, up(weight), up(bias), eps)

    torch.nn.functional.layer_norm = layer_norm
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    finally:
        torch.nn.functional.layer_norm = plain


def peak_rss() -> int:
    """The process's RSS high-water mark (VmHWM; writing 5 to /proc/self/clear_refs resets it)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


