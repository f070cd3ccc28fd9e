"""Fault injection: generate and evaluate killed with SIGKILL at random points (1 and 2
processes, and the torchrun launcher alone), and a full disk on every kind of write; each
then resumed ends with exactly the PNGs and scores of an uninterrupted run."""

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cdm_bench import rundir
from cdm_bench.evaluate import evaluate
from cdm_bench.generate import generate, read_records
from cdm_bench.prompts import PromptSet
from cdm_bench.registry import METRICS

TESTS = Path(__file__).resolve().parent
N_PROMPTS, SAMPLES = 30, 2
SPEC = {"generator": "dummy:DummyGenerator", "name": "d"}


@pytest.fixture(scope="module", autouse=True)
def _register():
    from dummy import MeanValue, SetMean

    METRICS.register("mean_value", MeanValue, overwrite=True)
    METRICS.register("set_mean", SetMean, overwrite=True)


def _prompt_file(tmp_path) -> Path:
    f = tmp_path / "prompts.txt"
    f.write_text("".join(f"prompt number {i}\n" for i in range(N_PROMPTS)))
    return f


def _env(**extra):
    return {**os.environ, "PYTHONPATH": str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            **{k: str(v) for k, v in extra.items()}}


def _gen_cmd(prompts, out, nproc, port):
    spec = Path(out).parent / "spec.yaml"
    spec.write_text('generator: "dummy:DummyGenerator"\nname: d\n')
    head = [sys.executable, "-m", "cdm_bench"] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(port),
        "-m", "cdm_bench"]
    return head + ["generate", "--generator", str(spec), "--prompts", str(prompts), "--out", str(out),
                   "--samples-per-prompt", str(SAMPLES), "--batch-size", "4"]


