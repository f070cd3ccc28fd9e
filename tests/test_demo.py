"""The quick demo, end to end (CI's health check): world, students, generate, evaluate, leaderboard."""

import math

import pandas as pd

from cdm_bench.cli import main


def test_quick_demo_end_to_end(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path / "demo"), "--quick"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"leaderboard: {tmp_path / 'demo' / 'leaderboard.csv'}" in out
    df = pd.read_csv(tmp_path / "demo" / "leaderboard.csv")
    assert list(df.columns[:4]) == ["generator", "recipe", "nfe", "cfg"]
    assert {"toy_fid", "toy_align"} <= set(df.columns)
    assert df.loc[0, "recipe"] == "reference"
    assert (df["recipe"] == "teacher").sum() >= 3
    assert {"dmd", "ddmd", "cdm"} <= set(df["recipe"])
    assert (df.loc[df["recipe"].isin(["dmd", "ddmd", "cdm"]), "nfe"] == 4).all()
    assert all(math.isfinite(v) for v in df[["toy_fid", "toy_align"]].to_numpy().ravel())
    for name in ("leaderboard.html", "leaderboard.md", "leaderboard.tex", "leaderboard_long.csv", "demo.json"):
        assert (tmp_path / "demo" / name).stat().st_size > 100
    html = (tmp_path / "demo" / "leaderboard.html").read_text()
    assert html.count('class="chart bar"') == 2 and html.count("img class=\"thumb\"") == len(df) * 6
    assert {"toy_align_ci_low", "toy_align_delta", "toy_align_delta_ci_high"} <= set(df.columns)
    assert "[ok] scorer_accuracy" in out and "[ok] align_above_chance" in out
