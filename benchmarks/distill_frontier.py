r"""Frontier report of the world benchmark: each method's toy_fid-vs-toy_align curve over its
guidance sweep, at every NFE, against the others' and the teacher's 50-step CFG curve.

    python benchmarks/distill_frontier.py [--evals benchmarks/results/distill_world_evals.csv ...] \
        [--last 3] [--boot 2000] [--prefix benchmarks/results/distill_world]

Input: the per-evaluation CSV of ``distill_world.py`` (``<out stem>_evals.csv``; older CSVs
without a guidance column get the recipe file's value). Per (recipe, guidance, NFE):

- **point**: the mean over training seeds of each seed's mean over its last ``--last``
  evaluations (teacher rows: one evaluation per sampling-noise set, ``--teacher-seeds``);
- **95% CI**: the 2.5-97.5 percentiles of a two-level bootstrap (``--boot`` replicates): resample
  the seeds with replacement, then within each drawn seed resample its last-N evaluation values
  with replacement, and take the mean over drawn seeds of each one's mean. It thus includes both
  seed-to-seed and within-run evaluation noise. toy_fid and toy_align use the same draws. With few
  seeds a percentile bootstrap is narrow (it cannot see more spread than the seeds show);
- **dominated beyond the CIs**: point b of one method is dominated by point a of another when
  a's toy_fid CI lies entirely below b's and a's toy_align CI entirely above b's.

Writes next to the CSV (``X_evals.csv`` -> ``X_*``): ``X_frontier.md`` (tables per NFE, dominance,
target checks, convergence drift), ``X_frontier.csv`` (the points), ``X_frontier.png`` (one panel
per NFE; the teacher's 50-step CFG curve in every panel) and ``X_convergence.png`` (every run's
evaluation curve).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
STUDENTS = ["dmd", "ddmd", "cdm", "cdm_no_offtraj", "cdm_fixed_schedule"]
REF = "teacher@50"  # the teacher's 50-step curve over CFG (teacher g=1 + teacher_cfg)
ORDER = ["teacher", REF] + STUDENTS
COLORS = {"teacher": "0.4", REF: "black", "dmd": "tab:blue", "ddmd": "tab:orange", "cdm": "tab:red",
          "cdm_no_offtraj": "tab:green", "cdm_fixed_schedule": "tab:purple"}
KEYS = ["recipe", "guidance", "nfe"]


def load_evals(path: Path) -> pd.DataFrame:
    sys.path.insert(0, str(HERE))
    from distill_world import _read_evals

    return pd.DataFrame(_read_evals(Path(path)))


def method_of(recipe: str, nfe: int) -> str:
    return REF if recipe in ("teacher", "teacher_cfg") and nfe == 50 else recipe


# -- statistics --------------------------------------------------------------------------------
def tails(df: pd.DataFrame, last: int) -> pd.DataFrame:
    """Each (recipe, guidance, nfe, seed)'s last ``last`` evaluations."""
    df = df.sort_values("steps")
    return df.groupby(KEYS + ["seed"], dropna=False, sort=False).tail(last)