def _state(run: Path) -> dict:
    """Every PNG's sha256 and the manifest's records (what a finished run must hold)."""
    pngs = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((run / "images").glob("*.png"))}
    recs = sorted((r["prompt_id"], r["k"], r["sha256"]) for r in rundir.RunDir(run).read_manifest())
    return {"pngs": pngs, "records": recs}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    prompts = _prompt_file(tmp)
    out = tmp / "run"
    proc = subprocess.run(_gen_cmd(prompts, out, 1, 0), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = _state(out)
    assert len(state["pngs"]) == N_PROMPTS * SAMPLES == len(state["records"])
    return prompts, state


@pytest.mark.dist
@pytest.mark.parametrize("nproc,seed", [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1)])
def test_generate_sigkill_at_random_points_then_resume(tmp_path, reference, nproc, seed):
    prompts, ref = reference
    out = tmp_path / "run"
    rng = np.random.default_rng(seed)
    # images made by the killed process before SIGKILL; with 2 ranks one kill (a rank's share may
    # be done before a second kill point is reached)
    for kill_at in rng.integers(2, 20 if nproc == 1 else 14, size=3 - nproc):
        kill = {"CDM_TEST_KILL_GEN_AFTER": kill_at}
        if nproc > 1:
            kill["CDM_TEST_KILL_RANK"] = int(rng.integers(0, nproc))
        proc = subprocess.run(_gen_cmd(prompts, out, nproc, 29700 + seed), env=_env(**kill),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0
    proc = subprocess.run(_gen_cmd(prompts, out, nproc, 29700 + seed), env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _state(out) == ref
    assert not list(out.rglob("*.tmp")) and not (out / "parts").exists()


@pytest.mark.dist
def test_killing_only_the_torchrun_launcher_stops_its_workers(tmp_path, reference):
    prompts, ref = reference
    out = tmp_path / "run"
    launcher = subprocess.Popen(_gen_cmd(prompts, out, 2, 29741), env=_env(CDM_TEST_GEN_SLEEP=0.3),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "images").glob("*.png"))) < 8:
        time.sleep(0.1)
    workers = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
    assert workers, "no torchrun workers found"
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    time.sleep(2)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()
             and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]]
    assert not alive, f"workers {alive} outlived their launcher"
    count = len(list((out / "images").glob("*.png")))
    time.sleep(1)
    assert len(list((out / "images").glob("*.png"))) == count  # nobody writes any more
    proc = subprocess.run(_gen_cmd(prompts, out, 2, 29742), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _state(out) == ref


# -- full disk ---------------------------------------------------------------------------------------------
class DiskFull:
    """Patch ``target.attr`` so that its ``at``-th call fails with ENOSPC (a part append writes
    half its line first, as a full disk does)."""

    def __init__(self, monkeypatch, target, attr, at, partial=False):
        self.calls, self.at, self.partial = 0, at, partial
        original = getattr(target, attr)

        def failing(*args, **kwargs):
            self.calls += 1
            if self.calls == self.at:
                if self.partial:  # append_record(fh, record)
                    args[0].write(str(args[1])[:20])
                    args[0].flush()
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(*args, **kwargs)

        monkeypatch.setattr(target, attr, failing)


def _ps():
    return PromptSet("t", "1", [{"id": f"p{i:02d}", "prompt": f"prompt number {i}"} for i in range(12)])


import cdm_bench.generate as gen_module  # noqa: E402
import cdm_bench.eval_chunks as eval_chunks  # noqa: E402  (where evaluate writes its chunk files)

GEN_WRITES = [("png", rundir.RunDir, "write_png", 5, False), ("part record", gen_module, "append_record", 7, True),
              ("manifest", rundir.RunDir, "write_manifest", 1, False)]
EVAL_WRITES = [("chunk", eval_chunks, "atomic_write_bytes", 2, False),
               ("scores", rundir.RunDir, "write_scores", 2, False),
               ("results", rundir.RunDir, "write_results", 2, False)]


@pytest.mark.parametrize("kind,target,attr,at,partial", GEN_WRITES, ids=[w[0] for w in GEN_WRITES])
def test_generate_disk_full_then_resume(tmp_path, monkeypatch, kind, target, attr, at, partial):
    ref = generate({"generator": "dummy", "name": "d"}, _ps(), tmp_path / "ref", 2, batch_size=3, progress=False)
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        full = DiskFull(m, target, attr, at, partial)
        with pytest.raises(OSError, match="No space"):
            generate({"generator": "dummy", "name": "d"}, _ps(), out, 2, batch_size=3, progress=False)
        assert full.calls >= at
    generate({"generator": "dummy", "name": "d"}, _ps(), out, 2, batch_size=3, progress=False)  # space freed
    assert _state(out) == _state(ref) and not list(out.rglob(".*.tmp"))


@pytest.mark.parametrize("kind,target,attr,at,partial", EVAL_WRITES, ids=[w[0] for w in EVAL_WRITES])
def test_evaluate_disk_full_then_resume(tmp_path, monkeypatch, kind, target, attr, at, partial):
    import cdm_bench.evaluate as ev

    ref = generate({"generator": "dummy", "name": "d"}, _ps(), tmp_path / "ref", 2, progress=False)
    run = tmp_path / "run"
    import shutil

    shutil.copytree(ref, run)
    metrics = "mean_value,set_mean"
    evaluate(ref, metrics, chunk_size=5, batch_size=2, progress=False)
    with monkeypatch.context() as m:
        full = DiskFull(m, target or ev, attr, at, partial)
        with pytest.raises(Exception, match="No space|failed"):
            evaluate(run, metrics, chunk_size=5, batch_size=2, progress=False)
        assert full.calls >= at  # the full disk was hit
    evaluate(run, metrics, chunk_size=5, batch_size=2, progress=False)
    a, b = pd.read_parquet(ref / "scores.parquet"), pd.read_parquet(run / "scores.parquet")
    assert a.equals(b)
    import json

    ra, rb = (json.loads((d / "results.json").read_text())["metrics"] for d in (ref, run))
    assert {k: (v["status"], v["value"]) for k, v in ra.items()} == {k: (v["status"], v["value"]) for k, v in rb.items()}
    assert not list(run.rglob(".*.tmp")) and not (run / "scoring").exists()
    assert len(read_records(run)) == 24


@pytest.mark.dist
@pytest.mark.parametrize("nproc,seed", [(1, 0), (1, 1), (2, 0), (2, 1)])
def test_evaluate_sigkill_at_random_points_then_resume(tmp_path, nproc, seed):
    import json
    import shutil

    ref = generate({"generator": "dummy", "name": "d"}, _ps(), tmp_path / "ref", 10, batch_size=40, progress=False)
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    metrics = "counting=dummy:CountingMetric,set_mean=dummy:SetMean"
    head = [sys.executable, "-m", "cdm_bench"] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29760 + seed),
        "-m", "cdm_bench"]
    args = ["evaluate", "--metrics", metrics, "--batch-size", "4", "--chunk-size", "8"]
    rng = np.random.default_rng(seed)
    env = _env(CDM_TEST_CALL_LOG=tmp_path / "calls.log")
    for d in (ref, run):  # the reference in one uninterrupted process
        if d == run:
            for attempt in range(2):
                kill = ({"CDM_TEST_KILL_AFTER": int(rng.integers(1, 40))} if rng.random() < 0.7
                        else {"CDM_TEST_KILL_SET_AFTER": int(rng.integers(1, 20))})
                kill["CDM_TEST_KILL_RANK"] = int(rng.integers(0, nproc))
                proc = subprocess.run(head + args + ["--images", str(run)], env={**env, **{k: str(v) for k, v in kill.items()}},
                                      capture_output=True, text=True, timeout=300)
                assert attempt or proc.returncode != 0, "the first run must have been killed"
        proc = subprocess.run((head if d == run else [sys.executable, "-m", "cdm_bench"]) + args + ["--images", str(d)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = pd.read_parquet(ref / "scores.parquet"), pd.read_parquet(run / "scores.parquet")
    assert len(b) == 120 and a.equals(b)
    ra, rb = (json.loads((d / "results.json").read_text())["metrics"] for d in (ref, run))
    for m in ("counting", "set_mean"):
        assert rb[m]["value"] == ra[m]["value"] and rb[m]["values"] == ra[m]["values"]
