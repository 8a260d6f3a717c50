# Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp

.PHONY: install services test test-fast lint format run bench chaos cluster clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

services:
	scripts/services.sh

## test: the whole suite against real Postgres, Redis, SQLite and worker processes
test: install services
	$(BIN)/python -m pytest

## test-fast: the tests that start no worker process
test-fast: install services
	$(BIN)/python -m pytest -m "not workers"

## bench: the benchmarks against real Postgres, Redis and workers; writes docs/benchmarks.md
bench: install services
	$(BIN)/python -m bench

## chaos: faults injected into real workers and beat on a throwaway Postgres and Redis;
## writes docs/reliability.md (CHAOS_ONLY=a,b runs some scenarios and writes nothing)
chaos: install
	$(BIN)/python -m chaos

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## run: the demo, on the embedded default (SQLite and a file broker) unless configured
run: install
	$(BIN)/python -m providers.demo

## cluster: the docker-compose topology as local processes on the local Postgres and Redis
cluster: install services
	scripts/cluster.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache ingestion.db* ingestion-broker demo-data .cluster .chaos
