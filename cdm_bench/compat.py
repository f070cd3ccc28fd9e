"""One environment workaround, in one place: torchvision's CUDA wheel beside the CPU torch.

PyPI's torchvision 0.28.0 (the match for torch 2.13) is a CUDA build. Beside the CPU torch
wheel its C++ ops library (``torchvision/_C.so``) does not load, and ``import torchvision``
then fails with ``RuntimeError: operator torchvision::nms does not exist`` — and so does every
library that imports it (transformers' image processors, open_clip, timm, ImageReward). Measured
on this project's machines (../shared/docs/ENVIRONMENT.md).

The fix: define the two op schemas (``nms``, ``qnms``) before torchvision imports; transforms,
models and ``v2`` then work, only the C++ ops themselves do not (no scorer here uses them).

:func:`install` (called when ``cdm_bench`` is imported; it imports nothing) adds an import hook
that, the first time anything imports torchvision, tries to load ``_C.so`` exactly as torchvision
would; only when that load fails are the schemas defined. With a matching torch/torchvision pair
(a CUDA torch, or a CPU torchvision) nothing is changed.

Processes that import torchvision before any cdm_bench code (``accelerate launch``'s own CLI
imports timm) get the hook from a one-line ``.pth`` file in site-packages that imports cdm_bench
at interpreter start (:func:`install_pth`; every ``make`` environment has it).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
state = {"checked": False, "applied": False, "library": None}


def _ops_library_loads(package_dir: str) -> bool:
    import torch

    libs = [f for f in os.listdir(package_dir) if f.startswith("_C.") and f.endswith((".so", ".pyd"))]
    if not libs:
        return True  # nothing to load: not the broken case
    try:
        torch.ops.load_library(os.path.join(package_dir, libs[0]))
        return True
    except OSError:
        return False


def apply_if_needed(package_dir: str) -> bool:
    """Define the schemas when torchvision's ops library cannot load; True when applied."""
    if state["checked"]:
        return state["applied"]
    state["checked"] = True
    if _ops_library_loads(package_dir):
        return False
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        lib.define(schema)
    state.update(applied=True, library=lib)  # keep the Library alive, or the schemas go away
    return True


class _TorchvisionHook(importlib.abc.MetaPathFinder):
    """Runs :func:`apply_if_needed` just before torchvision is first imported."""

    def find_spec(self, name, path=None, target=None):
        if name != "torchvision" or state["checked"]:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.submodule_search_locations:
            apply_if_needed(list(spec.submodule_search_locations)[0])
        return None  # the normal finders import it


def install() -> None:
    if "torchvision" not in sys.modules and not any(isinstance(f, _TorchvisionHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionHook())


PTH_NAME = "cdm_bench_compat.pth"
#: one line, run by the interpreter at start-up (site.py): the hook is in place in every process of
#: the environment, also those cdm-bench does not start itself (``accelerate launch`` imports timm
#: and torchvision before any cdm_bench code runs)
PTH_LINE = 'import sys; exec("try:\\n import cdm_bench\\nexcept Exception:\\n pass")\n'


def install_pth(site_dir: str | None = None) -> str:
    """Write :data:`PTH_NAME` into this interpreter's site-packages (``make`` does it for every
    environment it builds; ``python -m cdm_bench.compat_install`` for one built by hand)."""
    import sysconfig

    target = os.path.join(site_dir or sysconfig.get_paths()["purelib"], PTH_NAME)
    with open(target, "w") as f:
        f.write(PTH_LINE)
    return target

