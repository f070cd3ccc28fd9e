"""Distillation backend: one trainer, recipes as configurations of small loss modules.

Python API::

    from cdm_bench.distill import train, export
    ckpt = train("cdm", ["train.steps=200"], "runs/distill/cdm")   # -> final checkpoint dir
    export(ckpt, "runs/students/cdm", ema=True)                     # -> generator-loadable dir

See ``docs`` of :mod:`cdm_bench.distill.trainer` (the loop), :mod:`.config` (recipe keys),
:mod:`.losses` (the loss registry) and :mod:`.adapter` (the model interface).
"""

from __future__ import annotations

__all__ = ["train", "export", "load_recipe"]


def __getattr__(name: str):  # keep `import cdm_bench.distill` light
    if name == "train":
        from cdm_bench.distill.trainer import train
        return train
    if name == "export":
        from cdm_bench.distill.export import export
        return export
    if name == "load_recipe":
        from cdm_bench.distill.config import load_recipe
        return load_recipe
    raise AttributeError(name)
