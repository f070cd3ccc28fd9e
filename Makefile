# Two commands for a new user: `make demo` and `make test`. Both create .venv/ in the repo root.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch 2.13.0 CPU is the build the project is tested with (see README: "Environment").
TORCH_PIN ?= torch==2.13.0

.PHONY: venv demo demo-quick test bench clean
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml Makefile
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[train,dev]"
	touch $@

demo: venv
	$(BIN)/cdm-bench demo --out runs/demo

demo-quick: venv
	$(BIN)/cdm-bench demo --out runs/demo-quick --quick

test: venv
	$(BIN)/python -m pytest -q -x --timeout 900

clean:
	rm -rf $(VENV) runs .pytest_cache
