"""The self-contained HTML report: one file, no network resources.

A sortable table (means with CIs, directions, best bold / second underlined), an image grid
(N prompts x generators, sample k=0 so every generator shows the same seed, prompt text on
hover; thumbnails embedded), per-metric bar charts with CI error bars and quality-vs-NFE lines
(matplotlib, embedded SVG), and a provenance block per run.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cdm_bench.report.tables import best_two, format_ci, metric_columns
from cdm_bench.rundir import RunDir

THUMB = 96


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def bar_charts(wide: pd.DataFrame, metrics: dict[str, bool]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = []
    for m, hib in metrics.items():
        rows = wide.dropna(subset=[m])
        if rows.empty:
            continue
        fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(rows) + 1.5), 2.6))
        lo = rows.get(f"{m}_ci_low", pd.Series(np.nan, index=rows.index))
        hi = rows.get(f"{m}_ci_high", pd.Series(np.nan, index=rows.index))
        err = np.vstack([(rows[m] - lo).fillna(0).clip(lower=0), (hi - rows[m]).fillna(0).clip(lower=0)])
        ax.bar(range(len(rows)), rows[m], yerr=err, capsize=3, color="#4c72b0")
        ax.set_xticks(range(len(rows)), rows["generator"], rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{m} {'(higher is better)' if hib else '(lower is better)'}", fontsize=9)
        charts.append((m, _svg(fig)))
    return charts


def nfe_charts(wide: pd.DataFrame, metrics: dict[str, bool]) -> list[tuple[str, str]]:
    """Quality against NFE: a line per family (recipe and CFG scale) with several NFEs, and the
    generators of single-NFE families (e.g. 4-NFE students) as labelled points beside them."""
    import matplotlib.pyplot as plt

    keyed = wide.assign(_family=[f"{r}" if pd.isna(c) or c == 1.0 else f"{r} cfg {c:g}"
                                 for r, c in zip(wide["recipe"], wide["cfg"])])
    counts = {f: g["nfe"].dropna().nunique() for f, g in keyed.groupby("_family")}
    lines = [f for f, n in counts.items() if n > 1]
    points = keyed[keyed["_family"].map(lambda f: counts.get(f, 0) == 1)]
    charts = []
    for m in metrics if lines else []:
        fig, ax = plt.subplots(figsize=(4.5, 3))
        for recipe in lines:
            g = keyed[keyed["_family"] == recipe].dropna(subset=["nfe", m]).sort_values("nfe")
            ax.errorbar(g["nfe"], g[m], yerr=_err(g, m), marker="o", capsize=3, label=recipe)
        for _, g in points.dropna(subset=["nfe", m]).groupby("generator", sort=True):
            ax.errorbar(g["nfe"], g[m], yerr=_err(g, m), marker="*", ms=9, capsize=3, linestyle="none",
                        label=str(g["generator"].iloc[0]))
        ax.set_xscale("log")
        ax.set_xlabel("NFE")
        ax.set_title(f"{m} vs NFE", fontsize=9)
        ax.legend(fontsize=7)
        charts.append((m, _svg(fig)))
    return charts


def _err(g: pd.DataFrame, m: str):
    lo, hi = g.get(f"{m}_ci_low"), g.get(f"{m}_ci_high")
    return None if lo is None or lo.isna().all() else np.vstack([(g[m] - lo).fillna(0), (hi - g[m]).fillna(0)])


def step_charts(wide: pd.DataFrame, long: pd.DataFrame, metrics: dict[str, bool]) -> list[tuple[str, str]]:
    """Quality against the training step (validation runs: ``cdm-bench leaderboard TRAIN_DIR/validation``),
    one line per series (model and NFE entry), with the per-image metrics' 95 % intervals."""
    import matplotlib.pyplot as plt

    if "train_step" not in long or long["train_step"].isna().all():
        return []
    meta = long.drop_duplicates("generator").set_index("generator")[["train_step", "series"]]
    keyed = wide.join(meta, on="generator").dropna(subset=["train_step"])
    charts = []
    for m in metrics:
        fig, ax = plt.subplots(figsize=(4.5, 3))
        for series, g in keyed.dropna(subset=[m]).groupby("series"):
            g = g.sort_values("train_step")
            lo, hi = g.get(f"{m}_ci_low"), g.get(f"{m}_ci_high")
            err = None if lo is None or lo.isna().all() else np.vstack([(g[m] - lo).fillna(0), (hi - g[m]).fillna(0)])
            ax.errorbar(g["train_step"], g[m], yerr=err, marker="o", capsize=3, label=series)
        ax.set_xlabel("student step")
        ax.set_title(f"{m} vs training step", fontsize=9)
        ax.legend(fontsize=7)
        charts.append((m, _svg(fig)))
    return charts


