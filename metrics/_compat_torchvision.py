"""``ensure_torchvision()``: import torchvision with cdm_bench's compatibility hook in place
(see :mod:`cdm_bench.compat`: the op-schema shim for its CUDA wheel beside the CPU torch)."""

from __future__ import annotations


def ensure_torchvision():
    from cdm_bench import compat

    compat.install()
    import torchvision

    return torchvision
