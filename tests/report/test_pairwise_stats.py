"""Pairwise-verdict statistics with known answers: win/tie/loss rates and their intervals, and a
Bradley-Terry ranking (a generator that always wins ranks first; symmetric data gives equal
strengths; known strengths are recovered from simulated verdicts)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdm_bench.report.pairwise import bradley_terry, bradley_terry_ci, win_tie_loss


def _rows(pairs):
    return pd.DataFrame([{"prompt_id": str(i), "a": a, "b": b, "winner": w} for i, (a, b, w) in enumerate(pairs)])


def test_win_tie_loss_rates_and_intervals():
    v = _rows([("s", "t", "a")] * 6 + [("s", "t", "tie")] * 3 + [("s", "t", "b")])
    out = win_tie_loss(v, n_boot=500)
    assert (out["win"], out["tie"], out["loss"], out["pairs"]) == (0.6, 0.3, 0.1, 10)
    assert out["win_lo"] <= 0.6 <= out["win_hi"] and out["win_hi"] - out["win_lo"] > 0.2
    same = win_tie_loss(_rows([("s", "t", "a")] * 8), n_boot=100)
    assert same["win"] == same["win_lo"] == same["win_hi"] == 1.0  # no spread: zero width


def test_a_generator_that_always_wins_ranks_first():
    pairs = [(x, y, "a") for x, y in [("best", "mid"), ("best", "low")] * 5] + \
            [("mid", "low", "a"), ("mid", "low", "b"), ("mid", "low", "a")] * 3
    s = bradley_terry(_rows(pairs))
    assert list(s.index) == ["best", "mid", "low"] and s["best"] > s["mid"] + 5
    ci = bradley_terry_ci(_rows(pairs), n_boot=50)
    assert ci.loc["best", "rank"] == 1 and ci.loc["low", "rank"] == 3


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 6), ties=st.integers(0, 4))
def test_symmetric_data_gives_equal_strengths(n, ties):
    pairs = []
    for x, y in [("a", "b"), ("b", "c"), ("a", "c")]:
        pairs += [(x, y, "a")] * n + [(x, y, "b")] * n + [(x, y, "tie")] * ties
    s = bradley_terry(_rows(pairs))
    assert np.allclose(s.to_numpy(), 0.0, atol=1e-8)


def test_known_strengths_are_recovered():
    rng = np.random.default_rng(0)
    true = {"g0": 1.0, "g1": 0.0, "g2": -1.0}
    names, pairs = list(true), []
    for _ in range(3000):
        i, j = rng.choice(3, 2, replace=False)
        p = 1 / (1 + np.exp(true[names[j]] - true[names[i]]))
        pairs.append((names[i], names[j], "a" if rng.random() < p else "b"))
    s = bradley_terry(_rows(pairs))
    assert s.to_dict() == pytest.approx(true, abs=0.1)


def test_bad_verdicts_are_refused():
    with pytest.raises(ValueError, match="winner must be"):
        bradley_terry(_rows([("a", "b", "A")]))
    with pytest.raises(KeyError, match="missing"):
        win_tie_loss(pd.DataFrame({"a": ["x"]}))
