"""hpsv2 on a tiny open_clip architecture (the hpsv2 package's own factory) with random weights,
saved as an HPS checkpoint file; agreement with the package's ``hpsv2.img_score.score``."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("hpsv2")

from cdm_bench.errors import MissingDependencyError  # noqa: E402
from metrics.hpsv2 import HPSv2  # noqa: E402

PROMPTS = ["a red apple", "two cats on a blue sofa", "a lighthouse at dusk", "a bowl of ramen",
           "an astronaut riding a horse", "a cabin in the snow"]
TINY = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(arch config path, checkpoint path) of a random tiny model in HPS's checkpoint layout."""
    from metrics._compat_torchvision import ensure_torchvision

    ensure_torchvision()
    from hpsv2.src.open_clip import add_model_config, create_model_and_transforms

    d = tmp_path_factory.mktemp("hps")
    cfg = d / "tiny-hps-test.json"
    cfg.write_text(json.dumps(TINY))
    add_model_config(str(cfg))
    torch.manual_seed(0)
    model = create_model_and_transforms("tiny-hps-test", None, precision="fp32", device="cpu", output_dict=True)[0]
    with torch.no_grad():  # random init has logit-scale-free features near 0: spread them out
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ckpt = d / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    return cfg, ckpt


def _images(n=6, seed=0):
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, (n, 40, 48, 3), dtype=np.uint8)
    return arr, [Image.fromarray(a) for a in arr]


def _meta(prompts):
    return [{"prompt_id": f"p{i}", "k": 0, "prompt": p} for i, p in enumerate(prompts)]


def _metric(tiny):
    return HPSv2(checkpoint=str(tiny[1]), arch="tiny-hps-test", arch_config=str(tiny[0]))


def test_agrees_with_the_hpsv2_package(tiny):
    import hpsv2.img_score as ref
    from hpsv2.src.open_clip import create_model_and_transforms, get_tokenizer

    _, pil = _images()
    ours = _metric(tiny)
    ours.setup()
    s = ours.score(pil, PROMPTS, _meta(PROMPTS))
    model, _, preprocess_val = create_model_and_transforms("tiny-hps-test", None, precision="amp", device="cpu",
                                                           light_augmentation=True, output_dict=True)
    ref.model_dict.update(model=model, preprocess_val=preprocess_val)  # the package's model slot, tiny arch
    try:
        want = [ref.score(im, p, cp=str(tiny[1]))[0] for im, p in zip(pil, PROMPTS)]
    finally:
        ref.model_dict.clear()
    assert np.abs(np.asarray(want) - s).max() <= 1e-4
    assert np.ptp(s) > 1e-3  # the scores differ: the check can fail
    assert get_tokenizer("ViT-H-14")(["x"]).shape == (1, 77)


# the tiny model of the fixture (seed 0, +0.02 noise), recorded 2026-11-26
GOLDEN = 0.20494329370558262


def test_passes_the_kit(tiny):
    from metric_kit import check_metric

    arr, _ = _images(8, seed=1)
    prompts = PROMPTS + PROMPTS[:2]
    ref = check_metric(lambda: _metric(tiny), arr, prompts, _meta(prompts), golden=GOLDEN, rtol=1e-5, atol=1e-6)
    assert ref.values["truncated_prompts"] == 0


def test_long_prompts_are_counted_and_versions_selectable(tiny):
    m = _metric(tiny)
    long = " ".join(["word"] * 90)
    assert m.aggregate(np.zeros(2), [{"prompt": long}, {"prompt": "short"}])["truncated_prompts"] == 1
    assert HPSv2(hps_version="v2.0").weights()[0].filename == "HPS_v2_compressed.pt"
    with pytest.raises(ValueError):
        HPSv2(hps_version="v3")


def test_missing_checkpoint_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(MissingDependencyError) as err:
        HPSv2().check()
    msg = str(err.value)
    assert "\n" not in msg and "xswu/HPSv2" in msg and "HPS_v2.1_compressed.pt" in msg and "'checkpoint'" in msg
