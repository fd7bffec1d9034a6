# The front door: every target does its own set-up.
PY := .venv/bin/python
DATA ?= .slipway

.PHONY: setup proto check lint test test-unit test-integration test-e2e bench up clean

setup:
	@bash scripts/setup.sh

proto: setup
	@$(PY) scripts/gen_proto.py

check: setup
	@$(PY) scripts/gen_proto.py --check
	@$(PY) scripts/check_layers.py
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .
	@$(PY) -m mypy

lint: check

test: check
	@bash scripts/build_pebble.sh
	@$(PY) -m pytest -q tests/unit tests/integration tests/e2e tests/multihost

test-unit: setup
	@$(PY) -m pytest -q tests/unit

test-integration: setup
	@bash scripts/build_pebble.sh
	@$(PY) -m pytest -q tests/integration

test-e2e: setup
	@$(PY) -m pytest -q tests/e2e

bench: setup
	@bash scripts/setup.sh --bench
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

up: setup
	@.venv/bin/slipway up --data-dir $(DATA)

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
