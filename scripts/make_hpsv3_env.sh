#!/usr/bin/env bash
# The HPSv3 eval environment: <repo>/.venv-hpsv3 (idempotent; safe to re-run).
#
#   bash scripts/make_hpsv3_env.sh [REPO_ROOT]      (default: this script's parent folder)
#   .venv-hpsv3/bin/cdm-bench evaluate --metrics hpsv3 ...
#
# Why a separate environment: hpsv3 1.0.0 pins transformers==4.45.2 (the project's main env
# runs transformers 5), asks for deepspeed/trl/peft, downgrades diffusers and ships top-level
# packages named `evaluate` and `generate` that shadow others. So it lives alone, with
# cdm-bench's core (no diffusers) and only what `import hpsv3` and its inferencer need:
#   * hpsv3, trl and peft without their dependencies (trl/peft are imported by hpsv3's training
#     module, which its inferencer imports; deepspeed, diffusers, opencv, timm, einops,
#     qwen-vl-utils and tyro are never imported on the scoring path);
#   * their runtime imports, pinned: transformers 4.45.2 and the hub/tokenizers it accepts,
#     accelerate, datasets, omegaconf, fire, matplotlib, tensorboard, rich (trl), psutil (peft);
#   * torch/torchvision pinned in every pip call, so pip never swaps in a CUDA torch. (PyPI's
#     torchvision 0.28.0 is a CUDA build; cdm_bench/compat.py makes it import beside the CPU
#     torch.)
# cdm-bench itself is installed editable with its core and the [dev] extra (pytest), so the
# hpsv3 tests run in this env too (tests/metrics/hpsv3_env_checks.py).
set -euo pipefail

# the venv, the pinned CPU torch and cdm-bench[dev] (REPO, VENV, PIP, TORCH_PIN, TV_PIN)
source "$(dirname "${BASH_SOURCE[0]}")/_venv_common.sh" "${1:-}" .venv-hpsv3
"${PIP[@]}" "$TORCH_PIN" "$TV_PIN" \
    transformers==4.45.2 tokenizers==0.20.3 huggingface_hub==0.36.2 accelerate==1.15.0 \
    datasets==5.0.1 omegaconf==2.4.0 fire==0.7.1 matplotlib==3.11.2 tensorboard==2.21.0 \
    rich==15.0.0 psutil==7.2.2
"${PIP[@]}" --no-deps hpsv3==1.0.0 trl==0.11.4 peft==0.13.2

"$VENV/bin/python" -m cdm_bench.compat_install  # the torchvision hook in every process of the env

# fail here, not at scoring time: the package, its model class and its inferencer import
"$VENV/bin/python" - <<'EOF'
import cdm_bench  # first: its import hook lets the CUDA torchvision wheel import beside the CPU torch
import torch, transformers, hpsv3
from hpsv3 import HPSv3RewardInferencer
from hpsv3.model.qwen2vl_trainer import Qwen2VLRewardModelBT
print(f"hpsv3 env ok: torch {torch.__version__}, transformers {transformers.__version__}")
EOF
