"""Paper-style tables: best bold, second best underlined, arrows for directions (Markdown, LaTeX)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def metric_columns(wide: pd.DataFrame, long: pd.DataFrame) -> dict[str, bool]:
    """Metric column -> higher_is_better, in the wide table's order."""
    main = long[long["sub"].fillna("") == ""] if "sub" in long else long
    col = "column" if "column" in main else "metric"
    hib = main.drop_duplicates(col).set_index(col)["higher_is_better"]
    return {c: bool(hib[c]) for c in wide.columns if c in hib.index}


def best_two(values: pd.Series, higher_is_better: bool) -> tuple[set, set]:
    """Row labels holding the best and the second-best value (ties share)."""
    v = values.dropna()
    if v.empty:
        return set(), set()
    order = sorted(v.unique(), reverse=higher_is_better)
    best = set(v.index[v == order[0]])
    second = set(v.index[v == order[1]]) if len(order) > 1 else set()
    return best, second


def _escape_tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"),
                 ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(a, b)
    return text


def latex_table(wide: pd.DataFrame, long: pd.DataFrame, digits: int = 3) -> str:
    """A booktabs table: generator, NFE, one column per metric (↑/↓), best bold, second underlined."""
    metrics = metric_columns(wide, long)
    rows = wide.reset_index(drop=True)
    marks = {m: best_two(rows[m], hib) for m, hib in metrics.items()}
    up, down = r"$\uparrow$", r"$\downarrow$"
    head = ["Generator", "NFE"] + [f"{_escape_tex(m)} {up if hib else down}" for m, hib in metrics.items()]
    lines = [r"\begin{tabular}{l r " + "r " * len(metrics) + "}", r"\toprule", " & ".join(head) + r" \\",
             r"\midrule"]
    for i, row in rows.iterrows():
        cells = [_escape_tex(str(row["generator"])), "" if pd.isna(row["nfe"]) else f"{int(row['nfe'])}"]
        for m in metrics:
            v = row[m]
            cell = "--" if pd.isna(v) else f"{v:.{digits}f}"
            best, second = marks[m]
            cell = rf"\textbf{{{cell}}}" if i in best else rf"\underline{{{cell}}}" if i in second else cell
            cells.append(cell)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def latex_document(table: str) -> str:
    return ("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + table
            + "\\end{document}\n")


def format_ci(value, lo, hi, status=None) -> str:
    if value is None or not np.isfinite(value):
        return status if status in ("failed", "stale") else "—"
    if lo is not None and np.isfinite(lo):
        return f"{value:.4g} [{lo:.3g}, {hi:.3g}]"
    return f"{value:.4g}"
