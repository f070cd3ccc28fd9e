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
