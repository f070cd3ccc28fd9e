"""Distillation backend: one trainer, recipes as configurations of small loss modules.

Python API::

    from cdm_bench.distill import train, export
    ckpt = train("cdm", ["train.steps=200"], "runs/distill/cdm")   # -> final checkpoint dir
    export(ckpt, "runs/students/cdm", ema=True)                     # -> generator-loadable dir

See ``docs`` of :mod:`cdm_bench.distill.trainer` (the loop), :mod:`.config` (recipe keys),
:mod:`.losses` (the loss registry) and :mod:`.adapter` (the model interface).
"""

from __future__ import annotations

from cdm_bench.distill.config import load_recipe
from cdm_bench.distill.export import export  # binds the function over the submodule's name
from cdm_bench.distill.trainer import train

__all__ = ["train", "export", "load_recipe"]
