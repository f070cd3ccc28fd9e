"""Sampling of the toy flow model: schedules, CFG, batch invariance (byte-identical images)."""

import hashlib

import numpy as np
import pytest
import torch

from cdm_bench.toy import world
from cdm_bench.toy.model import ToyFlowModel
from cdm_bench.toy.sampling import (effective_sigmas, euler_sample, make_noise, sample_images,
                                    to_uint8)

PROMPTS = ["a red circle", "a blue square and a green cross", "", "a cyan triangle, a red circle and a yellow square",
           "a magenta cross", "a green circle and a red triangle"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = ToyFlowModel(block_out_channels=(16, 32), attention_levels=(False, True),
                     self_attention_levels=(False, True), text_dim=32, text_layers=1, heads=2, temb_dim=32,
                     vocab_size=world.VOCAB_SIZE, max_tokens=world.DEFAULT.max_tokens)
    with torch.no_grad():  # zero-initialised output layers would make every sample equal the noise
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


def _hashes(images):
    return [hashlib.sha256(im.tobytes()).hexdigest() for im in images]


def test_model_forward_shapes_and_save_load(model, tmp_path):
    x = torch.randn(3, 3, 32, 32)
    tok = torch.from_numpy(world.tokenize(PROMPTS[:3]))
    v = model(x, torch.rand(3), tok)
    assert v.shape == x.shape and torch.isfinite(v).all()
    model.save_pretrained(tmp_path)
    again = ToyFlowModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(x, torch.full((3,), 0.5), tok), model(x, torch.full((3,), 0.5), tok))


def test_gradient_checkpointing_matches(model):
    x, s = torch.randn(2, 3, 32, 32), torch.rand(2)
    tok = torch.from_numpy(world.tokenize(PROMPTS[:2]))
    m = ToyFlowModel.from_config(model.config)
    m.load_state_dict(model.state_dict())
    ref = m(x, s, tok)
    m.enable_gradient_checkpointing()
    out = m(x, s, tok)
    out.sum().backward()
    assert torch.allclose(ref, out) and m.conv_in.weight.grad is not None
    assert set(ToyFlowModel._no_split_modules) == {"ToyUNetBlock", "ToyTextLayer"}


def test_noise_depends_only_on_seed():
    a = make_noise([5, 6, 7])
    b = make_noise([7])
    assert torch.equal(a[2], b[0]) and not torch.equal(a[0], a[1])


def test_effective_sigmas_read_back_from_scheduler():
    assert effective_sigmas(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert effective_sigmas(1) == [1.0, 0.0]
    shifted = effective_sigmas(4, [1.0, 0.75, 0.5, 0.25], shift=3.0)
    assert np.allclose(shifted, [1.0, 0.9, 0.75, 0.5, 0.0], atol=1e-6)
    assert len(effective_sigmas(50)) == 51
    with pytest.raises(ValueError):
        effective_sigmas(3, [1.0, 0.5])


def test_batch_size_does_not_change_images(model):
    seeds = list(range(100, 106))
    kw = dict(nfe=3, guidance=2.0)
    one = np.concatenate([sample_images(model, [p], [s], **kw) for p, s in zip(PROMPTS, seeds)])
    four = np.concatenate([sample_images(model, PROMPTS[i:i + 4], seeds[i:i + 4], **kw) for i in (0, 4)])
    assert _hashes(one) == _hashes(four)
    # and the order of the batch does not matter either
    rev = sample_images(model, PROMPTS[::-1], seeds[::-1], **kw)[::-1]
    assert _hashes(rev) == _hashes(one)
    assert len(set(_hashes(one))) == len(one)


def test_concurrent_chunks_give_the_same_images(model):
    """With 2 intra-op threads available, chunks run 2 at a time; the bytes must not change."""
    prompts, seeds = (PROMPTS * 4)[:20], list(range(20))  # 3 chunks of 8 (the last one padded)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = sample_images(model, prompts, seeds, nfe=2, guidance=2.0)
        torch.set_num_threads(2)
        concurrent = sample_images(model, prompts, seeds, nfe=2, guidance=2.0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)
    assert _hashes(serial) == _hashes(concurrent)


def test_threads_are_pinned_and_restored(model):
    old = torch.get_num_threads()
    sample_images(model, PROMPTS[:1], [0], nfe=1)
    assert torch.get_num_threads() == old


def test_cfg_one_equals_no_uncond_and_guidance_changes_output(model):
    tok = world.tokenize(PROMPTS[:2])
    noise = make_noise([1, 2])
    sig = effective_sigmas(2)
    a = euler_sample(model, tok, noise, sig, guidance=1.0)
    b = euler_sample(model, tok, noise, sig, guidance=3.0)
    assert not torch.equal(a, b)
    # one Euler step: x0 = eps - v(eps, 1)
    one = euler_sample(model, tok, noise, [1.0, 0.0])
    with torch.no_grad():
        v = model(noise, torch.ones(2), torch.from_numpy(tok))
    assert torch.allclose(one, noise - v, atol=1e-5)


def test_to_uint8_range():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    u = to_uint8(x)
    assert u.dtype == np.uint8 and u.shape == (1, 1, 5, 3)
    assert u[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_toy_generators(tmp_path, model):
    from cdm_bench.toy.generator import ToyGenerator, ToyRealGenerator

    model.save_pretrained(tmp_path / "student")
    gen = ToyGenerator(model=str(tmp_path / "student"), preset="tiny", nfe=2, guidance=1.5, batch_size=2)
    assert gen.recipe == "student" and gen.nfe == 4 and gen.cfg == 1.5
    assert len(gen.weights_hash()) == 64 and gen.spec()["weights_sha256"] == gen.weights_hash()
    imgs = gen.generate(PROMPTS[:3], [0, 1, 2])
    assert imgs.shape == (3, 32, 32, 3) and imgs.dtype == np.uint8
    assert np.array_equal(imgs[1:], ToyGenerator(model=str(tmp_path / "student"), preset="tiny", nfe=2,
                                                 guidance=1.5, batch_size=5).generate(PROMPTS[1:3], [1, 2]))
    real = ToyRealGenerator(preset="tiny")
    assert real.recipe == "reference"
    r = real.generate(PROMPTS[:2], [3, 4])
    assert np.array_equal(r[0], world.render_for_prompt(PROMPTS[0], 3))
    from cdm_bench.generator import SpecError

    with pytest.raises(SpecError):
        ToyGenerator(model=str(tmp_path / "nope"))
    with pytest.raises(SpecError):
        ToyGenerator(preset="tiny", resolution=64)


def test_tiny_teacher_trains_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("CDM_BENCH_CACHE", str(tmp_path / "cache"))
    from cdm_bench.toy.generator import ToyGenerator
    from cdm_bench.toy.artifacts import get_teacher, teacher_dir

    t = get_teacher("tiny")
    d = teacher_dir("tiny")
    assert d.parent.name == "toy" and d.name.startswith("teacher-") and (d / "train_log.json").is_file()
    assert not any(p.name.startswith(".tmp") for p in d.parent.iterdir())
    assert not t.training
    gen = ToyGenerator(preset="tiny", nfe=2)
    assert gen.recipe == "teacher" and gen.nfe == 2
    assert gen.generate(["a red circle"], [0]).shape == (1, 32, 32, 3)
