"""The evaluate phase's metric lifecycle: one model alive at a time, instances, meta, sub-values,
missing dependencies (one line, exit 2, nothing written)."""

import json

import numpy as np
import pandas as pd
import pytest

from cdm_bench.cli import main
from cdm_bench.errors import MissingDependencyError, SpecError
from cdm_bench.evaluate import evaluate
from cdm_bench.generate import generate
from cdm_bench.leaderboard import write_leaderboard
from cdm_bench.prompts import PromptSet
from cdm_bench.registry import METRICS

ROWS = [{"id": f"q{i}", "prompt": f"prompt {i}", "category": "animal" if i % 3 else "text",
         "target": f"word{i}", "question_ids": [i, i + 1]} for i in range(7)]


@pytest.fixture(scope="module", autouse=True)
def _register():
    from dummy import (CountingMetric, MeanValue, NeedsPackage, NeedsWeights, SetMean, TrackedBrightness)

    for cls in (TrackedBrightness, MeanValue, SetMean, NeedsPackage, NeedsWeights, CountingMetric):
        METRICS.register(cls.name, cls, overwrite=True)


@pytest.fixture
def run(tmp_path):
    ps = PromptSet("rich", "1", [dict(r) for r in ROWS])
    return generate({"generator": "dummy", "name": "d"}, ps, tmp_path / "run", 2, progress=False)


def _tree(path):
    return sorted((p.relative_to(path).as_posix(), p.stat().st_mtime_ns) for p in path.rglob("*"))


def test_one_metric_model_alive_at_a_time(run):
    from dummy import Lifecycle

    Lifecycle.clear()
    evaluate(run, ["tracked_brightness", {"name": "set_mean"}], batch_size=3, chunk_size=4, progress=False)
    # set_mean is not instrumented: track it through setup/teardown order of the tracked metric
    assert Lifecycle.max_alive == 1
    assert Lifecycle.events == [("setup", "tracked_brightness"), ("teardown", "tracked_brightness")]


def test_two_tracked_metrics_never_overlap(run, monkeypatch):
    from dummy import Lifecycle, TrackedBrightness

    class Second(TrackedBrightness):
        name = "tracked_second"

    METRICS.register("tracked_second", Second, overwrite=True)
    Lifecycle.clear()
    res = evaluate(run, "tracked_brightness,tracked_second", chunk_size=5, progress=False)
    assert Lifecycle.max_alive == 1
    assert [e for e, _ in Lifecycle.events] == ["setup", "teardown", "setup", "teardown"]
    assert res["metrics"]["tracked_second"]["value"] == pytest.approx(res["metrics"]["tracked_brightness"]["value"])


def test_extra_prompt_fields_reach_every_metric_call(run):
    from dummy import MeanValue

    MeanValue.seen_meta = []
    res = evaluate(run, "mean_value", batch_size=4, progress=False)
    assert len(MeanValue.seen_meta) == 14
    by_id = {r["id"]: r for r in ROWS}
    for m in MeanValue.seen_meta:
        row = by_id[m["prompt_id"]]
        assert (m["category"], m["target"], m["question_ids"]) == (row["category"], row["target"], row["question_ids"])
    # sub-values from aggregate() reach results.json and leaderboard_long.csv
    values = res["metrics"]["mean_value"]["values"]
    assert set(values) == {"category/animal", "category/text"}
    scores = pd.read_parquet(run / "scores.parquet")
    text = scores["prompt_id"].isin([r["id"] for r in ROWS if r["category"] == "text"])
    assert values["category/text"] == pytest.approx(scores.loc[text, "mean_value"].mean())
    paths = write_leaderboard([run], run.parent / "lb")
    long = pd.read_csv(paths["long_csv"], keep_default_na=False)
    sub = long[(long["metric"] == "mean_value") & (long["sub"] == "category/text")]
    assert len(sub) == 1 and sub["mean"].iloc[0] == pytest.approx(values["category/text"])
    assert list(pd.read_csv(paths["csv"]).columns).count("mean_value") == 1  # no sub-value columns


