"""Running a sweep: each cell is ``cdm-bench train RECIPE --set ... --out CELL --resume`` (under
torchrun when ``nproc > 1``), each reference point a generate + evaluate; finished ones are
skipped, unfinished cells resume from their last checkpoint.

Jobs run as processes on this machine (``--jobs N`` at a time, each with the spec's thread
budget) or through submitit (``executor: slurm``: one SLURM job per cell with the spec's
``slurm:`` parameters; ``submitit-local``: submitit's local executor, for tests and laptops).
Every job's output goes to ``SWEEP/logs/<its folder name>.log`` (appended on each run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cdm_bench.errors import CdmBenchError
from cdm_bench.sweep.spec import Cell, ReferencePoint, SweepSpec

CELLS, REFERENCE = "cells", "reference"
LOGS = "logs"


class SweepFailed(CdmBenchError):
    exit_code = 1


@dataclass
class Job:
    name: str
    folder: Path
    commands: list  # list of argv lists, run in order
    env: dict
    log: Path


# -- what is done -------------------------------------------------------------------------------------
def cell_dir(root: Path, cell: Cell) -> Path:
    return Path(root) / CELLS / cell.name


def reference_dir(root: Path, point: ReferencePoint) -> Path:
    return Path(root) / REFERENCE / point.name


def cell_recipe(cell: Cell, spec: SweepSpec):
    """The cell's resolved recipe (a bad recipe name or override is a one-line error naming the cell)."""
    from cdm_bench.distill.config import load_recipe
    from cdm_bench.errors import SpecError

    try:
        return load_recipe(cell.recipe, cell.overrides(spec.validate))
    except CdmBenchError as exc:
        raise SpecError(f"sweep cell {cell.name}: {exc}") from None


def cell_state(root: Path, cell: Cell, spec: SweepSpec) -> str:
    """``done``, ``at step N`` (resumes there), ``new``, or ``changed: ...`` (the folder holds a
    run of another recipe: the spec was edited under it; it would refuse to resume)."""
    import yaml

    from cdm_bench.distill.checkpoint import (PREFIX, diff_dicts, latest_checkpoint, recipe_identity,
                                              upgrade_saved_recipe)

    folder = cell_dir(root, cell)
    cfg = cell_recipe(cell, spec)
    if (folder / "recipe.yaml").is_file():
        saved = upgrade_saved_recipe(yaml.safe_load((folder / "recipe.yaml").read_text()) or {})
        diffs = diff_dicts(recipe_identity(saved), recipe_identity(cfg))
        if diffs:
            return "changed: " + "; ".join(diffs[:3]) + (" ..." if len(diffs) > 3 else "")
    last = latest_checkpoint(folder)
    if last is None:
        return "new"
    step = int(last.name[len(PREFIX):])
    validated = spec.validate is None or (folder / "validation" / f"step-{cell.steps:06d}" / "validated.json").is_file()
    return "done" if step >= cell.steps and validated else f"at step {step}"


def reference_state(root: Path, point: ReferencePoint) -> str:
    from cdm_bench.rundir import RunDir

    run = RunDir(reference_dir(root, point))
    if not run.is_complete():
        return "new"
    res = run.read_results() if run.results_path.is_file() else None
    ok = res and res.get("metrics") and all(m.get("status") == "ok" for m in res["metrics"].values())
    return "done" if ok else "generated"


# -- how a job is run ---------------------------------------------------------------------------------
def thread_env(threads: int, nproc: int = 1) -> dict:
    per = str(max(1, threads // nproc))
    return {"OMP_NUM_THREADS": per, "MKL_NUM_THREADS": per, "CDM_BENCH_THREADS": per, "TQDM_DISABLE": "1"}


def cell_job(root: Path, cell: Cell, spec: SweepSpec, python: str = sys.executable) -> Job:
    folder = cell_dir(root, cell)
    if cell.nproc > 1:
        head = [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(cell.nproc),
                "-m", "cdm_bench.cli.train"]
    else:
        head = [python, "-m", "cdm_bench.cli.train"]
    argv = [*head, cell.recipe, *[a for o in cell.overrides(spec.validate) for a in ("--set", o)],
            "--out", str(folder), "--resume"]
    return Job(cell.name, folder, [argv], thread_env(spec.threads, cell.nproc), Path(root) / LOGS / f"{cell.name}.log")


def reference_job(root: Path, point: ReferencePoint, spec: SweepSpec, python: str = sys.executable) -> Job:
    folder = reference_dir(root, point)
    plan = {"generator": point.generator, "seed": point.seed, "out": str(folder), "validate": spec.validate or {}}
    return Job(point.name, folder, [[python, "-m", "cdm_bench.sweep.reference", json.dumps(plan)]],
               thread_env(spec.threads), Path(root) / LOGS / f"{point.name}.log")


def run_commands(commands: list, env: dict, log: str) -> None:
    """Run ``commands`` in order with ``env`` added, output appended to ``log``; raises on a
    failed one (a submitit job's function, so module level)."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        for argv in commands:
            out.write(("$ " + " ".join(argv) + "\n").encode())
            out.flush()
            rc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}).returncode
            if rc != 0:
                raise RuntimeError(f"exit code {rc} (see {log})")


def run_local(jobs: list[Job], n_parallel: int, bar) -> list[tuple[Job, str]]:
    failed = []

    def one(job: Job):
        try:
            run_commands(job.commands, job.env, str(job.log))
        except RuntimeError as exc:
            failed.append((job, str(exc)))
        bar.update(1)

    with ThreadPoolExecutor(max(1, n_parallel)) as pool:
        list(pool.map(one, jobs))
    return failed


def run_submitit(jobs: list[Job], root: Path, kind: str, params: dict, bar) -> list[tuple[Job, str]]:
    try:
        import submitit
    except ImportError:
        raise CdmBenchError("executor slurm needs submitit: pip install 'cdm-bench[sweep]'") from None
    import shutil

    if kind == "slurm" and shutil.which("sbatch") is None:
        raise CdmBenchError("executor slurm submits with SLURM's sbatch, which is not on PATH here (run the sweep "
                            "on the cluster's login node; --executor local runs the cells on this machine)")
    folder = Path(root) / "submitit"
    ex = submitit.LocalExecutor(folder) if kind == "submitit-local" else submitit.AutoExecutor(folder, cluster="slurm")
    params = {"timeout_min": 60 * 24, **params}
    try:
        ex.update_parameters(**params)
    except (TypeError, ValueError) as exc:
        raise CdmBenchError(f"slurm parameters {sorted(params)}: {exc}") from None
    submitted = [(job, ex.submit(run_commands, job.commands, job.env, str(job.log))) for job in jobs]
    failed = []
    for job, handle in submitted:
        try:
            handle.result()
        except Exception as exc:  # submitit wraps the job's exception (its traceback is in the job's log)
            failed.append((job, f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"))
        bar.update(1)
    return failed
