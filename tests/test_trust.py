"""Regression tests for the second reliability round (issue 20): each case of its "Why" list,
as a class where one exists (the fuzz suite, tests/test_fuzz.py, generates the inputs)."""

import json
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cdm_bench.cli import main
from cdm_bench.errors import RunConflictError
from cdm_bench.evaluate import evaluate
from cdm_bench.generate import generate, read_records
from cdm_bench.leaderboard import write_leaderboard
from cdm_bench.metric import PerImageMetric, Weights
from cdm_bench.registry import METRICS
from cdm_bench.rundir import RunDir
from trust_helpers import gen, one_line, ps, tree

ROOT = Path(__file__).resolve().parent.parent



class FileWeighted(PerImageMetric):
    """The mean pixel value times the number stored in ``weights_dir/w.bin`` (its weights)."""

    name = "file_weighted"
    version = "1"
    setups = 0

    def __init__(self, device="cpu", dtype="float32", weights_dir: str = ""):
        super().__init__(device, dtype)
        self.weights_dir = weights_dir

    def weights(self):
        return [Weights("file_weighted weights", path=self.weights_dir)]

    def setup(self):
        FileWeighted.setups += 1
        with open(os.path.join(self.weights_dir, "w.bin")) as f:
            self.factor = float(f.read())

    def score(self, images, prompts, meta):
        return np.asarray(images, dtype=np.float64).mean(axis=(1, 2, 3)) * self.factor


class Blocking(PerImageMetric):
    """Waits in setup() until the test lets it go (a slow scorer set-up)."""

    name = "blocking"
    started = threading.Event()
    release = threading.Event()

    def setup(self):
        Blocking.started.set()
        assert Blocking.release.wait(30)

    def score(self, images, prompts, meta):
        return np.asarray(images, dtype=np.float64).mean(axis=(1, 2, 3))


@pytest.fixture(scope="module", autouse=True)
def _register():
    from dummy import MeanValue

    for name, cls in (("mean_value", MeanValue), ("file_weighted", FileWeighted), ("blocking", Blocking)):
        METRICS.register(name, cls, overwrite=True)


# -- silently wrong scores ---------------------------------------------------------------------------------------
def test_evaluate_holds_its_lock_while_a_slow_scorer_loads(tmp_path):
    run = gen(tmp_path / "r")
    Blocking.started.clear()
    Blocking.release.clear()
    done = {}
    t = threading.Thread(target=lambda: done.update(res=evaluate(run, "blocking", out_dir=tmp_path / "res",
                                                                 progress=False)))
    t.start()
    assert Blocking.started.wait(30)
    with pytest.raises(RunConflictError, match="in use by"):  # generate --overwrite cannot touch the images
        gen(run, shade=50, overwrite=True)
    Blocking.release.set()
    t.join(30)
    recs = RunDir(run).read_manifest()
    scores = pd.read_parquet(tmp_path / "res" / "scores.parquet")
    assert list(scores["sha256"]) == [r["sha256"] for r in recs]
    assert np.allclose(scores["blocking"], RunDir(run).load_images(recs).mean(axis=(1, 2, 3)))


def test_an_image_changed_while_it_is_scored_stops_the_metric(tmp_path, monkeypatch):
    run = gen(tmp_path / "r")
    real = RunDir.load_images

    def swap_first(self, records, verify=True):  # a writer that ignored the lock, between check and score
        p = self.image_path(records[0])
        other = RunDir(gen(tmp_path / "o", shade=9)).image_path(records[0])
        p.write_bytes(other.read_bytes())
        return real(self, records, verify)

    monkeypatch.setattr(RunDir, "load_images", swap_first)
    res = evaluate(run, "mean_value", allow_partial=True, progress=False)
    assert res["metrics"]["mean_value"]["status"] == "failed"
    assert "does not match the manifest's sha256" in res["metrics"]["mean_value"]["error"]


