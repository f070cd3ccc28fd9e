"""The metric interface, shared by per-image scorers and set-level metrics (FID-like).

A metric is a stateful object, in the manner of ``torchmetrics.Metric``:

* ``update(images, prompts, meta)`` once per batch. Per-image metrics return the batch's
  per-image scores (kept, so leaderboards can be rebuilt and bootstrapped); set-level metrics
  accumulate state and return ``None``.
* ``compute()`` once at the end -> ``{"<name>": value, ...}``.

Class attributes declare what the metric is::

    name = "toy_align"          # registry name
    version = "1"               # bump when the number would change
    higher_is_better = True
    input_format = "uint8_nhwc" # see cdm_bench.metric.convert_images
    per_image = True

Images arrive as uint8 (B, H, W, 3); ``convert_images`` turns them into the declared format
once, so metrics never redo NCHW/NHWC or [0, 1] conversions themselves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

INPUT_FORMATS = ("uint8_nhwc", "float_nchw", "pil")


class MissingDependencyError(ImportError):
    """A metric's optional libraries or weights are missing; the message says how to install."""


def convert_images(images: np.ndarray, fmt: str) -> Any:
    """uint8 (B,H,W,3) -> the metric's declared input format."""
    if fmt == "uint8_nhwc":
        return images
    if fmt == "float_nchw":  # torch float32 in [0, 1]
        import torch

        return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    if fmt == "pil":
        from PIL import Image

        return [Image.fromarray(im) for im in images]
    raise ValueError(f"unknown input format {fmt!r}; expected one of {INPUT_FORMATS}")


class Metric(ABC):
    name: str = ""
    version: str = "1"
    higher_is_better: bool = True
    input_format: str = "uint8_nhwc"
    per_image: bool = True

    def __init__(self, device: str = "cpu", **options: Any):
        if options:
            raise TypeError(f"metric {self.name!r} got unknown option(s): {sorted(options)}")
        self.device = device

    @abstractmethod
    def update(self, images: Any, prompts: Sequence[str], meta: Sequence[dict]) -> np.ndarray | None:
        """Consume one batch (already in ``input_format``)."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The set-level value(s); the first key should be ``self.name``."""

    def reset(self) -> None:  # pragma: no cover - overridden where state exists
        pass

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version,
                "higher_is_better": self.higher_is_better, "input_format": self.input_format,
                "per_image": self.per_image}


class PerImageMetric(Metric):
    """Subclasses implement ``score``; the mean is the set value."""

    per_image = True

    def __init__(self, device: str = "cpu", **options: Any):
        super().__init__(device, **options)
        self._scores: list[np.ndarray] = []

    @abstractmethod
    def score(self, images: Any, prompts: Sequence[str], meta: Sequence[dict]) -> np.ndarray:
        """Per-image scores, shape (B,)."""

    def update(self, images, prompts, meta):
        s = np.asarray(self.score(images, prompts, meta), dtype=np.float64).reshape(-1)
        if len(s) != len(prompts):
            raise RuntimeError(f"metric {self.name!r} returned {len(s)} scores for {len(prompts)} images")
        self._scores.append(s)
        return s

    def compute(self) -> dict[str, float]:
        if not self._scores:
            raise RuntimeError(f"metric {self.name!r}: compute() before any update()")
        return {self.name: float(np.concatenate(self._scores).mean())}

    def reset(self) -> None:
        self._scores = []
