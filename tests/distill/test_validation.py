"""Validation during training (issue 21) on the world at tiny size: run directories readable by
the leaderboard, validation.csv, TensorBoard scalars and the image grid read back with
TensorBoard's own reader, best/ and export --step best, a drift warning and stop_on_drift,
resume without re-validating, trackers (wandb offline, mlflow file store), a missing tracker
package in one line before any weights load, and train --then SPEC."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distill_helpers import tiny_overrides

from cdm_bench.distill import export, train
from cdm_bench.metric import PerImageMetric
from cdm_bench.registry import METRICS

ROOT = Path(__file__).resolve().parents[2]
TOY_METRICS = [{"name": "toy_fid", "scorer": "tiny"}, {"name": "toy_align", "scorer": "tiny"}]


def validate_block(**extra) -> dict:
    return {"every": 2, "prompts": "toy-small", "limit": 8, "samples_per_prompt": 2, "nfe": [2, 1],
            "metrics": TOY_METRICS, "select": {"metric": "toy_fid", "nfe": 2}, "chunk_size": 4, "bootstrap": 40,
            **extra}


def _train(out, steps=4, **validate):
    return train("dmd", {**tiny_overrides(steps=steps), "validate": validate_block(**validate)}, out)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from cdm_bench.toy.artifacts import get_scorer

    with pytest.MonkeyPatch.context() as mp:  # the session's isolated cache (conftest), as the tests see it
        mp.setenv("CDM_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cdm-bench-cache"))
        get_scorer("tiny")
        out = tmp_path_factory.mktemp("val") / "run"
        _train(out)
    return out


def test_validation_writes_run_dirs_csv_tensorboard_grid_and_best(run, tmp_path):
    steps = sorted(int(p.name[5:]) for p in (run / "validation").glob("step-*"))
    assert steps == [0, 2, 4]
    full = pd.read_csv(run / "validation.csv")
    terms = full[full["metric"].isin(["toy_fid.mean_term", "toy_fid.cov_term"])]
    csv = full[~full.index.isin(terms.index)]
    assert len(csv) == 3 * 2 * 2 and set(csv["metric"]) == {"toy_fid", "toy_align"} and len(terms) == 3 * 2 * 2
    both = terms.pivot_table(index=["step", "entry"], columns="metric", values="value").sum(axis=1)
    fid = csv[csv["metric"] == "toy_fid"].set_index(["step", "entry"])["value"]
    assert np.allclose(both.loc[fid.index], fid, rtol=1e-6)  # the Fréchet terms add up to the distance
    assert set(csv["entry"]) == {"nfe2", "nfe1"} and set(csv["steps"]) == set(csv["nfe"]) == {1, 2}
    assert csv[["value", "ci_low", "ci_high"]].notna().all().all() and (csv["ci_low"] <= csv["ci_high"]).all()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("validation/toy_fid@nfe2")] == [0, 2, 4]
    grids = acc.Images("validation/grid")
    assert [g.step for g in grids] == [0, 2, 4] and (grids[0].height, grids[0].width) == (2 * 32, 8 * 32)
    best = json.loads((run / "best" / "meta.json").read_text())["best"]
    rows = csv[(csv["metric"] == "toy_fid") & (csv["entry"] == "nfe2")]
    assert best["step"] == int(rows.loc[rows["value"].idxmin(), "step"])
    out = export(run, tmp_path / "best-student", step="best")
    assert (out / "generator.yaml").is_file()


def test_the_leaderboard_reads_the_validation_runs_rows_are_steps(run, tmp_path):
    from cdm_bench.leaderboard import write_leaderboard

    paths = write_leaderboard([run / "validation"], tmp_path / "lb")
    wide = pd.read_csv(paths["csv"])
    assert sorted(wide["generator"]) == sorted(f"ema-nfe{n}@{s}" for n in (1, 2) for s in (0, 2, 4))
    html = paths["html"].read_text()
    assert "Quality vs training step" in html and 'class="chart step"' in html


def test_resume_revalidates_nothing_and_ends_with_the_same_csv(run, tmp_path, monkeypatch):
    from cdm_bench.distill import validate

    out = tmp_path / "run"
    calls = []
    real = validate.Validator._generate_and_score

    def dying(self, module, entry, run_dir):
        calls.append(run_dir)
        if "step-000002" in str(run_dir) and entry.steps == 1:
            raise KeyboardInterrupt  # killed in the middle of the step-2 validation
        return real(self, module, entry, run_dir)

    monkeypatch.setattr(validate.Validator, "_generate_and_score", dying)
    with pytest.raises(KeyboardInterrupt):
        _train(out)
    monkeypatch.setattr(validate.Validator, "_generate_and_score",
                        lambda self, m, e, d: calls.append(d) or real(self, m, e, d))
    done0 = (out / "validation" / "step-000000" / "validated.json").stat().st_mtime_ns
    calls.clear()
    train("dmd", {**tiny_overrides(steps=4), "validate": validate_block()}, out, resume=True)
    assert (out / "validation" / "step-000000" / "validated.json").stat().st_mtime_ns == done0
    assert not any("step-000000" in str(c) for c in calls)  # step 0 was validated: not again
    pd.testing.assert_frame_equal(pd.read_csv(out / "validation.csv"), pd.read_csv(run / "validation.csv"))


class Worsening(PerImageMetric):
    """A per-image score that falls at every validation (zero-width intervals): drift."""

    name = "worsening"
    calls = 0

    def setup(self):
        Worsening.calls += 1

    def score(self, images, prompts, meta):
        return np.full(len(prompts), 100.0 - Worsening.calls)


def test_a_worsening_metric_warns_and_stop_on_drift_stops(tmp_path, caplog):
    METRICS.register("worsening", Worsening, overwrite=True)
    Worsening.calls = 0
    with caplog.at_level(logging.WARNING, logger="cdm_bench.distill"):
        final = _train(tmp_path / "run", steps=8, nfe=[2], metrics=["worsening"],
                       select={"metric": "worsening", "nfe": 2}, stop_on_drift=2)
    drift = [r.getMessage() for r in caplog.records if "beyond both 95% intervals" in r.getMessage()]
    assert drift and drift[0] == "worsening@2 fell from 99 at step 0 to 98 at step 2, beyond both 95% intervals"
    assert final.name == "checkpoint-000004"  # stopped after two drifting validations in a row
    assert any("stopping at step 4" in r.getMessage() for r in caplog.records)


def test_trackers_receive_scalars_and_grids(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for tracker in ("wandb", "mlflow"):
        _train(tmp_path / tracker, steps=2, nfe=[2], tracker=tracker, metrics=[TOY_METRICS[1]],
               select={"metric": "toy_align", "nfe": 2})
    offline = next((tmp_path / "wandb" / "wandb").glob("offline-run-*"))  # what `wandb sync` would upload
    assert b"validation/toy_align@nfe2" in next(offline.glob("run-*.wandb")).read_bytes()
    grids = sorted(p.name.split("_")[1] for p in (offline / "files" / "media" / "images" / "validation").glob("grid_*.png"))
    assert grids == ["0", "2"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient((tmp_path / "mlflow" / "mlruns").as_uri())  # read back through mlflow itself
    run, = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "validation/toy_align_nfe2")] == [0, 2]
    assert len([a for a in client.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png")]) == 2


def test_a_missing_tracker_package_is_one_line_before_any_weights_load(tmp_path):
    code = ("import importlib.util, sys; real = importlib.util.find_spec; "
            "importlib.util.find_spec = lambda n, *a: None if n == 'wandb' else real(n, *a); "
            "from cdm_bench.distill import init; init.build_working_copies = lambda *a, **k: sys.exit('loaded weights'); "
            "from cdm_bench.cli.train import main; sys.exit(main(sys.argv[1:]))")
    sets = [x for k, v in {**tiny_overrides(steps=1), "validate": validate_block(tracker="wandb")}.items()
            for x in ("--set", f"{k}={json.dumps(v)}")]
    proc = subprocess.run([sys.executable, "-c", code, "dmd", *sets, "--out", str(tmp_path / "run")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "needs the wandb package" in err[0], proc.stderr[-2000:]


def test_train_then_spec_ends_with_a_leaderboard_beside_the_teacher(tmp_path):
    from cdm_bench.cli.train import main

    spec = tmp_path / "spec.yaml"
    spec.write_text("name: after\ngenerators: [{generator: toy, name: teacher-4, preset: tiny, nfe: 4}]\n"
                    "prompts: [{set: toy-small, limit: 4}]\nmetrics: [{name: toy_align, scorer: tiny}]\n")
    sets = [x for k, v in {**tiny_overrides(steps=2), "validate": validate_block(nfe=[2], metrics=[TOY_METRICS[1]],
                                                                                 select={"metric": "toy_align"})}.items()
            for x in ("--set", f"{k}={json.dumps(v)}")]
    argv = ["dmd", *sets, "--out", str(tmp_path / "run"), "--then", str(spec)]
    assert main(argv) == 0
    wide = pd.read_csv(tmp_path / "run" / "after" / "leaderboard.csv")
    assert "teacher-4" in set(wide["generator"]) and any(g.startswith("dmd-step") for g in wide["generator"])
    before = (tmp_path / "run" / "after" / "leaderboard.csv").read_bytes()
    assert main(argv) == 0  # a finished run: nothing new
    assert (tmp_path / "run" / "after" / "leaderboard.csv").read_bytes() == before


# -- sharded, and on the paper's models -------------------------------------------------------------------
def test_two_process_torchrun_validates_sharded_like_one_process(tmp_path):
    """Step 0 is the same model in both runs (the student starts as the teacher), so its
    validation scores must be equal; 2 processes split the images between them."""
    import os
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    block = validate_block(every=1)
    over = {**tiny_overrides(steps=1), "validate": block}
    sets = [x for k, v in over.items() for x in ("--set", f"{k}={json.dumps(v)}")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "cdm_bench.cli.train", "dmd", *sets, "--out", str(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    train("dmd", over, tmp_path / "one")
    two, one = (pd.read_csv(tmp_path / n / "validation.csv") for n in ("two", "one"))
    pd.testing.assert_frame_equal(two[two["step"] == 0].reset_index(drop=True),
                                  one[one["step"] == 0].reset_index(drop=True))
    ranks = json.loads((tmp_path / "two" / "validation" / "step-000000" / "ema-nfe2" / "generation.json").read_text())
    assert [r["images"] for r in ranks["timing"][-1]["ranks"]] == [8, 8]  # both ranks sampled their half


@pytest.mark.parametrize("recipe", ["sd3_medium/cdm", "longcat/dmd"])
def test_paper_recipes_validate_with_a_real_scorer_architecture(recipe, request, tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "metrics"))
    from clip_fixtures import tiny_clip
    from test_pipeline_recipes import tiny

    model_dir = request.getfixturevalue("tiny_sd3_dir" if recipe.startswith("sd3") else "tiny_longcat_dir")
    clip = tiny_clip(tmp_path / "clip")
    block = {"every": 1, "prompts": "smoke", "limit": 2, "nfe": [2], "metrics": [{"name": "clipscore", "model": str(clip)}],
             "select": {"metric": "clipscore", "nfe": 2}, "batch_size": 2}
    train(recipe, {**tiny(model_dir, steps=2), "validate": block}, tmp_path / "run")
    full = pd.read_csv(tmp_path / "run" / "validation.csv")
    csv = full[full["metric"] == "clipscore"]
    assert csv["step"].tolist() == [0, 1, 2] and csv["value"].notna().all()
    assert set(full["metric"]) == {"clipscore", "clipscore.truncated_prompts"}  # its sub-value, a row of its own
    gen = json.loads((tmp_path / "run" / "validation" / "step-000002" / "ema-nfe2" / "generation.json").read_text())
    assert gen["provenance"]["nfe_measured"] == 2 and (tmp_path / "run" / "best" / "state.pt").is_file()


def test_train_then_killed_in_the_benchmark_resumes(tmp_path):
    """SIGKILL while the spec's teacher row generates (after training and the export); the same
    command again finishes the benchmark without retraining."""
    import os

    spec = tmp_path / "spec.yaml"
    spec.write_text("name: after\ngenerators: [{generator: 'dummy:DummyGenerator', name: teacher-row}]\n"
                    "prompts: [{set: toy-small, limit: 8}]\nmetrics: [{name: toy_align, scorer: tiny}]\n")
    sets = [x for k, v in {**tiny_overrides(steps=2), "validate": validate_block(nfe=[2], metrics=[TOY_METRICS[1]],
                                                                                 select={"metric": "toy_align"})}.items()
            for x in ("--set", f"{k}={json.dumps(v)}")]
    cmd = [sys.executable, "-m", "cdm_bench", "train", "dmd", *sets, "--out", str(tmp_path / "run"), "--then", str(spec)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    killed = subprocess.run(cmd, cwd=ROOT, env={**env, "CDM_TEST_KILL_GEN_AFTER": "3"}, capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -9 and (tmp_path / "run" / "after" / "student" / "generator.yaml").is_file()
    log = (tmp_path / "run" / "log.jsonl").read_text()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "log.jsonl").read_text() == log  # not trained again
    wide = pd.read_csv(tmp_path / "run" / "after" / "leaderboard.csv")
    assert len(wide) == 2 and "teacher-row" in set(wide["generator"])
    assert any(g.startswith("dmd-step") for g in wide["generator"]) and wide["toy_align"].notna().all()
