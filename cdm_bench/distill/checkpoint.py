"""Checkpoints of a distillation run: full state dicts, the resolved recipe, and resume checks.

Layout of a run directory::

    <out>/recipe.yaml                the resolved recipe (written at the start)
    <out>/log.jsonl                  one JSON line per logged student step
    <out>/checkpoint-000200/state.pt student, ema, fake (full state dicts), both optimizers, counters
    <out>/checkpoint-000200/recipe.yaml, meta.json   (adapter, model spec: what export needs)

A checkpoint directory is written under a unique temporary name and swapped in when complete
(:func:`cdm_bench.atomic.replace_dir`: an older folder of the same step is renamed aside first and
deleted last), so a crash (or a non-finite loss) never leaves a half-written "latest" checkpoint.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path

import torch
import yaml

from cdm_bench.distill.config import RESUMABLE_KEYS, RecipeConfig, recipe_to_dict
from cdm_bench.errors import RunNotFoundError

PREFIX = "checkpoint-"
#: keys added after runs were first checkpointed -> the value that reproduces a run whose saved
#: recipe lacks them (see :func:`upgrade_saved_recipe`)
LEGACY_VALUES = {("student", "optim", "warmup_steps"): 0, ("fake", "optim", "warmup_steps"): 0,
                 ("student", "optim", "warmup_scale_world"): True, ("fake", "optim", "warmup_scale_world"): True,
                 ("student", "ema_warmup_offset"): 0, ("train", "share_step_index"): False,
                 ("train", "sigma_draw"): "range", ("student", "lora"): None, ("fake", "lora"): None}


class ResumeError(RuntimeError):
    """Refusing to resume (a different recipe) or to overwrite an existing run."""


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / f"{PREFIX}{step:06d}"


def list_checkpoints(out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [p for p in out_dir.glob(f"{PREFIX}*") if p.is_dir() and (p / "state.pt").is_file()
             and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def save_checkpoint(out_dir: Path, step: int, state: dict, recipe: dict, meta: dict,
                    keep: int = 0) -> Path:
    """Write ``state`` (rank 0 only) atomically; keep the newest ``keep`` checkpoints (0: all)."""
    from cdm_bench.atomic import is_temp_name, new_temp_dir, replace_dir

    final = checkpoint_path(out_dir, step)
    for stale in Path(out_dir).glob(f".{PREFIX}*"):  # left by a save that was killed (rank 0 saves alone)
        if is_temp_name(stale.name) and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = new_temp_dir(final)
    try:
        torch.save(state, tmp / "state.pt")
        (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        (tmp / "meta.json").write_text(json.dumps({**meta, "step": step, "time": time.time()}, indent=1))
        replace_dir(tmp, final)  # the old checkpoint of this step stays until the new one is in place
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if keep > 0:
        for old in list_checkpoints(out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


BEST = "best"


def save_best(out_dir: Path, step: int, state: dict, recipe: dict, meta: dict) -> Path:
    """``out_dir/best``: a checkpoint holding the EMA only (what export needs), swapped in whole."""
    from cdm_bench.atomic import new_temp_dir, replace_dir

    final = Path(out_dir) / BEST
    tmp = new_temp_dir(final)
    try:
        torch.save(state, tmp / "state.pt")
        (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        (tmp / "meta.json").write_text(json.dumps({**meta, "step": step, "time": time.time()}, indent=1))
        replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_state(checkpoint: Path) -> dict:
    return torch.load(Path(checkpoint) / "state.pt", map_location="cpu", weights_only=True)


def load_meta(checkpoint: Path) -> tuple[dict, dict]:
    """(resolved recipe dict, meta dict) of a checkpoint directory."""
    checkpoint = Path(checkpoint)
    if not (checkpoint / "state.pt").is_file():
        raise RunNotFoundError(f"not a distillation checkpoint (no state.pt): {checkpoint}")
    from cdm_bench.specfile import load_mapping

    recipe = load_mapping(checkpoint / "recipe.yaml", "checkpoint recipe")
    meta = json.loads((checkpoint / "meta.json").read_text())
    return recipe, meta


def check_same_recipe(saved: dict, current: dict, where: Path) -> None:
    """Refuse to resume when anything but the run length / logging settings changed."""
    diffs = diff_dicts(recipe_identity(saved), recipe_identity(current))
    if diffs:
        raise ResumeError(f"refusing to resume {where} with a different recipe; changed: "
                          + "; ".join(diffs) + ". Use a new --out directory instead.")


def check_same_teacher(saved: str | None, current: str | None, where: Path) -> None:
    """Refuse to resume with other teacher weights than the checkpoint was distilled from (rank 0
    knows the hashes; under torchrun every rank learns the answer). A checkpoint written before
    the hash was recorded resumes."""
    from cdm_bench.distill import fsdp

    differs = bool(saved and current and saved != current)
    if fsdp.all_reduce_max(int(differs)):
        raise ResumeError(f"refusing to resume {where}: it was distilled from teacher weights sha256 "
                          f"{saved[:12] if differs else '(rank 0 has it)'}, the teacher loaded now is "
                          f"{current[:12] if differs else '(rank 0 has it)'} (a retrained or edited teacher); "
                          "restore that teacher, or start a new --out directory")


def check_fresh_run(out_dir: Path) -> None:
    """Refuse to start over an existing run (pass resume=True / --resume to continue it)."""
    ckpt = latest_checkpoint(out_dir)
    if ckpt is not None:
        raise ResumeError(f"{out_dir} already holds a run ({ckpt.name}); resume it with --resume "
                          f"or choose another --out directory")


def recipe_identity(cfg: RecipeConfig | dict) -> dict:
    """What must not change across a resume (all but the run-length / logging keys)."""
    d = recipe_to_dict(cfg) if isinstance(cfg, RecipeConfig) else copy.deepcopy(cfg)
    d.pop("description", None)
    d.pop("validate", None)  # validation settings may change on resume: they do not change the training
    for key in RESUMABLE_KEYS:
        d.get("train", {}).pop(key, None)
    return d


def diff_dicts(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between ``a`` and ``b``."""
    out = []
    for key in sorted(set(a) | set(b), key=str):
        va, vb, path = a.get(key), b.get(key), f"{prefix}{key}"
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_dicts(va, vb, path + ".")
        elif va != vb:
            out.append(f"{path}: {va!r} -> {vb!r}")
    return out


def upgrade_saved_recipe(saved: dict) -> dict:
    """A checkpoint's resolved recipe with the keys it predates set to :data:`LEGACY_VALUES` (the
    behaviour it was trained with), so that resuming compares like with like."""
    out = copy.deepcopy(saved)
    for path, value in LEGACY_VALUES.items():
        node = out
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.setdefault(path[-1], value)
    schedule = out.get("schedule")
    if isinstance(schedule, dict) and schedule.get("kind") == "random_continuous":
        schedule.setdefault("per_rank_sigmas", False)
    return out
