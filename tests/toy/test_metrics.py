"""toy_align / toy_fid: split invariance, FID(real, real) ~ 0 < FID(real, degraded), no diffusers."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from cdm_bench.toy import world


@pytest.fixture(scope="module")
def scorer():
    from cdm_bench.toy.scorer import ToyScorer

    torch.manual_seed(0)
    return ToyScorer(channels=(8, 16, 16), feat_dim=16).eval()  # untrained: enough for the maths


def _batch(n=48, seed=0):
    prompts = world.sample_prompts(n, seed)
    meta = [{"prompt_id": f"p{i}", "k": 0, "seed": 1000 + i} for i in range(n)]
    return prompts, meta


def _real(prompts, meta):
    from metrics.toy import real_seed

    return np.stack([world.render_for_prompt(p, real_seed(m)) for p, m in zip(prompts, meta)])


def _fid(scorer, images, prompts, meta, splits):
    from metrics.toy import ToyFID

    m = ToyFID(scorer=scorer)
    for idx in np.array_split(np.arange(len(prompts)), splits):
        assert m.update(images[idx], [prompts[i] for i in idx], [meta[i] for i in idx]) is None
    return m.compute()["toy_fid"]


def _degrade(images, rng):
    x = images.astype(np.float64)
    blurred = (x + np.roll(x, 1, 1) + np.roll(x, -1, 1) + np.roll(x, 1, 2) + np.roll(x, -1, 2)) / 5
    noisy = blurred + rng.normal(0, 25, x.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def test_fid_split_invariance_and_ordering(scorer):
    prompts, meta = _batch()
    other = np.stack([world.render_for_prompt(p, 5000 + i) for i, p in enumerate(prompts)])
    one, three = _fid(scorer, other, prompts, meta, 1), _fid(scorer, other, prompts, meta, 3)
    assert one == pytest.approx(three, rel=1e-6, abs=1e-9)
    same = _fid(scorer, _real(prompts, meta), prompts, meta, 2)  # the reference itself
    assert abs(same) < 1e-3
    degraded = _fid(scorer, _degrade(other, np.random.default_rng(0)), prompts, meta, 1)
    assert degraded > one > same


def test_fid_metadata_and_errors(scorer):
    from metrics.toy import ToyFID

    m = ToyFID(scorer=scorer)
    assert m.name == "toy_fid" and m.higher_is_better is False and m.per_image is False
    with pytest.raises(RuntimeError):
        m.compute()
    with pytest.raises(TypeError):
        ToyFID(bogus=1)


def test_align_scores(scorer):
    from metrics.toy import ToyAlign

    prompts, meta = _batch(10)
    m = ToyAlign(scorer=scorer)
    s = m.update(_real(prompts, meta), prompts, meta)
    assert s.shape == (10,) and ((s >= 0) & (s <= 1)).all()
    assert m.compute()["toy_align"] == pytest.approx(s.mean())
    assert m.name == "toy_align" and m.higher_is_better is True


def test_scorer_outputs_and_save_load(scorer, tmp_path):
    from cdm_bench.toy.scorer import ToyScorer, alignment

    imgs, prompts = world.make_dataset(40, 0)
    f = scorer.features(imgs)
    assert f.shape == (40, 16)
    # chunked inference: features do not depend on batching
    assert torch.equal(torch.cat([scorer.features(imgs[:7]), scorer.features(imgs[7:])]), f)
    scorer.save(tmp_path)
    again = ToyScorer.load(tmp_path)
    assert torch.equal(again.features(imgs), f)
    preds = again.predict_attributes(imgs[:3])
    assert len(preds) == 3 and all(isinstance(p, list) for p in preds)
    assert alignment(again, imgs, prompts).shape == (40,)


def test_metrics_and_scorer_do_not_import_diffusers():
    code = ("import sys; import metrics.toy, cdm_bench.toy.scorer, cdm_bench.toy.artifacts, cdm_bench.toy.world; "
            "from cdm_bench.toy.artifacts import get_scorer; "
            "assert 'diffusers' not in sys.modules, 'diffusers imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_tiny_scorer_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CDM_BENCH_CACHE", str(tmp_path / "cache"))
    from cdm_bench.toy.artifacts import get_scorer, scorer_report
    from metrics.toy import ToyAlign

    s = get_scorer("tiny")
    rep = scorer_report("tiny")
    assert 0.0 <= rep["exact_accuracy"] <= 1.0 and rep["config_hash"]
    prompts, meta = _batch(4)
    assert ToyAlign(scorer="tiny").update(_real(prompts, meta), prompts, meta).shape == (4,)
    assert s.attribute_names == world.attribute_names()


@pytest.mark.slow
def test_demo_scorer_recognises_real_images():
    from cdm_bench.toy.artifacts import scorer_report
    from metrics.toy import ToyAlign

    assert scorer_report("demo")["exact_accuracy"] >= 0.95
    prompts, meta = _batch(200, seed=3)
    m = ToyAlign(scorer="demo")
    m.update(_real(prompts, meta), prompts, meta)
    assert m.compute()["toy_align"] >= 0.97


def _kit_inputs(n=24):
    """World renders, blurred and noised (so FID against the reference is well above 0)."""
    prompts, meta = _batch(n, seed=3)
    images = np.stack([world.render_for_prompt(p, 7000 + i) for i, p in enumerate(prompts)])
    return _degrade(images, np.random.default_rng(1)), prompts, meta


# golden values: the untrained seed-0 scorer of the fixture on _kit_inputs() (recorded 2026-11-26)
# (value, relative tolerance): the untrained scorer's features barely vary, so FID is small
GOLDEN = {"toy_align": (0.46527777777777773, 1e-4), "toy_fid": (2.271764e-4, 1e-3)}


@pytest.mark.parametrize("name", ["toy_align", "toy_fid"])
def test_toy_metrics_pass_the_kit(scorer, name):
    from metric_kit import check_metric

    from metrics.toy import ToyAlign, ToyFID

    cls = {"toy_align": ToyAlign, "toy_fid": ToyFID}[name]
    images, prompts, meta = _kit_inputs()
    golden, rtol = GOLDEN[name]
    ref = check_metric(lambda: cls(scorer=scorer), images, prompts, meta, golden=golden, golden_rtol=rtol)
    if name == "toy_fid":
        assert ref.values["n"] == len(images)
