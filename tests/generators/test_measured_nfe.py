"""Measured network evaluations: generate counts the denoiser's forward rows per image (a hook on
the pipeline's transformer / UNet, or the toy flow model), records ``nfe_measured`` beside the
spec's steps and guidance, warns when a pipeline ignores the guidance it was given, and the
leaderboard shows the measured count."""

import json
import logging

import pandas as pd
import pytest

from cdm_bench.evaluate import evaluate
from cdm_bench.generate import generate
from cdm_bench.leaderboard import write_leaderboard
from cdm_bench.prompts import PromptSet


def _prompts(n=3):
    return PromptSet("t", "1", [{"id": f"p{i}", "prompt": f"a photo of a red car number {i}"} for i in range(n)])


def _prov(spec, out, n=3, batch_size=2):
    out = generate(spec, _prompts(n), out, batch_size=batch_size, progress=False)
    return json.loads((out / "generation.json").read_text())["provenance"]


@pytest.mark.parametrize("guidance,want", [(1.0, 3), (2.0, 6)])
def test_toy_generator_counts_its_model_calls(tmp_path, guidance, want):
    prov = _prov({"generator": "toy", "preset": "tiny", "nfe": 3, "guidance": guidance}, tmp_path / "g", n=11,
                 batch_size=5)  # batches of 5 run in padded chunks of 8: the padding is not counted
    assert prov["nfe_measured"] == want and "guidance_ignored" not in prov


@pytest.mark.parametrize("guidance,micro_batch,want", [(1.0, 1, 2), (3.0, 1, 4), (3.0, 2, 4)])
def test_sd3_pipeline_measured_nfe(tiny_sd3_dir, tmp_path, guidance, micro_batch, want):
    spec = {"generator": "diffusers", "model": str(tiny_sd3_dir), "nfe": 2, "guidance": guidance, "resolution": 32,
            "micro_batch": micro_batch}
    prov = _prov(spec, tmp_path / "g")  # 3 prompts: with micro_batch 2 the last call is padded
    assert prov["nfe_measured"] == want and prov["steps"] == 2 and prov["guidance"] == guidance
    assert set(prov["component_sha256"]) >= {"transformer", "vae", "text_encoder", "text_encoder_2"}


def test_leaderboard_shows_the_measured_nfe(tmp_path):
    from dummy import MeanValue

    from cdm_bench.registry import METRICS

    METRICS.register("mean_value", MeanValue, overwrite=True)
    run = generate({"generator": "toy", "preset": "tiny", "nfe": 3, "guidance": 2.0, "name": "t3"}, _prompts(),
                   tmp_path / "g", progress=False)
    ident = json.loads((run / "generation.json").read_text())
    ident["provenance"]["nfe_measured"] = 5  # as if the pipeline had run 5 evaluations per image
    (run / "generation.json").write_text(json.dumps(ident))
    evaluate(run, "mean_value", progress=False)
    wide = pd.read_csv(write_leaderboard([run], tmp_path / "lb")["csv"])
    assert wide["nfe"].tolist() == [5]


def test_a_pipeline_that_ignores_guidance_is_warned_and_shown_without_cfg(tmp_path, caplog):
    from cdm_bench.generator import NFECounter

    counter = NFECounter("flux-like")
    counter.evals, counter.made = 8.0, 2  # 4 steps, one row per image per step, guidance asked
    with caplog.at_level(logging.WARNING):
        prov = counter.provenance(steps=4, guidance=3.5)
        counter.provenance(steps=4, guidance=3.5)
    assert prov == {"nfe_measured": 4, "guidance_ignored": True}
    warnings = [r for r in caplog.records if "does no CFG" in r.getMessage()]
    assert len(warnings) == 1 and "true_cfg_scale" in warnings[0].getMessage()


# -- Flux, PixArt-Sigma, SDXL: tiny real pipelines (tests/tiny_pipelines_extra.py) ---------------------------------
@pytest.fixture(scope="module")
def tiny_extra(tmp_path_factory):
    pytest.importorskip("diffusers")
    from tiny_pipelines_extra import save_tiny_flux, save_tiny_pixart, save_tiny_sdxl

    root = tmp_path_factory.mktemp("tiny-extra")
    return {"flux": save_tiny_flux(root / "flux"), "pixart": save_tiny_pixart(root / "pixart"),
            "sdxl": save_tiny_sdxl(root / "sdxl")}


PIXART_CALL = {"use_resolution_binning": False, "clean_caption": False}


@pytest.mark.parametrize("kind,guidance,call,want", [
    ("pixart", 1.0, PIXART_CALL, 2), ("pixart", 3.0, PIXART_CALL, 4),
    ("sdxl", 1.0, {}, 2), ("sdxl", 3.0, {}, 4),
    ("flux", 1.0, {}, 2), ("flux", 3.0, {"true_cfg_scale": 3.0, "negative_prompt": ""}, 4),
])
def test_pipelines_measure_what_they_run(tiny_extra, tmp_path, kind, guidance, call, want):
    spec = {"generator": "diffusers", "model": str(tiny_extra[kind]), "nfe": 2, "guidance": guidance,
            "resolution": 32, "call_kwargs": call}
    prov = _prov(spec, tmp_path / "g", n=2)
    assert prov["nfe_measured"] == want and "guidance_ignored" not in prov


def test_flux_guidance_scale_is_not_cfg_warned_and_shown_so(tiny_extra, tmp_path, caplog):
    from dummy import MeanValue

    from cdm_bench.registry import METRICS

    METRICS.register("mean_value", MeanValue, overwrite=True)
    spec = {"generator": "diffusers", "model": str(tiny_extra["flux"]), "nfe": 2, "guidance": 3.5, "resolution": 32,
            "name": "flux-g3.5"}
    with caplog.at_level(logging.WARNING):
        prov = _prov(spec, tmp_path / "g", n=2)
    assert prov["nfe_measured"] == 2 and prov["guidance_ignored"] is True
    assert any("does no CFG with guidance_scale" in r.getMessage() for r in caplog.records)
    evaluate(tmp_path / "g", "mean_value", progress=False)
    wide = pd.read_csv(write_leaderboard([tmp_path / "g"], tmp_path / "lb")["csv"])
    assert wide["nfe"].tolist() == [2] and wide["cfg"].isna().all()  # not "nfe 4 / cfg 3.5"


def test_unet_pipelines_record_their_weights(tiny_extra, tmp_path):
    import hashlib

    out = generate({"generator": "diffusers", "model": str(tiny_extra["sdxl"]), "nfe": 2, "guidance": 1.0,
                    "resolution": 32}, _prompts(1), tmp_path / "g", progress=False)
    ident = json.loads((out / "generation.json").read_text())
    unet = tiny_extra["sdxl"] / "unet" / "diffusion_pytorch_model.safetensors"
    assert ident["weights_sha256"] == hashlib.sha256(unet.read_bytes()).hexdigest()
    assert set(ident["provenance"]["component_sha256"]) >= {"unet", "vae", "text_encoder", "text_encoder_2"}