def hier_bootstrap(per_seed: list[np.ndarray], n_boot: int = 2000, seed: int = 0,
                   level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """per_seed: one (n_i, k) array of evaluation values per seed -> (point, lo, hi), each (k,).

    point = mean over seeds of each seed's mean; [lo, hi] = percentile interval of the two-level
    bootstrap (seeds with replacement, then each drawn seed's values with replacement)."""
    rng = np.random.default_rng(seed)
    n_seeds, k = len(per_seed), per_seed[0].shape[1]
    point = np.mean([v.mean(0) for v in per_seed], axis=0)
    draws = rng.integers(n_seeds, size=(n_boot, n_seeds))
    total = np.zeros((n_boot, k))
    for pos in range(n_seeds):
        for j, vals in enumerate(per_seed):
            rows = np.flatnonzero(draws[:, pos] == j)
            if rows.size:
                pick = rng.integers(len(vals), size=(rows.size, len(vals)))
                total[rows] += vals[pick].mean(1)
    est = total / n_seeds
    alpha = (1 - level) / 2
    return point, np.quantile(est, alpha, axis=0), np.quantile(est, 1 - alpha, axis=0)


def frontier_points(df: pd.DataFrame, last: int, n_boot: int) -> pd.DataFrame:
    """One row per (method, guidance, nfe): point, CI, seeds, evaluations per seed, final step."""
    out = []
    for (recipe, g, nfe), grp in tails(df, last).groupby(KEYS, dropna=False, sort=False):
        per_seed = [s[["toy_fid", "toy_align"]].to_numpy(float) for _, s in grp.groupby("seed")]
        point, lo, hi = hier_bootstrap(per_seed, n_boot)
        out.append({"method": method_of(recipe, int(nfe)), "recipe": recipe, "guidance": g, "nfe": int(nfe),
                    "seeds": len(per_seed), "evals_per_seed": min(len(v) for v in per_seed),
                    "steps": int(grp["steps"].max()), "toy_fid": point[0], "fid_lo": lo[0], "fid_hi": hi[0],
                    "toy_align": point[1], "align_lo": lo[1], "align_hi": hi[1]})
    pts = pd.DataFrame(out)
    pts = pts.drop_duplicates(["method", "guidance", "nfe"])  # teacher_cfg at CFG 1 = teacher@50
    rank = pts["method"].map(lambda m: ORDER.index(m) if m in ORDER else len(ORDER))
    return pts.assign(_r=rank).sort_values(["nfe", "_r", "method", "guidance"]).drop(columns="_r")


def panel(pts: pd.DataFrame, nfe: int) -> pd.DataFrame:
    """The points compared at ``nfe``: every method at that NFE plus the teacher's 50-step curve."""
    return pts[(pts.nfe == nfe) | (pts.method == REF)] if nfe != 50 else pts[pts.nfe == 50]


def dominates(a: pd.Series, b: pd.Series) -> bool:
    """a better than b on both metrics beyond both CIs."""
    return a.fid_hi < b.fid_lo and a.align_lo > b.align_hi


def dominance(pts: pd.DataFrame, nfe: int) -> list[tuple[pd.Series, pd.Series]]:
    """(dominated point, a dominating point of another method), best dominator by toy_fid."""
    p, out = panel(pts, nfe), []
    for _, b in p.iterrows():
        doms = [a for _, a in p.iterrows() if a.method != b.method and dominates(a, b)]
        if doms:
            out.append((b, min(doms, key=lambda a: a.toy_fid)))
    return out


# -- checks (the targets, on frontiers) -------------------------------------------------
def _name(p: pd.Series) -> str:
    g = "?" if pd.isna(p.guidance) else f"{p.guidance:g}"
    return f"{REF} CFG {g}" if p.method == REF else f"{p.method}@{p.nfe} g={g}"


def _val(p: pd.Series) -> str:
    return (f"{p.toy_fid:.2f} [{p.fid_lo:.2f}, {p.fid_hi:.2f}] / "
            f"{p.toy_align:.3f} [{p.align_lo:.3f}, {p.align_hi:.3f}]")


def check_vs_teacher_cfg(pts: pd.DataFrame, method: str = "cdm", nfe: int = 4) -> tuple[bool, str] | None:
    """Some method@nfe point aligns at least as well as a teacher@50+CFG point at equal or better fid."""
    mine, ref = pts[(pts.method == method) & (pts.nfe == nfe)], pts[pts.method == REF]
    if mine.empty or ref.empty:
        return None
    pairs = [(a, b) for _, a in mine.iterrows() for _, b in ref.iterrows()
             if a.toy_fid <= b.toy_fid and a.toy_align >= b.toy_align]
    head = f"{method}@{nfe} toy_align ≥ teacher@50+CFG's at equal or better toy_fid (means)"
    if not pairs:
        best = mine.loc[mine.toy_align.idxmax()]
        return False, f"{head}: no point does; best-aligned {_name(best)} {_val(best)}"
    a, b = max(pairs, key=lambda ab: ab[0].toy_align - ab[1].toy_align)
    beyond = " (beyond the CIs)" if dominates(a, b) else " (within the CIs)"
    return True, f"{head}: {_name(a)} {_val(a)} vs {_name(b)} {_val(b)}{beyond}"


def check_frontier_above(pts: pd.DataFrame, method: str, base: str, nfe: int) -> tuple[bool, str] | None:
    """Every base point dominated beyond the CIs by a method point, and no method point by a base one."""
    mine, other = pts[(pts.method == method) & (pts.nfe == nfe)], pts[(pts.method == base) & (pts.nfe == nfe)]
    if mine.empty or other.empty:
        return None
    beaten = sum(any(dominates(a, b) for _, a in mine.iterrows()) for _, b in other.iterrows())
    lost = sum(any(dominates(b, a) for _, b in other.iterrows()) for _, a in mine.iterrows())
    ok = beaten == len(other) and lost == 0
    return ok, (f"{method}@{nfe} frontier above {base}@{nfe} beyond the CIs: {beaten}/{len(other)} {base} points "
                f"dominated by a {method} point, {lost}/{len(mine)} {method} points dominated by a {base} point")


def check_vs_teacher_same_nfe(pts: pd.DataFrame, method: str, nfe: int) -> tuple[bool, str] | None:
    mine, ref = pts[(pts.method == method) & (pts.nfe == nfe)], pts[(pts.method == "teacher") & (pts.nfe == nfe)]
    if mine.empty or ref.empty:
        return None
    t = ref.iloc[0]
    n = sum(dominates(a, t) for _, a in mine.iterrows())
    return n > 0, f"{method}@{nfe} beats teacher@{nfe} ({_val(t)}) beyond the CIs: {n}/{len(mine)} points"


def own_frontier(pts: pd.DataFrame, nfe: int) -> list[pd.Series]:
    """Each student method's frontier points at ``nfe``: not dominated, by means, by a point of the
    same method (the points that can decide an ordering between methods)."""
    out = []
    for _, grp in pts[(pts.nfe == nfe) & ~pts.method.isin(["teacher", REF])].groupby("method"):
        for _, a in grp.iterrows():
            if not any(b.toy_fid <= a.toy_fid and b.toy_align >= a.toy_align
                       and (b.toy_fid < a.toy_fid or b.toy_align > a.toy_align) for _, b in grp.iterrows()):
                out.append(a)
    return out


def check_seeds(pts: pd.DataFrame, min_seeds: int = 3) -> tuple[bool, str] | None:
    """Every method's own frontier points (at 1, 2 and 4 NFE) have enough seeds."""
    deciding = {_name(p): p.seeds for nfe in (1, 2, 4) for p in own_frontier(pts, nfe)}
    if not deciding:
        return None
    few = sorted(f"{k} ({n})" for k, n in deciding.items() if n < min_seeds)
    return not few, (f"every method's frontier point (not dominated by the means of its own other guidance "
                     f"points) has ≥ {min_seeds} seeds ({len(deciding)} points; fewer: {', '.join(few) or 'none'})")


def checks(pts: pd.DataFrame) -> list[tuple[bool, str]]:
    out = [check_seeds(pts), check_vs_teacher_cfg(pts, "cdm", 4)]
    out += [check_frontier_above(pts, "cdm", base, nfe) for nfe in (1, 2, 4) for base in ("dmd", "ddmd")]
    out += [check_vs_teacher_same_nfe(pts, m, nfe) for m in STUDENTS for nfe in (1, 2, 4)]
    return [c for c in out if c is not None]


# -- convergence ---------------------------------------------------------------------------------
def drift(df: pd.DataFrame, last: int) -> pd.DataFrame:
    """Per student (recipe, guidance, nfe): mean over seeds of (last-N mean - previous-N mean)."""
    rows = []
    for key, grp in df[df.steps > 0].groupby(KEYS, dropna=False):
        d = []
        for _, s in grp.groupby("seed"):
            v = s.sort_values("steps")[["toy_fid", "toy_align"]]
            if len(v) >= 2 * last:
                d.append(v.iloc[-last:].mean() - v.iloc[-2 * last:-last].mean())
        if d:
            m = pd.DataFrame(d).mean()
            rows.append({**dict(zip(KEYS, key)), "seeds": len(d), "d_fid": m.toy_fid, "d_align": m.toy_align})
    return pd.DataFrame(rows)


# -- Markdown --------------------------------------------------------------------------------------
def render(pts: pd.DataFrame, dr: pd.DataFrame, args, files: dict) -> str:
    sources = ", ".join(f"`{f}`" for f in args.evals)
    lines = ["# Distillation benchmark: guidance frontiers", "",
             f"Source: {sources}. Each point: the mean over seeds of each seed's mean over its last "
             f"{args.last} evaluations. ± columns: 95% interval of a two-level bootstrap ({args.boot} replicates: "
             "seeds resampled with replacement, then each drawn seed's last evaluations resampled with "
             "replacement), so it includes seed-to-seed and within-run evaluation noise. Teacher rows: one "
             "evaluation per sampling-noise set. `teacher@50` is the teacher at 50 steps over CFG (the "
             f"reference curve in every panel). Plot: `{files['png']}`; convergence curves: `{files['conv']}`.", ""]
    for nfe in sorted(n for n in pts.nfe.unique() if n != 50):
        lines += [f"## {nfe} NFE", "", "| method | guidance | seeds | evals/seed | steps | toy_fid ↓ | 95% CI "
                  "| toy_align ↑ | 95% CI |", "|---|---|---|---|---|---|---|---|---|"]
        for _, p in panel(pts, nfe).iterrows():
            g = "?" if pd.isna(p.guidance) else f"{p.guidance:g}"
            lines.append(f"| {p.method} | {g} | {p.seeds} | {p.evals_per_seed} | {p.steps} | {p.toy_fid:.2f} "
                         f"| [{p.fid_lo:.2f}, {p.fid_hi:.2f}] | {p.toy_align:.3f} "
                         f"| [{p.align_lo:.3f}, {p.align_hi:.3f}] |")
        dom = dominance(pts, nfe)
        lines += ["", f"Dominated beyond the CIs at {nfe} NFE (by another method's point):", ""]
        lines += [f"- {_name(b)} ({_val(b)}) by {_name(a)} ({_val(a)})" for b, a in dom] or ["- none"]
        lines.append("")
    lines += ["## Targets", ""] + [f"- [{'x' if ok else ' '}] {text}" for ok, text in checks(pts)]
    if dr.empty:
        lines += ["", f"Convergence drift: no run has the {2 * args.last} evaluations it needs."]
    else:
        lines += ["", f"## Convergence: change of the last-{args.last} mean against the {args.last} evaluations "
                  "before it (mean over seeds; ~0 against the CI = flat)", "",
                  "| recipe | guidance | NFE | seeds | Δ toy_fid | Δ toy_align |", "|---|---|---|---|---|---|"]
        lines += [f"| {r.recipe} | {r.guidance:g} | {r.nfe} | {r.seeds} | {r.d_fid:+.2f} | {r.d_align:+.3f} |"
                  for r in dr.itertuples()]
    return "\n".join(lines) + "\n"


# -- plots -----------------------------------------------------------------------------------------
def _errorbar(ax, p: pd.DataFrame, color, label, **kw) -> None:
    p = p.sort_values("guidance")
    kw = {"marker": "o", "ms": 4, **kw}
    ax.errorbar(p.toy_fid, p.toy_align, xerr=[p.toy_fid - p.fid_lo, p.fid_hi - p.toy_fid],
                yerr=[p.toy_align - p.align_lo, p.align_hi - p.toy_align], color=color, label=label,
                capsize=2, **kw)
    for r in p.itertuples():
        if not pd.isna(r.guidance):
            ax.annotate(f"{r.guidance:g}", (r.toy_fid, r.toy_align), fontsize=7, color=color,
                        xytext=(3, 3), textcoords="offset points")


def _limits(ax, p: pd.DataFrame, nfe: int) -> None:
    """Frame the students and the reference curve; an off-scale teacher@nfe gets a note instead."""
    core, t = p[p.method != "teacher"], p[p.method == "teacher"]
    if core.empty:
        return
    (x0, x1), (y0, y1) = (core.fid_lo.min(), core.fid_hi.max()), (core.align_lo.min(), core.align_hi.max())
    dx, dy = 0.08 * (x1 - x0) + 1e-6, 0.08 * (y1 - y0) + 1e-6
    ax.set(xlim=(x0 - dx, x1 + dx), ylim=(y0 - dy, y1 + dy))
    for r in t.itertuples():
        if not (x0 - dx <= r.toy_fid <= x1 + dx and y0 - dy <= r.toy_align <= y1 + dy):
            ax.text(0.98, 0.02, f"teacher@{nfe} off scale: {r.toy_fid:.2f} / {r.toy_align:.3f}",
                    transform=ax.transAxes, ha="right", fontsize=7, color=COLORS["teacher"])


def plot_frontier(pts: pd.DataFrame, path: Path, nfes=(1, 2, 4)) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # top row: students against the teacher's curve; bottom row: the students only, zoomed
    fig, axes = plt.subplots(2, len(nfes), figsize=(5 * len(nfes) + 2, 9), squeeze=False)
    handles = {}
    for row, zoom in enumerate((False, True)):
        for ax, nfe in zip(axes[row], nfes):
            p = panel(pts, nfe)
            if zoom:
                p = p[~p.method.isin(["teacher", REF])]
            for m in dict.fromkeys(p.method):
                kw = {"ls": "--"} if m == REF else {"ls": "none", "marker": "*", "ms": 9} if m == "teacher" else {}
                _errorbar(ax, p[p.method == m], COLORS.get(m), f"{m} (CFG)" if m == REF else f"{m} (same NFE)"
                          if m == "teacher" else m, **kw)
            _limits(ax, p, nfe)
            ax.set(title=f"{nfe} NFE" + (", students (zoomed)" if zoom else ""),
                   xlabel="toy_fid (lower is better)", ylabel="toy_align (higher is better)")
            ax.grid(alpha=0.3)
            handles.update({lab: h for h, lab in zip(*ax.get_legend_handles_labels())})
    fig.legend(handles.values(), handles.keys(), loc="center right", fontsize=8)
    fig.suptitle("Guidance frontiers (labels: guidance value; bars: 95% hierarchical-bootstrap CI)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.9 / (5 * len(nfes) + 2), 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_convergence(df: pd.DataFrame, path: Path, nfes=(1, 2, 4)) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = df[df.steps > 0]
    marks = {g: "os^Dvp<>"[i % 8] for i, g in enumerate(sorted(st.guidance.dropna().unique()))}
    fig, axes = plt.subplots(2, len(nfes), figsize=(5 * len(nfes), 7), squeeze=False)
    for col, nfe in enumerate(nfes):
        for (recipe, g, seed), run in st[st.nfe == nfe].groupby(["recipe", "guidance", "seed"], dropna=False):
            run = run.sort_values("steps")
            for row, metric in enumerate(("toy_fid", "toy_align")):
                label = f"{recipe} g={g:g}" if seed == st.seed.min() and row == 0 else None
                axes[row][col].plot(run.steps, run[metric], color=COLORS.get(recipe), alpha=0.7, lw=1, ms=3,
                                    marker=marks.get(g, "."), ls=["-", "--", ":", "-."][int(seed) % 4], label=label)
        for row, metric in enumerate(("toy_fid", "toy_align")):
            axes[row][col].set(title=f"{metric}, {nfe} NFE", xlabel="student step", ylabel=metric)
            axes[row][col].grid(alpha=0.3)
    axes[0][0].legend(fontsize=6, ncol=2)
    fig.suptitle("Evaluation curves per run (colour: method; marker: guidance; line style: seed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--evals", type=Path, nargs="+", default=[RESULTS / "distill_world_evals.csv"],
                    help="per-evaluation CSVs of distill_world.py (several: concatenated, duplicates dropped)")
    ap.add_argument("--prefix", type=Path, help="output path prefix (default: the first CSV without _evals.csv)")
    ap.add_argument("--last", type=int, default=3, help="evaluations per run averaged (as distill_world --last)")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap replicates")
    args = ap.parse_args(argv)
    df = pd.concat([load_evals(f) for f in args.evals]).drop_duplicates(KEYS + ["seed", "steps"])
    prefix = args.prefix or args.evals[0].with_name(args.evals[0].stem.removesuffix("_evals"))
    files = {k: prefix.with_name(f"{prefix.name}_{suffix}") for k, suffix in
             (("md", "frontier.md"), ("csv", "frontier.csv"), ("png", "frontier.png"), ("conv", "convergence.png"))}
    pts = frontier_points(df, args.last, args.boot)
    pts.to_csv(files["csv"], index=False)
    plot_frontier(pts, files["png"])
    plot_convergence(df, files["conv"])
    text = render(pts, drift(df, args.last), args, {k: v.name for k, v in files.items()})
    files["md"].write_text(text)
    print(text)
    print("wrote " + ", ".join(str(f) for f in files.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
