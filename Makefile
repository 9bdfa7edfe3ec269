# One task runner for people, the README and CI. `make demo` and `make test` set everything up first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint gen gen-check bench services clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock package-lock.json scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

demo: setup
	$(VENV)/bin/c2d demo

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q tests/unit

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/buf lint

gen: setup
	PYTHON=$(PY) bash scripts/gen.sh

# Fails when gen/ is not what proto/ generates (CI runs it).
gen-check: gen
	git diff --exit-code --stat -- gen/ && test -z "$$(git status --porcelain -- gen/)"

bench: setup
	$(PY) bench/bench_job_latency.py

services: setup
	$(VENV)/bin/c2d services

clean:
	rm -rf c2d-state .pytest_cache .mypy_cache .ruff_cache
