"""``generate``, ``evaluate`` and ``leaderboard`` subcommands."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    g = sub.add_parser("generate", help="generate one PNG per (prompt, k) plus a manifest")
    g.add_argument("--generator", required=True, help="registered name or YAML spec")
    g.add_argument("--prompts", required=True, help="prompt-set name or file")
    g.add_argument("--out", required=True)
    g.add_argument("--samples-per-prompt", type=int, default=1)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    g.add_argument("--overwrite", action="store_true", help="replace a different run's images")
    g.set_defaults(func=run_generate)

    e = sub.add_parser("evaluate", help="score a generation directory")
    e.add_argument("--images", required=True)
    e.add_argument("--metrics", required=True, help="comma-separated metric names")
    e.add_argument("--metric-options", default=None,
                   help='JSON, e.g. \'{"toy_fid": {"scorer": "quick"}}\'')
    e.add_argument("--out", default=None, help="default: the images directory")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--device", default="cpu")
    e.add_argument("--allow-partial", action="store_true", help="keep going when a metric fails")
    e.add_argument("--force", action="store_true", help="recompute cached scores")
    e.set_defaults(func=run_evaluate)

    lb = sub.add_parser("leaderboard", help="build leaderboard.{csv,html,md} from evaluated runs")
    lb.add_argument("runs", nargs="+", metavar="RUN_DIR")
    lb.add_argument("--out", required=True)
    lb.set_defaults(func=run_leaderboard)


def run_generate(args) -> int:
    from cdm_bench.generate import generate

    out = generate(args.generator, args.prompts, args.out, args.samples_per_prompt,
                   args.batch_size, args.seed, args.overwrite, args.limit)
    print(f"images and manifest: {out}")
    return 0


def metric_list(names: str, options_json: str | None) -> list:
    options = json.loads(options_json) if options_json else {}
    return [{"name": n.strip(), **options.get(n.strip(), {})} for n in names.split(",") if n.strip()]


def run_evaluate(args) -> int:
    from cdm_bench.evaluate import evaluate

    res = evaluate(args.images, metric_list(args.metrics, args.metric_options), args.out,
                   args.batch_size, args.device, args.allow_partial, args.force)
    for name, m in res["metrics"].items():
        print(f"{name}\t{m.get('value')}\t{m.get('status')}")
    return 0


def run_leaderboard(args) -> int:
    from cdm_bench.leaderboard import write_leaderboard

    paths = write_leaderboard(args.runs, args.out)
    print(paths["md"].read_text())
    print(f"leaderboard: {paths['csv']} (also .html, .md)")
    return 0
