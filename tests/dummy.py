"""Test doubles: a deterministic generator and a per-image metric with no model behind them."""

from __future__ import annotations

import hashlib

import numpy as np

from cdm_bench.generator import Generator
from cdm_bench.metric import PerImageMetric


class DummyGenerator(Generator):
    """Image = f(prompt, seed) only; ``shade`` changes every pixel (a different spec)."""

    recipe = "dummy"

    def __init__(self, shade: int = 0, size: int = 8, fail_on: str | None = None):
        self.shade, self.size, self.fail_on = shade, size, fail_on

    def spec(self) -> dict:
        return {"shade": self.shade, "size": self.size}

    @property
    def nfe(self):
        return 1

    def generate(self, prompts, seeds):
        out = []
        for p, s in zip(prompts, seeds):
            if self.fail_on and self.fail_on in p:
                raise RuntimeError(f"boom on {p!r}")
            h = int.from_bytes(hashlib.sha256(p.encode()).digest()[:4], "little")
            rng = np.random.default_rng([s, h])
            out.append((rng.integers(0, 200, (self.size, self.size, 3)) + self.shade).astype(np.uint8))
        return np.stack(out)


class MeanBrightness(PerImageMetric):
    name = "brightness"
    version = "1"
    higher_is_better = True
    input_format = "float_nchw"

    def score(self, images, prompts, meta):
        return images.mean(dim=(1, 2, 3)).numpy()


class Exploding(PerImageMetric):
    name = "exploding"

    def score(self, images, prompts, meta):
        raise ValueError("scorer weights missing")
