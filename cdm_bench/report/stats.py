"""Leaderboard statistics from stored per-image scores (no model, no scorer package).

* :func:`prompt_bootstrap_ci`: a seeded 95 % bootstrap CI of the mean that resamples *prompts*
  (all samples of a prompt together), so correlated samples of one prompt do not shrink it.
* :func:`paired_delta`: the mean difference to a reference generator over the prompts both
  scored, with a paired (same resampled prompts) bootstrap CI and the per-prompt win rate.
* :func:`ranks`: 1 = best, respecting each metric's direction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

N_BOOT = 1000
LEVEL = 0.95


def _per_prompt(scores: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per prompt: the sum and count of finite scores of ``column``."""
    s = scores[["prompt_id", column]].dropna()
    g = s.groupby("prompt_id", sort=True)[column]
    return pd.DataFrame({"sum": g.sum(), "count": g.count()})


def _bootstrap_index(n_prompts: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_prompts, size=(n_boot, n_prompts))


def _interval(stats: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(stats, [50 * (1 - LEVEL), 100 - 50 * (1 - LEVEL)])
    return float(lo), float(hi)


def prompt_bootstrap_ci(scores: pd.DataFrame, column: str, n_boot: int = N_BOOT,
                        seed: int = 0) -> tuple[float, float]:
    """95 % CI of the mean of ``column`` over images, resampling prompts with replacement."""
    per = _per_prompt(scores, column)
    if len(per) < 2:
        return float("nan"), float("nan")
    idx = _bootstrap_index(len(per), n_boot, seed)
    sums, counts = per["sum"].to_numpy()[idx].sum(1), per["count"].to_numpy()[idx].sum(1)
    return _interval(sums / counts)


def paired_delta(scores: pd.DataFrame, reference: pd.DataFrame, column: str, higher_is_better: bool = True,
                 n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """``mean(scores) - mean(reference)`` over the prompts both have, with a paired bootstrap CI
    (the same resampled prompts for both) and the per-prompt win rate (ties count half)."""
    a, b = _per_prompt(scores, column), _per_prompt(reference, column)
    common = a.index.intersection(b.index)
    out = {"delta": float("nan"), "delta_ci_low": float("nan"), "delta_ci_high": float("nan"),
           "win_rate": float("nan"), "paired_prompts": int(len(common))}
    if len(common) == 0:
        return out
    a, b = a.loc[common], b.loc[common]
    mean_a, mean_b = a["sum"] / a["count"], b["sum"] / b["count"]
    out["delta"] = float(a["sum"].sum() / a["count"].sum() - b["sum"].sum() / b["count"].sum())
    better = (mean_a > mean_b) if higher_is_better else (mean_a < mean_b)
    out["win_rate"] = float((better.sum() + 0.5 * (mean_a == mean_b).sum()) / len(common))
    if len(common) >= 2:
        idx = _bootstrap_index(len(common), n_boot, seed)
        da = a["sum"].to_numpy()[idx].sum(1) / a["count"].to_numpy()[idx].sum(1)
        db = b["sum"].to_numpy()[idx].sum(1) / b["count"].to_numpy()[idx].sum(1)
        out["delta_ci_low"], out["delta_ci_high"] = _interval(da - db)
    return out


def ranks(values: pd.Series, higher_is_better: bool) -> pd.Series:
    """1 = best; ties share the best rank; missing values get no rank."""
    return values.rank(ascending=not higher_is_better, method="min")
