import os
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from cdm_bench.benchmark import BenchmarkSpec, run_benchmark
from cdm_bench.cli import main
from cdm_bench.generator import SpecError

SPEC = """
name: t
samples_per_prompt: 2
prompts: [{prompts}]
metrics: [dummy:MeanBrightness]
generators:
  - {{generator: "dummy:DummyGenerator", name: plain}}
  - {{generator: "dummy:DummyGenerator", name: shaded, shade: 40, recipe: cdm}}
"""


@pytest.fixture
def spec_file(tmp_path):
    (tmp_path / "p.txt").write_text("a red circle\na blue square\na green cross\n")
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(prompts=tmp_path / "p.txt"))
    return path


def test_run_spec_in_process(spec_file, tmp_path):
    out = run_benchmark(BenchmarkSpec.from_yaml(spec_file), tmp_path / "out", progress=False)
    df = pd.read_csv(out / "leaderboard.csv")
    assert sorted(df["generator"]) == ["plain", "shaded"] and df["brightness"].notna().all()
    assert (out / "runs" / "shaded" / "p@" f"{df['prompts'][0].split('@')[1]}" / "scores.parquet").exists()


def test_run_spec_with_separate_eval_interpreter(spec_file, tmp_path, monkeypatch):
    # the evaluate phase runs in a subprocess: it must find the test doubles on its path
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rc = main(["run", str(spec_file), "--out", str(tmp_path / "o"), "--eval-python", sys.executable])
    assert rc == 0
    assert len(pd.read_csv(tmp_path / "o" / "leaderboard.csv")) == 2


def test_spec_errors(tmp_path):
    with pytest.raises(SpecError, match=r"unknown key\(s\) \['generaters'\]"):
        BenchmarkSpec.from_dict({"generaters": [], "prompts": ["x"], "metrics": ["y"]})
    with pytest.raises(SpecError, match="missing or empty"):
        BenchmarkSpec.from_dict({"generators": ["dummy"], "prompts": [], "metrics": ["y"]})


def test_cli_reports_unknown_names(capsys):
    assert main(["evaluate", "--images", ".", "--metrics", "toy_alignn", "--out", "x"]) in (1, 2)
    assert main(["generate", "--generator", "toyy", "--prompts", "toy-small", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'toy'" in err


def test_metrics_can_go_to_different_interpreters(spec_file, tmp_path, monkeypatch):
    from cdm_bench import benchmark

    calls = []
    monkeypatch.setattr(benchmark, "_evaluate_with", lambda python, run, metrics, spec: calls.append((python, metrics)))
    monkeypatch.setattr(benchmark, "check_eval_python", lambda python: None)  # no such env here
    spec = BenchmarkSpec.from_yaml(spec_file)
    spec.metrics = ["dummy:MeanBrightness", {"name": "dummy:MeanBrightness", "alias": "b2", "eval_python": "/env/bin/python"}]
    run_benchmark(spec, tmp_path / "out", progress=False)
    assert calls and all(p == "/env/bin/python" and m == [{"name": "dummy:MeanBrightness", "alias": "b2"}]
                         for p, m in calls)
    df = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    assert "brightness" in df.columns  # the in-process group was scored here


def test_dry_run_lists_the_plan_and_loads_nothing(tmp_path, monkeypatch, capsys):
    from cdm_bench.metric import Metric

    monkeypatch.setattr(Metric, "setup", lambda self: (_ for _ in ()).throw(AssertionError("loaded weights")))
    spec = tmp_path / "paper.yaml"
    spec.write_text(
        "name: paper\nsamples_per_prompt: 2\n"
        "generators:\n  - {generator: diffusers, name: big, model: org/some-model, nfe: 4, guidance: 1.0}\n"
        "  - {generator: toy, name: toy-4, preset: tiny, nfe: 4}\n"
        "prompts:\n  - {set: partiprompts, metrics: [clipscore, {name: toy_align, scorer: tiny, eval_python: /env/bin/python}]}\n"
        "  - {set: toy-small}\n")
    assert main(["run", "--dry-run", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "4 generator x prompt-set runs" in out and str(2 * 2 * (1632 + 32)) + " images" in out
    assert "partiprompts@v1" in out and "3264" in out and "data missing" in out
    assert "/env/bin/python" in out and "cdm-bench[eval] / make eval-env" in out
    assert "no: eval_python /env/bin/python: no such interpreter" in out  # not "yes" for a missing interpreter
    assert main(["run", "--dry-run", "toy-world"]) == 0  # a name under recipes/benchmarks
    assert "toy-world" in capsys.readouterr().out
    assert main(["ls", "benchmarks"]) == 0 and "toy-world" in capsys.readouterr().out


def test_the_paper_specs_validate(capsys):
    for name, runs in (("sd3-medium-paper", 20), ("longcat-image-paper", 8)):  # SD3: + the 3 public baselines
        assert main(["run", "--dry-run", name]) == 0
        out = capsys.readouterr().out
        assert f"{runs} generator x prompt-set runs" in out
        if name == "sd3-medium-paper":
            assert all(f"| {g}" in out for g in ("sd3-hypersd-8-cfg5", "sd3-tdm-4", "sd3-flash-4"))
        for metric in ("imagereward", "clipscore", "pickscore", "hpsv2", "hpsv3", "aesthetic", "ocr", "dpgbench", "fid"):
            assert f"| {metric}" in out, metric
        assert ".venv-hpsv3/bin/python" in out and "pickapic@" in out and re.search(r"\|\s+1065 \|", out)
        assert "coco2014-paper@reference-9986" in out and re.search(r"\|\s+9986 \|", out)