# -- identity is content ---------------------------------------------------------------------------------------
def test_replaced_weights_are_a_new_identity_a_new_column_and_no_cached_value(tmp_path):
    w = tmp_path / "weights"
    w.mkdir()
    (w / "w.bin").write_text("1.0")
    a, b = gen(tmp_path / "a"), gen(tmp_path / "b", name="e", shade=9)
    entry = [{"name": "file_weighted", "weights_dir": str(w)}]
    first = evaluate(a, entry, progress=False)["metrics"]["file_weighted"]
    (w / "w.bin").write_text("2.0")  # same path, same size, other content
    second = evaluate(a, entry, progress=False)["metrics"]["file_weighted"]
    assert second["identity"] != first["identity"] and second["value"] == pytest.approx(2 * first["value"])
    evaluate(b, entry, progress=False)
    (w / "w.bin").write_text("3.0")
    evaluate(a, entry, progress=False)
    wide = pd.read_csv(write_leaderboard([a, b], tmp_path / "lb")["csv"])
    cols = [c for c in wide.columns if c.startswith("file_weighted[") and "_" not in c[len("file_weighted"):]]
    assert len(cols) == 2 and wide[cols].notna().sum().tolist() == [1, 1]  # never one column, no cross delta
    assert wide.filter(like="_delta").isna().all().all()


def test_default_and_explicit_options_are_one_identity(tmp_path):
    run = gen(tmp_path / "r")
    a = evaluate(run, "mean_value", progress=False)["metrics"]["mean_value"]["identity"]
    b = evaluate(run, [{"name": "mean_value", "scale": 1.0}], progress=False)["metrics"]["mean_value"]
    assert b["identity"] == a


def test_a_new_display_name_is_the_same_run_and_keeps_its_scores(tmp_path):
    run = gen(tmp_path / "r", name="first")
    evaluate(run, [{"name": "file_weighted", "weights_dir": str(_weights(tmp_path))}], progress=False)
    setups = FileWeighted.setups
    gen(run, name="renamed")
    res = evaluate(run, [{"name": "file_weighted", "weights_dir": str(_weights(tmp_path))}], progress=False)
    assert FileWeighted.setups == setups and res["metrics"]["file_weighted"]["status"] == "ok"  # cached
    long = pd.read_csv(write_leaderboard([run], tmp_path / "lb")["long_csv"])
    assert list(long["generator"]) == ["renamed"] and list(long["status"]) == ["ok"]


def _weights(tmp_path):
    w = tmp_path / "w1"
    if not w.exists():
        w.mkdir()
        (w / "w.bin").write_text("1.0")
    return w


# -- a leaderboard never drops a run ---------------------------------------------------------------------------
@pytest.mark.parametrize("same_spec", [False, True])
def test_runs_sharing_name_seed_and_folder_name_each_get_a_row(tmp_path, same_spec):
    a = gen(tmp_path / "x" / "run")
    b = gen(tmp_path / "y" / "run", **({} if same_spec else {"shade": 7}))
    for r in (a, b):
        evaluate(r, "mean_value", progress=False)
    wide = pd.read_csv(write_leaderboard([a, b], tmp_path / "lb")["csv"])
    assert len(wide) == 2 and wide["generator"].nunique() == 2 and wide["mean_value"].notna().all()
    for path in ("md", "html"):
        text = (tmp_path / "lb" / f"leaderboard.{path}").read_text()
        assert all(g in text for g in wide["generator"])


