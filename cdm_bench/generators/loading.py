"""Build a diffusers pipeline for a :class:`DiffusersGenerator`: the pipeline class, a student
transformer folder swapped in, ``from_pretrained`` options, dtype, the rank's device or CPU
offload, and the attention backend. Loading errors become one-line cdm-bench errors."""

from __future__ import annotations

import json
from pathlib import Path

from cdm_bench.errors import SpecError
from cdm_bench.generators import hf_weights as hf


def load_pipeline(gen, source: hf.Source):
    """The pipeline of generator ``gen`` (a DiffusersGenerator), ready to call."""
    import diffusers
    import torch

    cls = getattr(diffusers, gen.pipeline_class) if gen.pipeline_class else diffusers.DiffusionPipeline
    dtype = getattr(torch, gen.dtype)
    kwargs = {dtype_kwarg(): dtype, "local_files_only": hf.offline() or source.kind != "hub",
              **gen.pretrained_kwargs}
    if gen.transformer is not None:
        kwargs["transformer"] = load_transformer(Path(gen.transformer), dtype, gen.transformer_class)
    where = str(source.path) if source.kind == "folder" else gen.model
    try:
        pipe = cls.from_pretrained(where, **kwargs)
    except OSError as exc:
        raise hf.missing_weights(gen.model, str(exc)) from None
    except (ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise SpecError(f"cannot build {cls.__name__} from {gen.model!r}: {first}. A component saved as "
                        f"null needs it in pretrained_kwargs (e.g. {{text_encoder_3: null, tokenizer_3: null}})"
                        ) from None
    pipe.set_progress_bar_config(disable=True)
    if gen.lora or gen.scheduler or gen.vae:
        from cdm_bench.generators import swaps

        swaps.apply(pipe, gen, dtype, dtype_kwarg())
    place(pipe, gen.device, gen.offload)
    if gen.attention_backend:
        set_attention_backend(pipe.transformer, gen.attention_backend)
    return pipe


def set_attention_backend(transformer, backend: str) -> None:
    """diffusers' ``set_attention_backend``, refusing a transformer whose attention processors
    ignore it (SD3's ``JointAttnProcessor2_0`` calls torch SDPA directly)."""
    processors = [m.processor for m in transformer.modules() if getattr(m, "processor", None) is not None]
    if not any(hasattr(p, "_attention_backend") for p in processors):
        names = sorted({type(p).__name__ for p in processors})
        raise SpecError(f"attention_backend: {type(transformer).__name__}'s attention processors {names} do not "
                        f"use diffusers' attention backends (they call torch SDPA); leave attention_backend unset")
    try:
        transformer.set_attention_backend(backend)
    except (ValueError, RuntimeError, ImportError) as exc:
        raise SpecError(f"attention_backend {backend!r}: {str(exc).strip().splitlines()[0][:300]}") from None


def dtype_kwarg() -> str:
    """diffusers renamed ``torch_dtype`` to ``dtype`` (0.42 warns on the old name)."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def load_transformer(folder: Path, dtype, expected: str | None):
    """A transformer saved with ``save_pretrained`` (its class from its config.json)."""
    import diffusers

    folder = hf.transformer_dir(folder)
    name = str(json.loads((folder / "config.json").read_text()).get("_class_name", ""))
    if expected and name != expected:
        raise SpecError(f"transformer folder {str(folder)!r} holds a {name or 'unknown'} model; this "
                        f"generator needs a {expected}")
    cls = getattr(diffusers, name, None)
    if cls is None:
        raise SpecError(f"transformer folder {str(folder)!r}: {name!r} is not a diffusers model class")
    try:
        return cls.from_pretrained(folder, local_files_only=True, **{dtype_kwarg(): dtype}).eval()
    except OSError as exc:
        raise hf.missing_weights(str(folder), str(exc)) from None


def place(pipe, device: str, offload: str) -> None:
    """Move the pipeline to ``device``, or enable diffusers' CPU offload onto that GPU."""
    if offload == "none":
        pipe.to(device)
        return
    if not device.startswith("cuda"):
        raise SpecError(f"offload: {offload} needs a CUDA device (this process uses {device!r})")
    import torch

    gpu = torch.device(device).index or 0
    if offload == "model":
        pipe.enable_model_cpu_offload(gpu_id=gpu)
    else:
        pipe.enable_sequential_cpu_offload(gpu_id=gpu)
