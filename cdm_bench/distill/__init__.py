"""Distillation backend: one trainer, recipes as configurations of small loss modules.

Python API::

    from cdm_bench.distill import train, export
    ckpt = train("cdm", ["train.steps=200"], "runs/distill/cdm")   # -> final checkpoint dir
    export(ckpt, "runs/students/cdm", ema=True)                     # -> generator-loadable dir

See ``docs`` of :mod:`cdm_bench.distill.trainer` (the loop), :mod:`.config` (recipe keys),
:mod:`.losses` (the loss registry) and :mod:`.adapter` (the model interface).
"""

from __future__ import annotations

import importlib

__all__ = ["train", "export", "load_recipe"]
_WHERE = {"train": "cdm_bench.distill.trainer", "export": "cdm_bench.distill.export",
          "load_recipe": "cdm_bench.distill.config"}


def __getattr__(name: str):
    """``train`` / ``export`` / ``load_recipe`` imported on first use: training does not import
    the export code, evaluating a toy metric does not import the trainer."""
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value  # the function, over the submodule the import just bound to `export`
        return value
    raise AttributeError(f"module 'cdm_bench.distill' has no attribute {name!r}")
