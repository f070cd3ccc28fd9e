"""Where things live: the repo's data folders and the artefact cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def project_root() -> Path:
    """Folder that holds ``prompts/`` and ``recipes/`` (override with CDM_BENCH_HOME)."""
    return Path(os.environ.get("CDM_BENCH_HOME", REPO_ROOT))


def prompts_dir() -> Path:
    return project_root() / "prompts"


def recipes_dir() -> Path:
    return project_root() / "recipes"


def cache_dir() -> Path:
    """Trained artefacts of the embedded world: $CDM_BENCH_CACHE or ~/.cache/cdm-bench."""
    root = os.environ.get("CDM_BENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "cdm-bench")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
