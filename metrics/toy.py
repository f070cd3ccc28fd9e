"""Metrics of the embedded toy world: ``toy_align`` (per image) and ``toy_fid`` (set level).

Both use the world's scorer network (:class:`cdm_bench.toy.scorer.ToyScorer`, trained and
cached per preset by :func:`cdm_bench.toy.artifacts.get_scorer`). Neither imports diffusers.

* ``toy_align`` (higher is better): per image, the fraction of the prompt's attributes
  (colour x shape objects) that the scorer recognises.
* ``toy_fid`` (lower is better; its values also hold the ``mean_term`` and ``cov_term`` it is the
  sum of): Frechet distance between the scorer's penultimate features
  of the generated images and of real world images rendered for the *same* prompts, with
  seeds ``meta["seed"] + REAL_SEED_OFFSET`` (so the reference matches the prompt
  distribution and never coincides with the ``toy-real`` generator's own images). The
  statistics and the distance are torchmetrics' ``FrechetInceptionDistance`` with the
  scorer as a custom ``feature`` module; sums are float64, and features are computed on
  fixed-size chunks, so splitting the images into batches (or ranks) does not change the
  value beyond float64 rounding.

Option ``scorer``: a preset name (``demo``, ``quick``, ``tiny``), a directory holding a saved
scorer, or a ``ToyScorer`` instance (tests). The scorer is loaded in ``setup()`` (a preset's
scorer is trained into the cache on first use) and freed in ``teardown()``; the identity
(``describe()``) names the preset's config hash, and results record the weights' sha256.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from cdm_bench.metric import Metric, PerImageMetric, TorchmetricsState

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
    """The scorer's identity before it is loaded: a preset's name, training-config hash and (once
    cached) weights' content hash; a folder's path and content hash."""
    from cdm_bench.hashing import tree_sha256

    if isinstance(scorer, str) and not Path(scorer).is_dir():
        from cdm_bench.toy.artifacts import cached_scorer_dir
        from cdm_bench.toy.train import PRESETS

        if scorer in PRESETS:  # + the cached weights' content, once trained
            cached = cached_scorer_dir(scorer)
            return f"{scorer}:{PRESETS[scorer][0].hash()}" + (f":{tree_sha256(cached)}" if cached else "")
        return scorer
    if isinstance(scorer, (str, Path)):
        return f"{Path(scorer).resolve()}:{tree_sha256(scorer)}"
    return f"<{type(scorer).__name__}>"


class _ScorerMetric:
    """Shared scorer handling: loaded in setup(), freed in teardown(), named in describe()."""

    scorer_spec: Any
    device: str

    def _init_scorer(self, scorer: Any) -> None:
        self.scorer_spec = scorer
        self._scorer = None

    def setup(self) -> None:
        self.scorer  # noqa: B018 - load now

    def teardown(self) -> None:
        self.free_scorer()
        super().teardown()

    def describe(self) -> dict:
        return {**super().describe(), "scorer": _scorer_id(self.scorer_spec)}

    @property
    def scorer(self):
        if getattr(self, "_scorer", None) is None:
            self._scorer = load_scorer(self.scorer_spec, self.device)
        return self._scorer

    def free_scorer(self) -> None:
        self._scorer = None

    def prepare(self) -> None:
        """A preset's scorer is trained into the cache now (first use), so the identity holds it."""
        from cdm_bench.toy.train import PRESETS

        if isinstance(self.scorer_spec, str) and self.scorer_spec in PRESETS and not Path(self.scorer_spec).is_dir():
            from cdm_bench.toy.artifacts import scorer_dir

            scorer_dir(self.scorer_spec)

    def weights_sha256(self) -> str | None:
        """sha256 of the loaded scorer's weights (recorded in results)."""
        import hashlib

        if getattr(self, "_scorer", None) is None:
            return None
        h = hashlib.sha256()
        for k, v in sorted(self._scorer.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


class ToyAlign(_ScorerMetric, PerImageMetric):
    """Fraction of the prompt's attributes that the toy scorer recognises in each image."""

    name = "toy_align"
    version = "1"
    higher_is_better = True
    input_format = "uint8_nhwc"

    def __init__(self, device: str = "cpu", dtype: str = "float32", scorer: Any = "demo"):
        super().__init__(device, dtype)
        self._init_scorer(scorer)

    def score(self, images, prompts: Sequence[str], meta: Sequence[dict]) -> np.ndarray:
        from cdm_bench.toy.scorer import alignment

        return alignment(self.scorer, np.asarray(images), list(prompts))


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


class ToyFID(_ScorerMetric, TorchmetricsState, Metric):
    """Frechet distance in the toy scorer's feature space vs. real renders of the same prompts."""

    name = "toy_fid"
    version = "1"
    higher_is_better = False
    input_format = "uint8_nhwc"
    per_image = False

    def __init__(self, device: str = "cpu", dtype: str = "float32", scorer: Any = "demo"):
        super().__init__(device, dtype)
        self._init_scorer(scorer)
        self._fid = None

    @property
    def fid(self):
        if self._fid is None:
            from torchmetrics.image.fid import FrechetInceptionDistance

            extractor = ScorerFeatures(self.scorer)
            self._fid = FrechetInceptionDistance(feature=extractor, reset_real_features=True,
                                                 normalize=False, sync_on_compute=False).to(self.device)
        return self._fid

    @property
    def tm(self):  # TorchmetricsState
        return self.fid

    def setup(self) -> None:
        self.fid  # noqa: B018 - load now

    def load_states(self, states) -> None:
        super().load_states(states)
        if not hasattr(self.fid, "orig_dtype"):  # set by FID's update(); merged states skip it
            self.fid.orig_dtype = torch.float32

    def teardown(self) -> None:
        self._fid = None
        super().teardown()

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
        mean_term, cov_term = self._terms()
        return {self.name: float(self.fid.compute()), "n": n, "mean_term": mean_term, "cov_term": cov_term}

    def _terms(self) -> tuple[float, float]:
        """The distance's mean term |mu_r - mu_g|^2 and covariance term (they sum to it)."""
        from cdm_bench.frechet import frechet_terms

        f = self.fid
        stats = []
        for kind in ("real", "fake"):
            n = getattr(f, f"{kind}_features_num_samples").double()
            total = getattr(f, f"{kind}_features_sum").double()
            mu = total / n
            cov = (getattr(f, f"{kind}_features_cov_sum").double() - n * torch.outer(mu, mu)) / (n - 1)
            stats += [mu.cpu().numpy(), cov.cpu().numpy()]
        return frechet_terms(stats[0], stats[1], stats[2], stats[3])

    def reset(self) -> None:
        if self._fid is not None:
            self._fid.reset()