def _thumb(run: RunDir, record: dict) -> str | None:
    """A thumbnail data URI of a record's image, or None when the file is missing or is not the
    image its manifest names (a corrupt or replaced file is never shown as the run's)."""
    from PIL import Image

    from cdm_bench.errors import CdmBenchError

    try:
        image = run.load_images([record])[0]
    except (CdmBenchError, OSError, ValueError):
        return None
    im = Image.fromarray(image)
    im.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_grid(wide: pd.DataFrame, long: pd.DataFrame, n_prompts: int) -> dict:
    """{prompts: [(id, text)], rows: [(generator, [data-uri or None])]} for the first prompt set."""
    if long.empty:
        return {"prompts": [], "rows": []}
    first_set = wide["prompts"].iloc[0]
    runs = long[long["prompts"] == first_set].drop_duplicates("generator").set_index("generator")["run"]
    records = {g: {(r["prompt_id"], r["k"]): r for r in RunDir(run).read_manifest()} for g, run in runs.items()}
    order = [r for r in next(iter(records.values()), {}).values() if r["k"] == 0][:n_prompts]
    prompts = [(r["prompt_id"], r["prompt"]) for r in order]
    rows = []
    for g in wide[wide["prompts"] == first_set]["generator"]:
        cells = []
        for pid, _ in prompts:
            rec = records.get(g, {}).get((pid, 0))
            cells.append(_thumb(RunDir(runs[g]), rec) if rec else None)
        rows.append((g, cells))
    return {"prompts": prompts, "rows": rows}


def provenance(long: pd.DataFrame) -> list[dict]:
    out = []
    for run in long.drop_duplicates("run")["run"]:
        res = RunDir(run).read_results()
        gen, env = res.get("generation", {}), res.get("environment", {})
        out.append({"generator": (gen.get("generator") or {}).get("name"), "run": run,
                    "spec": json.dumps(gen.get("generator"), sort_keys=True, default=str),
                    "prompt_set": f"{gen.get('prompt_set', {}).get('name')}@{gen.get('prompt_set', {}).get('version')} "
                                  f"sha256 {str(gen.get('prompt_set', {}).get('sha256'))[:12]}",
                    "weights": str(gen.get("weights_sha256") or "—")[:16],
                    "git": str(env.get("git", {}).get("commit", "?"))[:12], "time": env.get("time", "?"),
                    "packages": ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items())})
    return out


def table_rows(wide: pd.DataFrame, long: pd.DataFrame, metrics: dict[str, bool]) -> list[dict]:
    marks = {m: best_two(wide[m], hib) for m, hib in metrics.items()}
    subs = long[long["sub"] == "truncated_prompts"] if "sub" in long else long.iloc[:0]
    truncated = {(g, p, m): int(v) for g, p, m, v in zip(subs["generator"], subs["prompts"], subs["column"], subs["mean"])
                 if v > 0}
    rows = []
    for i, row in wide.iterrows():
        cells = []
        for m in metrics:
            text = format_ci(row[m], row.get(f"{m}_ci_low"), row.get(f"{m}_ci_high"))
            if (row["generator"], row["prompts"], m) in truncated:
                text += f" ({truncated[(row['generator'], row['prompts'], m)]} prompts truncated)"
            cls = "best" if i in marks[m][0] else "second" if i in marks[m][1] else ""
            cells.append({"text": text, "sort": "" if pd.isna(row[m]) else float(row[m]), "cls": cls})
        rows.append({"generator": row["generator"], "recipe": row["recipe"],
                     "nfe": "" if pd.isna(row["nfe"]) else int(row["nfe"]), "cells": cells})
    return rows


def render_html(wide: pd.DataFrame, long: pd.DataFrame, n_prompts: int = 6, not_evaluated=(),
                pairwise_md: str = "") -> str:
    from jinja2 import Template

    metrics = metric_columns(wide, long)
    wide = wide.reset_index(drop=True)
    return Template((Path(__file__).parent / "report.html.j2").read_text()).render(
        metrics=metrics, rows=table_rows(wide, long, metrics), grid=image_grid(wide, long, n_prompts),
        bars=bar_charts(wide, metrics), nfe=nfe_charts(wide, metrics), steps=step_charts(wide, long, metrics),
        provenance=provenance(long),
        not_evaluated=[str(r) for r in not_evaluated], escape=html.escape, pairwise=_md_html(pairwise_md))


def _md_html(text: str) -> str:
    if not text:
        return ""
    try:
        import markdown

        return markdown.markdown(text, extensions=["tables"])
    except ImportError:
        return f"<pre>{html.escape(text)}</pre>"

