# Bootstrap from nothing: `make run` (the main job) and `make test` (the whole suite) build the
# virtual environment first. uv installs the stack in ~30 s; torch comes from the CPU wheel on this
# machine's disk (/opt/wheels) when present, never the multi-GB CUDA build.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_FLAGS := --python $(BIN)/python --compile-bytecode \
	$(if $(wildcard /opt/wheels),--find-links /opt/wheels) \
	$(if $(wildcard /etc/xdg/pip/constraints.txt),-c /etc/xdg/pip/constraints.txt)

.PHONY: setup run test test-fast testbed-deps lint bench clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "VVHO needs Python 3.11, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install $(UV_FLAGS) -e '.[rl,dev,deploy]'
	touch $@

setup: $(BIN)/.installed

# the main job: a small compare on the embedded defaults (vvho/configs/suites/quick.yaml)
run: setup
	$(BIN)/vvho compare --suite quick

# apt packages for the live testbed (QEMU, libvirt, kernel, busybox) + libvirt-python in the venv
testbed-deps: setup
	bash scripts/install-testbed-deps.sh $(VENV)

test: setup testbed-deps
	$(BIN)/python -m pytest

# everything but the live testbed
test-fast: setup
	$(BIN)/python -m pytest -m "not live"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/sim_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