# -- files cdm-bench never wrote -------------------------------------------------------------------------------
def test_a_failed_start_then_another_run_keeps_the_users_files(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(RuntimeError, match="boom"):
        generate({"generator": "dummy", "name": "d", "fail_on": "prompt 0"}, ps(), out, 1, progress=False)
    (out / "images" / "mine.png").write_bytes(b"user data")
    (out / "notes.txt").write_text("mine")
    generate({"generator": "dummy", "name": "d", "shade": 5}, ps(), out, 1, progress=False)
    assert (out / "images" / "mine.png").read_bytes() == b"user data" and (out / "notes.txt").exists()
    assert len(read_records(out)) == 4


def test_overwrite_deletes_only_what_generate_wrote(tmp_path):
    run = gen(tmp_path / "r")
    (run / "images" / "extra.png").write_bytes(b"user")
    (run / "notes.txt").write_text("user")
    with pytest.raises(RunConflictError, match="different run"):
        gen(run, shade=3)
    gen(run, shade=3, overwrite=True)
    assert (run / "images" / "extra.png").read_bytes() == b"user" and (run / "notes.txt").read_text() == "user"
    assert len(read_records(run)) == 4


def test_a_folder_cdm_bench_did_not_make_is_refused_and_never_emptied(tmp_path):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"jpeg")
    before = tree(mine)
    with pytest.raises(RunConflictError, match="not empty and was not written by cdm-bench"):
        gen(mine)
    assert tree(mine) == before
    (mine / "images").mkdir()
    (mine / "images" / "p0_0.png").write_bytes(b"not ours")  # where the run would write
    with pytest.raises(RunConflictError, match="was not written by cdm-bench but is where this run writes"):
        gen(mine, overwrite=True)
    (mine / "images" / "p0_0.png").unlink()
    gen(mine, overwrite=True)
    assert (mine / "holiday.jpg").read_bytes() == b"jpeg" and len(read_records(mine)) == 4


def test_evaluate_and_leaderboard_never_replace_a_file_they_did_not_write(tmp_path, capsys):
    run = gen(tmp_path / "r")
    out = tmp_path / "res"
    out.mkdir()
    (out / "results.json").write_text('{"hello": 1}')
    for force in ([], ["--force"]):
        code = main(["evaluate", "--images", str(run), "--metrics", "mean_value", "--out", str(out), *force])
        assert "not written by cdm-bench" in one_line(capsys, code)
    assert (out / "results.json").read_text() == '{"hello": 1}'
    evaluate(run, "mean_value", progress=False)
    lb = tmp_path / "lb"
    lb.mkdir()
    (lb / "leaderboard.csv").write_text("my own table")
    assert "not written by cdm-bench" in one_line(capsys, main(["leaderboard", str(run), "--out", str(lb)]))
    assert (lb / "leaderboard.csv").read_text() == "my own table"
    (lb / "leaderboard.csv").unlink()
    assert main(["leaderboard", str(run), "--out", str(lb)]) == 0
    assert main(["leaderboard", str(run), "--out", str(lb)]) == 0  # its own files: replaced
    (lb / "leaderboard.md").write_text("edited by hand")
    capsys.readouterr()
    assert "changed since" in one_line(capsys, main(["leaderboard", str(run), "--out", str(lb)]))


# -- writes outside --out ------------------------------------------------------------------------------------
@pytest.mark.parametrize("instance", ["../../x", "/abs", "a/b", "..", ".hidden", "sha256", "a\nb", "x" * 200])
def test_metric_instance_names_never_become_paths(tmp_path, capsys, instance):
    run = gen(tmp_path / "r")
    before = tree(tmp_path)
    code = main(["evaluate", "--images", str(run), "--metrics", "mean_value", "--metric-options",
                 json.dumps({instance: {}})] if "\n" in instance else
                ["evaluate", "--images", str(run), "--metrics", f"{instance}=mean_value"])
    one_line(capsys, code)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", "..", "-rf", "con"])
def test_generator_display_names_in_a_run_spec_never_become_paths(tmp_path, capsys, name):
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({"prompts": ["smoke"], "metrics": ["mean_value"],
                                "generators": [{"generator": "dummy", "name": name}]}))
    before = tree(tmp_path)
    err = one_line(capsys, main(["run", str(spec), "--out", str(tmp_path / "o")]))
    assert "generator name" in err and ("not safe as a file name" in err or "reserved" in err)
    assert tree(tmp_path) == before
