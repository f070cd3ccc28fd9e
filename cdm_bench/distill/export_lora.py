"""Export of a LoRA run (``student.lora`` in its recipe): the checkpoint holds adapter weights
only, so the base is the teacher (loaded as the recipe names it) with the run's adapter added as
peft adapter ``default``.

* default: the adapter in diffusers' LoRA layout (``pytorch_lora_weights.safetensors`` with its
  rank/alpha metadata, written by the pipeline class's ``save_lora_weights`` or the transformer's
  ``save_lora_adapter``), loadable with ``pipe.load_lora_weights(DIR)``, and a generator spec
  pointing at the base pipeline with a ``lora`` entry;
* ``fuse`` (or a model family without a LoRA loader, e.g. the toy model): the plain model with
  ``W + alpha/r * B @ A`` merged, written as a full export.
"""

from __future__ import annotations

import torch
from torch import nn

from cdm_bench.distill.lora import LoRAConfig, LoRAView, inject
from cdm_bench.errors import RecipeError

EXPORT_NAME = "default"


def lora_config(recipe: dict) -> LoRAConfig | None:
    block = (recipe.get("student") or {}).get("lora")
    return LoRAConfig(**block) if block else None


def with_adapter(adapter, cfg: LoRAConfig, state: dict, which: str) -> nn.Module:
    """The teacher (float32, CPU) with the checkpoint's ``which`` adapter as peft adapter ``default``."""
    model = adapter.load_teacher().to(torch.float32)
    inject(model, adapter, {EXPORT_NAME: cfg})
    renamed = {k.replace(f".lora_A.{which}.", f".lora_A.{EXPORT_NAME}.").replace(f".lora_B.{which}.", f".lora_B.{EXPORT_NAME}."): v
               for k, v in state.items()}
    result = model.load_state_dict(renamed, strict=False)
    missing = [k for k in result.missing_keys if ".lora_" in k]
    if result.unexpected_keys or missing:
        raise RecipeError(f"the checkpoint's {which} adapter does not fit its recipe's lora block "
                          f"(unexpected {result.unexpected_keys[:2]}, missing {missing[:2]})")
    return model.eval().requires_grad_(False)


def merged_model(adapter, spec: dict, model: nn.Module) -> nn.Module:
    """A plain model of the architecture ``spec`` holding ``model``'s weights with the adapter merged."""
    state = LoRAView(model, EXPORT_NAME).merged_state()
    with torch.device("meta"):
        plain = adapter.build_model(spec)
    plain.load_state_dict(state, strict=True, assign=True)
    return plain.eval()


def export_lora(adapter, spec: dict, state: dict, recipe: dict, which: str, out_dir, fuse: bool,
                copy_base: bool = False) -> dict:
    """Write the LoRA run's student; return its generator spec."""
    cfg = lora_config(recipe)
    model = with_adapter(adapter, cfg, state, which)
    if fuse or not hasattr(adapter, "save_lora"):
        extra = {"copy_base": True} if copy_base else {}
        return adapter.save_pretrained(merged_model(adapter, spec, model), out_dir, **extra)
    return adapter.save_lora(model, out_dir, EXPORT_NAME)
