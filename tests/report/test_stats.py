"""Prompt-level bootstrap CIs, paired deltas, win rates and ranks."""

import numpy as np
import pandas as pd
import pytest

from cdm_bench.report.stats import paired_delta, prompt_bootstrap_ci, ranks


def _frame(values, samples=1):
    """values: per image, prompts p0.. each with ``samples`` consecutive images."""
    n = len(values)
    return pd.DataFrame({"prompt_id": [f"p{i // samples:04d}" for i in range(n)],
                         "k": [i % samples for i in range(n)], "m": values})


def test_ci_of_a_constant_is_zero_width():
    lo, hi = prompt_bootstrap_ci(_frame(np.full(50, 3.5)), "m")
    assert lo == hi == 3.5


def test_ci_covers_the_true_mean_at_the_nominal_rate():
    covered = 0
    for rep in range(400):
        x = np.random.default_rng(10_000 + rep).normal(2.0, 1.0, 80)  # true mean 2
        lo, hi = prompt_bootstrap_ci(_frame(x), "m", n_boot=500, seed=rep)
        covered += lo <= 2.0 <= hi
    assert 0.93 <= covered / 400 <= 0.97, covered / 400


def test_paired_delta_with_itself_is_zero_with_zero_width():
    f = _frame(np.random.default_rng(0).normal(size=40))
    d = paired_delta(f, f, "m")
    assert d["delta"] == d["delta_ci_low"] == d["delta_ci_high"] == 0.0 and d["win_rate"] == 0.5


def test_paired_delta_sign_and_win_rate_respect_direction():
    rng = np.random.default_rng(1)
    base = rng.normal(size=40)
    better = _frame(base + 1.0)
    d = paired_delta(better, _frame(base), "m", higher_is_better=True)
    assert d["delta"] == pytest.approx(1.0) and d["delta_ci_low"] == pytest.approx(1.0) and d["win_rate"] == 1.0
    assert paired_delta(better, _frame(base), "m", higher_is_better=False)["win_rate"] == 0.0


def test_ranking_respects_direction():
    v = pd.Series([30.0, 10.0, 20.0], index=["a", "b", "c"])
    assert ranks(v, higher_is_better=False).tolist() == [3, 1, 2]  # FID: lower is better
    assert ranks(v, higher_is_better=True).tolist() == [1, 3, 2]


def test_prompt_resampling_keeps_samples_together():
    rng = np.random.default_rng(2)
    prompt_effect = np.repeat(rng.normal(0, 1, 30), 8)  # 8 strongly correlated samples per prompt
    f = _frame(prompt_effect + rng.normal(0, 0.05, 240), samples=8)
    lo, hi = prompt_bootstrap_ci(f, "m")
    naive = _frame(f["m"].to_numpy(), samples=1)  # the same 240 values treated as independent
    nlo, nhi = prompt_bootstrap_ci(naive, "m")
    assert (hi - lo) > 2.0 * (nhi - nlo)
