"""The metric interface, shared by per-image scorers and set-level metrics (FID-like).

Evaluate runs one metric at a time through its lifecycle::

    check()                      packages and weights present? (before anything is written)
    setup()                      load the model onto ``device`` in ``dtype``
    update(images, prompts, meta)  once per batch
    state() / load_states([...])   set-level metrics: flushed per chunk, merged across
                                   chunks and ranks (resume, sharding)
    compute()                    the set-level value(s): {"<name>": value, "<sub>": value, ...}
    teardown()                   free the model and device memory

Class attributes declare what the metric is::

    name = "toy_align"          # registry name
    version = "1"               # bump when the number would change
    higher_is_better = True
    input_format = "uint8_nhwc" # see convert_images
    per_image = True
    requires = ("open_clip",)   # modules it imports ("module" or "module:name"), imported by check()
    extra = "eval"              # the pip extra that provides them (cdm-bench[eval])
    env_hint = "make eval-env"  # how to build the environment that has them

``describe()`` is the metric's identity: everything that changes its numbers (version, options,
weights id/revision and the content sha256 of every weights file or folder it loads, so
replaced weights are a new identity). Evaluate keys its score cache on it.

Images arrive as uint8 (B, H, W, 3); ``convert_images`` turns them into the declared format
once, so metrics never redo NCHW/NHWC or [0, 1] conversions themselves. ``meta`` holds each
image's manifest record: prompt id, k, seed, and every extra field of the prompt row.
"""

from __future__ import annotations

import gc
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cdm_bench.errors import MissingDependencyError

INPUT_FORMATS = ("uint8_nhwc", "float_nchw", "pil")
DTYPES = ("float32", "bfloat16", "float16")

__all__ = ["Metric", "PerImageMetric", "Weights", "MissingDependencyError", "convert_images", "weights_fingerprint",
           "INPUT_FORMATS"]


def missing_packages(requires) -> list[str]:
    """The entries of ``requires`` that cannot be imported here, each with its reason. An entry
    is a module (``"open_clip"``), a module and the name set-up takes from it
    (``"modelscope.pipelines:pipeline"``), a loader set-up calls (``"pkg.mod:load()"``: called,
    e.g. a compat shim that patches before it imports), or a package that must only be installed
    (``"ImageReward?"``). It is imported as set-up imports it, so a package that is installed but
    broken (a missing dependency of its own, a clashing pin) counts as missing."""
    import importlib
    import importlib.util

    out = []
    for entry in requires:
        module, _, attr = str(entry).rstrip("?").partition(":")
        top = module.split(".")[0]
        if importlib.util.find_spec(top) is None:
            out.append(top)
            continue
        if str(entry).endswith("?"):
            continue
        try:
            obj = importlib.import_module(module)
            if attr.endswith("()"):
                getattr(obj, attr[:-2])()
            elif attr:
                getattr(obj, attr)
        except Exception as exc:  # noqa: BLE001 - any import-time failure means "cannot run here"
            out.append(f"{entry} (installed, but importing it fails: {type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:100] if str(exc) else ''})")
    return out


