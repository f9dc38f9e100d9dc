# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHECKOV_VENV := .venv-checkov

.PHONY: demo test lint bench harness localhost setup clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# checkov pins an old pycep-parser, so it lives in a virtual environment of its own.
$(CHECKOV_VENV)/.installed:
	$(PY) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q --upgrade pip
	$(CHECKOV_VENV)/bin/pip install -q 'checkov>=3.2'
	touch $@

demo: setup
	$(BIN)/python -m harness demo

test: setup $(CHECKOV_VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	OUTBOX_CHECKOV=$(CHECKOV_VENV)/bin/checkov $(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m benchmarks.run

harness: setup
	$(BIN)/python -m harness up

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules .state .pytest_cache
