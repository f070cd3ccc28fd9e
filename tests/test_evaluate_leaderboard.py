import json

import numpy as np
import pandas as pd
import pytest

from cdm_bench.evaluate import EvaluationInputError, MetricFailedError, evaluate
from cdm_bench.generate import generate
from cdm_bench.leaderboard import bootstrap_ci, write_leaderboard
from cdm_bench.prompts import PromptSet


def _ps(n=6):
    return PromptSet("t", "1", [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(n)])


@pytest.fixture
def two_runs(tmp_path):
    a = generate({"generator": "dummy", "name": "dark"}, _ps(), tmp_path / "a", 2, progress=False)
    b = generate({"generator": "dummy", "name": "bright", "shade": 50, "recipe": "cdm"}, _ps(), tmp_path / "b", 2,
                 progress=False)
    return a, b


def test_per_image_scores_and_results(two_runs):
    a, _ = two_runs
    res = evaluate(a, "brightness", batch_size=5, progress=False)
    scores = pd.read_parquet(a / "scores.parquet")
    assert len(scores) == 12 and scores["brightness"].notna().all()
    assert res["metrics"]["brightness"]["value"] == pytest.approx(scores["brightness"].mean())
    assert res["metrics"]["brightness"]["version"] == "1" and res["metrics"]["brightness"]["higher_is_better"]
    on_disk = json.loads((a / "results.json").read_text())
    assert on_disk["generation"]["generator"]["name"] == "dark"


def test_scores_are_cached_by_image_hash_and_version(two_runs, monkeypatch):
    a, _ = two_runs
    evaluate(a, "brightness", progress=False)
    from dummy import MeanBrightness

    monkeypatch.setattr(MeanBrightness, "score", lambda *a: (_ for _ in ()).throw(AssertionError("recomputed")))
    evaluate(a, "brightness", progress=False)  # cache hit
    monkeypatch.setattr(MeanBrightness, "version", "2")
    with pytest.raises(MetricFailedError):
        evaluate(a, "brightness", progress=False)  # new version -> recomputed (and here it fails)


def test_failed_metric_fails_loudly_and_keeps_other_scores(two_runs):
    a, _ = two_runs
    with pytest.raises(MetricFailedError, match="exploding: ValueError: scorer weights missing"):
        evaluate(a, "brightness,exploding", progress=False)
    res = evaluate(a, "brightness,exploding", allow_partial=True, progress=False)
    assert res["metrics"]["exploding"]["status"] == "failed"
    assert np.isnan(res["metrics"]["exploding"]["value"])
    assert res["metrics"]["brightness"]["status"] == "ok"


def test_corrupt_or_missing_png_names_the_file(two_runs):
    a, _ = two_runs
    evaluate(a, "brightness", progress=False)
    before = (a / "scores.parquet").read_bytes()
    (a / "images" / "p2_1.png").write_bytes(b"not a png")
    with pytest.raises(EvaluationInputError, match="p2_1.png"):
        evaluate(a, "brightness", force=True, progress=False)
    (a / "images" / "p4_0.png").unlink()
    with pytest.raises(EvaluationInputError, match=r"p4_0.png: missing"):
        evaluate(a, "brightness", force=True, progress=False)
    assert (a / "scores.parquet").read_bytes() == before  # nothing lost


def test_unfinished_generation_is_refused(tmp_path):
    (tmp_path / "g").mkdir()
    with pytest.raises(EvaluationInputError, match="no manifest"):
        evaluate(tmp_path / "g", "brightness", progress=False)


def test_leaderboard_contract(two_runs, tmp_path):
    a, b = two_runs
    for d in two_runs:
        evaluate(d, "brightness", progress=False)
    paths = write_leaderboard([tmp_path], tmp_path / "lb")
    df = pd.read_csv(paths["csv"])
    assert list(df.columns[:5]) == ["generator", "recipe", "nfe", "cfg", "brightness"]
    assert set(df["generator"]) == {"dark", "bright"} and len(df) == 2
    bright = df.set_index("generator").loc["bright"]
    assert bright["recipe"] == "cdm" and bright["nfe"] == 1
    assert bright["brightness"] > df.set_index("generator").loc["dark", "brightness"]
    md = paths["md"].read_text()
    assert "brightness@1 ↑" in md and "[" in md  # version, direction, CI
    assert "<table" in paths["html"].read_text()
    long = pd.read_csv(paths["long_csv"])
    assert {"metric", "version", "higher_is_better", "mean", "ci_low", "ci_high", "n"} <= set(long.columns)


def test_bootstrap_ci_brackets_the_mean():
    x = np.random.default_rng(0).normal(5.0, 1.0, 400)
    lo, hi = bootstrap_ci(x)
    assert lo < x.mean() < hi and hi - lo == pytest.approx(2 * 1.96 / 20, rel=0.2)


def test_paired_deltas_win_rates_and_filters(two_runs, tmp_path):
    for d in two_runs:
        evaluate(d, "brightness", progress=False)
    paths = write_leaderboard([tmp_path], tmp_path / "lb", reference="dark")
    wide = pd.read_csv(paths["csv"]).set_index("generator")
    assert wide.loc["dark", "brightness_delta"] == 0 and wide.loc["dark", "brightness_delta_ci_low"] == 0
    assert wide.loc["bright", "brightness_delta"] > 0 and wide.loc["bright", "brightness_delta_ci_low"] > 0
    assert wide.loc["bright", "brightness_ci_low"] < wide.loc["bright", "brightness"] < wide.loc["bright", "brightness_ci_high"]
    long = pd.read_csv(paths["long_csv"], keep_default_na=False).set_index("generator")
    assert long.loc["bright", "win_rate"] == 1.0 and long.loc["bright", "rank"] == 1 and long.loc["dark", "rank"] == 2
    assert long.loc["bright", "reference"] == "dark"
    from cdm_bench.cli import main

    assert main(["leaderboard", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "lb2"),
                 "--generators", "bright"]) == 0
    assert pd.read_csv(tmp_path / "lb2" / "leaderboard.csv")["generator"].tolist() == ["bright"]
    assert main(["leaderboard", str(tmp_path), "--out", str(tmp_path / "lb3"), "--reference", "nobody"]) == 2


def test_markdown_marks_best_and_shows_truncation(two_runs, tmp_path):
    import json

    for d in two_runs:
        evaluate(d, "brightness", progress=False)
    res = json.loads((two_runs[1] / "results.json").read_text())
    res["metrics"]["brightness"]["values"] = {"truncated_prompts": 3.0}
    (two_runs[1] / "results.json").write_text(json.dumps(res))
    md = write_leaderboard([tmp_path], tmp_path / "lb")["md"].read_text()
    bright = next(ln for ln in md.splitlines() if ln.startswith("| bright"))
    assert "**" in bright and "(3 prompts truncated)" in bright
