# Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp

.PHONY: install services browser screenshots test test-fast lint format run bench chaos cluster clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

services:
	scripts/services.sh

## browser: Debian's Chromium for the page tests (tests/test_web.py); Playwright drives it
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "browser: installing chromium"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	fi

## test: the whole suite against real Postgres, Redis, SQLite and worker processes
test: install services browser
	$(BIN)/python -m pytest

## screenshots: the browser tests, writing the page's screenshots into docs/images
screenshots: install services browser
	WEB_SCREENSHOTS=docs $(BIN)/python -m pytest -m browser

## test-fast: the tests that start no worker process and no browser
test-fast: install services
	$(BIN)/python -m pytest -m "not workers and not browser"

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis ingestion.db* ingestion-broker demo-data .cluster .chaos
