"""``diversity`` (set level, higher is better): how different a prompt's samples are from each other.

Per prompt, over its ``samples`` (K >= 2) images:

* **LPIPS**: the mean over the K(K-1)/2 pairs of the ``lpips`` package's ``LPIPS`` (the authors'
  reference implementation, v0.1 linear heads shipped inside the package) at the images' own
  resolution. Its backbone (``lpips_net``: ``alex`` default, ``vgg``, ``squeeze``) is torchvision's
  ImageNet network, read from a local file (option ``lpips_backbone``; default: torch's hub cache,
  where torchvision keeps its download, e.g. ``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``);
  nothing is downloaded, a missing file is a one-line error naming it and its URL.
* **Vendi score** (``vendi_score.vendi.score_X``, q = 1): exp of the entropy of the eigenvalues of
  the samples' cosine-similarity matrix / K, on the Inception-v3 pool features of :mod:`metrics.fid`
  (torch-fidelity's network, clean-fid's resize; options ``inception_weights``, ``features``,
  ``resize``); 1 for identical samples, K for orthogonal ones.

The value ``diversity`` is the mean per-prompt LPIPS; sub-values ``lpips`` (the same), ``vendi``
(mean per-prompt Vendi score) and ``n_prompts``. ``group_size`` = ``samples``, so evaluate keeps a
prompt's samples in one batch and chunk; samples that arrive in several batches wait in the metric
until their prompt is complete. A prompt with fewer samples (a run with K < ``samples``), or a
sample index ``k >= samples``, is refused with a one-line error, as is ``samples < 2``.
State: the per-prompt values (concatenated; mergeable across chunks and ranks). Both networks run
in float32 whatever ``dtype`` says.
"""

from __future__ import annotations

import math
import warnings
from itertools import combinations
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cdm_bench.metric import Metric, Weights, weights_fingerprint
from metrics.fid import FEATURE_DIMS, RESIZE_MODES, InceptionFeatures, inception_weights_spec

#: lpips net -> (torchvision constructor, weights file in torch's hub cache)
BACKBONES = {"alex": ("alexnet", "alexnet-owt-7be5be79.pth"), "vgg": ("vgg16", "vgg16-397923af.pth"),
             "squeeze": ("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth")}
PAIR_BATCH = 16


def lpips_backbone_spec(net: str, path=None) -> Weights:
    arch, file = BACKBONES[net]
    default = Path(torch.hub.get_dir()) / "checkpoints" / file
    return Weights(f"LPIPS {net} backbone (torchvision {arch}, {file} from https://download.pytorch.org/models/{file})",
                   path=str(path or default), option="lpips_backbone")


def lpips_heads_path(net: str) -> Path:
    """The v0.1 linear heads that ship inside the lpips package."""
    import importlib.util

    spec = importlib.util.find_spec("lpips")
    return Path(spec.origin).parent / "weights" / "v0.1" / f"{net}.pth"


def load_lpips(net: str, backbone_path, device: str = "cpu"):
    """lpips.LPIPS with its shipped heads and the torchvision backbone from a local file."""
    from metrics._compat_torchvision import ensure_torchvision

    ensure_torchvision()
    import lpips

    with warnings.catch_warnings():  # lpips asks torchvision for pretrained=False (deprecated name)
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    state = torch.load(backbone_path, map_location="cpu", weights_only=True)
    # lpips slices torchvision's ``features`` keeping the layer indices: net.slice<k>.<i>.* = features.<i>.*
    wanted = {k: "features." + k.split(".", 1)[1] for k in model.net.state_dict()}
    missing = [v for v in wanted.values() if v not in state]
    if missing:
        raise ValueError(f"{backbone_path} is not a torchvision {BACKBONES[net][0]} state dict (no {missing[0]!r})")
    model.net.load_state_dict({k: state[v] for k, v in wanted.items()})
    return model.to(device).eval()


