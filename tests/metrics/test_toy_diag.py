"""toy_diag: real renders score as real (bg_tv ~ 0, ratios ~ 1, counts right); a blurred,
grey-background set is told apart; chunked states merge to the one-pass value."""

from __future__ import annotations

import numpy as np
import pytest

from cdm_bench.toy import world
from metrics.toy import real_seed
from metrics.toy_diag import ToyDiag


@pytest.fixture(scope="module")
def data():
    prompts = world.sample_prompts(96, 5)
    meta = [{"prompt_id": str(i), "k": 0, "seed": 100 + i} for i in range(len(prompts))]
    other = np.stack([world.render_for_prompt(p, real_seed(m) + 7) for p, m in zip(prompts, meta)])
    return prompts, meta, other


def _value(images, prompts, meta, chunks=1):
    m = ToyDiag(scorer="tiny")
    m.setup()
    states = []
    for part in np.array_split(np.arange(len(prompts)), chunks):
        m.reset()
        m.update(images[part], [prompts[i] for i in part], [meta[i] for i in part])
        states.append(m.state())
    m.load_states(states)
    return m.compute()


def test_real_renders_look_real_and_a_flat_blurred_set_does_not(data):
    prompts, meta, other = data
    real = _value(other, prompts, meta)
    assert real["toy_diag"] < 0.15 and 0.9 < real["hf_rel"] < 1.1 and 0.9 < real["pix_std_rel"] < 1.1
    assert abs(sum(v for k, v in real.items() if k.startswith("bg_")) - 1) < 1e-9
    flat = np.clip(other.astype(np.float64) * 0.3 + 0.7 * other.mean(axis=(1, 2), keepdims=True), 0, 255)
    flat = ((flat + np.roll(flat, 1, 1) + np.roll(flat, 1, 2) + np.roll(flat, (1, 1), (1, 2))) / 4).astype(np.uint8)
    worse = _value(flat, prompts, meta)
    assert worse["hf_rel"] < 0.8 * real["hf_rel"] and worse["pix_std_rel"] < 0.6


def test_chunked_states_merge_to_the_one_pass_value(data):
    prompts, meta, other = data
    one, three = _value(other, prompts, meta), _value(other, prompts, meta, chunks=3)
    assert one.keys() == three.keys()
    assert all(one[k] == pytest.approx(three[k], rel=1e-12, abs=1e-12) for k in one)
