"""``cdm-bench sweep``: recipes x override grids x seeds as resumable training runs that validate
themselves, plus reference generators scored the same way, and a report built from the stored
validation scores only (:mod:`cdm_bench.sweep.report`)."""

from __future__ import annotations

import fnmatch
import logging
import sys
from pathlib import Path

from cdm_bench.sweep.spec import Cell, ReferencePoint, SweepSpec  # noqa: F401

log = logging.getLogger("cdm_bench.sweep")
EXECUTOR_CHOICES = ("local", "slurm", "submitit-local")


def sweep_root(spec: SweepSpec, out: str | None) -> Path:
    from cdm_bench.safenames import check_out_dir

    return check_out_dir(out or spec.out or f"runs/sweeps/{spec.name}")


def plan(spec: SweepSpec, root: Path, only: list[str] | None = None) -> list[tuple[str, object, str]]:
    """``(kind, cell or reference point, state)`` for everything the sweep holds (``only``:
    folder-name patterns)."""
    from cdm_bench.sweep.run import cell_state, reference_state

    rows = [("cell", c, cell_state(root, c, spec)) for c in spec.cells]
    rows += [("reference", p, reference_state(root, p)) for p in spec.reference]
    if only:
        rows = [r for r in rows if any(fnmatch.fnmatchcase(r[1].name, pat) for pat in only)]
    return rows


def dry_run_table(rows: list) -> str:
    lines = [f"{'kind':<10} {'folder':<60} {'state'}"]
    lines += [f"{kind:<10} {item.name:<60} {state}" for kind, item, state in rows]
    todo = sum(state != "done" for _, _, state in rows)
    lines.append(f"{len(rows)} jobs, {len(rows) - todo} done, {todo} to run")
    return "\n".join(lines)


def run_sweep(spec: SweepSpec, root: Path, jobs: int = 1, executor: str | None = None,
              only: list[str] | None = None, python: str = sys.executable) -> list:
    """Run every unfinished job; returns the failed ``(job, message)`` pairs (the others ran)."""
    from cdm_bench.progress import progress_bar
    from cdm_bench.sweep import run as R

    executor = executor or spec.executor
    rows = plan(spec, root, only)
    _refuse_changed(rows)
    todo = [(kind, item) for kind, item, state in rows if state != "done"]
    _keep_spec(spec, root)
    work = [R.cell_job(root, i, spec, python) if k == "cell" else R.reference_job(root, i, spec, python)
            for k, i in todo]
    work.sort(key=lambda j: j.folder.parent.name != R.REFERENCE)  # references first: they are short
    if not work:
        log.info("sweep %s: every job is done (%s)", spec.name, root)
        return []
    log.info("sweep %s: %d jobs to run in %s (%s, %d at a time)", spec.name, len(work), root, executor, jobs)
    bar = progress_bar(len(work), f"sweep {spec.name}", "job")
    try:
        if executor == "local":
            failed = R.run_local(work, jobs, bar)
        else:
            failed = R.run_submitit(work, root, executor, spec.slurm, bar)
    finally:
        bar.close()
    return failed


def _refuse_changed(rows: list) -> None:
    changed = [f"{item.name} ({state})" for _, item, state in rows if state.startswith("changed")]
    if changed:
        from cdm_bench.errors import RunConflictError

        raise RunConflictError(f"{len(changed)} cell folder(s) hold runs of another recipe than the spec now makes: "
                               f"{'; '.join(changed[:3])}; restore the spec, give the entry a new 'label', or "
                               f"move the folder away")


def _keep_spec(spec: SweepSpec, root: Path) -> None:
    """The spec beside its results (rewritten only when it changed)."""
    from cdm_bench.atomic import atomic_write_text

    root.mkdir(parents=True, exist_ok=True)
    if spec.path is not None:
        text = Path(spec.path).read_text(encoding="utf-8-sig")
        copy = root / "sweep.yaml"
        if not copy.is_file() or copy.read_text(encoding="utf-8") != text:
            atomic_write_text(copy, text)