def torch_dtype(dtype: str):
    """A metric's ``dtype`` option ("float32", "bfloat16", "float16") -> the torch dtype."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


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


@dataclass
class Weights:
    """A weights file (or folder) a metric needs: a hub id + file, or a local path.

    ``locate()`` never downloads: it returns the local path, or the file in the Hugging Face
    cache (``HF_HOME`` / ``HF_HUB_CACHE`` honoured), or None.
    """

    what: str                      # human name, e.g. "ImageReward-v1.0 checkpoint"
    repo_id: str | None = None
    filename: str | None = None    # with ``snapshot``: the file that marks the repo as present
    revision: str | None = None
    path: str | None = None        # a local file or folder; wins over the hub id
    option: str | None = None      # the metric option that takes a local path instead
    snapshot: bool = False         # the whole repository is needed (a model folder)

    def locate(self) -> Path | None:
        if self.path:
            p = Path(self.path).expanduser()
            return p if p.exists() else None
        if not (self.repo_id and self.filename):
            return None
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        found = try_to_load_from_cache(self.repo_id, self.filename, revision=self.revision)
        return Path(found) if isinstance(found, str) else None

    def hint(self) -> str:
        where = f"{self.path} (not found)" if self.path else None
        rev = f" --revision {self.revision}" if self.revision else ""
        files = "" if self.snapshot else f" {self.filename}"
        hub = (f"`huggingface-cli download {self.repo_id}{files}{rev}` (with HF_HOME set as when scoring)"
               if self.repo_id else None)
        local = f"pass a local path as option {self.option!r}" if self.option else "pass its local path"
        return f"{self.what}: " + "; or ".join(x for x in (where, hub, local) if x)

    def describe(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def content_sha256(self) -> str | None:
        """The content hash of what :meth:`locate` finds (for a file in a hub snapshot, the whole
        snapshot folder when ``snapshot``); None when it is not here."""
        found = self.locate()
        if found is None:
            return None
        if self.snapshot and not self.path:
            for parent in found.parents:
                if parent.parent.name == "snapshots":
                    return weights_fingerprint(parent)
        return weights_fingerprint(found)


def weights_fingerprint(path) -> str | None:
    """The content hash of a local weights file or folder (every file's whole content; see
    :func:`cdm_bench.hashing.tree_sha256`), None for a hub id or a missing path."""
    from cdm_bench.hashing import tree_sha256

    return tree_sha256(path)


class Metric(ABC):
    name: str = ""
    version: str = "1"
    higher_is_better: bool = True
    input_format: str = "uint8_nhwc"
    per_image: bool = True
    requires: tuple[str, ...] = ()
    extra: str | None = None
    env_hint: str | None = None
    #: preferred batch size (None: evaluate's --batch-size)
    batch_size: int | None = None
    #: images that must reach update() together (e.g. a prompt's 4 samples for a 2x2 grid):
    #: evaluate rounds batch and chunk sizes up to multiples of it (records are in prompt order)
    group_size: int = 1

    def __init__(self, device: str = "cpu", dtype: str = "float32", **options: Any):
        if options:
            raise TypeError(f"metric {self.name!r} got unknown option(s): {sorted(options)}")
        if dtype not in DTYPES:
            raise ValueError(f"metric {self.name!r}: dtype must be one of {DTYPES}, got {dtype!r}")
        self.device, self.dtype = device, dtype

    # -- lifecycle ----------------------------------------------------------------------------------
    def weights(self) -> list[Weights]:
        """The weights this metric will load (checked before scoring; part of its identity)."""
        return []

    def check(self) -> None:
        """Raise MissingDependencyError naming the extra/env and the weights when any is missing."""
        missing_pkgs = missing_packages(self.requires)
        missing_w = [w for w in self.weights() if w.locate() is None]
        if not (missing_pkgs or missing_w):
            return
        parts = []
        if missing_pkgs:
            how = f"pip install 'cdm-bench[{self.extra}]'" if self.extra else "pip install " + " ".join(missing_pkgs)
            env = f" or use the eval env ({self.env_hint})" if self.env_hint else ""
            parts.append(f"needs package(s) {', '.join(missing_pkgs)}: {how}{env}")
        if missing_w:
            parts.append("needs weights " + "; ".join(w.hint() for w in missing_w))
        raise MissingDependencyError(f"metric {self.name!r} " + " and ".join(parts))

    def prepare(self) -> None:
        """Make the local artefacts this metric's identity depends on (never downloads): evaluate
        calls it after :meth:`check`, before the identity is taken (the toy world's scorer is
        trained into the cache here on first use, so its identity holds its weights' hash)."""

    def setup(self) -> None:
        """Load models (called once, before the first update)."""

    def teardown(self) -> None:
        """Free models and device memory (called once, after compute). Subclasses drop their
        model references, then call this; on CPU reference counting frees the memory at once
        (a full ``gc.collect()`` costs ~0.2 s per call), on a GPU the allocator's cache is emptied."""
        if str(self.device).startswith("cuda"):
            import torch

            gc.collect()
            torch.cuda.empty_cache()

    def preprocess(self, images: Any, prompts: Sequence[str], meta: Sequence[dict]) -> Any:
        """The scorer's own preprocessing of one batch (``images`` in ``input_format``), run in an
        input worker process when evaluate has workers: no model, plain picklable values
        (tensors, arrays, PIL images). :meth:`update` gets what this returns; the default hands
        the images on unchanged. ``update`` must also accept unprocessed images (a direct call)."""
        return images

    @abstractmethod
    def update(self, images: Any, prompts: Sequence[str], meta: Sequence[dict]) -> np.ndarray | None:
        """Consume one batch (in ``input_format``, or what :meth:`preprocess` made of it)."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The set-level value(s); the first key is ``self.name``, the others are sub-values."""

    def reset(self) -> None:  # pragma: no cover - overridden where state exists
        pass

    # -- set-level state (resume and sharding) ---------------------------------------------------------
    def state(self) -> dict:
        """The state accumulated since the last reset, as named tensors (set-level metrics)."""
        raise NotImplementedError(f"set-level metric {self.name!r} must implement state()")

    def load_states(self, states: Sequence[dict]) -> None:
        """Reset, then merge ``states`` in order (chunks of one or several ranks)."""
        raise NotImplementedError(f"set-level metric {self.name!r} must implement load_states()")

    def describe(self) -> dict:
        """Everything that changes this metric's numbers (its cache identity)."""
        out = {"name": self.name, "version": self.version, "higher_is_better": self.higher_is_better,
               "input_format": self.input_format, "per_image": self.per_image, "dtype": self.dtype}
        weights = [{**w.describe(), "sha256": w.content_sha256()} for w in self.weights()]
        if weights:
            out["weights"] = weights
        return out


class PerImageMetric(Metric):
    """Subclasses implement ``score``; ``aggregate`` (default: the mean) gives the set value."""

    per_image = True

    def __init__(self, device: str = "cpu", dtype: str = "float32", **options: Any):
        super().__init__(device, dtype, **options)
        self._scores: list[np.ndarray] = []
        self._meta: list[dict] = []

    @abstractmethod
    def score(self, images: Any, prompts: Sequence[str], meta: Sequence[dict]) -> np.ndarray:
        """Per-image scores, shape (B,)."""

    def aggregate(self, scores: np.ndarray, meta: Sequence[dict]) -> dict[str, float]:
        """Set value(s) from all per-image scores (in manifest order) and their records.
        Override to add sub-values (e.g. per-category means)."""
        return {self.name: float(np.mean(scores))}

    def update(self, images, prompts, meta):
        s = np.asarray(self.score(images, prompts, meta), dtype=np.float64).reshape(-1)
        if len(s) != len(prompts):
            raise RuntimeError(f"metric {self.name!r} returned {len(s)} scores for {len(prompts)} images")
        self._scores.append(s)
        self._meta += list(meta)
        return s

    def compute(self) -> dict[str, float]:
        if not self._scores:
            raise RuntimeError(f"metric {self.name!r}: compute() before any update()")
        return self.aggregate(np.concatenate(self._scores), self._meta)

    def reset(self) -> None:
        self._scores, self._meta = [], []


class TorchmetricsState:
    """Mixin for set-level metrics backed by a ``torchmetrics.Metric`` in ``self.tm``:
    ``state``/``load_states`` through torchmetrics' own state and ``merge_state``."""

    tm: Any = None

    def state(self) -> dict:
        return {k: v.detach().cpu().clone() for k, v in self.tm.metric_state.items()}

    def load_states(self, states: Sequence[dict]) -> None:
        self.tm.reset()
        self.tm.sync_on_compute = False  # states were gathered through the run directory
        for st in states:
            self.tm.merge_state({k: v.to(self.tm.device) for k, v in st.items()})
        self.tm._update_count = max(len(states), 1)  # merged state counts as updated
