#!/usr/bin/env bash
# The t2v-metrics comparison environment: <repo>/.venv-t2v (idempotent; safe to re-run).
#
#   bash scripts/make_t2v_env.sh [REPO_ROOT]      (default: this script's parent folder)
#
# Only for checking cdm-bench's `vqascore` against the t2v-metrics package itself
# (tests/metrics/t2v_env_checks.py, launched by tests/metrics/test_vqascore.py); scoring with
# vqascore needs no t2v-metrics. Why a separate environment, and why --no-deps:
#   * `pip install t2v-metrics` (3.0, the newest on PyPI) fails: it pins torch==2.5.1,
#     transformers==4.49.0, numpy==1.26.4, Pillow==10.0.0 and ~60 other packages, among them
#     `apex==0.9.10dev` (an unrelated PyPI package) whose dependency `cryptacular` does not build
#     ("cc1: fatal error: /tmp/enscons/xxmodule.c: No such file or directory").
#   * So t2v-metrics goes in with --no-deps, beside what its Qwen2-VL scorer
#     (t2v_metrics/models/vqascore_models/qwen2vl_model.py) imports: transformers, qwen-vl-utils
#     (which imports torchvision) and decord, on cdm-bench's own stack (torch 2.13.0 CPU,
#     transformers 5.24.0). `import t2v_metrics` itself needs ffmpeg and every other model family's
#     packages, so the checks load the Qwen2-VL module without running the package's __init__.
set -euo pipefail

# the venv, the pinned CPU torch and cdm-bench[dev] (REPO, VENV, PIP, TORCH_PIN, TV_PIN)
source "$(dirname "${BASH_SOURCE[0]}")/_venv_common.sh" "${1:-}" .venv-t2v
"${PIP[@]}" "$TORCH_PIN" "$TV_PIN" transformers==5.24.0 tokenizers==0.23.3 huggingface_hub==2.4.0 \
    accelerate==1.15.0 qwen-vl-utils==0.0.14 decord==0.6.0 av requests
"${PIP[@]}" --no-deps t2v-metrics==3.0

"$VENV/bin/python" -m cdm_bench.compat_install  # the torchvision hook in every process of the env

"$VENV/bin/python" - <<'PYEOF'
import cdm_bench  # first: its import hook lets the CUDA torchvision wheel import beside the CPU torch
import importlib.metadata as md
import transformers, qwen_vl_utils, decord  # what t2v-metrics' Qwen2-VL scorer imports
print(f"t2v env ok: t2v-metrics {md.version('t2v-metrics')}, transformers {transformers.__version__}")
PYEOF
touch "$VENV/.installed"
