"""Test doubles: a deterministic generator and a per-image metric with no model behind them."""

from __future__ import annotations

import hashlib

import numpy as np

from cdm_bench.generator import Generator
from cdm_bench.metric import Metric, PerImageMetric, TorchmetricsState, Weights


class DummyGenerator(Generator):
    """Image = f(prompt, seed) only; ``shade`` changes every pixel (a different spec)."""

    recipe = "dummy"

    def __init__(self, shade: int = 0, size: int = 8, fail_on: str | None = None):
        from cdm_bench.validate import int_in_range

        self.shade, self.size, self.fail_on = shade, int_in_range(size, "size", 1, 1024), fail_on

    def spec(self) -> dict:
        return {"shade": self.shade, "size": self.size}

    @property
    def nfe(self):
        return 1

    made = 0

    def generate(self, prompts, seeds):
        import os
        import time

        DummyGenerator.made += len(prompts)
        if os.environ.get("CDM_TEST_KILL_RANK", os.environ.get("RANK", "0")) == os.environ.get("RANK", "0"):
            _maybe_kill("CDM_TEST_KILL_GEN_AFTER", DummyGenerator.made)
        time.sleep(float(os.environ.get("CDM_TEST_GEN_SLEEP", "0")))
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


# -- evaluate-phase doubles ---------------------------------------------------------------------------
class Lifecycle:
    """Records which metric models are alive (setup .. teardown) and every update call."""

    alive: set = set()
    max_alive: int = 0
    events: list = []

    @classmethod
    def clear(cls):
        cls.alive, cls.max_alive, cls.events = set(), 0, []


class _Tracked:
    def setup(self):
        Lifecycle.alive.add(self.name)
        Lifecycle.max_alive = max(Lifecycle.max_alive, len(Lifecycle.alive))
        Lifecycle.events.append(("setup", self.name))

    def teardown(self):
        Lifecycle.alive.discard(self.name)
        Lifecycle.events.append(("teardown", self.name))
        super().teardown()

    def _check_alive(self):
        assert self.name in Lifecycle.alive, f"{self.name} used before setup() or after teardown()"


class TrackedBrightness(_Tracked, MeanBrightness):
    name = "tracked_brightness"

    def score(self, images, prompts, meta):
        self._check_alive()
        return super().score(images, prompts, meta)


class MeanValue(PerImageMetric):
    """Per image: the mean pixel value; sub-values: the mean per prompt ``category`` (if any).
    Keeps the ``meta`` it was given (class-level, for tests)."""

    name = "mean_value"
    version = "1"
    seen_meta: list = []

    def __init__(self, device="cpu", dtype="float32", scale: float = 1.0):
        super().__init__(device, dtype)
        self.scale = float(scale)

    def score(self, images, prompts, meta):
        MeanValue.seen_meta += [dict(m) for m in meta]
        return np.asarray(images, dtype=np.float64).mean(axis=(1, 2, 3)) * self.scale

    def aggregate(self, scores, meta):
        out = {self.name: float(np.mean(scores))}
        cats = [m.get("category") for m in meta]
        for c in sorted({c for c in cats if c is not None}):
            out[f"category/{c}"] = float(np.mean([s for s, m in zip(scores, cats) if m == c]))
        return out

    def describe(self):
        return {**super().describe(), "scale": self.scale}


class _SumCount:
    """A torchmetrics metric: the sum and count of per-image mean pixel values (sum-reduced)."""

    def __new__(cls):
        import torch
        from torchmetrics import Metric as TM

        class SumCount(TM):
            full_state_update = False

            def __init__(self):
                super().__init__(sync_on_compute=False)
                self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
                self.add_state("count", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

            def update(self, x):
                self.total += x.double().sum()
                self.count += x.numel()

            def compute(self):
                return self.total / self.count

        return SumCount()


class SetMean(TorchmetricsState, Metric):
    """A set-level metric (state merged across chunks and ranks): the mean over images of each
    image's mean pixel value, squared (so it is not a per-image mean)."""

    name = "set_mean"
    version = "1"
    per_image = False
    higher_is_better = False

    def __init__(self, device="cpu", dtype="float32"):
        super().__init__(device, dtype)
        self.tm = None

    def setup(self):
        self.tm = _SumCount()

    def teardown(self):
        self.tm = None
        super().teardown()

    batches = 0

    def update(self, images, prompts, meta):
        import torch

        SetMean.batches += 1
        _maybe_kill("CDM_TEST_KILL_SET_AFTER", SetMean.batches)
        self.tm.update(torch.from_numpy(np.asarray(images, dtype=np.float64).mean(axis=(1, 2, 3))))

    def compute(self):
        return {self.name: float(self.tm.compute()) ** 2, "n": int(self.tm.count)}

    def reset(self):
        if self.tm is not None:
            self.tm.reset()


class CountingMetric(PerImageMetric):
    """Appends one line per image it scores to $CDM_TEST_CALL_LOG, then sleeps a little
    (so a test can kill evaluate part-way)."""

    name = "counting"
    version = "1"

    scored = 0

    def score(self, images, prompts, meta):
        import os
        import time

        with open(os.environ["CDM_TEST_CALL_LOG"], "a") as f:
            f.write("".join(f"{m['prompt_id']}_{m['k']}\n" for m in meta))
        CountingMetric.scored += len(meta)
        if os.environ.get("CDM_TEST_KILL_RANK", os.environ.get("RANK", "0")) == os.environ.get("RANK", "0"):
            _maybe_kill("CDM_TEST_KILL_AFTER", CountingMetric.scored)
        time.sleep(float(os.environ.get("CDM_TEST_SLEEP", "0")))
        return np.asarray(images, dtype=np.float64).std(axis=(1, 2, 3))


def _maybe_kill(var: str, count: int) -> None:
    """SIGKILL this process once ``count`` reaches the number in $var (fault injection)."""
    import os
    import signal

    limit = os.environ.get(var)
    if limit and count >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


class NeedsPackage(PerImageMetric):
    name = "needs_package"
    requires = ("cdm_bench_no_such_package",)
    extra = "eval"
    env_hint = "make eval-env"

    def score(self, images, prompts, meta):
        raise AssertionError("must not be called")


class NeedsWeights(PerImageMetric):
    name = "needs_weights"

    def weights(self):
        return [Weights("the needs-weights checkpoint", repo_id="cdm-bench-test/needs-weights",
                        filename="model.safetensors")]

    def score(self, images, prompts, meta):
        raise AssertionError("must not be called")
