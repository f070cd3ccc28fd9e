"""A test kit for metrics, in the spirit of torchmetrics' ``MetricTester``.

``check_metric(make, images, prompts, meta, golden=...)`` runs a metric through evaluate's
lifecycle (setup -> chunks of batches -> state/scores -> merge -> compute -> teardown) in
several ways and asserts that they agree:

* batch-size invariance: batches of 1, of 3 and of all images;
* order invariance: the images shuffled (per-image scores follow their image);
* 2-rank agreement: two chunks scored by two metric instances, merged as evaluate merges
  ranks (per-image scores concatenated; set-level states through ``load_states``);
* finite outputs, one score per image;
* a stored golden value (when given).

It returns the reference result so a test can assert more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from cdm_bench.metric import Metric, convert_images


@dataclass
class KitResult:
    values: dict            # compute() / aggregate() of the whole set
    scores: np.ndarray | None  # per-image scores in input order (per-image metrics)


def _score(make: Callable[[], Metric], images, prompts, meta, chunks: Sequence[np.ndarray],
           batch: int) -> KitResult:
    """Score ``chunks`` (index arrays) each with its own metric instance (a "rank"), then merge."""
    per_image, states, scores = None, [], np.full(len(images), np.nan)
    for idx in chunks:
        m = make()
        per_image = m.per_image
        m.setup()
        try:
            m.reset()
            for start in range(0, len(idx), batch):
                b = idx[start:start + batch]
                out = m.update(convert_images(images[b], m.input_format), [prompts[i] for i in b],
                               [meta[i] for i in b])
                if per_image:
                    scores[b] = np.asarray(out, dtype=np.float64)
                else:
                    assert out is None, "set-level update() returns None"
            if not per_image:
                states.append(m.state())
        finally:
            m.teardown()
    final = make()
    if per_image:
        assert np.isfinite(scores).all(), f"non-finite per-image scores: {scores}"
        return KitResult(dict(final.aggregate(scores, list(meta))), scores)
    final.setup()
    try:
        final.load_states(states)
        return KitResult(dict(final.compute()), None)
    finally:
        final.teardown()


def _assert_close(a: KitResult, b: KitResult, what: str, rtol: float, atol: float) -> None:
    assert a.values.keys() == b.values.keys(), f"{what}: keys {a.values.keys()} != {b.values.keys()}"
    for k in a.values:
        assert np.isclose(a.values[k], b.values[k], rtol=rtol, atol=atol), \
            f"{what}: {k} = {b.values[k]!r}, expected {a.values[k]!r}"
    if a.scores is not None:
        np.testing.assert_allclose(b.scores, a.scores, rtol=rtol, atol=atol, err_msg=what)


def check_metric(make: Callable[[], Metric], images: np.ndarray, prompts: Sequence[str],
                 meta: Sequence[dict], golden: float | None = None, golden_rtol: float = 1e-4,
                 rtol: float = 1e-6, atol: float = 1e-9, seed: int = 0) -> KitResult:
    """Assert batch-size, order and 2-rank invariance, finiteness and the golden value."""
    n = len(images)
    assert n >= 4 and len(prompts) == n and len(meta) == n, "the kit needs >= 4 images with prompts and meta"
    everything = [np.arange(n)]
    ref = _score(make, images, prompts, meta, everything, batch=n)
    name = make().name
    assert all(np.isfinite(v) for v in ref.values.values()), f"non-finite values {ref.values}"
    assert name in ref.values, f"compute() must return the metric's own name {name!r} first"
    for batch in (1, 3):
        _assert_close(ref, _score(make, images, prompts, meta, everything, batch), f"batch size {batch}", rtol, atol)
    perm = np.random.default_rng(seed).permutation(n)
    shuffled = _score(make, images[perm], [prompts[i] for i in perm], [meta[i] for i in perm], everything, 3)
    if shuffled.scores is not None:  # back to the input order
        unshuffled = np.empty_like(shuffled.scores)
        unshuffled[perm] = shuffled.scores
        shuffled = KitResult(dict(make().aggregate(unshuffled, list(meta))), unshuffled)
    _assert_close(ref, shuffled, "shuffled order", rtol, atol)
    halves = np.array_split(np.arange(n), 2)
    _assert_close(ref, _score(make, images, prompts, meta, halves, 2), "2 ranks", rtol, atol)
    if golden is not None:
        assert np.isclose(ref.values[name], golden, rtol=golden_rtol, atol=1e-6), \
            f"{name} = {ref.values[name]!r}, golden value {golden!r}"
    return ref
