"""A sweep's report, from the stored validation scores only (nothing is trained or scored).

Per validation entry (NFE), each method's points over its swept settings (x, y metrics of the
spec's ``report:``), the reference curves (``reference:`` entries, e.g. the teacher over CFG) in
every panel, 95 % intervals from the two-level bootstrap (seeds, then each seed's last ``last``
validations), the points another method dominates beyond the intervals, a seed check (points on
a panel's front with fewer than ``require_seeds`` seeds), a table of every metric's other
values (toy_fid's Fréchet terms, toy_diag's background mix and counts), convergence curves and the frontier plot. Writes
``SWEEP/report/`` frontier.csv, evaluations.csv, frontier.md, frontier.png, convergence.png and
report.html.

Every cell's teacher weights (``teacher_sha256`` of its checkpoints) are in evaluations.csv and
the report; cells distilled from different teacher weights are not one comparison: the report
refuses them unless the spec's ``report: {allow_mixed_teachers: true}`` (then it says which).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from cdm_bench.report import frontier as F
from cdm_bench.sweep.run import cell_dir, reference_dir
from cdm_bench.sweep.spec import SweepSpec

KEYS = ["method", "setting", "entry"]


def evaluations(spec: SweepSpec, root: Path) -> pd.DataFrame:
    """One row per (cell or reference point, validation step, entry, metric) in the report's model."""
    from cdm_bench.distill.validate import scored_rows

    model = spec.report.get("model") or ((spec.validate or {}).get("models") or ["ema"])[0]
    frames = []
    for cell in spec.cells:
        path = cell_dir(root, cell) / "validation.csv"
        if path.is_file():
            v = pd.read_csv(path)
            v = v[v["model"] == model]
            frames.append(v.assign(method=cell.label, setting=cell.setting, seed=cell.seed, run=cell.name,
                                   kind="cell", teacher_sha256=cell_teacher(root, cell)))
    for point in spec.reference:
        rows = scored_rows(reference_dir(root, point))
        if rows:
            v = pd.DataFrame(rows)
            frames.append(v.assign(method=point.label, setting=point.setting, seed=point.seed, run=point.name,
                                   kind="reference", step=0, model="-", entry=v["nfe"].map(lambda n: f"nfe{n}")))
    if not frames:
        return pd.DataFrame(columns=["method", "setting", "entry", "seed", "step", "metric", "value"])
    return pd.concat(frames, ignore_index=True)


def cell_teacher(root: Path, cell) -> str | None:
    """The teacher weights' sha256 the cell's newest checkpoint was distilled from (None: not
    recorded, a checkpoint older than the record, or no checkpoint yet)."""
    from cdm_bench.distill.checkpoint import latest_checkpoint

    last = latest_checkpoint(cell_dir(root, cell))
    meta = last / "meta.json" if last is not None else None
    return json.loads(meta.read_text()).get("teacher_sha256") if meta is not None and meta.is_file() else None


def teacher_lines(spec: SweepSpec, ev: pd.DataFrame) -> list[str]:
    """The report's teacher provenance; refuses cells distilled from different teacher weights
    (one frontier must compare students of one teacher) unless the spec allows it."""
    from cdm_bench.errors import CdmBenchError

    cells = ev[ev["kind"] == "cell"].drop_duplicates("run")
    if cells.empty:
        return []
    groups = {h: sorted(g["run"]) for h, g in cells.fillna({"teacher_sha256": ""}).groupby("teacher_sha256")}
    known = {h: runs for h, runs in groups.items() if h}
    lines = ["Teacher weights (sha256 of the state dict the cells distilled from): "
             + "; ".join(f"`{h[:16]}` ({len(runs)} cells)" for h, runs in known.items()) if known else
             "Teacher weights: not recorded by these cells' checkpoints."]
    if "" in groups:
        lines[0] += f" Not recorded for {len(groups[''])} cells: {', '.join(groups[''][:4])}."
    if len(known) > 1:
        detail = "; ".join(f"{h[:12]}: {', '.join(runs[:3])}{' ...' if len(runs) > 3 else ''}" for h, runs in known.items())
        if not spec.report.get("allow_mixed_teachers"):
            raise CdmBenchError(f"the sweep's cells were distilled from {len(known)} different teacher weights "
                                f"({detail}), so their frontiers are not one comparison; re-run the odd cells on one "
                                f"teacher (move their folders away), or set report: {{allow_mixed_teachers: true}}")
        lines.append(f"**Warning: {len(known)} different teacher weights** ({detail}).")
    return lines + [""]


