"""``fid`` and ``kid`` (set level, lower is better): Inception-v3 features of generated vs real images.

* Features: torch-fidelity's ``FeatureExtractorInceptionV3`` (TF-FID weights) built by torchmetrics'
  ``NoTrainInceptionV3`` from a local file: option ``inception_weights``, default torch-fidelity's
  download cache ``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``; never
  downloaded (a missing file is a one-line error with its URL). ``features``: pool layer 64, 192,
  768 or 2048 (pool3, the FID standard).
* ``resize`` (clean-fid's modes): ``clean`` (default; clean-fid's ``build_resizer``: PIL bicubic to
  299x299 per channel of the uint8 image, kept as float), ``legacy_pytorch`` (clean-fid's torch
  bilinear) or ``legacy_tensorflow`` (the network's own TF1-style resize of the uint8 image, as
  torch-fidelity does). The network takes only uint8 and resizes itself, so a clean-fid image enters
  through a forward pre-hook on its first convolution; the rest is the network's own forward.
* Statistics and distances: torchmetrics' ``FrechetInceptionDistance`` / ``KernelInceptionDistance``
  fed with the features (float64 sums). KID: ``subsets`` MMDs on subsets of ``min(subset_size,
  n_real, n_fake)`` (clean-fid's rule), drawn with a seeded generator from canonically ordered
  features, so batching, order and sharding do not change it.
* ``reference``: a folder of real images (recursive; ``reference_resolution`` centre-crops and
  resizes them), whose features are computed once and cached in ``cache_dir()/fid-reference/``,
  keyed by extractor, weights fingerprint, layer, resize mode, resolution and the images' content
  hash; or ``prompt_images``: each prompt's paired real image (manifest field ``image_field``,
  default ``file_name`` as the ``coco`` prompt source writes it, under ``image_root``), counted once
  (its ``k == 0`` record), features cached per file hash.
* State: FID the sums of the generated features (and of the real ones with ``prompt_images``),
  merged by addition (D x D float64: 32 MiB per chunk at D = 2048); KID the features themselves.

Inception runs in float32 whatever ``dtype`` says (torch-fidelity supports float32/64 only).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cdm_bench.errors import MissingDependencyError
from cdm_bench.metric import Metric, Weights, weights_fingerprint
from metrics._inception import (EXTRACTOR, FEATURE_DIMS, INCEPTION_FILE, INCEPTION_URL,  # noqa: F401 - re-exported
                                 RESIZE_MODES, InceptionFeatures, _Given, files_sha256, inception_weights_spec,
                                 list_images, load_image)

CACHE_FORMAT = 1
REFERENCE_BATCH = 32

class _InceptionSetMetric(Metric):
    """Shared by FID and KID: options, weights, the extractor and the real features."""

    higher_is_better = False
    input_format = "uint8_nhwc"
    per_image = False
    requires = ("torch_fidelity", "cleanfid", "scipy")
    extra = "fid"

    def __init__(self, device: str = "cpu", dtype: str = "float32", reference: str | None = None,
                 resize: str = "clean", features: int = 2048, inception_weights: str | None = None,
                 reference_resolution: int | None = None, image_field: str = "file_name",
                 image_root: str | None = None):
        super().__init__(device, dtype)
        if not reference:
            raise ValueError("option 'reference' is required: a folder of real images, or 'prompt_images'")
        if resize not in RESIZE_MODES or int(features) not in FEATURE_DIMS:
            raise ValueError(f"resize must be one of {RESIZE_MODES} and features one of {FEATURE_DIMS}, "
                             f"got {resize!r} and {features!r}")
        self.reference, self.resize, self.features = str(reference), resize, int(features)
        self.inception_weights = inception_weights
        self.reference_resolution = int(reference_resolution) if reference_resolution else None
        self.image_field, self.image_root = image_field, image_root
        self.extractor: InceptionFeatures | None = None
        self._reference_sha: str | None = None

    @property
    def prompt_images(self) -> bool:
        return self.reference == "prompt_images"

    def weights(self) -> list[Weights]:
        return [inception_weights_spec(self.inception_weights)]

    def check(self) -> None:
        super().check()
        if not self.prompt_images and not list_images(self.reference):
            state = "has no images" if Path(self.reference).expanduser().is_dir() else "not found"
            raise MissingDependencyError(
                f"metric {self.name!r} needs reference images: {self.reference} {state}; pass a folder of real "
                f"images (or 'prompt_images') as option 'reference'")

    def setup(self) -> None:
        if self.extractor is None:
            path = self.weights()[0].locate()
            if path is None:
                Metric.check(self)  # raises the one-line missing-weights error
            self.extractor = InceptionFeatures(path, self.resize, self.features).to(self.device)

    def teardown(self) -> None:
        self.extractor = None
        super().teardown()

    def extract(self, images) -> torch.Tensor:
        """float64 features on the metric's device."""
        self.setup()
        return self.extractor(images).double().to(self.device)

    def extractor_key(self) -> dict:
        return {"format": CACHE_FORMAT, "extractor": EXTRACTOR, "features": self.features, "resize": self.resize,
                "weights": weights_fingerprint(self.weights()[0].path), "resolution": self.reference_resolution}

    # -- a reference folder -------------------------------------------------------------------------
    def reference_sha256(self) -> str | None:
        """Content hash of the reference folder (computed once per instance)."""
        if self._reference_sha is None and not self.prompt_images:
            files = list_images(self.reference)
            self._reference_sha = files_sha256(files, Path(self.reference).expanduser()) if files else None
        return self._reference_sha

    def reference_cache_path(self) -> Path:
        from cdm_bench.paths import cache_dir

        key = json.dumps({**self.extractor_key(), "images": self.reference_sha256()}, sort_keys=True)
        return cache_dir() / "fid-reference" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"

    def reference_features(self) -> tuple[torch.Tensor, bool]:
        """float32 (n, D) features of the reference folder, and whether they came from the cache."""
        from safetensors.torch import load_file, save

        from cdm_bench.atomic import atomic_write_bytes

        if self.reference_sha256() is None:
            self.check()  # a missing or empty folder: one line
        path = self.reference_cache_path()
        if path.exists():
            return load_file(path)["features"], True
        files, res = list_images(self.reference), self.reference_resolution
        feats = torch.cat([self.extract([load_image(f, res) for f in files[i:i + REFERENCE_BATCH]]).float().cpu()
                           for i in range(0, len(files), REFERENCE_BATCH)])
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"key": json.dumps({**self.extractor_key(), "images": self.reference_sha256()}), "n": str(len(files)),
                "folder": str(Path(self.reference).expanduser().resolve())}
        atomic_write_bytes(path, save({"features": feats.contiguous()}, metadata=meta))
        return feats, False

    # -- prompt_images: each prompt's paired real image ------------------------------------------------
    def _paired_path(self, record: dict) -> Path:
        value = record.get(self.image_field)
        if not value:
            raise ValueError(f"metric {self.name!r}: record {record.get('prompt_id')!r} has no {self.image_field!r} "
                             f"field (reference='prompt_images' needs each prompt row's real image path)")
        path = Path(str(value)).expanduser()
        if not path.is_absolute() and self.image_root:
            path = Path(self.image_root).expanduser() / path
        if not path.is_file():
            raise FileNotFoundError(f"metric {self.name!r}: real image {path} of prompt {record.get('prompt_id')!r} "
                                    f"not found (option 'image_root': the folder {self.image_field!r} is relative to)")
        return path

    def paired_real_features(self, meta: Sequence[dict]) -> torch.Tensor | None:
        """float64 features of the paired real images of the batch's prompts (from their k == 0
        records), cached per file content hash; None when the batch has no k == 0 record."""
        from cdm_bench.paths import cache_dir
        from cdm_bench.atomic import atomic_write_bytes

        datas = [self._paired_path(m).read_bytes() for m in meta if int(m.get("k", 0)) == 0]
        if not datas:
            return None
        key = hashlib.sha256(json.dumps(self.extractor_key(), sort_keys=True).encode()).hexdigest()[:24]
        cdir = cache_dir() / "fid-features" / key
        files = [cdir / f"{hashlib.sha256(d).hexdigest()}.f32" for d in datas]  # raw float32 features
        missing = [i for i, f in enumerate(files) if not f.exists()]
        if missing:
            cdir.mkdir(parents=True, exist_ok=True)
            new = self.extract([load_image(datas[i], self.reference_resolution) for i in missing]).float().cpu().numpy()
            for i, feat in zip(missing, new):
                atomic_write_bytes(files[i], feat.tobytes())
        feats = np.stack([np.frombuffer(f.read_bytes(), dtype=np.float32) for f in files])
        return torch.from_numpy(feats).double().to(self.device)

    def update(self, images, prompts: Sequence[str], meta: Sequence[dict]) -> None:
        if not (len(images) == len(prompts) == len(meta)):
            raise ValueError(f"{len(images)} images, {len(prompts)} prompts, {len(meta)} meta entries")
        self.add(self.extract(np.asarray(images)), self.paired_real_features(meta) if self.prompt_images else None)
        return None

    def add(self, fake: torch.Tensor, real: torch.Tensor | None) -> None:
        """Accumulate a batch's features (float64, on the device)."""
        raise NotImplementedError

    def _need_two(self, n: int, n_ref: int) -> None:
        if n < 2 or n_ref < 2:
            raise RuntimeError(f"metric {self.name!r} needs at least 2 generated and 2 reference images, "
                               f"got {n} and {n_ref}")

    def describe(self) -> dict:
        out = {**super().describe(), "feature_extractor": EXTRACTOR, "features": self.features,
               "inception_fingerprint": weights_fingerprint(self.weights()[0].path), "resize": self.resize,
               "reference_resolution": self.reference_resolution}
        if self.prompt_images:
            out["reference"] = {"prompt_images": self.image_field, "image_root": self.image_root}
        else:
            out["reference"] = str(Path(self.reference).expanduser().resolve())
            out["reference_sha256"] = self.reference_sha256()
        return out


