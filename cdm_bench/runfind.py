"""Finding run directories on disk (evaluated or not) and the paths of the files a leaderboard
writes (their names are :data:`cdm_bench.rundir.LEADERBOARD_FILES`): the searches the
leaderboard, ``run`` and the demo share, beside the one-directory contract of
:class:`cdm_bench.rundir.RunDir`."""

from __future__ import annotations

from pathlib import Path

from cdm_bench.errors import RunNotFoundError
from cdm_bench.rundir import IDENTITY, LEADERBOARD_FILES, PAIRWISE, RESULTS, RunDir


def leaderboard_paths(out_dir) -> dict[str, Path]:
    """The files ``cdm-bench leaderboard --out DIR`` (and ``run``, ``demo``) write into DIR."""
    return {kind: Path(out_dir) / name for kind, name in LEADERBOARD_FILES.items()}


def find_unevaluated(paths) -> list[RunDir]:
    """Generation directories under ``paths`` that have no results.json (not evaluated yet)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += [r.parent for r in sorted(p.rglob(IDENTITY)) if not (r.parent / RESULTS).exists()]
    return [RunDir(r) for r in dict.fromkeys(found)]


def find_evaluated(paths) -> list[RunDir]:
    """Each path is an evaluated run directory or a folder holding some (searched recursively)."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if (p / RESULTS).exists():
            runs.append(p)
        elif p.is_dir():  # (a pairwise metric's folder inside a run is not a run)
            runs += sorted(r.parent for r in p.rglob(RESULTS) if PAIRWISE not in r.relative_to(p).parts)
        else:
            raise RunNotFoundError(f"{p}: not a directory")
    if not runs:
        raise RunNotFoundError(f"no {RESULTS} under {', '.join(map(str, paths))}: run `cdm-bench evaluate` first")
    return [RunDir(r) for r in dict.fromkeys(runs)]
