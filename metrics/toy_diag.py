"""``toy_diag``: where a toy-world image set differs from real renders of the same prompts.

Set level; the value is ``bg_tv`` (lower is better): the total-variation distance between the
distribution of background kinds (the scorer's background head) in the images and in real renders
of the same prompts with the seeds toy_fid uses (``metrics.toy.real_seed``). Sub-values:

* ``count_acc``: the share of images whose object count (the scorer's count head) is the prompt's;
* ``hf_rel``: the mean share of spectral power (mean removed per channel) above half the Nyquist
  frequency, relative to the real renders' (1 = as real; grain raises it, blur lowers it);
* ``pix_std_rel``: the mean per-image pixel standard deviation relative to the real renders' (contrast);
* ``bg_<kind>`` / ``real_bg_<kind>``: the two background-kind distributions themselves.

Its state is sums (resumable per chunk, shardable): counts per background kind, correct counts,
and the sums of the per-image high-frequency shares and pixel standard deviations.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from cdm_bench.metric import Metric
from metrics.toy import _ScorerMetric, real_seed

KEYS = ("n", "count_ok", "hf", "real_hf", "std", "real_std")


def high_freq_share(images: np.ndarray) -> np.ndarray:
    """Per image: the share of spectral power (mean removed per channel) above radius 1/4 cycles per pixel."""
    x = images.astype(np.float64) / 255.0
    x = x - x.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(x, axes=(1, 2))) ** 2
    h, w = images.shape[1:3]
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    high = (np.sqrt(fy ** 2 + fx ** 2) > 0.25)[None, :, :, None]
    return (power * high).sum(axis=(1, 2, 3)) / np.maximum(power.sum(axis=(1, 2, 3)), 1e-12)


class ToyDiag(_ScorerMetric, Metric):
    """Background mix, object counts, high frequencies and contrast against real renders."""

    name = "toy_diag"
    version = "1"
    higher_is_better = False
    input_format = "uint8_nhwc"
    per_image = False

    def __init__(self, device: str = "cpu", dtype: str = "float32", scorer: Any = "demo"):
        super().__init__(device, dtype)
        self._init_scorer(scorer)
        self.reset()

    def _heads(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.scorer
        with torch.no_grad():
            f = s.features(images)
            return s.count_head(f).argmax(1).numpy() + 1, s.bg_head(f).argmax(1).numpy()

    def update(self, images, prompts: Sequence[str], meta: Sequence[dict]) -> None:
        from cdm_bench.toy import world

        images = np.asarray(images)
        if len(images) != len(prompts) or len(meta) != len(prompts):
            raise ValueError(f"{len(images)} images, {len(prompts)} prompts, {len(meta)} meta entries")
        real = np.stack([world.render_for_prompt(p, real_seed(m)) for p, m in zip(prompts, meta)])
        counts, kinds = self._heads(images)
        _, real_kinds = self._heads(real)
        want = np.array([len(world.scene_for_prompt(p, 0).objects) for p in prompts])
        k = self._n_kinds()
        if self._bg.size != k:
            self._bg, self._real_bg = np.zeros(k), np.zeros(k)
        self._bg += np.bincount(kinds, minlength=k)[:k]
        self._real_bg += np.bincount(real_kinds, minlength=k)[:k]
        add = {"n": len(images), "count_ok": float((counts == want).sum()), "hf": high_freq_share(images).sum(),
               "real_hf": high_freq_share(real).sum(), "std": images.astype(np.float64).std(axis=(1, 2, 3)).sum(),
               "real_std": real.astype(np.float64).std(axis=(1, 2, 3)).sum()}
        for key, v in add.items():
            self._sums[key] += float(v)

    def _n_kinds(self) -> int:
        return int(self.scorer.bg_head.out_features)

    def _kind_names(self) -> list[str]:
        names = list(self.scorer.config.get("backgrounds") or [])
        return names if len(names) == self._n_kinds() else [str(i) for i in range(self._n_kinds())]

    def compute(self) -> dict[str, float]:
        n = self._sums["n"]
        if n < 1:
            raise RuntimeError(f"metric {self.name!r}: compute() before any update()")
        fake, real = self._bg / n, self._real_bg / n
        out = {self.name: float(0.5 * np.abs(fake - real).sum()), "n": int(n), "count_acc": self._sums["count_ok"] / n,
               "hf_rel": self._sums["hf"] / max(self._sums["real_hf"], 1e-12),
               "pix_std_rel": self._sums["std"] / max(self._sums["real_std"], 1e-12)}
        for name, a, b in zip(self._kind_names(), fake, real):
            out[f"bg_{name}"], out[f"real_bg_{name}"] = float(a), float(b)
        return out

    def reset(self) -> None:
        self._sums = dict.fromkeys(KEYS, 0.0)
        self._bg, self._real_bg = np.zeros(0), np.zeros(0)

    def state(self) -> dict:
        return {"sums": torch.tensor([self._sums[k] for k in KEYS], dtype=torch.float64),
                "bg": torch.from_numpy(self._bg.copy()), "real_bg": torch.from_numpy(self._real_bg.copy())}

    def load_states(self, states) -> None:
        self.reset()
        k = self._n_kinds()
        self._bg, self._real_bg = np.zeros(k), np.zeros(k)
        for st in states:
            for key, v in zip(KEYS, st["sums"].tolist()):
                self._sums[key] += v
            self._bg += st["bg"].numpy()
            self._real_bg += st["real_bg"].numpy()
