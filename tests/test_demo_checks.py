"""The full demo's ordering check on synthetic leaderboards (the full demo is too slow for CI)."""

import pandas as pd

from cdm_bench.toy.demo import _order_check


def _boards(fid_best, fid_worst, ci_best, ci_worst):
    rows = [("teacher-50-cfg", "teacher", 100, 1.5, 0.3, fid_best),
            ("teacher-4", "teacher", 4, 1.0, 0.2, 40.0),
            ("teacher-1", "teacher", 1, 1.0, 0.01, fid_worst),
            ("dmd-4", "dmd", 4, 1.0, 0.25, 1.0)]  # students never take part in the teacher ordering
    wide = pd.DataFrame(rows, columns=["generator", "recipe", "nfe", "cfg", "toy_align", "toy_fid"])
    long = pd.DataFrame([("teacher-50-cfg", "toy_align", *ci_best), ("teacher-4", "toy_align", 0.15, 0.25),
                         ("teacher-1", "toy_align", *ci_worst), ("dmd-4", "toy_align", 0.2, 0.3)],
                        columns=["generator", "metric", "ci_low", "ci_high"])
    return wide.set_index("generator"), long


def test_order_check_passes_with_clear_margins():
    res = _order_check(*_boards(34.0, 75.0, (0.26, 0.35), (0.0, 0.02)))
    assert res["ok"], res["detail"]
    assert "teacher-1" in res["detail"]  # the fewest-step teacher row without CFG is the one compared


def test_order_check_fails_on_small_fid_margin():
    assert not _order_check(*_boards(34.0, 40.0, (0.26, 0.35), (0.0, 0.02)))["ok"]  # 18 % < 25 %


def test_order_check_fails_on_overlapping_align_intervals():
    assert not _order_check(*_boards(34.0, 75.0, (0.10, 0.35), (0.0, 0.12)))["ok"]
