"""Input workers: decode, sha256 check and each scorer's own preprocessing in DataLoader worker
processes give exactly the scores of the in-process path (0 workers), for the toy metrics, a
tiny CLIP family and a tiny HPSv2; a corrupt image found by a worker stops the metric in one line."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cdm_bench.evaluate import evaluate
from cdm_bench.generate import generate
from cdm_bench.prompts import PromptSet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "metrics"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    ps = PromptSet("p", "1", [{"id": f"p{i}", "prompt": f"a red circle and a blue square number {i}"}
                              for i in range(10)])
    return generate({"generator": "dummy", "name": "d", "size": 40}, ps, tmp_path_factory.mktemp("w") / "r", 2,
                    progress=False)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from clip_fixtures import tiny_clip

    return tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def hps(tmp_path_factory):
    pytest.importorskip("hpsv2")
    import torch
    from test_hpsv2 import TINY

    from metrics._compat_torchvision import ensure_torchvision

    ensure_torchvision()
    from hpsv2.src.open_clip import add_model_config, create_model_and_transforms

    d = tmp_path_factory.mktemp("hps")
    (d / "tiny-hps-w.json").write_text(json.dumps(TINY))
    add_model_config(str(d / "tiny-hps-w.json"))
    torch.manual_seed(0)
    model = create_model_and_transforms("tiny-hps-w", None, precision="fp32", device="cpu", output_dict=True)[0]
    torch.save({"state_dict": model.state_dict()}, d / "HPS_v2.1_compressed.pt")
    return {"name": "hpsv2", "checkpoint": str(d / "HPS_v2.1_compressed.pt"), "arch": "tiny-hps-w",
            "arch_config": str(d / "tiny-hps-w.json")}


def _scores(run, metrics, out, workers):
    res = evaluate(run, metrics, out_dir=out, batch_size=3, chunk_size=7, num_workers=workers, progress=False)
    return pd.read_parquet(out / "scores.parquet"), {k: v.get("value") for k, v in res["metrics"].items()}


def test_scores_are_identical_with_and_without_workers(run, clip_dir, hps, tmp_path):
    pytest.importorskip("transformers")
    from dummy import MeanValue

    from cdm_bench.registry import METRICS

    METRICS.register("mean_value", MeanValue, overwrite=True)
    metrics = ["mean_value", {"name": "clipscore", "model": str(clip_dir)},
               {"name": "pickscore", "model": str(clip_dir), "processor": str(clip_dir)}, hps, {"name": "toy_align", "scorer": "tiny"}]
    zero, v0 = _scores(run, metrics, tmp_path / "w0", 0)
    two, v2 = _scores(run, metrics, tmp_path / "w2", 2)
    assert v0 == v2 and all(np.isfinite(list(v0.values())))
    pd.testing.assert_frame_equal(zero, two)  # bit for bit


def test_a_corrupt_image_found_by_a_worker_is_one_line(run, tmp_path):
    import shutil

    from dummy import MeanValue

    from cdm_bench.registry import METRICS

    METRICS.register("mean_value", MeanValue, overwrite=True)
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    rec = json.loads((bad / "manifest.jsonl").read_text().splitlines()[5])
    import cdm_bench.evaluate as ev

    real = ev.find_bad_images
    ev.find_bad_images = lambda src, records: []  # as if it changed after the up-front check
    try:
        (bad / rec["file"]).write_bytes((bad / rec["file"]).read_bytes()[:-10] + b"0123456789")
        res = evaluate(bad, "mean_value", num_workers=2, batch_size=2, allow_partial=True, progress=False)
    finally:
        ev.find_bad_images = real
    err = res["metrics"]["mean_value"]["error"]
    assert res["metrics"]["mean_value"]["status"] == "failed" and "\n" not in err
    assert "does not match the manifest's sha256" in err and rec["file"].split("/")[-1] in err


# -- the CPU default: workers only where the first batches' timings say they pay ---------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cdm_bench import eval_loader  # noqa: E402

seconds = st.floats(1e-5, 10.0)


@settings(max_examples=300, deadline=None)
@given(seconds, seconds, st.integers(0, 10_000), st.integers(1, 64))
def test_choose_workers_stays_in_range_and_never_on_one_core(input_s, forward_s, n_jobs, cores):
    w = eval_loader.choose_workers(input_s, forward_s, n_jobs, cores)
    assert 0 <= w <= min(4, cores)
    if cores == 1 or n_jobs == 0:
        assert w == 0  # nothing to overlap with: a worker only takes the forward's core


@settings(max_examples=300, deadline=None)
@given(seconds, st.floats(0.0, 0.1), st.integers(2, 10_000), st.integers(2, 64))
def test_a_forward_bound_metric_keeps_every_core(forward_s, share, n_jobs, cores):
    # input at most a tenth of the forward (the toy metrics on 32 px images): no worker
    assert eval_loader.choose_workers(forward_s * share, forward_s, n_jobs, cores) == 0


@settings(max_examples=300, deadline=None)
@given(st.floats(1e-3, 10.0), st.floats(4.0, 1e3), st.integers(2, 64))
def test_an_input_bound_metric_gets_workers(forward_s, ratio, cores):
    # decode + preprocess several times the forward on all cores (a large PNG, a cheap scorer)
    n_jobs = 1000
    input_s = forward_s * cores * ratio
    assert eval_loader.choose_workers(input_s, forward_s, n_jobs, cores) >= 1


def test_the_probe_times_the_first_batches_then_hands_the_rest_to_the_chosen_workers(monkeypatch):
    import time

    from dummy import MeanValue

    seen = {}

    def choose(input_s, forward_s, n_jobs, cores, cap=4):
        seen.update(input_s=input_s, forward_s=forward_s, n_jobs=n_jobs)
        return 2

    monkeypatch.setattr(eval_loader, "choose_workers", choose)
    recs = [{"prompt": f"p{i}"} for i in range(12)]
    jobs = [(i, i + 2) for i in range(0, 12, 2)]
    images = np.arange(12 * 2 * 2 * 3, dtype=np.uint8).reshape(12, 2, 2, 3)
    data = eval_loader.BatchJobs(lambda a, b: images[a:b], recs, jobs, MeanValue())
    out = []
    for n, batch in eval_loader.prepared_batches(data, None):
        out.append((n, np.asarray(batch)))
        time.sleep(0.05)  # the caller's forward
    assert [n for n, _ in out] == list(range(6))
    assert all((b == images[a:s]).all() for (n, b), (a, s) in zip(out, jobs))
    assert seen["n_jobs"] == 6 - eval_loader.PROBE_JOBS and 0.05 <= seen["forward_s"] < 0.5


def test_scores_are_identical_with_the_cpu_default_when_it_picks_workers(run, tmp_path, monkeypatch):
    from dummy import MeanValue

    from cdm_bench.registry import METRICS

    METRICS.register("mean_value", MeanValue, overwrite=True)
    metrics = ["mean_value", {"name": "toy_align", "scorer": "tiny"}]
    zero, v0 = _scores(run, metrics, tmp_path / "w0", 0)
    picked = []
    monkeypatch.setattr(eval_loader, "choose_workers", lambda *a, **k: picked.append(2) or 2)
    auto, va = _scores(run, metrics, tmp_path / "auto", None)
    assert picked and v0 == va
    pd.testing.assert_frame_equal(zero, auto)
