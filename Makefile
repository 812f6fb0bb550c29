# tblog: two commands set up a fresh clone.
#   make demo   create .venv, install, ship a realistic burst of logs and show they arrived
#   make test   create .venv, install with the test extras, run ruff, mypy and the whole suite
#   make bench  run the side-by-side benchmarks in benchmarks/

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
# benchmarks/ is linted once it exists (git keeps no empty folder).
LINT   := tblog tests examples $(wildcard benchmarks)

.PHONY: demo test lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.demo: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[demo]'
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[test]'
	touch $@

$(VENV)/.bench: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[test,bench]'
	touch $@

demo: $(VENV)/.demo
	$(BIN)/python -m tblog demo

lint: $(VENV)/.test
	$(BIN)/ruff check $(LINT)
	$(BIN)/ruff format --check $(LINT)

typecheck: $(VENV)/.test
	$(BIN)/mypy

# Tinybird's own datafile parser, for tests/test_local_datafile.py's agreement test.  In a
# venv of its own: tinybird-cli pins urllib3<2, click<8.2 and more that must not reach .venv.
TB_VENV := .venv-tinybird

$(TB_VENV)/.ok: Makefile
	$(PYTHON) -m venv $(TB_VENV)
	$(TB_VENV)/bin/python -m pip --disable-pip-version-check -q install 'tinybird-cli>=6.5'
	touch $@

pytest: $(VENV)/.test $(TB_VENV)/.ok
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(VENV)/.bench
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TB_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
