# Two commands for a new user: `make demo` and `make test`. Both create .venv/ in the repo root.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch 2.13.0 CPU is the build the project is tested with (see README: "Environment").
TORCH_PIN ?= torch==2.13.0
# torchvision matching that torch (PyPI's is a CUDA build: cdm_bench/compat.py makes it import);
# without the pin pip "fixes" the pair by pulling a 5 GB CUDA torch
TORCHVISION_PIN ?= torchvision==0.28.0
# scorer packages whose own pins clash with the rest: installed without their dependencies
NODEPS_SCORERS ?= hpsv2x==1.2.0 image-reward==1.5
EVAL_VENV := .venv-eval
HPSV3_VENV := .venv-hpsv3
DPG_VENV := .venv-dpg
T2V_VENV := .venv-t2v

.PHONY: envs venv eval-env eval-env-hpsv3 eval-env-dpg eval-env-t2v browser demo demo-quick test bench clean
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml Makefile
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[train,dev,eval,ocr,fid,diversity,track,sweep,judge]" "$(TORCH_PIN)" "$(TORCHVISION_PIN)"
	$(BIN)/pip install -q --no-deps $(NODEPS_SCORERS)
	$(BIN)/python -m cdm_bench.compat_install  # the torchvision hook in every process (accelerate launch too)
	touch $@

# the evaluate phase's own environment (no diffusers, no training code)
eval-env: $(EVAL_VENV)/.installed
$(EVAL_VENV)/.installed: pyproject.toml Makefile
	test -d $(EVAL_VENV) || $(PY) -m venv $(EVAL_VENV)
	$(EVAL_VENV)/bin/pip install -q --upgrade pip
	$(EVAL_VENV)/bin/pip install -q "$(TORCH_PIN)"
	$(EVAL_VENV)/bin/pip install -q -e ".[eval,ocr,fid,diversity]" "$(TORCH_PIN)" "$(TORCHVISION_PIN)"
	$(EVAL_VENV)/bin/pip install -q --no-deps $(NODEPS_SCORERS)
	$(EVAL_VENV)/bin/python -m cdm_bench.compat_install
	touch $@

demo: venv
	$(BIN)/cdm-bench demo --out runs/demo

demo-quick: venv
	$(BIN)/cdm-bench demo --out runs/demo-quick --quick

# HPSv3 pins transformers 4.45.2: its own environment (see scripts/make_hpsv3_env.sh)
eval-env-hpsv3: $(HPSV3_VENV)/.installed
$(HPSV3_VENV)/.installed: scripts/make_hpsv3_env.sh scripts/_venv_common.sh pyproject.toml
	PYTHON=$(PY) TORCH_PIN="$(TORCH_PIN)" TORCHVISION_PIN="$(TORCHVISION_PIN)" bash scripts/make_hpsv3_env.sh .
	touch $@

# DPG-Bench's mPLUG VQA (modelscope, transformers 4.57): its own environment (scripts/make_dpg_env.sh)
eval-env-dpg: $(DPG_VENV)/.installed
$(DPG_VENV)/.installed: scripts/make_dpg_env.sh scripts/_venv_common.sh pyproject.toml
	PYTHON=$(PY) TORCH_PIN="$(TORCH_PIN)" TORCHVISION_PIN="$(TORCHVISION_PIN)" bash scripts/make_dpg_env.sh .
	touch $@

# the t2v-metrics package (vqascore's reference; its pins do not install): scripts/make_t2v_env.sh
eval-env-t2v: $(T2V_VENV)/.installed
$(T2V_VENV)/.installed: scripts/make_t2v_env.sh scripts/_venv_common.sh pyproject.toml
	PYTHON=$(PY) TORCH_PIN="$(TORCH_PIN)" TORCHVISION_PIN="$(TORCHVISION_PIN)" bash scripts/make_t2v_env.sh .
	touch $@

# the report test opens the HTML report in headless Chromium (Debian's package; root installs it)
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the browser test is skipped"

# the five environments are independent: built side by side (5m23s here against ~18 min one after
# another on a slow 2-core machine; pip's downloads and unpacking overlap the compiles)
# two test processes (pytest-xdist), each test file whole on one of them: 16-18 min of tests against
# 24.4 min in one process on 2 cores (2026-12-07); TEST_WORKERS=0 runs them in this process
TEST_WORKERS ?= 2
test: envs
	$(BIN)/python -m pytest -q -x --timeout 900 -n $(TEST_WORKERS) --dist loadfile

envs:
	$(MAKE) -j5 --output-sync=target venv eval-env-hpsv3 eval-env-dpg eval-env-t2v browser

clean:
	rm -rf $(VENV) $(EVAL_VENV) $(HPSV3_VENV) $(DPG_VENV) $(T2V_VENV) runs .pytest_cache
