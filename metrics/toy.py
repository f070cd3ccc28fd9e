"""Metrics of the embedded toy world: ``toy_align`` (per image) and ``toy_fid`` (set level).

Both use the world's scorer network (:class:`cdm_bench.toy.scorer.ToyScorer`, trained and
cached per preset by :func:`cdm_bench.toy.artifacts.get_scorer`). Neither imports diffusers.

* ``toy_align`` (higher is better): per image, the fraction of the prompt's attributes
  (colour x shape objects) that the scorer recognises.
* ``toy_fid`` (lower is better): Frechet distance between the scorer's penultimate features
  of the generated images and of real world images rendered for the *same* prompts, with
  seeds ``meta["seed"] + REAL_SEED_OFFSET`` (so the reference matches the prompt
  distribution and never coincides with the ``toy-real`` generator's own images). The
  statistics and the distance are torchmetrics' ``FrechetInceptionDistance`` with the
  scorer as a custom ``feature`` module; sums are float64, and features are computed on
  fixed-size chunks, so splitting the images into batches (or ranks) does not change the
  value beyond float64 rounding.

Option ``scorer``: a preset name (``demo``, ``quick``, ``tiny``), a directory holding a saved
scorer, or a ``ToyScorer`` instance (tests).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from cdm_bench.metric import Metric, PerImageMetric

REAL_SEED_OFFSET = 1_000_003


def load_scorer(scorer: Any, device: str = "cpu"):
    """A preset name, a scorer directory or a ToyScorer -> ToyScorer (eval mode)."""
    from cdm_bench.toy.scorer import ToyScorer

    if isinstance(scorer, ToyScorer):
        return scorer.to(device).eval()
    if isinstance(scorer, (str, Path)) and Path(scorer).is_dir():
        return ToyScorer.load(scorer, device=device)
    from cdm_bench.toy.artifacts import get_scorer

    return get_scorer(str(scorer), device=device)


def _scorer_id(scorer: Any) -> str:
    return scorer if isinstance(scorer, str) else f"<{type(scorer).__name__}>"


class ToyAlign(PerImageMetric):
    """Fraction of the prompt's attributes that the toy scorer recognises in each image."""

    name = "toy_align"
    version = "1"
    higher_is_better = True
    input_format = "uint8_nhwc"

    def __init__(self, device: str = "cpu", scorer: Any = "demo"):
        super().__init__(device)
        self.scorer_spec = scorer
        self._scorer = None

    @property
    def scorer(self):
        if self._scorer is None:
            self._scorer = load_scorer(self.scorer_spec, self.device)
        return self._scorer

    def score(self, images, prompts: Sequence[str], meta: Sequence[dict]) -> np.ndarray:
        from cdm_bench.toy.scorer import alignment

        return alignment(self.scorer, np.asarray(images), list(prompts))

    def describe(self) -> dict:
        return {**super().describe(), "scorer": _scorer_id(self.scorer_spec)}


class ScorerFeatures(nn.Module):
    """torchmetrics feature extractor: uint8 (B, 3, H, W) -> (B, D) toy-scorer features."""

    def __init__(self, scorer):
        super().__init__()
        self.scorer = scorer
        self.num_features = int(scorer.config["feat_dim"])

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.scorer.features(imgs)


def real_seed(meta: dict) -> int:
    """Seed of the real reference image for one generated image."""
    if "seed" in meta:
        base = int(meta["seed"])
    else:
        base = zlib.crc32(f"{meta.get('prompt_id')}/{meta.get('k')}".encode())
    return (base + REAL_SEED_OFFSET) % (2**32)


class ToyFID(Metric):
    """Frechet distance in the toy scorer's feature space vs. real renders of the same prompts."""

    name = "toy_fid"
    version = "1"
    higher_is_better = False
    input_format = "uint8_nhwc"
    per_image = False

    def __init__(self, device: str = "cpu", scorer: Any = "demo"):
        super().__init__(device)
        self.scorer_spec = scorer
        self._fid = None

    @property
    def fid(self):
        if self._fid is None:
            from torchmetrics.image.fid import FrechetInceptionDistance

            extractor = ScorerFeatures(load_scorer(self.scorer_spec, self.device))
            self._fid = FrechetInceptionDistance(feature=extractor, reset_real_features=True,
                                                 normalize=False).to(self.device)
        return self._fid

    def update(self, images, prompts: Sequence[str], meta: Sequence[dict]) -> None:
        from cdm_bench.toy import world

        images = np.asarray(images)
        if len(images) != len(prompts) or len(meta) != len(prompts):
            raise ValueError(f"{len(images)} images, {len(prompts)} prompts, {len(meta)} meta entries")
        real = np.stack([world.render_for_prompt(p, real_seed(m)) for p, m in zip(prompts, meta)])
        fake_t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        real_t = torch.from_numpy(real).permute(0, 3, 1, 2)
        self.fid.update(fake_t, real=False)
        self.fid.update(real_t, real=True)
        return None

    def compute(self) -> dict[str, float]:
        n = int(self.fid.fake_features_num_samples)
        if n < 2:
            raise RuntimeError(f"metric {self.name!r} needs at least 2 images, got {n}")
        return {self.name: float(self.fid.compute()), f"{self.name}_n": n}

    def reset(self) -> None:
        if self._fid is not None:
            self._fid.reset()

    def describe(self) -> dict:
        return {**super().describe(), "scorer": _scorer_id(self.scorer_spec)}
