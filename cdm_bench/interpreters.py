"""Other interpreters (``eval_python``): checked to exist and to import cdm_bench before any
work starts, once per interpreter."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cdm_bench.errors import MissingDependencyError

_CHECKED_PYTHONS: dict[str, str | None] = {}


def check_eval_python(python: str) -> None:
    """An ``eval_python`` must exist and import cdm_bench (checked once per interpreter, before
    any image is generated)."""
    if python not in _CHECKED_PYTHONS:
        _CHECKED_PYTHONS[python] = eval_python_problem(python)
    if _CHECKED_PYTHONS[python]:
        raise MissingDependencyError(_CHECKED_PYTHONS[python])


def eval_python_problem(python: str) -> str | None:
    import shutil

    if not isinstance(python, str) or not python:
        return f"eval_python must be a path to an interpreter, got {python!r}"
    found = shutil.which(python) if "/" not in python else (python if Path(python).is_file() else None)
    if not found:
        return (f"eval_python {python}: no such interpreter (build the environment first, e.g. `make eval-env`, "
                f"or fix the path)")
    try:
        proc = subprocess.run([found, "-c", "import cdm_bench"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"eval_python {python} cannot be run ({type(exc).__name__}: {exc})"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"eval_python {python} cannot import cdm_bench ({last[:120]}); install cdm-bench into that environment"
    return None
