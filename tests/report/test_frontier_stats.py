"""The frontier statistics (cdm_bench.report.frontier) with known answers: a constant has a
zero-width interval; a shifted copy is dominated; the two-level bootstrap covers the true mean
near 95 % of the time over seeded repetitions; metric names and directions are arbitrary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdm_bench.report import frontier as F


def test_a_constant_has_a_zero_width_interval():
    point, lo, hi = F.hier_bootstrap([np.full((3, 2), [1.5, -2.0]) for _ in range(4)], n_boot=300)
    assert np.array_equal(point, [1.5, -2.0]) and np.array_equal(lo, point) and np.array_equal(hi, point)


def test_one_seed_one_evaluation_is_its_value():
    point, lo, hi = F.hier_bootstrap([np.array([[3.0]])])
    assert point[0] == lo[0] == hi[0] == 3.0


def test_the_point_is_the_mean_of_seed_means_not_of_all_values():
    point, _, _ = F.hier_bootstrap([np.array([[0.0], [0.0], [0.0]]), np.array([[6.0]])], n_boot=50)
    assert point[0] == pytest.approx(3.0)  # not 1.5 (the mean of the four values)


def test_seed_spread_widens_the_interval():
    rng = np.random.default_rng(0)
    same = [rng.normal(0, 0.1, (3, 1)) for _ in range(5)]
    spread = [v + off for v, off in zip(same, [-2, -1, 0, 1, 2])]
    w_same = np.subtract(*F.hier_bootstrap(same)[2:0:-1])[0]
    w_spread = np.subtract(*F.hier_bootstrap(spread)[2:0:-1])[0]
    assert w_spread > 5 * w_same > 0


def test_coverage_near_95_percent():
    """20 seeds x 3 evaluations (seed effect sd 1, evaluation noise sd 0.5): the interval holds
    the true mean in 88-99 % of 200 seeded repetitions (a percentile bootstrap runs a little
    below nominal with few seeds)."""
    rng = np.random.default_rng(123)
    hits = 0
    for rep in range(200):
        per_seed = [(rng.normal(0, 1) + rng.normal(0, 0.5, 3))[:, None] for _ in range(20)]
        _, lo, hi = F.hier_bootstrap(per_seed, n_boot=400, seed=rep)
        hits += lo[0] <= 0.0 <= hi[0]
    assert 0.88 <= hits / 200 <= 0.99


def _frame(rng, shift: dict, method: str, names: list[str]) -> pd.DataFrame:
    rows = []
    for seed in range(3):
        for ev in range(3):
            rows.append({"method": method, "seed": seed, **{n: shift[n] + rng.normal(0, 0.05) for n in names}})
    return pd.DataFrame(rows)


@settings(max_examples=25, deadline=None)
@given(names=st.lists(st.text("abcdefghij_.", min_size=1, max_size=8), min_size=1, max_size=3, unique=True),
       higher=st.lists(st.booleans(), min_size=3, max_size=3), gap=st.floats(1.0, 50.0))
def test_a_shifted_copy_is_dominated_for_any_metrics_and_directions(names, higher, gap):
    dirs = {n: h for n, h in zip(names, higher)}
    rng = np.random.default_rng(0)
    good = _frame(rng, {n: (gap if h else -gap) for n, h in dirs.items()}, "a", names)
    bad = _frame(rng, {n: 0.0 for n in names}, "b", names)
    pts = F.points(pd.concat([good, bad]), ["method"], names, n_boot=300)
    doms = F.dominance(pts, dirs)
    assert [(b["method"], a["method"]) for b, a in doms] == [("b", "a")]
    assert F.pareto_front(pts, dirs)["method"].tolist() == ["a"]
    same = F.points(pd.concat([bad, bad.assign(method="c")]), ["method"], names, n_boot=300)
    assert F.dominance(same, dirs) == []  # equal points: nobody dominates


def test_overlapping_intervals_are_not_dominance_but_the_front_uses_points():
    pts = pd.DataFrame([{"method": "a", "y": 1.0, "y_lo": 0.5, "y_hi": 1.5},
                        {"method": "b", "y": 1.2, "y_lo": 0.7, "y_hi": 1.7}])
    assert F.dominance(pts, {"y": False}) == []
    assert F.pareto_front(pts, {"y": False})["method"].tolist() == ["a"]


def test_points_report_seeds_and_evaluations_and_refuse_missing_columns():
    df = pd.DataFrame({"m": ["x"] * 5, "seed": [0, 0, 0, 1, 1], "v": [1, 2, 3, 4, 6.0]})
    p = F.points(df, ["m"], ["v"], n_boot=100).iloc[0]
    assert (p["n_seeds"], p["evals_per_seed"], p["seeds"], p["v"]) == (2, 2, [0, 1], 3.5)
    with pytest.raises(KeyError, match="not in the frame"):
        F.points(df, ["m"], ["w"])


def test_frechet_terms_sum_to_the_distance_and_split_a_mean_shift():
    from scipy import linalg

    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 4))
    b = rng.normal(size=(400, 4)) @ np.diag([1, 2, 0.5, 1]) + 3
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    mean_term, cov_term = F.frechet_terms(mu1, s1, mu2, s2)
    fid = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert mean_term + cov_term == pytest.approx(fid, rel=1e-9)
    m_only, c_only = F.frechet_terms(mu1, s1, mu1 + 2, s1)
    assert m_only == pytest.approx(16.0) and abs(c_only) < 1e-6
