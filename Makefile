# The two quick-start commands, usable on a fresh machine with Python 3.11 and pip:
#   make run    install into .venv, then run the main job on the synthetic dataset
#   make test   install into .venv, then run the test suite
# torch is pinned here only (a local CPU build); the package itself asks for torch>=2.4.

VENV ?= .venv
PYTHON ?= python3
TORCH_PIN ?= torch==2.13.0
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: setup run test

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

run: setup
	$(BIN)/bench run --methods perframe,copy

test: setup
	$(BIN)/python -m pytest
