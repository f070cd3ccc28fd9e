"""The ``lora``, ``scheduler`` and ``vae`` keys of a diffusers generator: LoRAs (diffusers or peft
layout), a scheduler class with config overrides, another autoencoder. Parsed and checked when
the spec is built; files resolved (local path, Hugging Face cache, or download when online)
before anything is written; applied with diffusers' own ``load_lora_weights`` /
``set_adapters`` / ``fuse_lora`` and peft's adapter loading.

    lora:
      - path: ByteDance/Hyper-SD          # a file, a folder or a hub id
        weight_name: Hyper-SD3-8steps-CFG-lora.safetensors
        scale: 0.125
        adapter_name: hypersd             # default lora0, lora1, ...
        fuse: true                        # merge into the weights (default false: an active adapter)
        format: diffusers                 # or peft: a folder with adapter_config.json + adapter_model.safetensors
    scheduler: {class: DPMSolverMultistepScheduler, from: REPO_OR_DIR, subfolder: scheduler, config: {flow_shift: 6}}
    vae: {class: AutoencoderTiny, path: madebyollin/taesd3, config: {shift_factor: 0}}

``scheduler.class`` is a diffusers scheduler class or ``module:Class``; without ``from`` the
pipeline's own scheduler config is the base. Fused LoRAs are merged first (then their LoRA layers
are removed), the others stay as adapters at their scales.
"""

from __future__ import annotations

import json
from pathlib import Path

from cdm_bench.errors import MissingWeightsError, SpecError

LORA_KEYS = {"path", "weight_name", "scale", "adapter_name", "fuse", "format"}
SCHEDULER_KEYS = {"class", "from", "subfolder", "config"}
VAE_KEYS = {"class", "path", "subfolder", "config"}
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
DIFFUSERS_LORA = "pytorch_lora_weights.safetensors"


def _known(value, keys: set, what: str) -> dict:
    from cdm_bench.validate import known_keys

    return dict(known_keys(value, keys, what))


