# Sourced by scripts/make_{hpsv3,dpg,t2v}_env.sh: what every separate eval environment shares.
#
#   source scripts/_venv_common.sh [REPO_ROOT] VENV_NAME
#
# Sets REPO (default: this folder's parent), VENV (REPO/VENV_NAME), TORCH_PIN / TV_PIN (from
# TORCH_PIN / TORCHVISION_PIN, as the Makefile passes them) and PIP (a quiet `pip install` of the
# venv); creates the venv if needed, then installs the pinned CPU torch and cdm-bench itself
# (editable, its core and the [dev] extra, so each env can run its own checks with pytest), torch
# pinned in every pip call so that pip never swaps in a CUDA build.
REPO="$(cd "${1:-$(dirname "${BASH_SOURCE[0]}")/..}" && pwd)"
VENV="$REPO/$2"
PY="${PYTHON:-python3}"
TORCH_PIN="${TORCH_PIN:-torch==2.13.0}"
TV_PIN="${TORCHVISION_PIN:-torchvision==0.28.0}"

test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)

"${PIP[@]}" "$TORCH_PIN"
"${PIP[@]}" -e "$REPO[dev]" "$TORCH_PIN"