class FID(_InceptionSetMetric):
    """Frechet Inception Distance (torchmetrics' ``FrechetInceptionDistance`` on the features)."""

    name = "fid"
    version = "1"
    _tm = None

    def _new_tm(self):
        from torchmetrics.image.fid import FrechetInceptionDistance

        return FrechetInceptionDistance(feature=_Given(self.features), reset_real_features=True,
                                        sync_on_compute=False).to(self.device)

    @property
    def tm(self):
        if self._tm is None:
            self._tm = self._new_tm()
        return self._tm

    def add(self, fake, real) -> None:
        self.tm.update(fake, real=False)
        if real is not None:
            self.tm.update(real, real=True)

    def reset(self) -> None:
        if self._tm is not None:
            self._tm.reset()

    def state(self) -> dict:
        """torchmetrics' sums: of the generated features (and of the real ones with prompt_images)."""
        return {k: v.detach().cpu().clone() for k, v in self.tm.metric_state.items()
                if self.prompt_images or k.startswith("fake_")}

    def load_states(self, states: Sequence[dict]) -> None:
        self.tm.reset()
        zeros = {k: torch.zeros_like(v) for k, v in self.tm.metric_state.items()}
        for st in states:  # torchmetrics' merge_state wants every state: absent ones are zero sums
            self.tm.merge_state({**zeros, **{k: v.to(self.device) for k, v in st.items()}})

    def compute(self) -> dict[str, float]:
        tm = self._new_tm()  # a fresh metric: compute() never changes the accumulated state
        tm.merge_state({k: v.clone() for k, v in self.tm.metric_state.items()})
        if not self.prompt_images:
            tm.update(self.reference_features()[0].double().to(self.device), real=True)
        n, n_ref = int(tm.fake_features_num_samples), int(tm.real_features_num_samples)
        self._need_two(n, n_ref)
        tm.orig_dtype, tm._update_count = torch.float64, 1  # the value in float64; merged state counts as updated
        return {self.name: float(tm.compute()), "n": n, "n_reference": n_ref}