def _config(value, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or any(not isinstance(k, str) for k in value):
        raise SpecError(f"{what}.config must map config names to values, got {value!r}")
    return dict(value)


def parse_lora(value) -> list[dict]:
    if value is None:
        return []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise SpecError(f"lora must be a list of {{path, weight_name, scale, adapter_name, fuse, format}}, got {value!r}")
    out, names = [], set()
    for i, raw in enumerate(value):
        e = _known(raw, LORA_KEYS, f"lora[{i}]")
        if not isinstance(e.get("path"), str) or not e["path"]:
            raise SpecError(f"lora[{i}]: path (a file, a folder or a hub id) is required")
        scale = e.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise SpecError(f"lora[{i}].scale must be a number, got {scale!r}")
        fmt = e.get("format", "diffusers")
        if fmt not in ("diffusers", "peft"):
            raise SpecError(f"lora[{i}].format must be diffusers or peft, got {fmt!r}")
        fuse = e.get("fuse", False)
        if not isinstance(fuse, bool):
            raise SpecError(f"lora[{i}].fuse must be true or false, got {fuse!r}")
        name = str(e.get("adapter_name") or f"lora{i}")
        if name in names:
            raise SpecError(f"lora[{i}]: adapter_name {name!r} is used twice")
        names.add(name)
        out.append({"path": e["path"], "weight_name": e.get("weight_name"), "scale": float(scale),
                    "adapter_name": name, "fuse": fuse, "format": fmt})
    return out


def parse_scheduler(value) -> dict | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = {"class": value}
    e = _known(value, SCHEDULER_KEYS, "scheduler")
    if not isinstance(e.get("class"), str):
        raise SpecError("scheduler.class (a diffusers scheduler class name or module:Class) is required")
    return {"class": e["class"], "from": e.get("from"), "subfolder": e.get("subfolder", "scheduler"),
            "config": _config(e.get("config"), "scheduler")}


def parse_vae(value) -> dict | None:
    if value is None:
        return None
    e = _known(value, VAE_KEYS, "vae")
    if not isinstance(e.get("path"), str) or not e["path"]:
        raise SpecError("vae.path (a folder or a hub id) is required")
    return {"class": str(e.get("class", "AutoencoderKL")), "path": e["path"], "subfolder": e.get("subfolder"),
            "config": _config(e.get("config"), "vae")}


def resolve_class(name: str, kind: str):
    """A diffusers class by name, or ``module:Class``."""
    import importlib

    import diffusers

    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise SpecError(f"{kind} class {name!r} cannot be imported: {exc}") from None
    cls = getattr(diffusers, name, None)
    if cls is None:
        raise SpecError(f"{kind} class {name!r} is not in diffusers {diffusers.__version__}; give a class it has, or "
                        f"'module:Class' for one from another package")
    return cls


# -- files ----------------------------------------------------------------------------------------------
class NotYetDownloaded(Exception):
    """A hub file that is not cached here while online: it is downloaded when the pipeline loads."""


def hub_file(repo: str, filename: str, subfolder: str | None = None, download: bool = False) -> Path:
    """``filename`` of hub repo ``repo`` from the cache; ``download``: fetch it when online (only
    when the pipeline loads: identities, readiness checks and dry runs never touch the network)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from cdm_bench.generators import hf_weights as hf

    where = f"{subfolder}/{filename}" if subfolder else filename
    if not download or hf.offline():
        hit = try_to_load_from_cache(repo, where)
        if isinstance(hit, str):
            return Path(hit)
        if hf.offline():
            raise MissingWeightsError(f"{repo}: {where} (not in the Hugging Face cache, HF_HUB_OFFLINE=1)")
        raise NotYetDownloaded(f"{repo}: {where}")
    try:
        return Path(hf_hub_download(repo, filename, subfolder=subfolder))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:100]
        raise MissingWeightsError(f"{repo}: {where} ({why})") from None


def lora_source(entry: dict, download: bool = False) -> Path:
    """The LoRA's file (diffusers layout) or folder (peft layout), resolved locally."""
    path = Path(entry["path"]).expanduser()
    if entry["format"] == "peft":
        if path.is_dir():
            missing = [f for f in PEFT_FILES if not (path / f).is_file()]
            if missing:
                raise MissingWeightsError(f"{path}: a peft adapter folder needs {list(PEFT_FILES)}; missing {missing}")
            return path
        config = hub_file(entry["path"], PEFT_FILES[0], download=download)
        hub_file(entry["path"], PEFT_FILES[1], download=download)
        return config.parent
    if path.is_file():
        return path
    if path.is_dir():
        f = path / (entry["weight_name"] or DIFFUSERS_LORA)
        if not f.is_file():
            raise MissingWeightsError(f"{path}: no LoRA file {f.name} (set weight_name)")
        return f
    return hub_file(entry["path"], entry["weight_name"] or DIFFUSERS_LORA, download=download)


def vae_source(entry: dict, download: bool = False) -> Path:
    path = Path(entry["path"]).expanduser()
    sub = entry["subfolder"]
    if path.is_dir():
        folder = path / sub if sub else path
        if not (folder / "config.json").is_file():
            raise MissingWeightsError(f"{folder}: not a saved autoencoder (no config.json)")
        return folder
    config = hub_file(entry["path"], "config.json", sub, download=download)
    for weights in ("diffusion_pytorch_model.safetensors",):
        hub_file(entry["path"], weights, sub, download=download)
    return config.parent


def scheduler_source(entry: dict, download: bool = False) -> Path | None:
    if not entry["from"]:
        return None
    path = Path(entry["from"]).expanduser()
    if path.is_dir():
        return path / entry["subfolder"] if entry["subfolder"] else path
    return hub_file(entry["from"], "scheduler_config.json", entry["subfolder"], download=download).parent


def _sources(gen) -> list:
    return [(f"lora:{e['adapter_name']}", lora_source, e) for e in gen.lora] + \
        ([("vae", vae_source, gen.vae)] if gen.vae else []) + \
        ([("scheduler", scheduler_source, gen.scheduler)] if gen.scheduler and gen.scheduler["from"] else [])


def check_files(gen) -> None:
    """Every swap's files are here (or, online, downloadable when the pipeline loads), or one
    error naming each missing repo and file."""
    missing = []
    for _, fn, e in _sources(gen):
        try:
            fn(e)
        except NotYetDownloaded:
            pass
        except MissingWeightsError as exc:
            missing.append(str(exc))
    if missing:
        raise MissingWeightsError("not available here: " + "; ".join(missing) + ". Provide local paths, or put "
                                  "them in the Hugging Face cache (HF_HOME) and set HF_HUB_OFFLINE=1")


def files_sha256(gen) -> dict:
    """sha256 of every file a swap loads that is here (recorded in generation.json)."""
    from cdm_bench.hashing import file_sha256, tree_sha256

    out = {}
    for key, fn, e in _sources(gen):
        try:
            src = fn(e)
        except (NotYetDownloaded, MissingWeightsError):
            continue
        out[key] = tree_sha256(src) if src.is_dir() else file_sha256(src)
    return out


# -- applying them ----------------------------------------------------------------------------------------
def apply(pipe, gen, dtype, dtype_key: str = "torch_dtype") -> None:
    """Apply ``gen``'s swaps to ``pipe`` (``dtype_key``: the from_pretrained dtype argument's name)."""
    if gen.vae:
        pipe.vae = load_vae(gen.vae, {dtype_key: dtype})
    if gen.scheduler:
        pipe.scheduler = build_scheduler(gen.scheduler, pipe.scheduler)
    fused = [e for e in gen.lora if e["fuse"]]
    if fused:
        names = [e["adapter_name"] for e in fused]
        for e in fused:
            load_lora(pipe, e)
        _set_adapters(pipe, names, [e["scale"] for e in fused])
        if hasattr(pipe, "fuse_lora"):
            pipe.fuse_lora(components=_lora_components(pipe), lora_scale=1.0, adapter_names=names)
            pipe.unload_lora_weights()  # the fused weights stay; the LoRA layers go
        else:  # a pipeline without diffusers' LoRA loader (e.g. LongCat-Image): its denoiser's own
            _denoiser(pipe).fuse_lora(lora_scale=1.0, adapter_names=names)
            _denoiser(pipe).unload_lora()
    live = [e for e in gen.lora if not e["fuse"]]
    for e in live:
        load_lora(pipe, e)
    if live:
        _set_adapters(pipe, [e["adapter_name"] for e in live], [e["scale"] for e in live])


def _denoiser(pipe):
    return getattr(pipe, "transformer", None) or pipe.unet


def _set_adapters(pipe, names: list, scales: list) -> None:
    (pipe if hasattr(pipe, "set_adapters") else _denoiser(pipe)).set_adapters(names, scales)


def _lora_components(pipe) -> list[str]:
    return [c for c in getattr(pipe, "_lora_loadable_modules", ["transformer"]) if getattr(pipe, c, None) is not None]


def load_lora(pipe, entry: dict) -> None:
    src = lora_source(entry, download=True)
    if entry["format"] == "diffusers" and hasattr(pipe, "load_lora_weights"):
        pipe.load_lora_weights(str(src), adapter_name=entry["adapter_name"])
        return
    if entry["format"] == "diffusers":  # no pipeline loader: the denoiser's (ModelMixin.load_lora_adapter)
        from safetensors import safe_open

        with safe_open(str(src), "pt") as f:
            prefixed = all(k.startswith("transformer.") for k in f.keys())
        _denoiser(pipe).load_lora_adapter(str(src.parent), weight_name=src.name, adapter_name=entry["adapter_name"],
                                          prefix="transformer" if prefixed else None)
        return
    from peft import LoraConfig, set_peft_model_state_dict
    from safetensors.torch import load_file

    denoiser = _denoiser(pipe)
    cfg = json.loads((src / PEFT_FILES[0]).read_text())
    known = set(LoraConfig.__dataclass_fields__)
    denoiser.add_adapter(LoraConfig(**{k: v for k, v in cfg.items() if k in known}), adapter_name=entry["adapter_name"])
    state = {k.removeprefix("base_model.model."): v for k, v in load_file(str(src / PEFT_FILES[1])).items()}
    result = set_peft_model_state_dict(denoiser, state, adapter_name=entry["adapter_name"])
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise SpecError(f"lora {entry['path']!r}: {len(unexpected)} weights do not fit the model (e.g. {unexpected[0]})")


def load_vae(entry: dict, dtype_kwargs: dict):
    cls = resolve_class(entry["class"], "vae")
    vae = cls.from_pretrained(str(vae_source(entry, download=True)), **dtype_kwargs)
    if entry["config"]:
        vae.register_to_config(**entry["config"])
    return vae


def build_scheduler(entry: dict, current):
    cls = resolve_class(entry["class"], "scheduler")
    src = scheduler_source(entry, download=True)
    base = dict(cls.load_config(str(src)) if src is not None else current.config)
    return cls.from_config({**base, **entry["config"]})
