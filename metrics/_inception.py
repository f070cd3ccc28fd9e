"""Inception-v3 features for FID-like metrics: torch-fidelity's extractor from a local weights
file, clean-fid's resize, and the helpers that read reference images (see :mod:`metrics.fid`)."""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from cdm_bench.hashing import file_sha256

from cdm_bench.metric import Weights

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
EXTRACTOR = "torch-fidelity FeatureExtractorInceptionV3 (inception-v3-compat)"
FEATURE_DIMS = (64, 192, 768, 2048)
RESIZE_MODES = ("clean", "legacy_pytorch", "legacy_tensorflow")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def inception_weights_spec(path=None) -> Weights:
    """The Inception weights file: ``path``, or where torch-fidelity caches its download."""
    default = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    return Weights(f"Inception-v3 FID weights ({INCEPTION_FILE}, from {INCEPTION_URL})",
                   path=str(path or default), option="inception_weights")


class InceptionFeatures(nn.Module):
    """uint8 images ((B, H, W, 3) array, or a list of (H, W, 3) arrays of any sizes) -> float32
    (B, D) features of torch-fidelity's Inception-v3, resized as clean-fid's mode ``resize`` does."""

    def __init__(self, weights_path, resize: str = "clean", dims: int = 2048):
        super().__init__()
        from cleanfid.resize import build_resizer
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.resize_mode, self.num_features = resize, dims
        self._resizer = None if resize == "legacy_tensorflow" else build_resizer(resize)
        # antialias=False: the network's TF1-compatible resize (torch-fidelity's); with a clean-fid
        # resize it only sees a 299x299 placeholder, and the antialiased torch path is the cheaper one
        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(dims)],
                                      feature_extractor_weights_path=str(weights_path),
                                      antialias=self._resizer is not None)
        self._pending = None
        self.net.Conv2d_1a_3x3.register_forward_pre_hook(self._inject)

    def _inject(self, module, args):
        """The clean-fid-resized image, normalised as the network does, replaces the placeholder."""
        return None if self._pending is None else (self._pending,)

    @torch.inference_mode()
    def forward(self, images) -> torch.Tensor:
        device, arrays = next(self.net.parameters()).device, [np.asarray(im) for im in images]
        if len(arrays) == 0:
            return torch.zeros(0, self.num_features, device=device)
        if self._resizer is None:  # the network resizes the uint8 images itself
            groups = [np.stack(arrays)] if len({a.shape for a in arrays}) == 1 else [a[None] for a in arrays]
            return torch.cat([self.net(torch.from_numpy(g).permute(0, 3, 1, 2).to(device)) for g in groups]).float()
        with ThreadPoolExecutor(max(1, min(len(arrays), os.cpu_count() or 1))) as pool:  # PIL releases the GIL
            resized = torch.from_numpy(np.stack(list(pool.map(self._resizer, arrays)))).permute(0, 3, 1, 2)
        self._pending = (resized.to(device) - 128) / 128
        try:
            return self.net(torch.zeros(len(images), 3, 299, 299, dtype=torch.uint8, device=device)).float()
        finally:
            self._pending = None


class _Given(nn.Identity):
    """torchmetrics' feature module for features computed beforehand: a pass-through."""

    def __init__(self, dims: int):
        super().__init__()
        self.num_features = dims


# -- real images -----------------------------------------------------------------------------------
def list_images(folder) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted by relative path; [] when it is missing."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        return []
    files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def files_sha256(files: Sequence[Path], root: Path) -> str:
    """Content hash of an image set: relative names and each file's sha256."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(root).as_posix()}:{file_sha256(f)}\n".encode())
    return h.hexdigest()


def load_image(source, resolution: int | None = None) -> np.ndarray:
    """A file (path or bytes) -> uint8 (H, W, 3); with ``resolution``: centre-cropped to a square
    and resized to ``resolution`` x ``resolution`` (PIL bicubic), like saved generated images."""
    from PIL import Image

    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
        im = im.convert("RGB")
        if resolution:
            w, h = im.size
            s = min(w, h)
            box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
            im = im.crop(box).resize((resolution, resolution), Image.BICUBIC)
        return np.asarray(im)
