"""Summarise ``distill_world.csv`` against the distillation issue's targets -> a Markdown table.

    python benchmarks/distill_report.py [--csv benchmarks/results/distill_world.csv]
    python benchmarks/distill_report.py --experiments benchmarks/results/distill_experiments.csv

Per (recipe, NFE): the mean over training seeds of each seed's averaged last evaluations, and
the seed spread (max - min), which is the noise a difference must beat. Writes
``distill_world_summary.md`` next to the CSV (the hand-written discussion lives in
``distill_world.md``).

Rows with a ``guidance`` column (guidance sweeps, ``--guidance`` / ``--teacher-cfg``) are labelled
``<recipe> g=<value>`` where a recipe has several values (older CSVs without the column work as
before). The guidance-frontier comparison with confidence intervals is
``benchmarks/distill_frontier.py``.

``--experiments CSV`` instead compares single-seed variants from ``recipes/experiments/`` (same
command, ``--recipes recipes/experiments/X.yaml``) with the same seed of their ``base:`` recipe
in ``--csv``, next to that recipe's seed spread, into ``<CSV stem>_summary.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"
STUDENTS = ["dmd", "ddmd", "cdm", "cdm_no_offtraj", "cdm_fixed_schedule"]


def label_guidance(df: pd.DataFrame) -> pd.DataFrame:
    """Recipes run at several guidance values -> one label per value (``cdm g=2``)."""
    if "guidance" not in df.columns:
        return df
    df = df.copy()
    multi = df.groupby("recipe")["guidance"].transform("nunique") > 1
    df.loc[multi, "recipe"] = [f"{r} g={g:g}" for r, g in zip(df.loc[multi, "recipe"], df.loc[multi, "guidance"])]
    return df


def table(df: pd.DataFrame) -> pd.DataFrame:
    df = label_guidance(df)
    g = df.groupby(["recipe", "nfe"])
    out = g.agg(seeds=("seed", "nunique"), steps=("steps", "max"), toy_fid=("toy_fid", "mean"),
                toy_align=("toy_align", "mean"))
    out["fid_spread"] = g["toy_fid"].max() - g["toy_fid"].min()
    out["align_spread"] = g["toy_align"].max() - g["toy_align"].min()
    return out


def _beats(t: pd.DataFrame, a: tuple, b: tuple) -> tuple[bool, bool, str]:
    """a better than b on each metric by more than the larger of their seed spreads."""
    fid_noise = max(t.loc[a, "fid_spread"], t.loc[b, "fid_spread"])
    align_noise = max(t.loc[a, "align_spread"], t.loc[b, "align_spread"])
    fid_gap = t.loc[b, "toy_fid"] - t.loc[a, "toy_fid"]
    align_gap = t.loc[a, "toy_align"] - t.loc[b, "toy_align"]
    text = (f"toy_fid {t.loc[a, 'toy_fid']:.2f} vs {t.loc[b, 'toy_fid']:.2f} (gap {fid_gap:+.2f}, noise {fid_noise:.2f}); "
            f"toy_align {t.loc[a, 'toy_align']:.3f} vs {t.loc[b, 'toy_align']:.3f} "
            f"(gap {align_gap:+.3f}, noise {align_noise:.3f})")
    return fid_gap > fid_noise, align_gap > align_noise, text


def checks(t: pd.DataFrame) -> list[tuple[bool, str]]:
    out = []
    if ("cdm", 4) in t.index and ("teacher_cfg", 50) in t.index:
        cdm, ref = t.loc[("cdm", 4)], t.loc[("teacher_cfg", 50)]
        out.append((cdm.toy_fid <= 1.25 * ref.toy_fid,
                    f"cdm@4 toy_fid {cdm.toy_fid:.2f} <= 1.25 x teacher@50+CFG {ref.toy_fid:.2f} "
                    f"(= {1.25 * ref.toy_fid:.2f})"))
        out.append((cdm.toy_align >= 0.95 * ref.toy_align,
                    f"cdm@4 toy_align {cdm.toy_align:.3f} >= 0.95 x teacher@50+CFG {ref.toy_align:.3f} "
                    f"(= {0.95 * ref.toy_align:.3f})"))
    for base in ("dmd", "ddmd"):
        if ("cdm", 4) in t.index and (base, 4) in t.index:
            fid_ok, align_ok, text = _beats(t, ("cdm", 4), (base, 4))
            out.append((fid_ok and align_ok, f"cdm@4 beats {base}@4 beyond the seed noise: {text}"))
    for recipe in STUDENTS:
        for nfe in (1, 2, 4):
            if (recipe, nfe) in t.index and ("teacher", nfe) in t.index:
                s, te = t.loc[(recipe, nfe)], t.loc[("teacher", nfe)]
                ok = s.toy_fid < te.toy_fid and s.toy_align > te.toy_align
                out.append((ok, f"{recipe}@{nfe} better than teacher@{nfe}: toy_fid {s.toy_fid:.2f} vs "
                                f"{te.toy_fid:.2f}, toy_align {s.toy_align:.3f} vs {te.toy_align:.3f}"))
    return out


def render(t: pd.DataFrame) -> str:
    lines = ["| recipe | NFE | seeds | steps | toy_fid ↓ | fid spread | toy_align ↑ | align spread |",
             "|---|---|---|---|---|---|---|---|"]
    order = ["teacher", "teacher_cfg"] + STUDENTS
    def rank(r: str) -> tuple:
        base = r.split(" g=")[0]
        return (order.index(base) if base in order else 99, r)

    for recipe in sorted(t.index.get_level_values(0).unique(), key=rank):
        for nfe, row in t.loc[recipe].iterrows():
            lines.append(f"| {recipe} | {nfe} | {int(row.seeds)} | {int(row.steps)} | {row.toy_fid:.2f} | "
                         f"{row.fid_spread:.2f} | {row.toy_align:.3f} | {row.align_spread:.3f} |")
    lines += ["", "## Targets", ""]
    lines += [f"- [{'x' if ok else ' '}] {text}" for ok, text in checks(t)]
    return "\n".join(lines) + "\n"


def experiment_base(name: str) -> str:
    import yaml

    from cdm_bench.paths import recipes_dir

    return yaml.safe_load((recipes_dir() / "experiments" / f"{name}.yaml").read_text())["base"]


def render_experiments(exp: pd.DataFrame, main: pd.DataFrame) -> str:
    """Each experiment against its base recipe at the same training seed and NFE."""
    spread = table(main)
    lines = ["| experiment | base | seed | NFE | toy_fid ↓ | base toy_fid | Δ fid | toy_align ↑ | base toy_align "
             "| Δ align | base seed spread (fid / align) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    by_key = label_guidance(main).set_index(["recipe", "seed", "nfe"])
    for _, r in exp.sort_values(["recipe", "seed", "nfe"]).iterrows():
        base = experiment_base(r.recipe)
        if (base, r.seed, r.nfe) not in by_key.index:
            continue
        b, sp = by_key.loc[(base, r.seed, r.nfe)], spread.loc[(base, r.nfe)]
        lines.append(f"| {r.recipe} | {base} | {r.seed} | {r.nfe} | {r.toy_fid:.2f} | {b.toy_fid:.2f} | "
                     f"{r.toy_fid - b.toy_fid:+.2f} | {r.toy_align:.3f} | {b.toy_align:.3f} | "
                     f"{r.toy_align - b.toy_align:+.3f} | {sp.fid_spread:.2f} / {sp.align_spread:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=Path, default=RESULTS / "distill_world.csv")
    ap.add_argument("--experiments", type=Path, help="single-seed variants to compare with their base recipes")
    args = ap.parse_args(argv)
    if args.experiments:
        text = ("# Distillation experiments against their base recipes (same seed, same budget)\n\n"
                + render_experiments(pd.read_csv(args.experiments), pd.read_csv(args.csv)))
        out = args.experiments.with_name(args.experiments.stem + "_summary.md")
    else:
        text = "# Distillation benchmark: summary\n\n" + render(table(pd.read_csv(args.csv)))
        out = args.csv.with_name(args.csv.stem + "_summary.md")
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
