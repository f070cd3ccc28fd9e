"""The toy world: deterministic rendering, caption <-> attributes, tokenizer, speed."""

import hashlib
import time

import numpy as np
import pytest

from cdm_bench.toy import world


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_rendering_is_deterministic_and_uint8():
    a = world.render(world.sample_scene(np.random.default_rng(3)))
    b = world.render(world.sample_scene(np.random.default_rng(3)))
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
    assert _sha(a) == _sha(b)
    imgs1, p1 = world.make_dataset(50, seed=1)
    imgs2, p2 = world.make_dataset(50, seed=1)
    assert p1 == p2 and _sha(imgs1) == _sha(imgs2)
    imgs3, _ = world.make_dataset(50, seed=2)
    assert _sha(imgs1) != _sha(imgs3)


def test_batch_rendering_equals_single_rendering():
    rng = np.random.default_rng(0)
    scenes = [world.sample_scene(rng) for _ in range(300)]  # > one internal chunk of 256
    batch = world.render_batch(scenes)
    single = np.stack([world.render(s) for s in scenes])
    assert np.array_equal(batch, single)


def test_render_for_prompt_matches_caption_and_depends_on_seed():
    p = "a red circle, a blue square and a green triangle"
    a, b, c = (world.render_for_prompt(p, s) for s in (7, 7, 8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    scene = world.scene_for_prompt(p, 7)
    assert world.caption(scene) == p
    assert sorted((o.color, o.shape) for o in scene.layout) == sorted(scene.objects)
    # different prompts with the same seed differ
    assert not np.array_equal(a, world.render_for_prompt("a red circle", 7))


def test_caption_attribute_round_trip():
    rng = np.random.default_rng(1)
    counts = set()
    for _ in range(500):
        scene = world.sample_scene(rng)
        cap = world.caption(scene)
        attrs = world.attributes(cap)
        assert attrs == [f"{c} {s}" for c, s in scene.objects]
        assert len(set(attrs)) == len(attrs)
        counts.add(len(attrs))
    assert counts == {1, 2, 3}
    assert world.caption([("red", "circle")]) == "a red circle"
    assert world.caption([("red", "circle"), ("blue", "square")]) == "a red circle and a blue square"
    assert world.attributes("a red circle, a blue square and a green cross") == [
        "red circle", "blue square", "green cross"]
    assert world.attributes("") == []
    with pytest.raises(ValueError):
        world.attributes("a purple hexagon")


def test_captions_leave_layout_open():
    """The same caption renders to many different images (multi-modal distribution)."""
    p = "a yellow cross and a cyan circle"
    imgs = np.stack([world.render_for_prompt(p, s) for s in range(16)]).astype(np.float64)
    assert len({_sha(i) for i in imgs}) == 16
    assert imgs.std(axis=0).mean() > 20  # pixels vary a lot across samples


def test_sample_prompts_deterministic():
    assert world.sample_prompts(20, 0) == world.sample_prompts(20, 0)
    assert world.sample_prompts(20, 0) != world.sample_prompts(20, 1)


def test_tokenize():
    toks = world.tokenize(["a red circle and a blue square", ""])
    assert toks.dtype == np.int64 and toks.shape == (2, world.DEFAULT.max_tokens)
    assert (toks[1] == 0).all()
    vocab = world.vocabulary()
    words = [vocab[i] for i in toks[0] if i]
    assert words == ["a", "red", "circle", "and", "a", "blue", "square"]
    longest = world.tokenize(["a red circle, a blue square and a green cross"])
    assert (longest[0] > 1).sum() == 11
    assert len(vocab) <= world.VOCAB_SIZE


def test_world_config_hash_changes_with_fields():
    assert world.WorldConfig().hash() == world.DEFAULT.hash()
    assert world.WorldConfig(max_objects=2).hash() != world.DEFAULT.hash()


def test_dataset_generation_is_fast():
    t = time.perf_counter()
    imgs, prompts = world.make_dataset(2000, seed=0)
    dt = time.perf_counter() - t
    assert imgs.shape == (2000, 32, 32, 3) and len(prompts) == 2000
    assert dt < 10.0  # ~0.3 ms per image on 2 idle cores


def test_windowed_object_rendering_equals_full_frame():
    import dataclasses

    rng = np.random.default_rng(4)
    scenes = [world.sample_scene(rng) for _ in range(200)]
    full_frame = dataclasses.replace(world.DEFAULT, max_radius=40.0)  # window >= image: no windowing
    assert np.array_equal(world.render_batch(scenes), world.render_batch(scenes, full_frame))