def canonical_order(features: torch.Tensor) -> torch.Tensor:
    """Rows sorted lexicographically (first column first): the same set gives the same matrix."""
    order = np.lexsort(features.cpu().numpy().T[::-1])
    return features[torch.from_numpy(order).to(features.device)]


class KID(_InceptionSetMetric):
    """Kernel Inception Distance (torchmetrics' ``KernelInceptionDistance`` on the features)."""

    name = "kid"
    version = "1"

    def __init__(self, device: str = "cpu", dtype: str = "float32", reference: str | None = None,
                 resize: str = "clean", features: int = 2048, inception_weights: str | None = None,
                 reference_resolution: int | None = None, image_field: str = "file_name",
                 image_root: str | None = None, subsets: int = 100, subset_size: int = 1000, seed: int = 0):
        super().__init__(device, dtype, reference, resize, features, inception_weights, reference_resolution,
                         image_field, image_root)
        if int(subsets) < 1 or int(subset_size) < 2:
            raise ValueError(f"subsets must be >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
        self.subsets, self.subset_size, self.seed = int(subsets), int(subset_size), int(seed)
        self.reset()

    def add(self, fake, real) -> None:
        self._fake.append(fake)
        if real is not None:
            self._real.append(real)

    def reset(self) -> None:
        self._fake: list[torch.Tensor] = []  # float64 features on the device, per batch
        self._real: list[torch.Tensor] = []

    def _cat(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts) if parts else torch.zeros(0, self.features, dtype=torch.float64, device=self.device)

    def state(self) -> dict:
        """The features themselves (KID's states are concatenated, not summed)."""
        out = {"fake_features": self._cat(self._fake).cpu()}
        if self.prompt_images:
            out["real_features"] = self._cat(self._real).cpu()
        return out

    def load_states(self, states: Sequence[dict]) -> None:
        self.reset()
        for st in states:  # in chunk order
            self._fake.append(st["fake_features"].to(self.device, torch.float64))
            if self.prompt_images:
                self._real.append(st["real_features"].to(self.device, torch.float64))

    def compute(self) -> dict[str, float]:
        from torchmetrics.image.kid import KernelInceptionDistance

        fake = self._cat(self._fake)
        real = self._cat(self._real) if self.prompt_images else \
            self.reference_features()[0].to(self.device, torch.float64)
        self._need_two(len(fake), len(real))
        with warnings.catch_warnings():  # its "saves all extracted features" warning: we hold them anyway
            warnings.simplefilter("ignore", UserWarning)
            tm = KernelInceptionDistance(feature=_Given(self.features), subsets=self.subsets, sync_on_compute=False,
                                         subset_size=min(self.subset_size, len(real), len(fake)))
        tm.update(canonical_order(real), real=True)
        tm.update(canonical_order(fake), real=False)
        with torch.random.fork_rng(devices=[]):  # torchmetrics draws the subsets from the global generator
            torch.manual_seed(self.seed)
            mean, std = tm.compute()
        return {self.name: float(mean), "kid_std": float(std), "n": len(fake), "n_reference": len(real)}

    def describe(self) -> dict:
        return {**super().describe(), "subsets": self.subsets, "subset_size": self.subset_size, "seed": self.seed}
