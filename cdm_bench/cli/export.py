"""``cdm-bench export CHECKPOINT --out DIR [--ema/--no-ema] [--step N|best] [--fuse] [--copy-base]``.

Write a distilled student (EMA weights by default) as a directory that the generator registry
loads by path; ``DIR/generator.yaml`` is a ready generator spec. A LoRA run writes its adapter
(diffusers' LoRA layout: ``pipe.load_lora_weights(DIR)``) and a spec with a ``lora`` entry on the
base pipeline; ``--fuse`` writes the merged transformer instead.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="export a distilled student for generation",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint directory, or a run directory (its latest)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True,
                   help="export the EMA weights (default) or the raw student (--no-ema)")
    p.add_argument("--step", default=None,
                   help="with a run directory: the checkpoint of student step N, or 'best' (the EMA of the best "
                        "validation, validate.select) instead of the latest")
    p.add_argument("--copy-base", action="store_true",
                   help="pipeline models: also write the base pipeline's other components, so DIR loads "
                        "alone with from_pretrained (default: DIR/transformer + a pointer to the base)")
    p.add_argument("--fuse", action="store_true",
                   help="a LoRA run: write the transformer with the adapter merged (default: the adapter alone)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cdm_bench.distill import export

    out = export(args.checkpoint, args.out, ema=args.ema, copy_base=args.copy_base, step=args.step,
                 fuse=args.fuse)
    print(f"exported {'EMA' if args.ema else 'raw'} student to {out} (generator spec: {out / 'generator.yaml'})")
    return 0
