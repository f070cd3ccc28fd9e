"""Where a diffusers generator's weights come from, and what results record about them.

A ``model`` is a local pipeline folder or a Hugging Face hub id. Nothing here downloads: with
``HF_HUB_OFFLINE=1`` (or a folder) loading is ``local_files_only``, and weights that are not
there raise :class:`~cdm_bench.errors.MissingWeightsError` (one line: the repo id and how to
provide a local copy) before any output is written. For a hub id the snapshot in the HF cache
gives the commit hash that was used; the transformer's ``*.safetensors`` give the weights hash
(an HF-cache file is a symlink to a blob named by its sha256, so the cache's hash is reused
instead of reading gigabytes again).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cdm_bench.errors import MissingWeightsError, SpecError
from cdm_bench.hashing import file_sha256

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class Source:
    """Where ``model`` resolves: ``folder`` (a local directory), ``hf-cache`` (a snapshot of
    the local HF cache) or ``hub`` (not cached; diffusers will download it when online)."""

    kind: str
    path: Path | None
    commit: str | None = None


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def missing_weights(repo: str, reason: str = "") -> MissingWeightsError:
    why = f" ({reason.strip().splitlines()[0][:200]})" if reason and reason.strip() else ""
    return MissingWeightsError(
        f"weights for {repo!r} are not available here{why}. Provide them as a local folder "
        f"(`huggingface-cli download {repo} --local-dir DIR` on a machine with internet, then "
        f"`model: DIR`), or put them in the Hugging Face cache (HF_HOME) and set HF_HUB_OFFLINE=1")


def locate(model: str, revision: str | None = None, cache_dir: str | None = None) -> Source:
    """Resolve ``model`` without loading or downloading anything; raise MissingWeightsError
    for a missing folder, or for a hub id that is not cached while offline."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise MissingWeightsError(f"{str(path)!r} is not a diffusers pipeline folder (no "
                                      f"model_index.json); save one with pipe.save_pretrained(DIR)")
        return Source("folder", path.resolve())
    not_found = MissingWeightsError(f"model folder {model!r} does not exist (give an existing pipeline "
                                    f"folder or a hub id such as org/name)")
    if not HUB_ID.match(model) or model.startswith((".", "~", "/")):
        raise not_found
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(model, "model_index.json", cache_dir=cache_dir, revision=revision)
    if isinstance(hit, str):
        snapshot = Path(hit).parent
        return Source("hf-cache", snapshot, snapshot.name)
    if path.parent.is_dir():  # "runs/x" where runs/ is a folder here: a path, not a hub id
        raise not_found
    if offline():
        where = f" at revision {revision!r}" if revision else ""
        raise missing_weights(model, f"HF_HUB_OFFLINE=1 and it is not in the Hugging Face cache{where}")
    return Source("hub", None)


def transformer_dir(folder: Path) -> Path:
    """A transformer saved with ``save_pretrained`` (config.json + safetensors), or a pipeline
    folder holding one under ``transformer/``."""
    folder = Path(folder).expanduser()
    if (folder / "transformer" / "config.json").is_file():
        return folder / "transformer"
    if not (folder / "config.json").is_file():
        raise MissingWeightsError(f"transformer folder {str(folder)!r} does not exist or has no config.json "
                                  f"(save the student with transformer.save_pretrained(DIR))")
    return folder


def safetensors_sha256(folder: Path | None) -> str | None:
    """sha256 of the folder's ``*.safetensors`` (one file: its own hash; several shards: the
    sha256 of their ``name sha256`` lines, in name order). None when there are none."""
    if folder is None or not Path(folder).is_dir():
        return None
    files = sorted(Path(folder).glob("*.safetensors"))
    hashes = [(f.name, file_sha256(f)) for f in files]
    if not hashes:
        return None
    if len(hashes) == 1:
        return hashes[0][1]
    return hashlib.sha256("".join(f"{n} {h}\n" for n, h in hashes).encode()).hexdigest()


WEIGHT_GLOBS = ("*.safetensors", "*.bin")


def component_sha256(folder: Path | None) -> dict[str, str]:
    """{component: sha256 of its weights} for every component folder of a pipeline folder that
    holds weights (transformer, unet, vae, text encoders, ...); see :func:`safetensors_sha256`."""
    if folder is None or not Path(folder).is_dir():
        return {}
    out = {}
    for sub in sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith(".")):
        sha = safetensors_sha256(sub) or _files_sha256(sub, "*.bin")
        if sha:
            out[sub.name] = sha
    return out


def _files_sha256(folder: Path, pattern: str) -> str | None:
    files = sorted(Path(folder).glob(pattern))
    if not files:
        return None
    hashes = [(f.name, file_sha256(f)) for f in files]
    if len(hashes) == 1:
        return hashes[0][1]
    return hashlib.sha256("".join(f"{n} {h}\n" for n, h in hashes).encode()).hexdigest()


def rank_device(device: str | None) -> str:
    """This process's device: ``cuda:LOCAL_RANK`` under torchrun / accelerate (plain ``cuda``
    too), else ``cpu``; an explicit ``cuda:N`` / ``cpu`` is kept."""
    import torch

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        return f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return f"cuda:{local}"
    return str(device)


def resolve_dtype(name: str, device: str) -> str:
    """``auto``: bfloat16 on CUDA, float32 elsewhere."""
    if name == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    if name not in DTYPES:
        raise SpecError(f"dtype must be 'auto' or one of {list(DTYPES)}, got {name!r}")
    return name
