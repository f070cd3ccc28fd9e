"""Leaderboards: pandas tables built from evaluated run directories.

``leaderboard.csv`` (the contract): ``generator, recipe, nfe, cfg``, then one column per
metric instance holding its mean, then ``prompts`` and ``n``. ``leaderboard_long.csv`` has
one row per (generator, prompt set, metric) with version, direction, mean, bootstrap 95% CI
(per-image metrics) and n, plus one row per sub-value a metric's ``compute()`` returned
(column ``sub``; e.g. per-category scores). ``leaderboard.html`` / ``leaderboard.md`` show the
wide table with ↑/↓ and metric versions. Run directories are read through
:mod:`cdm_bench.rundir`; no model and no scorer package is needed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from cdm_bench.report.stats import paired_delta, prompt_bootstrap_ci, ranks
from cdm_bench.report.tables import format_ci
from cdm_bench.rundir import RunDir, generation_key, image_set_hash
from cdm_bench.runfind import find_evaluated, find_unevaluated, leaderboard_paths

KEY_COLUMNS = ["generator", "recipe", "nfe", "cfg"]
log = logging.getLogger(__name__)
RECIPE_ORDER = {"reference": 0, "teacher": 1}


def find_runs(paths) -> list[RunDir]:
    """Each path is an evaluated directory or a folder containing some (searched recursively)."""
    return find_evaluated(paths)


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def long_table(runs: list) -> pd.DataFrame:
    """One row per (run, metric instance) plus one per sub-value. A value computed on another
    image set than the run's current manifest is marked ``stale`` (shown as such, never as a
    number); runs that share a generator name get distinct labels; a metric instance computed
    with different identities (version, options, weights) in different runs gets one column per
    identity (``column``)."""
    rows = []
    for run in runs:
        run = run if isinstance(run, RunDir) else RunDir(run)
        rows += _run_rows(run)
    long = pd.DataFrame(rows)
    if long.empty:
        return long
    long["generator"] = _unique_labels(long)
    long["column"] = _metric_columns(long)
    return long.drop(columns=["_run", "_seed", "_spec"])


def _run_rows(run: RunDir) -> list[dict]:
    res = run.read_results()
    gen = res.get("generation", {})
    now = run.read_identity() if run.has_identity() else {}
    same_run = not now or generation_key(now) == generation_key(gen)
    if now and same_run:  # the same run: its current display name (a rename keeps the scores)
        gen = {**gen, "generator": now.get("generator", gen.get("generator", {})),
               "provenance": now.get("provenance", gen.get("provenance", {}))}
    spec, ps = gen.get("generator", {}), gen.get("prompt_set", {})
    prov = gen.get("provenance") or {}  # measured network evaluations win over the spec's count
    nfe, cfg = prov.get("nfe_measured", spec.get("nfe_total")), None if prov.get("guidance_ignored") else spec.get("cfg")
    current = image_set_hash(run.read_manifest()) if run.is_complete() else None
    scores = run.read_scores()
    rows = []
    for name, m in sorted(res.get("metrics", {}).items()):
        stale = not same_run or (current is not None and m.get("images_sha256") not in (None, current))
        status = "stale" if stale else m.get("status")
        lo = hi = float("nan")
        if not stale and m.get("per_image") and scores is not None and name in scores:
            lo, hi = prompt_bootstrap_ci(scores, name)
        elif not stale and "ci_low" in (m.get("values") or {}):  # a set-level metric's chunk bootstrap
            lo, hi = m["values"]["ci_low"], m["values"]["ci_high"]
        base = {"generator": spec.get("name", run.root.name), "recipe": spec.get("recipe", "unknown"),
                "nfe": nfe, "cfg": cfg,
                "prompts": f"{ps.get('name')}@{ps.get('version')}", "metric": name,
                "version": m.get("version"), "higher_is_better": m.get("higher_is_better"),
                "identity": m.get("identity"), "train_step": spec.get("train_step"), "series": spec.get("series"),
                "_run": str(run.root.resolve()), "_seed": gen.get("seed"),
                "_spec": str(gen.get("spec_hash"))[:8]}
        value = float("nan") if stale else m.get("value", float("nan"))
        n = m.get("n", res.get("n_images"))
        rows.append({**base, "sub": "", "mean": value, "ci_low": lo, "ci_high": hi, "n": n,
                     "status": status, "run": str(run.root)})
        for sub, v in sorted((m.get("values") or {}).items()):
            rows.append({**base, "sub": sub, "mean": float("nan") if stale else v, "ci_low": float("nan"),
                         "ci_high": float("nan"), "n": n, "status": status, "run": str(run.root)})
    return rows


#: how runs that share a generator name (and prompt set) are told apart, first that works wins
_LABEL_TAGS = (lambda r: f"seed {r['_seed']}", lambda r: Path(r["run"]).name,
               lambda r: f"seed {r['_seed']}, {Path(r['run']).name}", lambda r: f"spec {r['_spec']}",
               lambda r: f"seed {r['_seed']}, {Path(r['run']).name}, spec {r['_spec']}", lambda r: r["run"])


def _unique_labels(long: pd.DataFrame) -> pd.Series:
    """One label per run directory: ``name``, or ``name (<tag>)`` when several runs share a name
    and prompt set (the seed, the folder name, the spec hash, ... or at last the full path), so
    no table ever drops a run."""
    labels = long["generator"].copy()
    for (name, _), group in long.groupby(["generator", "prompts"]):
        runs = group.drop_duplicates("_run")
        if len(runs) < 2:
            continue
        for tag in _LABEL_TAGS:
            tags = {r["_run"]: tag(r) for _, r in runs.iterrows()}
            if len(set(tags.values())) == len(tags):
                break
        for run, t in tags.items():
            labels.loc[group.index[group["_run"] == run]] = f"{name} ({t})"
    return labels


def _metric_columns(long: pd.DataFrame) -> pd.Series:
    """The instance name, or ``name[identity]`` when runs computed it with different identities."""
    cols = long["metric"].copy()
    for name, group in long.groupby("metric"):
        ids = group["identity"].fillna(group["version"].astype(str)).unique()
        if len(ids) > 1:
            ident = group["identity"].fillna("v" + group["version"].astype(str))
            cols.loc[group.index] = [f"{name}[{str(i)[:8]}]" for i in ident]
    return cols


DELTA_COLUMNS = ["delta", "delta_ci_low", "delta_ci_high", "win_rate"]


def reference_generator(rows: pd.DataFrame, reference: str | None) -> str | None:
    """The generator deltas are measured against: ``reference``, else the highest-NFE teacher."""
    if reference is not None:
        return reference if reference in set(rows["generator"]) else None
    teachers = rows[rows["recipe"] == "teacher"]
    if teachers.empty:
        return None
    return teachers.sort_values(["nfe", "generator"], ascending=[False, True], na_position="last")["generator"].iloc[0]


def add_comparisons(long: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """Paired deltas (prompt bootstrap) against the reference, per-prompt win rates and ranks,
    per (prompt set, metric column), on the main rows."""
    long = long.copy()
    for col in DELTA_COLUMNS + ["rank", "reference"]:
        long[col] = np.nan if col != "reference" else ""
    main = long[long["sub"] == ""]
    cache: dict[str, pd.DataFrame | None] = {}

    def scores(run: str):
        if run not in cache:
            cache[run] = RunDir(run).read_scores()
        return cache[run]

    for (_, column), group in main.groupby(["prompts", "column"]):
        hib = bool(group["higher_is_better"].iloc[0])
        long.loc[group.index, "rank"] = ranks(group["mean"], hib)
        ref = reference_generator(group, reference)
        if ref is None:
            continue
        ref_row = group[group["generator"] == ref].iloc[0]
        ref_scores = scores(ref_row["run"])
        long.loc[group.index, "reference"] = ref
        for i, row in group.iterrows():
            mine = scores(row["run"])
            if ref_scores is None or mine is None or row["metric"] not in mine or ref_row["metric"] not in ref_scores:
                continue
            d = paired_delta(mine.rename(columns={row["metric"]: "_v"}), ref_scores.rename(columns={ref_row["metric"]: "_v"}),
                             "_v", hib)
            long.loc[i, DELTA_COLUMNS] = [d[c] for c in DELTA_COLUMNS]
    return long


def wide_table(long: pd.DataFrame) -> pd.DataFrame:
    if long.empty:
        return pd.DataFrame(columns=KEY_COLUMNS)
    long = long[long["sub"].fillna("") == ""] if "sub" in long else long
    idx = KEY_COLUMNS + ["prompts"]
    keyed = long.assign(nfe=long["nfe"].fillna(-1), cfg=long["cfg"].fillna(-1))
    if "column" in keyed:
        keyed = keyed.assign(metric=keyed["column"])
    stats = ["mean", "ci_low", "ci_high"] + [c for c in ("delta", "delta_ci_low", "delta_ci_high") if c in keyed]
    pieces = []
    for stat in stats:
        piece = keyed.groupby(idx + ["metric"], dropna=False)[stat].first().unstack("metric")
        pieces.append(piece if stat == "mean" else piece.add_suffix(f"_{stat}"))
    n = keyed.groupby(idx)["n"].max()
    wide = pd.concat(pieces, axis=1).join(n).reset_index()
    wide[["nfe", "cfg"]] = wide[["nfe", "cfg"]].replace(-1, np.nan)
    metric_cols = [f"{m}{'' if st == 'mean' else '_' + st}" for m in sorted(keyed["metric"].unique()) for st in stats]
    wide = wide[KEY_COLUMNS + metric_cols + ["prompts", "n"]]
    order = wide["recipe"].map(lambda r: RECIPE_ORDER.get(r, 2))
    wide = wide.assign(_o=order, _nfe=-wide["nfe"].fillna(0)).sort_values(["_o", "recipe", "_nfe", "generator"])
    return wide.drop(columns=["_o", "_nfe"]).reset_index(drop=True)


def _decorated(wide: pd.DataFrame, long: pd.DataFrame) -> pd.DataFrame:
    """Metric headers with version and ↑/↓; means with their CI where known, best in bold, second
    in italics, and the number of prompts a scorer truncated."""
    from cdm_bench.report.tables import best_two

    subs = long[long["sub"].fillna("") == "truncated_prompts"] if "sub" in long else long.iloc[:0]
    truncated = {(g, p, m): int(v) for g, p, m, v in zip(subs["generator"], subs["prompts"],
                                                          subs.get("column", subs["metric"]), subs["mean"]) if v > 0}
    long = long[long["sub"].fillna("") == ""] if "sub" in long else long
    long = long.assign(metric=long["column"]) if "column" in long else long
    meta = long.drop_duplicates("metric").set_index("metric")
    ci = long.drop_duplicates(["generator", "prompts", "metric"]).set_index(["generator", "prompts", "metric"])
    shown = wide[[c for c in wide.columns if not c.endswith(("_ci_low", "_ci_high", "_delta"))]].copy()
    renames = {}
    for m in meta.index:
        arrow = "↑" if meta.loc[m, "higher_is_better"] else "↓"
        renames[m] = f"{m}@{meta.loc[m, 'version']} {arrow}"
        best, second = best_two(wide[m], bool(meta.loc[m, "higher_is_better"]))
        cells = []
        for i, (g, p, v) in enumerate(zip(wide["generator"], wide["prompts"], wide[m])):
            text = _fmt(v, ci.loc[(g, p, m)] if (g, p, m) in ci.index else None)
            text = f"**{text}**" if i in best else f"*{text}*" if i in second else text
            cells.append(text + (f" ({truncated[(g, p, m)]} prompts truncated)" if (g, p, m) in truncated else ""))
        shown[m] = cells
    return shown.rename(columns=renames)


def _fmt(value, row) -> str:
    if row is None:
        return format_ci(value, None, None)
    return format_ci(value, row["ci_low"], row["ci_high"], row["status"])


def write_leaderboard(run_dirs, out_dir, reference: str | None = None, metrics: list[str] | None = None,
                      generators: list[str] | None = None) -> dict[str, Path]:
    """Build the tables from ``run_dirs`` (optionally only some metrics / generators) and write
    CSV/HTML/Markdown into ``out_dir``."""
    from cdm_bench.errors import SpecError

    from cdm_bench.safenames import check_out_dir

    out = check_out_dir(out_dir)
    long = long_table(find_runs(run_dirs))
    for key, wanted in (("metric", metrics), ("generator", generators)):
        if wanted:
            unknown = sorted(set(wanted) - set(long.get(key, [])))
            if unknown:
                raise SpecError(f"--{key}s {unknown} not in these runs (found: {sorted(set(long.get(key, [])))})")
            long = long[long[key].isin(wanted)]
    if reference is not None and reference not in set(long.get("generator", [])):
        raise SpecError(f"--reference {reference!r} is not a generator of these runs")
    if not long.empty:
        long = add_comparisons(long, reference)
    wide = wide_table(long)
    paths = leaderboard_paths(out)
    shown = _decorated(wide, long)
    pending = [str(r.root) for r in find_unevaluated(run_dirs)]
    if pending:
        log.warning("not evaluated (no results.json), left out: %s", ", ".join(pending))
    note = ("Means; per-image metrics show a 95% bootstrap CI that resamples prompts (a prompt's samples "
            "together). ↑ higher is better, ↓ lower. leaderboard.csv adds each metric's paired delta to the "
            "reference generator (default: the highest-NFE teacher) with its CI; leaderboard_long.csv the "
            "per-prompt win rate and the rank.")
    from cdm_bench.atomic import write_owned
    from cdm_bench.report.html import render_html
    from cdm_bench.report.tables import latex_table

    pair_table, ranking, pair_md = pairwise_section(run_dirs)
    texts = {"csv": wide.to_csv(index=False), "long_csv": long.to_csv(index=False),
             "md": "# Leaderboard\n\n" + shown.to_markdown(index=False) + f"\n\n{note}\n"
                   + (f"\nNot evaluated (no results.json yet): {', '.join(pending)}\n" if pending else "") + pair_md,
             "tex": latex_table(wide, long) if not wide.empty else "",
             "html": render_html(wide, long, not_evaluated=pending, pairwise_md=pair_md),
             "pairwise_csv": pair_table.to_csv(index=False), "ranking_csv": ranking.to_csv(index=False)}
    write_owned(out, {paths[k].name: v for k, v in texts.items()}, "leaderboard")
    return paths


def pairwise_section(run_dirs) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(win/tie/loss table, Bradley-Terry ranking, Markdown) of the pairwise judges under ``run_dirs``
    (empty tables and no text when there are none)."""
    from cdm_bench.pairwise import pairwise_tables

    table, ranking = pairwise_tables(run_dirs)
    ranking = ranking if ranking is not None else pd.DataFrame(columns=["generator", "strength", "strength_lo",
                                                                       "strength_hi", "rank", "judge"])
    if table.empty:
        return table, ranking, ""
    ci = lambda r, k: f"{r[k]:.3f} [{r[k + '_lo']:.3f}, {r[k + '_hi']:.3f}]"  # noqa: E731
    shown = pd.DataFrame({"generator": table["generator"], "against": table["against"], "judge": table["judge"],
                          **{k: [ci(r, k) for _, r in table.iterrows()] for k in ("win", "tie", "loss")},
                          "consistency": table["consistency"].round(3), "pairs": table["pairs"],
                          "failed": table["failed"]})
    text = ("\n## Pairwise judges\n\nWin / tie / loss of each generator against the one it was judged against "
            "(95% intervals resample prompts); consistency: the share of pairs whose two rounds (positions "
            "swapped) agreed.\n\n" + shown.to_markdown(index=False) + "\n")
    if len(ranking):
        text += ("\n## Ranking from the verdicts (Bradley-Terry)\n\nStrength on a log scale (mean 0; a tie is half a "
                 "win each), 95% intervals resample prompts.\n\n"
                 + ranking.round(3).to_markdown(index=False) + "\n")
    return table, ranking, text
