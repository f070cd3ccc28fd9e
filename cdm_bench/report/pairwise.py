"""Statistics of pairwise verdicts (a judge comparing two generators' images of one prompt).

A verdict table has one row per judged pair: ``prompt_id``, ``a``, ``b`` (the two generators) and
``winner`` (``"a"``, ``"b"`` or ``"tie"``); failed pairs are not verdicts and are left out by the
caller. Intervals resample *prompts* (all of a prompt's pairs together), seeded.

* :func:`win_tie_loss`: the rates of ``a`` against ``b`` with 95 % intervals.
* :func:`bradley_terry`: strengths ``s_i`` (log scale, mean 0) of the model
  ``P(i beats j) = e^{s_i} / (e^{s_i} + e^{s_j})`` fitted by Hunter's MM algorithm, a tie counted
  as half a win for each side; :func:`bradley_terry_ci` adds bootstrap intervals and ranks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LEVEL = 0.95
WINNERS = ("a", "b", "tie")


def _check(verdicts: pd.DataFrame) -> pd.DataFrame:
    missing = {"prompt_id", "a", "b", "winner"} - set(verdicts.columns)
    if missing:
        raise KeyError(f"verdicts need columns prompt_id, a, b, winner; missing {sorted(missing)}")
    bad = sorted(set(verdicts["winner"]) - set(WINNERS))
    if bad:
        raise ValueError(f"winner must be one of {WINNERS}, got {bad}")
    return verdicts


def _prompt_draws(prompts: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, len(prompts), size=(n_boot, len(prompts)))


def win_tie_loss(verdicts: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """Rates of win / tie / loss of ``a`` against ``b`` (all rows one pairing), with intervals."""
    v = _check(verdicts)
    counts = pd.crosstab(v["prompt_id"], v["winner"]).reindex(columns=list(WINNERS), fill_value=0)
    totals = counts.to_numpy(float)
    out = {"pairs": int(totals.sum()), "prompts": len(counts)}
    if not len(counts):
        return {**out, **{f"{k}{s}": float("nan") for k in ("win", "tie", "loss") for s in ("", "_lo", "_hi")}}
    rates = totals.sum(0) / totals.sum()
    idx = _prompt_draws(counts.index.to_numpy(), n_boot, seed)
    boot = totals[idx].sum(1)
    boot = boot / boot.sum(1, keepdims=True)
    alpha = 50 * (1 - LEVEL)
    for name in ("win", "loss", "tie"):
        col = WINNERS.index({"win": "a", "loss": "b", "tie": "tie"}[name])
        lo, hi = np.percentile(boot[:, col], [alpha, 100 - alpha])
        out.update({name: float(rates[col]), f"{name}_lo": float(lo), f"{name}_hi": float(hi)})
    return out


def _wins_matrix(verdicts: pd.DataFrame, names: list[str]) -> np.ndarray:
    """W[i, j]: wins of i over j (a tie: half to each)."""
    pos = {n: i for i, n in enumerate(names)}
    w = np.zeros((len(names), len(names)))
    for a, b, winner in zip(verdicts["a"], verdicts["b"], verdicts["winner"]):
        i, j = pos[a], pos[b]
        if winner == "a":
            w[i, j] += 1
        elif winner == "b":
            w[j, i] += 1
        else:
            w[i, j] += 0.5
            w[j, i] += 0.5
    return w


def bradley_terry(verdicts: pd.DataFrame, iters: int = 10_000, tol: float = 1e-10, prior: float = 0.0) -> pd.Series:
    """Strengths (log scale, mean 0) per generator, sorted strongest first. ``prior``: pseudo-ties
    added between every pair (0: the maximum-likelihood fit; a generator that wins every game then
    gets a very large but finite strength, capped by ``iters``)."""
    v = _check(verdicts)
    names = sorted(set(v["a"]) | set(v["b"]))
    if len(names) < 2:
        raise ValueError("a ranking needs verdicts between at least two generators")
    w = _wins_matrix(v, names) + prior / 2 * (1 - np.eye(len(names)))
    games = w + w.T
    p = np.ones(len(names))
    for _ in range(iters):
        denom = (games / (p[:, None] + p[None, :])).sum(1)
        new = np.where(denom > 0, w.sum(1) / np.where(denom > 0, denom, 1), p)
        new = np.maximum(new, 1e-300)
        new /= np.exp(np.log(new).mean())
        done = np.max(np.abs(np.log(new) - np.log(p))) < tol
        p = new
        if done:
            break
    s = np.log(p)
    return pd.Series(s - s.mean(), index=names, name="strength").sort_values(ascending=False)


def bradley_terry_ci(verdicts: pd.DataFrame, n_boot: int = 200, seed: int = 0, prior: float = 1.0) -> pd.DataFrame:
    """Per generator: strength, 95 % interval over resampled prompts, rank (1 = strongest)."""
    v = _check(verdicts)
    point = bradley_terry(v, prior=prior)
    groups = {p: g for p, g in v.groupby("prompt_id", sort=True)}
    keys = np.array(list(groups))
    draws = []
    for row in _prompt_draws(keys, n_boot, seed):
        sample = pd.concat([groups[keys[i]] for i in row], ignore_index=True)
        draws.append(bradley_terry(sample, iters=2000, prior=prior).reindex(point.index))
    boot = pd.DataFrame(draws)
    alpha = 50 * (1 - LEVEL)
    out = pd.DataFrame({"strength": point, "strength_lo": boot.apply(lambda c: np.nanpercentile(c, alpha)),
                        "strength_hi": boot.apply(lambda c: np.nanpercentile(c, 100 - alpha))})
    out["rank"] = out["strength"].rank(ascending=False, method="min").astype(int)
    return out