class Diversity(Metric):
    name = "diversity"
    version = "1"
    higher_is_better = True
    input_format = "uint8_nhwc"
    per_image = False
    requires = ("lpips", "torchvision", "vendi_score", "sklearn", "scipy", "torch_fidelity", "cleanfid")
    extra = "diversity"

    def __init__(self, device: str = "cpu", dtype: str = "float32", samples: int = 4, lpips_net: str = "alex",
                 lpips_backbone: str | None = None, inception_weights: str | None = None, features: int = 2048,
                 resize: str = "clean"):
        super().__init__(device, dtype)
        if int(samples) < 2:
            raise ValueError(f"diversity compares a prompt's samples: samples must be >= 2, got {samples}")
        if lpips_net not in BACKBONES:
            raise ValueError(f"lpips_net must be one of {sorted(BACKBONES)}, got {lpips_net!r}")
        if int(features) not in FEATURE_DIMS or resize not in RESIZE_MODES:
            raise ValueError(f"features must be one of {FEATURE_DIMS} and resize one of {RESIZE_MODES}, "
                             f"got {features!r} and {resize!r}")
        self.samples = self.group_size = int(samples)
        self.lpips_net, self.lpips_backbone, self.inception_weights = lpips_net, lpips_backbone, inception_weights
        self.features, self.resize = int(features), resize
        self.lpips = self.extractor = None
        self.reset()

    def weights(self) -> list[Weights]:
        return [lpips_backbone_spec(self.lpips_net, self.lpips_backbone),
                inception_weights_spec(self.inception_weights)]

    def setup(self) -> None:
        if self.lpips is None:
            located = [w.locate() for w in self.weights()]
            if None in located:
                self.check()  # the one-line missing-weights error
            self.lpips = load_lpips(self.lpips_net, located[0], self.device)
            self.extractor = InceptionFeatures(located[1], self.resize, self.features).to(self.device)

    def teardown(self) -> None:
        self.lpips = self.extractor = None
        super().teardown()

    def reset(self) -> None:
        self._pending: dict = {}  # prompt id -> [(k, image)] until it has ``samples`` images
        self._lpips: list[float] = []
        self._vendi: list[float] = []

    def update(self, images, prompts: Sequence[str], meta: Sequence[dict]) -> None:
        images = np.asarray(images)
        if not (len(images) == len(prompts) == len(meta)):
            raise ValueError(f"{len(images)} images, {len(prompts)} prompts, {len(meta)} meta entries")
        for image, record in zip(images, meta):
            pid = record["prompt_id"]
            group = self._pending.setdefault(pid, [])
            k = int(record.get("k", len(group)))
            if k >= self.samples:
                raise ValueError(f"metric {self.name!r}: prompt {pid!r} has sample k={k} but samples={self.samples}: "
                                 f"set option 'samples' to the run's samples per prompt")
            group.append((k, image))
            if len(group) == self.samples:
                del self._pending[pid]
                self._score_prompt(np.stack([im for _, im in sorted(group, key=lambda t: t[0])]))
        return None

    @torch.inference_mode()
    def _score_prompt(self, images: np.ndarray) -> None:
        """Mean pairwise LPIPS and the Vendi score of one prompt's samples (in k order)."""
        from vendi_score import vendi

        self.setup()
        x = torch.from_numpy(images).permute(0, 3, 1, 2).to(self.device, torch.float32) / 127.5 - 1  # [-1, 1]
        pairs = torch.tensor(list(combinations(range(len(images)), 2)), device=self.device)
        dists = [self.lpips(x[p[:, 0]], x[p[:, 1]]).flatten() for p in pairs.split(PAIR_BATCH)]
        self._lpips.append(float(torch.cat(dists).double().mean()))
        feats = self.extractor(images).double().cpu().numpy()
        self._vendi.append(float(vendi.score_X(feats, q=1, normalize=True)))

    def _check_complete(self) -> None:
        if self._pending:
            pid, group = next(iter(self._pending.items()))
            raise ValueError(f"metric {self.name!r}: prompt {pid!r} has {len(group)} sample(s), expected "
                             f"samples={self.samples} (set option 'samples' to the run's samples per prompt; "
                             f"diversity needs >= 2)")

    def state(self) -> dict:
        self._check_complete()
        return {"lpips": torch.tensor(self._lpips, dtype=torch.float64),
                "vendi": torch.tensor(self._vendi, dtype=torch.float64)}

    def load_states(self, states: Sequence[dict]) -> None:
        self.reset()
        for st in states:
            self._lpips += st["lpips"].tolist()
            self._vendi += st["vendi"].tolist()

    def compute(self) -> dict[str, float]:
        self._check_complete()
        n = len(self._lpips)
        if n == 0:
            raise RuntimeError(f"metric {self.name!r}: no prompt with {self.samples} samples was scored")
        lp, ve = math.fsum(self._lpips) / n, math.fsum(self._vendi) / n  # exact sums: order-independent
        return {self.name: lp, "lpips": lp, "vendi": ve, "n_prompts": n}

    def describe(self) -> dict:
        import importlib.metadata as md

        w = self.weights()
        return {**super().describe(), "samples": self.samples, "lpips_net": self.lpips_net,
                "lpips_version": md.version("lpips") if self._has("lpips") else None,
                "lpips_backbone_fingerprint": weights_fingerprint(w[0].path),
                "lpips_heads_fingerprint": weights_fingerprint(lpips_heads_path(self.lpips_net)) if self._has("lpips")
                else None,
                "vendi": "vendi_score.vendi.score_X(q=1, cosine)", "features": self.features, "resize": self.resize,
                "inception_fingerprint": weights_fingerprint(w[1].path)}

    @staticmethod
    def _has(module: str) -> bool:
        import importlib.util

        return importlib.util.find_spec(module) is not None
