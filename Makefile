# The two commands of the README: `make demo` and `make test`. CI runs `make test` (.ci/run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit test-e2e bench lint format system-deps venv clean

demo: system-deps $(STAMP)
	$(BIN)/orthanc-jobs demo

test: system-deps $(STAMP)
	$(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit

test-e2e: system-deps $(STAMP)
	$(BIN)/pytest tests/e2e

bench: system-deps $(STAMP)
	$(BIN)/python bench/run.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

system-deps:
	./scripts/install-system-deps.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

clean:
	-test -f .cluster/cluster.json && $(BIN)/orthanc-jobs cluster down --dir .cluster
	rm -rf $(VENV) .cluster .pytest_cache .mypy_cache .ruff_cache
