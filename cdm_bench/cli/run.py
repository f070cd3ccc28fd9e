"""``cdm-bench run SPEC.yaml``: generate -> evaluate -> leaderboard for a benchmark spec."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a benchmark spec (generators x prompt sets x metrics)")
    p.add_argument("spec", help="benchmark spec YAML")
    p.add_argument("--out", default=None, help="default: runs/<spec name>")
    p.add_argument("--eval-python", default=None,
                   help="interpreter of the eval environment (overrides the spec's eval_python)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--dry-run", action="store_true",
                   help="list generators x prompt sets x metrics, image counts and each metric's env; load nothing")
    p.set_defaults(func=run)


def run(args) -> int:
    from cdm_bench.benchmark import BenchmarkSpec, run_benchmark

    spec = BenchmarkSpec.from_yaml(_spec_path(args.spec))
    if args.dry_run:
        from cdm_bench.dryrun import dry_run

        print(dry_run(spec))
        return 0
    if args.eval_python:
        spec.eval_python = args.eval_python
    spec.overwrite = spec.overwrite or args.overwrite
    out = run_benchmark(spec, args.out or f"runs/{spec.name}")
    if out is not None:
        from cdm_bench.runfind import leaderboard_paths

        paths = leaderboard_paths(out)
        print(paths["md"].read_text())
        print(f"leaderboard: {paths['csv']} (also .html, .md)")
    return 0


def _spec_path(name_or_path: str) -> str:
    """A benchmark spec path, or the name of one under recipes/benchmarks (cdm-bench ls benchmarks)."""
    from pathlib import Path

    from cdm_bench.registry import BENCHMARKS

    if Path(name_or_path).is_file() or name_or_path.endswith((".yaml", ".yml")):
        return name_or_path
    return str(BENCHMARKS.get(name_or_path))
