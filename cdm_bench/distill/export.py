"""Export a distillation checkpoint as a directory the generator registry loads by path.

The checkpoint holds full (unsharded) state dicts and the model's architecture spec, so export
needs neither the teacher nor the process group. The output directory holds the adapter's
``save_pretrained`` files plus ``generator.yaml`` (a generator spec: pass its path, or its
``generator``/``model`` keys, to ``cdm-bench generate``) and ``distill.json`` (provenance).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch

import yaml

from cdm_bench.distill.adapter import build_adapter
from cdm_bench.distill.checkpoint import latest_checkpoint, load_meta, load_state
from cdm_bench.distill.export_lora import export_lora, lora_config
from cdm_bench.errors import RecipeError, RunNotFoundError


def export(checkpoint: str | Path, out_dir: str | Path, ema: bool = True, copy_base: bool = False,
           step: int | str | None = None, fuse: bool = False) -> Path:
    """Write the student (its EMA weights by default) of ``checkpoint`` to ``out_dir``.

    ``checkpoint`` may be a checkpoint directory or a run directory (its latest checkpoint).
    For pipeline models (SD3, LongCat) ``out_dir/transformer`` holds the student and
    ``generator.yaml`` points at the base pipeline; with ``copy_base`` the base pipeline's other
    components are written too, so ``out_dir`` alone loads with ``Pipeline.from_pretrained``.
    The model is built on the meta device and takes the checkpoint's tensors (no second copy).
    A LoRA run (:mod:`cdm_bench.distill.export_lora`) writes its adapter in diffusers' LoRA layout
    and a spec with a ``lora`` entry on the base; ``fuse`` writes the merged model instead.
    Returns ``out_dir``.
    """
    from cdm_bench.distill.checkpoint import BEST, checkpoint_path

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if step is not None:  # a run directory's checkpoint of that step, or its best/
        checkpoint = checkpoint / BEST if str(step) == BEST else checkpoint_path(checkpoint, _step(step))
        if not (checkpoint / "state.pt").is_file():
            raise RunNotFoundError(f"no checkpoint {checkpoint} (--step {step}: "
                                   f"{'the run has no validate.select, or no validation yet' if str(step) == BEST else 'not saved, or pruned by keep_checkpoints'})")
        if str(step) == BEST and not ema:
            raise RecipeError("--step best keeps the EMA weights only: drop --no-ema")
    if not (checkpoint / "state.pt").is_file():
        latest = latest_checkpoint(checkpoint)
        if latest is None:
            raise RunNotFoundError(f"no distillation checkpoint in {checkpoint}")
        checkpoint = latest
    recipe, meta = load_meta(checkpoint)
    adapter = build_adapter(meta["adapter"], **meta["adapter_kwargs"])
    which = "ema" if ema else "student"
    lora = lora_config(recipe)
    if lora is None and fuse:
        raise RecipeError("export --fuse merges a LoRA student: this run trained the full model")
    if lora is not None and copy_base and not fuse:
        raise RecipeError("export --copy-base writes a whole pipeline: for a LoRA run add --fuse")
    if copy_base and "copy_base" not in inspect.signature(adapter.save_pretrained).parameters:
        raise RecipeError(f"export --copy-base: the {meta['adapter']!r} adapter has no base pipeline to copy")
    state = load_state(checkpoint)[which]
    out_dir.mkdir(parents=True, exist_ok=True)
    if lora is not None:
        spec = export_lora(adapter, meta["model_spec"], state, recipe, which, out_dir, fuse, copy_base)
    elif copy_base:
        spec = adapter.save_pretrained(_student_model(adapter, meta["model_spec"], state), out_dir, copy_base=True)
    else:
        spec = adapter.save_pretrained(_student_model(adapter, meta["model_spec"], state), out_dir)
    spec = {**spec, "name": f"{recipe['name']}-step{meta['step']}{'-ema' if ema else ''}",
            "recipe": recipe["name"]}
    (out_dir / "generator.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (out_dir / "distill.json").write_text(json.dumps(
        {"checkpoint": str(checkpoint.resolve()), "step": meta["step"], "weights": which,
         "lora": None if lora is None else ("fused" if fuse else "adapter"), "recipe": recipe}, indent=1))
    return out_dir


def _step(step) -> int:
    try:
        return int(step)
    except (TypeError, ValueError):
        raise RecipeError(f"--step must be a student step number or 'best', got {step!r}") from None


def _student_model(adapter, spec: dict, state: dict) -> torch.nn.Module:
    from cdm_bench.distill.init import has_non_persistent_buffers

    with torch.device("meta"):
        model = adapter.build_model(spec)
    if has_non_persistent_buffers(model):
        model = adapter.build_model(spec)
        model.load_state_dict(state, strict=True)
    else:
        model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
