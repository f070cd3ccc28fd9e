"""``generate``, ``evaluate`` and ``leaderboard`` subcommands."""

from __future__ import annotations


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
    e.add_argument("--metrics", required=True,
                   help="comma-separated metric names; INSTANCE=NAME runs a second configuration of a metric")
    e.add_argument("--metric-options", default=None,
                   help='JSON keyed by instance name, e.g. \'{"toy_fid": {"scorer": "quick", "batch_size": 64}}\'')
    e.add_argument("--out", default=None, help="default: the images directory")
    e.add_argument("--against", default=None, metavar="DIR",
                   help="pairwise metrics (llm_judge): judge --images against this run, image by image "
                        "(same prompt id and sample); results go to --images' pairwise/ folder")
    e.add_argument("--batch-size", type=int, default=32, help="default batch size (a metric may set its own)")
    e.add_argument("--chunk-size", type=int, default=256,
                   help="images per flushed chunk (the most work a kill can lose, per process)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    e.add_argument("--num-workers", type=int, default=None,
                   help="input processes that decode, check and preprocess images (default: on a GPU one per core "
                        "but one; on the CPU as many as the first batches' timings say pay; 0: none)")
    e.add_argument("--allow-partial", action="store_true", help="keep going when a metric fails")
    e.add_argument("--force", action="store_true", help="recompute cached scores")
    e.set_defaults(func=run_evaluate)

    lb = sub.add_parser("leaderboard", help="build leaderboard.{csv,html,md} from evaluated runs")
    lb.add_argument("runs", nargs="+", metavar="RUN_DIR")
    lb.add_argument("--out", required=True)
    lb.add_argument("--reference", default=None,
                    help="generator that paired deltas compare against (default: the highest-NFE teacher)")
    lb.add_argument("--metrics", default=None, help="comma-separated metric instances to keep")
    lb.add_argument("--generators", default=None, help="comma-separated generator names to keep")
    lb.set_defaults(func=run_leaderboard)


def run_generate(args) -> int:
    from cdm_bench.generate import generate

    out = generate(args.generator, args.prompts, args.out, args.samples_per_prompt,
                   args.batch_size, args.seed, args.overwrite, args.limit)
    print(f"images and manifest: {out}")
    return 0


def metric_list(names: str, options_json: str | None) -> list:
    """``--metrics`` + ``--metric-options`` -> evaluate's metric entries (bad JSON/keys: one line)."""
    from cdm_bench.errors import SpecError
    from cdm_bench.evaluate import parse_metrics
    from cdm_bench.specfile import parse_json

    options = parse_json(options_json, "--metric-options") if options_json else {}
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise SpecError('--metric-options must map instance names to option objects, e.g. {"toy_fid": {"scorer": "quick"}}')
    parsed = parse_metrics(names)
    unknown = sorted(set(options) - {i for i, _, _ in parsed})
    if unknown:
        raise SpecError(f"--metric-options names {unknown}, which are not in --metrics")
    return [{"name": n, "alias": i, **options.get(i, {})} for i, n, _ in parsed]


def run_evaluate(args) -> int:
    from cdm_bench import dist
    from cdm_bench.evaluate import evaluate

    if args.against:
        return run_pairwise(args)
    res = evaluate(args.images, metric_list(args.metrics, args.metric_options), args.out,
                   args.batch_size, args.device, args.allow_partial, args.force,
                   chunk_size=args.chunk_size, dtype=args.dtype, num_workers=args.num_workers)
    if dist.world()[0] == 0:
        for name, m in res["metrics"].items():
            print(f"{name}\t{m.get('value')}\t{m.get('status')}")
    return 0


def run_pairwise(args) -> int:
    from cdm_bench.errors import SpecError
    from cdm_bench.pairwise import evaluate_pairwise

    if args.out:
        raise SpecError("--against writes into --images' own pairwise/ folder; leave out --out")
    res = evaluate_pairwise(args.images, args.against, metric_list(args.metrics, args.metric_options), args.allow_partial)
    for name, r in res.items():
        print(f"{name}\twin {r.get('win', float('nan')):.3f} tie {r.get('tie', float('nan')):.3f} "
              f"loss {r.get('loss', float('nan')):.3f} ({r['pairs']} pairs, {r['failed']} failed)\t{r['status']}")
    return 0


def run_leaderboard(args) -> int:
    from cdm_bench.leaderboard import write_leaderboard

    split = lambda v: [x.strip() for x in v.split(",") if x.strip()] if v else None  # noqa: E731
    paths = write_leaderboard(args.runs, args.out, args.reference, split(args.metrics), split(args.generators))
    print(paths["md"].read_text())
    print(f"leaderboard: {paths['csv']} (also .html, .md)")
    return 0
