"""Export a distillation checkpoint as a directory the generator registry loads by path.

The checkpoint holds full (unsharded) state dicts and the model's architecture spec, so export
needs neither the teacher nor the process group. The output directory holds the adapter's
``save_pretrained`` files plus ``generator.yaml`` (a generator spec: pass its path, or its
``generator``/``model`` keys, to ``cdm-bench generate``) and ``distill.json`` (provenance).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from cdm_bench.distill.adapter import build_adapter
from cdm_bench.distill.checkpoint import latest_checkpoint, load_meta, load_state
from cdm_bench.errors import RunNotFoundError


def export(checkpoint: str | Path, out_dir: str | Path, ema: bool = True) -> Path:
    """Write the student (its EMA weights by default) of ``checkpoint`` to ``out_dir``.

    ``checkpoint`` may be a checkpoint directory or a run directory (its latest checkpoint).
    Returns ``out_dir``.
    """
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if not (checkpoint / "state.pt").is_file():
        latest = latest_checkpoint(checkpoint)
        if latest is None:
            raise RunNotFoundError(f"no distillation checkpoint in {checkpoint}")
        checkpoint = latest
    recipe, meta = load_meta(checkpoint)
    adapter = build_adapter(meta["adapter"], **meta["adapter_kwargs"])
    model = adapter.build_model(meta["model_spec"])
    which = "ema" if ema else "student"
    model.load_state_dict(load_state(checkpoint)[which], strict=True)
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = adapter.save_pretrained(model, out_dir)
    spec = {**spec, "name": f"{recipe['name']}-step{meta['step']}{'-ema' if ema else ''}",
            "recipe": recipe["name"]}
    (out_dir / "generator.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (out_dir / "distill.json").write_text(json.dumps(
        {"checkpoint": str(checkpoint.resolve()), "step": meta["step"], "weights": which,
         "recipe": recipe}, indent=1))
    return out_dir
