# The two commands of the README: `make demo` and `make test`. CI runs `make test` (.ci/run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Orthanc 1.12 from Debian 13, in a folder of its own (scripts/install-orthanc-root.sh): the tests run the
# plugin's safety and no-loss scenarios on it as well as on the system's Orthanc (1.10.1 on Debian 12).
ORTHANC_112_ROOT := .cache/orthanc-1.12

.PHONY: demo test test-unit test-e2e bench bench-scale bench-search lint format system-deps orthanc-1.12 venv clean

demo: system-deps $(STAMP)
	$(BIN)/orthanc-jobs demo

test: system-deps orthanc-1.12 $(STAMP)
	ORTHANC_JOBS_TEST_ORTHANC_112_ROOT=$(ORTHANC_112_ROOT) $(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit

test-e2e: system-deps orthanc-1.12 $(STAMP)
	ORTHANC_JOBS_TEST_ORTHANC_112_ROOT=$(ORTHANC_112_ROOT) $(BIN)/pytest tests/e2e

bench: system-deps $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.replicas

# 50, 150 and 500 simulated servers, up to 1,000,000 jobs (bench/scale.py): about 12 minutes.
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale

# Listings with each search filter over 100,000 jobs, in process (bench/search.py): about a minute.
bench-search: $(STAMP)
	$(BIN)/python -m bench.search --output bench/results/search.json

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

system-deps:
	./scripts/install-system-deps.sh

orthanc-1.12:
	./scripts/install-orthanc-root.sh $(ORTHANC_112_ROOT)

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

clean:
	-test -f .cluster/cluster.json && $(BIN)/orthanc-jobs cluster down --dir .cluster
	rm -rf $(VENV) .cluster .pytest_cache .mypy_cache .ruff_cache $(ORTHANC_112_ROOT)
