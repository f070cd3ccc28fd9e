"""The generator interface: prompts + per-sample seeds -> images.

A generator is built from a *spec* (a dict, usually a YAML file)::

    generator: toy          # registry name of the generator class
    name: teacher-50-cfg    # display name on leaderboards (default: derived)
    recipe: teacher         # teacher / dmd / ddmd / cdm / reference / ...
    model: teacher          # generator-specific keys follow; unknown keys are an error
    nfe: 50
    guidance: 2.0

Every key other than ``generator``, ``name`` and ``recipe`` must be an argument of the
generator class's ``__init__``; anything else is rejected, so a typo never silently does nothing.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from cdm_bench.errors import SpecError
from cdm_bench.registry import GENERATORS
from cdm_bench.safenames import safe_name
from cdm_bench.specfile import load_mapping
from cdm_bench.validate import check_kwargs

__all__ = ["Generator", "NFECounter", "SpecError", "build_generator", "load_spec", "spec_hash", "to_uint8"]

META_KEYS = ("generator", "name", "recipe")
log = logging.getLogger(__name__)


class Generator(ABC):
    """Base class. Subclasses take their spec keys as keyword arguments."""

    #: default recipe label for leaderboards
    recipe: str = "unknown"
    #: spec keys that hold local paths: in a YAML spec a relative one is resolved against the
    #: YAML's own folder when it exists there (an exported student's generator.yaml works from
    #: any working directory); otherwise it is kept (e.g. a hub id)
    path_keys: tuple = ()

    @abstractmethod
    def spec(self) -> dict:
        """Every setting that changes the pixels (it is hashed into the run identity)."""

    @abstractmethod
    def generate(self, prompts: list[str], seeds: list[int]) -> np.ndarray:
        """Return uint8 images (B, H, W, 3). Sample i must depend only on (prompts[i], seeds[i])."""

    @property
    def nfe(self) -> int | None:
        """Network evaluations per image (CFG counts twice)."""
        return None

    @property
    def cfg(self) -> float | None:
        return None

    def weights_hash(self) -> str | None:
        """A hash of the weights used, recorded in results (None if not applicable)."""
        return None

    def check_ready(self) -> None:
        """Raise a :class:`~cdm_bench.errors.CdmBenchError` when this generator cannot run here
        (e.g. missing weights). Called by ``generate`` before anything is written; cheap."""

    def provenance(self) -> dict:
        """Facts learned while generating (effective schedule, model revision, ...), recorded
        in ``generation.json`` under ``provenance``. Plain JSON values; default none."""
        return {}


class NFECounter:
    """Counts a generator's network evaluations per image, measured: a forward pre-hook on its
    denoiser (a pipeline's ``transformer`` / ``unet``, the toy flow model) adds the batch rows of
    every call (a CFG step batched as
    uncond + cond counts 2, two separate calls count 2 as well), divided by the images made."""

    def __init__(self, owner: str):
        self.owner, self.evals, self.made, self._rows, self._warned = owner, 0.0, 0, 0, False

    def attach(self, net) -> None:
        """Count the calls of ``net`` (a torch module: the pipeline's transformer / UNet)."""
        if net is not None:
            net.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        x = args[0] if args else kwargs.get("hidden_states", kwargs.get("sample"))
        if self._active and hasattr(x, "shape"):
            self._rows += int(x.shape[0])

    _active = False

    def images(self, n: int, padded: int | None = None):
        """Count the calls made inside this block for ``n`` images, which the generator ran as
        ``padded`` rows (a short batch filled up to a fixed size: the padding is not an image)."""
        import contextlib

        @contextlib.contextmanager
        def counting():
            self._active, self._rows = True, 0
            try:
                yield
            finally:
                self._active = False
                self.evals += self._rows / (padded or n) * n
                self.made += n
        return counting()

    def provenance(self, steps: int, guidance: float) -> dict:
        """``nfe_measured`` (per image) once images were made; warns once when CFG was asked for
        (guidance > 1) but the pipeline ran one evaluation per step (it ignored it)."""
        if not self.made or not self.evals:
            return {}
        nfe = self.evals / self.made
        nfe = int(nfe) if float(nfe).is_integer() else round(nfe, 3)
        out = {"nfe_measured": nfe}
        if guidance > 1.0 and nfe <= steps:
            out["guidance_ignored"] = True
            if not self._warned:
                self._warned = True
                log.warning("%s: guidance %g asks for CFG, but the pipeline ran %s network evaluation(s) per image for "
                            "%d steps: it does no CFG with guidance_scale (FluxPipeline: distilled guidance; true CFG "
                            "needs call_kwargs {true_cfg_scale: %g, negative_prompt: \"\"}). The leaderboard shows the "
                            "measured nfe.", self.owner, guidance, nfe, steps, guidance)
        return out


def module_sha256(module) -> str:
    """The content hash of a torch module's state (names and bytes), for in-memory models."""
    return state_sha256(module.state_dict())


def state_sha256(state: dict) -> str:
    """The content hash of a state dict: its names, and its tensors' bytes in name order."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def hash_dict(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_spec(name_or_path: str | dict) -> dict:
    """A registry name, a YAML path, or a dict -> a spec dict with at least ``generator``."""
    return _load_spec(name_or_path)[0]


def _load_spec(name_or_path: str | dict) -> tuple[dict, Path | None]:
    """(spec, the folder of its YAML file or None)."""
    folder = None
    if isinstance(name_or_path, dict):
        spec = dict(name_or_path)
    elif str(name_or_path).endswith((".yaml", ".yml")) or Path(str(name_or_path)).is_file():
        path = Path(name_or_path)
        if not path.is_file():
            raise SpecError(f"generator spec file not found: {path}")
        spec = load_mapping(path, "generator spec")
        folder = path.resolve().parent
    else:
        spec = {"generator": str(name_or_path)}
    if not isinstance(spec.get("generator"), str):
        raise SpecError(f"generator spec needs a 'generator' key naming a registered generator: {str(spec)[:100]}")
    for key in ("name", "recipe"):
        if key in spec and not isinstance(spec[key], str):
            raise SpecError(f"generator spec: {key} must be a string, got {spec[key]!r}")
    return spec, folder


def resolve_paths(cls: type, spec: dict, folder: Path | None) -> dict:
    """``cls.path_keys`` given relative to ``folder`` (the spec's YAML) made absolute."""
    if folder is None:
        return spec
    out = dict(spec)
    for key in getattr(cls, "path_keys", ()):
        out[key] = _resolved(out.get(key), folder)
    for key, inner in getattr(cls, "nested_path_keys", {}).items():  # e.g. lora: [{path: ...}]
        value = out.get(key)
        entries = value if isinstance(value, list) else [value]
        fixed = [{**e, inner: _resolved(e.get(inner), folder)} if isinstance(e, dict) and inner in e else e
                 for e in entries]
        if isinstance(value, list):
            out[key] = fixed
        elif isinstance(value, dict):
            out[key] = fixed[0]
    return {k: v for k, v in out.items() if k in spec}


def _resolved(value, folder: Path):
    if isinstance(value, str) and value and not Path(value).expanduser().is_absolute() and (folder / value).exists():
        return str((folder / value).resolve())
    return value


def validate_spec(cls: type, spec: dict) -> dict:
    """Reject keys that ``cls.__init__`` does not accept and values of the wrong plain type
    (:func:`cdm_bench.validate.check_kwargs`); return the constructor kwargs."""
    try:
        params = inspect.signature(cls.__init__, eval_str=True).parameters
    except (NameError, TypeError):  # annotations that do not resolve: check names only
        params = inspect.signature(cls.__init__).parameters
    accepts_var = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    allowed = {n for n in params if n != "self"}
    kwargs = {k: v for k, v in spec.items() if k not in META_KEYS}
    unknown = sorted(set(kwargs) - allowed)
    if unknown and not accepts_var:
        raise SpecError(
            f"unknown key(s) {unknown} for generator {spec['generator']!r}; "
            f"allowed: {sorted(allowed | set(META_KEYS))}")
    check_kwargs(cls, kwargs, f"generator {spec['generator']!r}")
    return kwargs


def build_generator(name_or_spec: "str | dict | Generator") -> tuple[Generator, dict]:
    """Build a generator from a name / YAML path / dict (or take an instance). Returns
    (generator, full spec)."""
    if isinstance(name_or_spec, Generator):  # an instance built in code (validation during training)
        gen = name_or_spec
        full = {"generator": f"{type(gen).__module__}:{type(gen).__qualname__}", **gen.spec(),
                "recipe": getattr(gen, "recipe", "unknown"), "nfe_total": gen.nfe, "cfg": gen.cfg,
                **{k: getattr(gen, k) for k in ("train_step", "series") if getattr(gen, k, None) is not None}}
        full["name"] = safe_name(getattr(gen, "display_name", None) or default_name(type(gen).__name__.lower(), gen),
                                 "generator name")
        return gen, full
    spec, folder = _load_spec(name_or_spec)
    cls = GENERATORS.get(spec["generator"])
    spec = resolve_paths(cls, spec, folder)
    kwargs = validate_spec(cls, spec)
    try:
        gen = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, SpecError):
            raise
        raise SpecError(f"generator {spec['generator']!r}: {exc}") from None
    full = {"generator": spec["generator"], **gen.spec()}
    full["recipe"] = spec.get("recipe", getattr(gen, "recipe", "unknown"))
    full["nfe_total"], full["cfg"] = gen.nfe, gen.cfg
    full["name"] = safe_name(spec.get("name") or default_name(spec["generator"], gen), "generator name")
    return gen, full


def default_name(registry_name: str, gen: Generator) -> str:
    parts = [registry_name]
    if gen.nfe is not None:
        parts.append(f"nfe{gen.nfe}")
    if gen.cfg is not None and gen.cfg != 1.0:
        parts.append(f"cfg{gen.cfg:g}")
    return "-".join(parts)


#: spec keys that only label a run (a new value is the same run, see rundir.generation_key)
DISPLAY_KEYS = ("name",)


def spec_hash(full_spec: dict) -> str:
    """Identity of a generation run: everything but :data:`DISPLAY_KEYS`."""
    return hash_dict({k: v for k, v in full_spec.items() if k not in DISPLAY_KEYS})


def to_uint8(images: Any) -> np.ndarray:
    """Accept (B,H,W,3) uint8, float [0,1] NHWC/NCHW arrays/tensors or PIL lists -> uint8 NHWC."""
    if isinstance(images, list):
        return np.stack([np.asarray(im.convert("RGB")) for im in images])
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    arr = np.asarray(images)
    if arr.ndim == 4 and arr.shape[1] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(0, 2, 3, 1)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return arr
