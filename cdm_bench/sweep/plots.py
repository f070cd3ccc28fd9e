"""The sweep report's figures (matplotlib, Agg): the frontier per entry and convergence curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def frontier_plot(panels: dict[str, pd.DataFrame], dirs: dict[str, bool], path: Path) -> None:
    """One panel per entry: x against y, a line per method over its settings (a point when it has
    one setting), intervals as error bars; references as dashed lines in every panel."""
    plt = _plt()
    y, x = list(dirs)
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.0), squeeze=False)
    methods = sorted({m for p in panels.values() for m in p["method"]})
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    for ax, (entry, p) in zip(axes[0], panels.items()):
        for (kind, method, curve), g in p.groupby(["kind", "method", p["setting"].map(_curve)], sort=False):
            g = g.sort_values(x)
            err = [np.vstack([(g[m] - g[f"{m}_lo"]).clip(lower=0), (g[f"{m}_hi"] - g[m]).clip(lower=0)]) for m in (x, y)]
            label = method if kind == "cell" else f"{method} {curve}".strip()
            ax.errorbar(g[x], g[y], xerr=err[0], yerr=err[1], marker="o" if kind == "cell" else "s", ms=4,
                        capsize=2, linestyle="-" if len(g) > 1 and kind == "cell" else "--" if len(g) > 1 else "none",
                        color=colours[method] if kind == "cell" else "0.35", label=label, alpha=0.9)
        ax.set_title(entry)
        ax.set_xlabel(f"{x} ({'higher' if dirs[x] else 'lower'} is better)")
        ax.set_ylabel(f"{y} ({'higher' if dirs[y] else 'lower'} is better)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curve(setting: str) -> str:
    """A reference curve is every setting but its last key (e.g. nfe=50 of nfe=50,guidance=3)."""
    parts = setting.split(",")
    return ",".join(parts[:-1]) if len(parts) > 1 else ""


def convergence_plot(ev: pd.DataFrame, metric: str, path: Path) -> None:
    """``metric`` against the training step, one panel per entry, one line per cell."""
    plt = _plt()
    cells = ev[(ev["kind"] == "cell") & (ev["metric"] == metric)]
    entries = sorted(cells["entry"].unique())
    fig, axes = plt.subplots(1, max(1, len(entries)), figsize=(4.6 * max(1, len(entries)), 3.6), squeeze=False)
    methods = sorted(cells["method"].unique())
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    for ax, entry in zip(axes[0], entries):
        for (run, method), g in cells[cells["entry"] == entry].groupby(["run", "method"]):
            g = g.sort_values("step")
            ax.plot(g["step"], g["value"], marker=".", color=colours[method], alpha=0.7, lw=1,
                    label=method if run == cells[cells["method"] == method]["run"].iloc[0] else None)
        ax.set_title(f"{metric} @{entry}")
        ax.set_xlabel("student step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