def test_two_configurations_coexist_and_cache_covers_options(run, monkeypatch):
    res = evaluate(run, ["mean_value", {"name": "mean_value", "alias": "mean_x2", "scale": 2.0}], progress=False)
    a, b = res["metrics"]["mean_value"], res["metrics"]["mean_x2"]
    assert b["value"] == pytest.approx(2 * a["value"]) and a["identity"] != b["identity"]
    scores = pd.read_parquet(run / "scores.parquet")
    np.testing.assert_allclose(scores["mean_x2"], 2 * scores["mean_value"])
    from dummy import MeanValue

    calls = []
    monkeypatch.setattr(MeanValue, "score", lambda self, *a: calls.append(1) or np.zeros(len(a[1])))
    evaluate(run, ["mean_value", {"name": "mean_value", "alias": "mean_x2", "scale": 2.0}], progress=False)
    assert calls == []  # both cached
    res = evaluate(run, [{"name": "mean_value", "alias": "mean_x2", "scale": 3.0}], progress=False)
    assert calls and res["metrics"]["mean_x2"]["value"] == 0.0  # option changed: recomputed


def test_set_level_metric_and_chunking(run):
    one = evaluate(run, "set_mean", chunk_size=1000, progress=False)["metrics"]["set_mean"]
    many = evaluate(run, "set_mean", out_dir=run.parent / "other", chunk_size=3,
                    progress=False)["metrics"]["set_mean"]
    scores = evaluate(run, "mean_value", progress=False)
    assert one["value"] == pytest.approx(scores["metrics"]["mean_value"]["value"] ** 2, rel=1e-12)
    assert many["value"] == pytest.approx(one["value"], rel=1e-12) and one["values"]["n"] == 14
    assert not (run / "scoring").exists()  # chunks are merged and removed


def test_duplicate_instance_names_and_bad_options_are_one_line_errors(run):
    with pytest.raises(SpecError, match="used twice"):
        evaluate(run, "mean_value,mean_value", progress=False)
    with pytest.raises(SpecError, match="unknown option"):
        evaluate(run, [{"name": "mean_value", "bogus": 1}], progress=False)


@pytest.mark.parametrize("metric,needle", [
    ("needs_package", ["cdm_bench_no_such_package", "cdm-bench[eval]", "make eval-env"]),
    ("needs_weights", ["cdm-bench-test/needs-weights", "model.safetensors"]),
])
def test_missing_dependency_is_one_line_exit_2_and_writes_nothing(run, tmp_path, capsys, monkeypatch, metric, needle):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    before = _tree(run)
    out = tmp_path / "scores-out"
    code = main(["evaluate", "--images", str(run), "--metrics", f"mean_value,{metric}", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert all(n in err for n in needle), err
    assert _tree(run) == before and not out.exists()
    with pytest.raises(MissingDependencyError):
        evaluate(run, metric, progress=False)
    assert _tree(run) == before


def test_weights_found_in_a_local_path(tmp_path):
    from cdm_bench.metric import Weights

    f = tmp_path / "w.bin"
    assert Weights("w", path=str(f)).locate() is None
    f.write_bytes(b"x")
    assert Weights("w", path=str(f)).locate() == f


def test_metric_options_errors_on_the_command_line(run, capsys):
    for extra in (["--metric-options", "{bad json"], ["--metric-options", '{"other": {}}'],
                  ["--batch-size", "0"]):
        code = main(["evaluate", "--images", str(run), "--metrics", "mean_value", *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
    code = main(["evaluate", "--images", str(run.parent / "typo"), "--metrics", "mean_value"])
    assert code == 2 and not (run.parent / "typo").exists()
    assert json.loads((run / "generation.json").read_text())["generator"]["name"] == "d"