def directions(ev: pd.DataFrame, metrics: list[str]) -> dict[str, bool]:
    out = {}
    for m in metrics:
        hib = ev.loc[ev["metric"] == m, "higher_is_better"].dropna()
        if hib.empty:
            raise KeyError(f"the sweep's validations hold no {m!r} (metrics: {sorted(set(ev['metric']))})")
        out[m] = bool(hib.iloc[0]) if not isinstance(hib.iloc[0], str) else hib.iloc[0].lower() == "true"
    return out


def tail_wide(ev: pd.DataFrame, metrics: list[str], last: int) -> pd.DataFrame:
    """Each (run, entry)'s last ``last`` validation steps, one column per metric."""
    ev = ev[ev["metric"].isin(metrics)].fillna({"steps": -1, "nfe": -1})
    wide = ev.pivot_table(index=["kind", "run", *KEYS, "seed", "step", "steps", "nfe"], columns="metric",
                          values="value", aggfunc="first").reset_index()
    wide = wide.sort_values("step")
    return wide.groupby(["run", "entry"], sort=False).tail(last)


def frontier_table(spec: SweepSpec, ev: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    rep = spec.report
    x, y = rep.get("x"), rep.get("y")
    if not x or not y:
        raise KeyError("the sweep spec's report block needs x and y (two metric names)")
    dirs = directions(ev, [y, x])
    wide = tail_wide(ev, [x, y], int(rep.get("last", 3)))
    pts = F.points(wide, ["kind", *KEYS, "steps", "nfe"], [y, x], n_boot=int(rep.get("boot", F.N_BOOT)))
    pts["steps_final"] = pts.apply(lambda r: int(wide[(wide["method"] == r["method"]) & (wide["setting"] == r["setting"])
                                                      & (wide["entry"] == r["entry"])]["step"].max()), axis=1)
    return pts, dirs


def panels(pts: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per cell entry: its cells' points plus every reference point."""
    refs = pts[pts["kind"] == "reference"]
    entries = sorted(pts.loc[pts["kind"] == "cell", "entry"].unique(), key=_entry_order)
    return {e: pd.concat([pts[(pts["kind"] == "cell") & (pts["entry"] == e)], refs]) for e in entries}


def _entry_order(label: str):
    digits = "".join(c for c in label.split("-")[0] if c.isdigit())
    return (int(digits) if digits else 0, label)


def _fmt_ci(r, m: str) -> str:
    return f"{r[m]:.4g} [{r[f'{m}_lo']:.4g}, {r[f'{m}_hi']:.4g}]"


def _name(r) -> str:
    return f"{r['method']} {r['setting']} @{r['entry']}"


def markdown(spec: SweepSpec, pts: pd.DataFrame, dirs: dict, ev: pd.DataFrame) -> str:
    y, x = list(dirs)
    need = int(spec.report.get("require_seeds", 1))
    arrow = {True: "↑", False: "↓"}
    lines = [f"# Sweep {spec.name}", "", spec.description or "", "",
             f"Points: mean over seeds of each seed's mean over its last {spec.report.get('last', 3)} validations "
             f"(references: one evaluation per noise seed); 95 % intervals from the two-level bootstrap "
             f"(seeds, then evaluations). {y} {arrow[dirs[y]]}, {x} {arrow[dirs[x]]}.", "",
             *teacher_lines(spec, ev)]
    for entry, p in panels(pts).items():
        front = F.pareto_front(p, dirs)
        dom = {(b["method"], b["setting"], b["entry"]): a for b, a in F.dominance(p, dirs)}
        lines += [f"## {entry}", "", f"| method | setting | steps | NFE | seeds | {y} | {x} | front | dominated by |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for idx, r in p.iterrows():
            a = dom.get((r["method"], r["setting"], r["entry"]))
            lines.append(f"| {r['method']} | {r['setting']} | {r['steps']} | {r['nfe']} | {r['n_seeds']} | "
                         f"{_fmt_ci(r, y)} | {_fmt_ci(r, x)} | {'yes' if idx in front.index else ''} | "
                         f"{_name(a) if a is not None else ''} |")
        short = [f"{_name(r)} ({r['n_seeds']} of {need})" for idx, r in front.iterrows() if r["n_seeds"] < need]
        lines += ["", f"Seed check: every front point has {need} seeds." if not short else
                  f"Seed check: front points with fewer than {need} seeds: " + "; ".join(short) + ".", ""]
    lines += subvalue_sections(ev)
    return "\n".join(lines) + "\n"


def subvalue_sections(ev: pd.DataFrame) -> list[str]:
    """Per metric that stores other values (toy_fid's Fréchet terms, toy_diag's background mix,
    counts, ...): a table of them at each point's last validation, mean over seeds."""
    subs = sorted(m for m in ev["metric"].unique() if "." in m)
    lines = []
    for parent in sorted({m.split(".", 1)[0] for m in subs}):
        cols = [m for m in subs if m.startswith(parent + ".")]
        wide = tail_wide(ev, [parent, *cols] if parent in set(ev["metric"]) else cols, 1)
        have = [c for c in [parent, *cols] if c in wide.columns]
        g = wide.groupby(KEYS, sort=True)[have].mean().reset_index()
        if g.empty:
            continue
        heads = [c.split(".", 1)[-1] if "." in c else c for c in have]
        lines += [f"## {parent}: its values (last validation, mean over seeds)", "",
                  "| method | setting | entry | " + " | ".join(heads) + " |", "|---" * (3 + len(have)) + "|"]
        lines += ["| " + " | ".join([str(r["method"]), str(r["setting"]), str(r["entry"])] + [f"{r[c]:.4g}" for c in have])
                  + " |" for _, r in g.iterrows()]
        lines.append("")
    return lines


def build_report(spec: SweepSpec, root: Path) -> dict[str, Path]:
    from cdm_bench.atomic import atomic_write_text
    from cdm_bench.errors import CdmBenchError
    from cdm_bench.sweep import plots

    ev = evaluations(spec, root)
    if ev.empty:
        raise CdmBenchError(f"no validation scores under {root} yet (run the sweep first: cdm-bench sweep SPEC)")
    teacher_lines(spec, ev)  # refuses mixed teachers before anything is written
    try:
        pts, dirs = frontier_table(spec, ev)
    except KeyError as exc:
        raise CdmBenchError(str(exc.args[0])) from None
    out = Path(root) / "report"
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "frontier.csv", "evaluations": out / "evaluations.csv", "md": out / "frontier.md",
             "png": out / "frontier.png", "convergence": out / "convergence.png", "html": out / "report.html"}
    atomic_write_text(paths["csv"], pts.assign(seeds=pts["seeds"].map(lambda s: " ".join(map(str, s)))).to_csv(index=False))
    atomic_write_text(paths["evaluations"], ev.to_csv(index=False))
    md = markdown(spec, pts, dirs, ev)
    atomic_write_text(paths["md"], md)
    plots.frontier_plot(panels(pts), dirs, paths["png"])
    plots.convergence_plot(ev, list(dirs)[0], paths["convergence"])
    atomic_write_text(paths["html"], html_page(spec, md, paths))
    return paths


def html_page(spec: SweepSpec, md: str, paths: dict) -> str:
    try:
        import markdown as _md  # (installed with tensorboard)

        body = _md.markdown(md, extensions=["tables"])
    except ImportError:
        body = f"<pre>{html.escape(md)}</pre>"
    titles = {"png": "Frontier", "convergence": f"Convergence ({spec.report.get('y')} against the training step)"}
    imgs = "".join(f'<h2>{html.escape(t)}</h2><img alt="{k}" src="data:image/png;base64,'
                   f'{base64.b64encode(paths[k].read_bytes()).decode()}" style="max-width:100%">'
                   for k, t in titles.items() if paths[k].is_file())
    style = "body{font-family:sans-serif;max-width:1200px;margin:2em auto}" \
            "table{border-collapse:collapse;display:block;overflow-x:auto}" \
            "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>sweep {html.escape(spec.name)}</title>" \
           f"<style>{style}</style></head><body>{body}{imgs}</body></html>"


