"""Resumable and sharded scoring: SIGKILL at three points then re-run == an uninterrupted run,
no saved image re-scored; 2 torchrun processes == 1 process."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cdm_bench.evaluate import evaluate
from cdm_bench.generate import generate
from cdm_bench.prompts import PromptSet

TESTS = Path(__file__).resolve().parent.parent
METRICS = "counting=dummy:CountingMetric,set_mean=dummy:SetMean"


def _evaluate_cli(run: Path, log: Path, **kill) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "CDM_TEST_CALL_LOG": str(log), **{k: str(v) for k, v in kill.items()}}
    cmd = [sys.executable, "-m", "cdm_bench", "evaluate", "--images", str(run), "--metrics", METRICS,
           "--batch-size", "8", "--chunk-size", "16"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _saved_keys(run: Path) -> set:
    keys = set()
    for f in (run / "scoring").glob("counting-*/chunk-*.parquet"):
        c = pd.read_parquet(f)
        keys |= {f"{p}_{k}" for p, k in zip(c["prompt_id"], c["k"])}
    return keys


def _lines(path: Path) -> list:
    return path.read_text().split() if path.exists() else []


def test_sigkill_at_three_points_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    ps = PromptSet("many", "1", [{"id": f"p{i:03d}", "prompt": f"prompt {i}"} for i in range(120)])
    ref = generate({"generator": "dummy", "name": "d"}, ps, tmp_path / "ref", 2, batch_size=32, progress=False)
    killed = tmp_path / "killed"
    shutil.copytree(ref, killed)
    monkeypatch.setenv("CDM_TEST_CALL_LOG", str(tmp_path / "ref.log"))
    evaluate(ref, METRICS, batch_size=8, chunk_size=16, progress=False)
    assert len(_lines(tmp_path / "ref.log")) == 240

    kills = [{"CDM_TEST_KILL_AFTER": 40},        # mid chunk 2 of the per-image metric
             {"CDM_TEST_KILL_AFTER": 75},        # a later chunk, in the resumed run
             {"CDM_TEST_KILL_SET_AFTER": 20}]    # in the set-level metric, after the first finished
    logged = []
    for i, kill in enumerate(kills + [{}]):
        saved_before = _saved_keys(killed)
        log = tmp_path / f"run{i}.log"
        proc = _evaluate_cli(killed, log, **kill)
        assert proc.returncode == (-9 if kill else 0), proc.stderr[-2000:]
        scored = _lines(log)
        assert not set(scored) & saved_before, f"run {i} re-scored images whose scores were saved"
        assert len(scored) == len(set(scored))
        logged.append(len(scored))
    assert logged == [40, 80, 144, 0]  # lost per kill: the unfinished chunk only
    a, b = pd.read_parquet(ref / "scores.parquet"), pd.read_parquet(killed / "scores.parquet")
    assert len(b) == 240 and a.equals(b)
    assert (ref / "scores.parquet").read_bytes() == (killed / "scores.parquet").read_bytes()
    import json

    ra, rb = (json.loads((d / "results.json").read_text())["metrics"] for d in (ref, killed))
    for m in ("counting", "set_mean"):
        assert rb[m]["status"] == "ok" and rb[m]["value"] == ra[m]["value"] and rb[m]["values"] == ra[m]["values"]
    assert not (killed / "scoring").exists()


@pytest.mark.dist
def test_two_torchrun_processes_equal_one(tmp_path):
    spec = {"generator": "toy", "preset": "tiny", "nfe": 2, "guidance": 1.0}
    one = generate(spec, "toy-small", tmp_path / "one", samples_per_prompt=2, limit=9, progress=False)
    two = tmp_path / "two"
    shutil.copytree(one, two)
    metrics = [{"name": "toy_align", "scorer": "tiny"}, {"name": "toy_fid", "scorer": "tiny"}]
    res1 = evaluate(one, metrics, batch_size=2, chunk_size=3, progress=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29547",
           "-m", "cdm_bench", "evaluate", "--images", str(two), "--metrics", "toy_align,toy_fid",
           "--metric-options", '{"toy_align": {"scorer": "tiny"}, "toy_fid": {"scorer": "tiny"}}',
           "--batch-size", "2", "--chunk-size", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    res2 = json.loads((two / "results.json").read_text())
    s1, s2 = pd.read_parquet(one / "scores.parquet"), pd.read_parquet(two / "scores.parquet")
    assert len(s2) == 18
    np.testing.assert_allclose(s2["toy_align"], s1["toy_align"], atol=1e-6)
    assert abs(res2["metrics"]["toy_align"]["value"] - res1["metrics"]["toy_align"]["value"]) <= 1e-6
    assert abs(res2["metrics"]["toy_fid"]["value"] - res1["metrics"]["toy_fid"]["value"]) <= 1e-4
    assert res1["metrics"]["toy_fid"]["values"]["n"] == res2["metrics"]["toy_fid"]["values"]["n"] == 18
