#!/usr/bin/env bash
# The DPG-Bench eval environment (mPLUG VQA through modelscope): <repo>/.venv-dpg (idempotent;
# safe to re-run).
#
#   bash scripts/make_dpg_env.sh [REPO_ROOT]      (default: this script's parent folder)
#   .venv-dpg/bin/cdm-bench evaluate --metrics dpgbench ...
#
# Why a separate environment: modelscope's mPLUG code needs transformers 4.x (the main env runs
# transformers 5), and `pip install -e .[dpg]` swaps the CPU torch for a 6 GB CUDA torch, lacks
# modelscope's runtime packages, and an unpinned `datasets` drags in a huggingface-hub that
# transformers 4 refuses. So it lives alone, with cdm-bench's core (no diffusers) and [dev]
# (pytest: tests/metrics/dpg_env_checks.py runs here), and exactly what the metric's set-up
# imports. Measured with modelscope 1.40.2 (the same holds for 1.9.5, 1.20.1 and 1.30.0):
#   * `modelscope.pipelines.pipeline` -> msdatasets: addict, datasets (4.x, the range modelscope
#     itself allows; it takes the huggingface-hub 0.36 that transformers 4.57 accepts);
#   * reading configuration.json: simplejson, sortedcontainers (modelscope's jsonplus);
#   * mPLUG's model and preprocessor: transformers, timm, torchvision, decord;
#   * the visual_question_answering pipeline module also imports modelscope's OFA model and
#     *all* OFA preprocessors at module level, in every modelscope version. They are never
#     run for mPLUG, but they must import: fairseq, torchaudio, librosa, soundfile, cv2,
#     zhconv, unicodedata2, rapidfuzz (and fairseq's own hydra-core, omegaconf, sacrebleu,
#     bitarray). Three of them are installed lean:
#       - fairseq: `fairseq` 0.12.2 does not import on Python 3.11; `fairseq-fixed` 0.12.3.1
#         (same `fairseq` package, 3.11 fixes) is an sdist: built here without its C++/Cython
#         extensions (its own READTHEDOCS switch; the Python code imports without them; ~10 s
#         instead of minutes of compiling), --no-deps (its Cython/torchaudio/sklearn pins are
#         build-time or already here);
#       - librosa --no-deps: `import librosa` needs only lazy_loader; its numba/llvmlite
#         (~210 MB) would only serve OFA's speech recognition, which this env never runs;
#       - torchaudio: PyPI's wheels are CUDA builds (like torchvision's); beside the CPU torch
#         its extension libraries cannot load (libc10_cuda.so), so they are removed and
#         torchaudio imports as a pure-Python build (torchaudio/_extension/utils.py: no library
#         file -> no extension). Only OFA's speech code would have used them.
#   * torch/torchvision pinned in every pip call, so pip never swaps in a CUDA torch. (PyPI's
#     torchvision 0.28.0 is a CUDA build; cdm_bench/compat.py makes it import beside the CPU
#     torch, via the .pth that `python -m cdm_bench.compat_install` writes.)
set -euo pipefail

# the venv, the pinned CPU torch and cdm-bench[dev] (REPO, VENV, PIP, TORCH_PIN, TV_PIN)
source "$(dirname "${BASH_SOURCE[0]}")/_venv_common.sh" "${1:-}" .venv-dpg
"${PIP[@]}" "$TORCH_PIN" "$TV_PIN" \
    modelscope==1.40.2 modelscope-hub==0.5.1 \
    transformers==4.57.6 tokenizers==0.22.2 huggingface_hub==0.36.2 timm==1.0.31 decord==0.6.0 \
    addict==2.4.0 datasets==4.8.4 simplejson==4.3.0 sortedcontainers==2.4.0 \
    torchaudio==2.11.1 soundfile==0.14.0 lazy_loader==0.6 opencv-python-headless==5.1.0.95 \
    zhconv==1.4.3 unicodedata2==18.0.0 rapidfuzz==3.14.6 \
    hydra-core==1.3.2 omegaconf==2.3.0 sacrebleu==2.6.0 bitarray==3.12.3
"${PIP[@]}" --no-deps librosa==0.11.0
READTHEDOCS=1 "${PIP[@]}" --no-deps --no-build-isolation fairseq-fixed==0.12.3.1

# torchaudio's CUDA-only extension libraries: without them it imports as a pure-Python build
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -f "$SITE"/torchaudio/lib/*.so

"$VENV/bin/python" -m cdm_bench.compat_install  # the torchvision hook in every process of the env

# fail here, not at scoring time: what the metric's set-up imports, the classes the VQA pipeline
# builds, modelscope's configuration reader, and the metric's own package check
"$VENV/bin/python" - <<'EOF'
import cdm_bench  # first: its import hook lets the CUDA torchvision wheel import beside the CPU torch
import torch, transformers, modelscope
from modelscope.pipelines import pipeline
from modelscope.utils.constant import Tasks
from modelscope.pipelines.multi_modal.visual_question_answering_pipeline import VisualQuestionAnsweringPipeline
from modelscope.models.multi_modal.mplug_for_all_tasks import MPlugForAllTasks
from modelscope.models.multi_modal.mplug import MPlug, MPlugConfig
from modelscope.preprocessors.multi_modal import MPlugPreprocessor
from modelscope.fileio.format import jsonplus
from metrics.dpgbench import MPLUGBackend
from cdm_bench.metric import missing_packages
missing = missing_packages(MPLUGBackend.requires)
assert not missing, f"dpg env: the mplug backend still misses {missing}"
print(f"dpg env ok: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"modelscope {modelscope.__version__}")
EOF
