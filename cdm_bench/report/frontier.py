"""Method-vs-method statistics over sweeps: generic over metric names and directions.

A *point* is one setting of a method (e.g. one guidance value) at one NFE, trained with several
seeds and evaluated several times per seed (its last validations). For a metric:

* :func:`hier_bootstrap`: the point estimate is the mean over seeds of each seed's mean; the
  95 % interval is the percentile interval of a two-level bootstrap (seeds with replacement,
  then each drawn seed's evaluations with replacement), so it holds both the seed-to-seed and
  the within-run evaluation noise. Every metric of a point uses the same draws.
* :func:`points`: one row per (group keys) with ``<metric>``, ``<metric>_lo``, ``<metric>_hi``,
  the seeds found and the evaluations per seed.
* :func:`dominates` / :func:`dominance`: point *a* dominates *b* beyond the intervals when on
  every metric *a*'s interval lies entirely on the better side of *b*'s (directions given per
  metric); :func:`dominance` pairs each dominated point with its dominator of another method.
* :func:`pareto_front`: the points no other point beats on every metric (point estimates).
* :func:`frechet_terms`: the split of a Fréchet distance into its mean and covariance terms.

No method names appear here: callers say which column is the method and which metrics count.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cdm_bench.frechet import frechet_terms  # noqa: F401  (re-exported: the split is part of the report's statistics)

N_BOOT = 2000
LEVEL = 0.95


def hier_bootstrap(per_seed: list[np.ndarray], n_boot: int = N_BOOT, seed: int = 0,
                   level: float = LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``per_seed``: one ``(n_i, k)`` array of evaluation values per seed -> ``(point, lo, hi)``,
    each ``(k,)``. One seed with one evaluation gives a zero-width interval at its value."""
    if not per_seed:
        raise ValueError("hier_bootstrap needs at least one seed's values")
    per_seed = [np.asarray(v, dtype=float).reshape(len(v), -1) for v in per_seed]
    if any(len(v) == 0 for v in per_seed) or len({v.shape[1] for v in per_seed}) != 1:
        raise ValueError("every seed needs >= 1 evaluation of the same metrics")
    rng = np.random.default_rng(seed)
    n_seeds, k = len(per_seed), per_seed[0].shape[1]
    point = np.mean([v.mean(0) for v in per_seed], axis=0)
    draws = rng.integers(n_seeds, size=(n_boot, n_seeds))  # which seed fills each slot
    total = np.zeros((n_boot, k))
    for j, vals in enumerate(per_seed):
        hits = (draws == j).sum(1)  # how many slots of each replicate drew seed j
        for times in np.unique(hits[hits > 0]):
            rows = np.flatnonzero(hits == times)
            pick = rng.integers(len(vals), size=(rows.size, int(times), len(vals)))
            total[rows] += vals[pick].mean(2).sum(1)
    est = total / n_seeds
    alpha = (1 - level) / 2
    return point, np.quantile(est, alpha, axis=0), np.quantile(est, 1 - alpha, axis=0)


def points(frame: pd.DataFrame, keys: list[str], metrics: list[str], seed_col: str = "seed",
           n_boot: int = N_BOOT, boot_seed: int = 0) -> pd.DataFrame:
    """``frame``: one row per (keys, seed, evaluation) with a column per metric (the evaluations
    to average, e.g. each seed's last N validations). Rows with a missing metric are dropped."""
    missing = [c for c in [*keys, seed_col, *metrics] if c not in frame.columns]
    if missing:
        raise KeyError(f"points: columns {missing} are not in the frame")
    out = []
    clean = frame.dropna(subset=metrics)
    for key, grp in clean.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        per_seed = [s[metrics].to_numpy(float) for _, s in grp.groupby(seed_col, sort=True)]
        point, lo, hi = hier_bootstrap(per_seed, n_boot, boot_seed)
        row = dict(zip(keys, key))
        row.update(seeds=sorted(grp[seed_col].unique().tolist()), n_seeds=len(per_seed),
                   evals_per_seed=min(len(v) for v in per_seed))
        for m, p, a, b in zip(metrics, point, lo, hi):
            row.update({m: float(p), f"{m}_lo": float(a), f"{m}_hi": float(b)})
        out.append(row)
    cols = [*keys, "seeds", "n_seeds", "evals_per_seed"] + [f"{m}{s}" for m in metrics for s in ("", "_lo", "_hi")]
    return pd.DataFrame(out, columns=cols)


def dominates(a, b, directions: dict[str, bool]) -> bool:
    """``a`` better than ``b`` on every metric beyond both intervals (``directions``: metric ->
    higher is better)."""
    for m, higher in directions.items():
        better = a[f"{m}_lo"] > b[f"{m}_hi"] if higher else a[f"{m}_hi"] < b[f"{m}_lo"]
        if not better:
            return False
    return True


def dominance(pts: pd.DataFrame, directions: dict[str, bool], method_col: str = "method") -> list[tuple]:
    """``(dominated row, dominating row)`` for each point some other method's point dominates
    beyond the intervals; the dominator is the one best on the first metric."""
    first, higher = next(iter(directions.items()))
    rows = [r for _, r in pts.iterrows()]
    out = []
    for b in rows:
        doms = [a for a in rows if a[method_col] != b[method_col] and dominates(a, b, directions)]
        if doms:
            best = max(doms, key=lambda a: a[first]) if higher else min(doms, key=lambda a: a[first])
            out.append((b, best))
    return out


def pareto_front(pts: pd.DataFrame, directions: dict[str, bool]) -> pd.DataFrame:
    """The rows no other row is at least as good as on every metric and better on one."""
    signs = np.array([1.0 if h else -1.0 for h in directions.values()])
    vals = pts[list(directions)].to_numpy(float) * signs  # larger is better on every column
    keep = []
    for i, v in enumerate(vals):
        others = np.delete(vals, i, axis=0)
        beaten = np.any(np.all(others >= v, axis=1) & np.any(others > v, axis=1)) if len(others) else False
        keep.append(not beaten)
    return pts[np.array(keep, dtype=bool)] if len(pts) else pts
