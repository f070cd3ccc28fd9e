"""``cdm-bench sweep SPEC.yaml [--out DIR] [--jobs N] [--dry-run] [--report] [--only PATTERN]``.

Run a sweep spec (recipes x override grids x seeds; see recipes/sweeps/): every cell is one
resumable training run that validates itself; finished cells are skipped, unfinished ones
resume. ``--report`` builds the frontier tables, plots and HTML from the stored validation
scores only (nothing is trained or scored).

    cdm-bench sweep recipes/sweeps/world.yaml --jobs 2
    cdm-bench sweep recipes/sweeps/world.yaml --dry-run
    cdm-bench sweep recipes/sweeps/world.yaml --report
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    from cdm_bench.sweep import EXECUTOR_CHOICES

    p = subparsers.add_parser("sweep", help="train and validate a grid of recipes x overrides x seeds; report frontiers",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="a sweep spec YAML (e.g. recipes/sweeps/world.yaml) or a name under recipes/sweeps")
    p.add_argument("--out", default=None, help="sweep folder (default: the spec's 'out', else runs/sweeps/<name>)")
    p.add_argument("--jobs", type=int, default=1, help="cells run at once on this machine (each with the spec's threads)")
    p.add_argument("--executor", choices=EXECUTOR_CHOICES, default=None,
                   help="local processes, SLURM jobs through submitit, or submitit's local executor "
                        "(default: the spec's 'executor')")
    p.add_argument("--only", action="append", default=[], metavar="PATTERN",
                   help="only the cells / reference points whose folder matches (fnmatch; repeatable)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and what is done; run nothing")
    p.add_argument("--report", action="store_true", help="build the report from the stored validation scores")
    p.set_defaults(func=run)
    return p


def spec_path(text: str) -> Path:
    from cdm_bench.paths import recipes_dir

    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return recipes_dir() / "sweeps" / f"{text}.yaml"


def run(args: argparse.Namespace) -> int:
    from cdm_bench import sweep
    from cdm_bench.sweep.run import SweepFailed
    from cdm_bench.sweep.spec import SweepSpec
    from cdm_bench.validate import int_in_range

    jobs = int_in_range(args.jobs, "--jobs", 1, 1024)
    spec = SweepSpec.from_yaml(spec_path(args.spec))
    root = sweep.sweep_root(spec, args.out)
    if args.dry_run:
        print(sweep.dry_run_table(sweep.plan(spec, root, args.only)))
        return 0
    if args.report:
        from cdm_bench.sweep.report import build_report

        paths = build_report(spec, root)
        print("report: " + ", ".join(str(p) for p in paths.values()))
        return 0
    failed = sweep.run_sweep(spec, root, jobs, args.executor, args.only)
    if failed:
        raise SweepFailed(f"{len(failed)} job(s) failed (the others ran): "
                            + "; ".join(f"{job.name}: {msg}" for job, msg in failed))
    print(f"sweep {spec.name}: done in {root}; report: cdm-bench sweep {args.spec} --report"
          + (f" --out {args.out}" if args.out else ""))
    return 0
