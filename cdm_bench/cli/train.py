"""``cdm-bench train RECIPE [--set key.path=value ...] [--out DIR] [--resume]``.

Distil the recipe's teacher into a few-step student. Multi-process (FSDP2)::

    torchrun --nproc_per_node 2 -m cdm_bench.cli.train cdm --set train.steps=100 --out runs/cdm
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="distil a teacher with a recipe (CDM, D-DMD, DMD, ...)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="a recipe name (cdm-bench ls recipes) or a YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set train.steps=10 --set losses.ca.guidance=2")
    p.add_argument("--out", default=None, help="run directory (default: runs/distill/<recipe>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest checkpoint (same recipe only)")
    p.add_argument("--then", default=None, metavar="SPEC",
                   help="after training: export the student (best/ if validate.select made one) and run this "
                        "benchmark spec with it beside the spec's rows; the leaderboard goes to OUT/after (resumable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cdm_bench.distill import train

    import os

    if args.then:  # the spec is checked before any training
        from cdm_bench.benchmark import BenchmarkSpec
        from cdm_bench.cli.run import _spec_path

        args.then = _spec_path(args.then)
        BenchmarkSpec.from_yaml(args.then)
    checkpoint = train(args.recipe, args.overrides, args.out, resume=args.resume or bool(args.then))
    if os.environ.get("RANK", "0") == "0":
        print(f"final checkpoint: {checkpoint}")
    if args.then:
        from cdm_bench.distill.after import evaluate_after_training

        out = evaluate_after_training(Path(checkpoint).parent, args.then, checkpoint)
        if out is not None:
            from cdm_bench.runfind import leaderboard_paths

            print(f"leaderboard: {leaderboard_paths(out)['csv']} (also .html, .md)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (for ``torchrun -m cdm_bench.cli.train``)."""
    import logging

    from cdm_bench.errors import CdmBenchError

    parser = argparse.ArgumentParser(prog="cdm-bench train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except CdmBenchError as exc:
        print(f"cdm-bench train: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
