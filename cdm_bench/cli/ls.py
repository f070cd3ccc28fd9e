"""``cdm-bench ls KIND``: one entry per line, name first; imports no heavy library."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("ls", help="list registered metrics, generators, prompt sets, recipes, benchmark specs or sweep specs")
    p.add_argument("kind", choices=["metrics", "generators", "prompts", "recipes", "benchmarks", "sweeps"])
    p.set_defaults(func=run)


def run(args) -> int:
    from cdm_bench.registry import REGISTRIES

    reg = REGISTRIES[args.kind]
    for name in reg.names():
        print(f"{name}\t{reg.entry(name).describe()}")
    return 0
