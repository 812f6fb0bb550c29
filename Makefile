# tblog: two commands set up a fresh clone.
#   make demo        create .venv, install, ship a realistic burst of logs and show they arrived
#   make test        ruff and mypy once (in .venv), the pure-Python tests (pytest-pure), then
#                    the whole suite on every supported CPython in turn (PYTHONS); fails if
#                    any of them fails
#   make bench       run the side-by-side benchmarks in benchmarks/
# For iterating:
#   make pytest      the suite on the dev venv's Python only (PYTEST_ARGS="tests/test_x.py -x")
#   make pytest-pure the snapshot and encoding tests with the compiled steps off (part of test)
#   make pytest-3.13 the suite on one supported minor; make pytest-all: on each of PYTHONS
#   make pythons     show which interpreter each minor of PYTHONS resolves to
#   make chromium    install Debian's chromium (apt-get) for the web view's browser tests;
#                    every pytest target depends on it
# .venv (python3, PYTHON=...) is the dev venv that lint, mypy, demo and bench use, and the
# test venv of its own minor; every other minor gets .venv-3.X, all with the test extras.
# Each venv's editable install compiles the optional C extension tblog._speedups in place
# (tblog/_speedups.cpython-3XX-*.so, one per minor; hatch_build.py): an edit of
# tblog/_speedups.c or hatch_build.py reinstalls on the next make; no C compiler, or
# TBLOG_PURE_PYTHON=1, means pure Python.  make clean removes the venvs and those modules.
# An interpreter for 3.X is PYTHON_3.X if given, else the newest pyenv build of 3.X, else
# python3.X on PATH; a minor of PYTHONS that has none fails the run (nothing is skipped):
#   make test PYTHONS="3.11 3.13"   make test PYTHON_3.12=/opt/py312/bin/python

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
# benchmarks/ is linted once it exists (git keeps no empty folder).
LINT   := tblog tests examples hatch_build.py $(wildcard benchmarks)

# Every CPython minor the project supports (pyproject: requires-python >= 3.10, classifiers).
SUPPORTED  := 3.10 3.11 3.12 3.13
PYTHONS    ?= $(SUPPORTED)
ifeq ($(origin PYENV_ROOT),undefined)
PYENV_ROOT := $(or $(shell pyenv root 2>/dev/null),$(HOME)/.pyenv)
endif
# The dev venv's minor, e.g. 3.11: that minor's tests run in .venv itself.
DEV_MINOR  := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
# $(call venv_for,3.X): the venv the suite runs in on 3.X.
venv_for    = $(if $(filter $(1),$(DEV_MINOR)),$(VENV),$(VENV)-$(1))
# $(call python_for,3.X): the interpreter for 3.X, or nothing (see the header).
python_for  = $(or $(PYTHON_$(1)),$(shell ls -d $(PYENV_ROOT)/versions/$(1).*/bin/python 2>/dev/null \
                | grep -E '/$(subst .,\.,$(1))\.[0-9]+/bin/python$$' | sort -V | tail -n 1),$(shell \
                command -v python$(1)))

.PHONY: demo test lint typecheck pytest pytest-all pytest-pure pythons bench clean chromium

# What an editable install builds from besides pyproject.toml: the C extension (hatch_build.py).
INSTALL_DEPS := pyproject.toml hatch_build.py tblog/_speedups.c

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.demo: $(INSTALL_DEPS) | $(BIN)/python
	$(PIP) install -e '.[demo]'
	touch $@

$(VENV)/.test: $(INSTALL_DEPS) | $(BIN)/python
	$(PIP) install -e '.[test]'
	touch $@

$(VENV)/.bench: $(INSTALL_DEPS) | $(BIN)/python
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
	$(TB_VENV)/bin/python -m pip --disable-pip-version-check -q install 'tinybird-cli==6.5.5'
	touch $@

# Tinybird's Forward CLI (`tinybird`: `tb --local`), for tests/test_tb_forward.py; a venv of
# its own too (it pins click, requests and more, and installs a `tb` of its own).
TB_FORWARD_VENV := .venv-tinybird-forward

$(TB_FORWARD_VENV)/.ok: Makefile
	$(PYTHON) -m venv $(TB_FORWARD_VENV)
	$(TB_FORWARD_VENV)/bin/python -m pip --disable-pip-version-check -q install 'tinybird==5.0.3'
	touch $@

# Tinybird's Python SDK (`tinybird-sdk`), for tests/test_tb_sdk.py; a venv of its own (it
# installs the `tinybird` package, which pins its own click and requests).
TB_SDK_VENV := .venv-tinybird-sdk

$(TB_SDK_VENV)/.ok: Makefile
	$(PYTHON) -m venv $(TB_SDK_VENV)
	$(TB_SDK_VENV)/bin/python -m pip --disable-pip-version-check -q install 'tinybird-sdk==0.4.0'
	touch $@

# Debian's chromium, for the web view's tests (tests/test_ui_browser.py drive it with
# Playwright; no `playwright install`, which downloads a browser): installed when missing.
chromium:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)

pytest: $(VENV)/.test $(TB_VENV)/.ok $(TB_FORWARD_VENV)/.ok $(TB_SDK_VENV)/.ok chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Each minor of PYTHONS must resolve to a working interpreter of that very minor.
pythons:
	@missing=; for pair in $(foreach m,$(PYTHONS),'$(m)=$(call python_for,$(m))'); do \
	  m=$${pair%%=*}; py=$${pair#*=}; \
	  case " $(SUPPORTED) " in *" $$m "*) ;; *) echo "make: PYTHONS: $$m is not a supported minor ($(SUPPORTED))" >&2; exit 1;; esac; \
	  got=$$( [ -n "$$py" ] && "$$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); \
	  if [ "$$got" = "$$m" ]; then echo "CPython $$m: $$py"; \
	  else echo "CPython $$m: MISSING (found: '$$py'; set PYTHON_$$m=/path/to/python3.X or PYTHONS=...)" >&2; missing="$$missing $$m"; fi; \
	done; \
	if [ -n "$$missing" ]; then echo "make: no CPython$$missing: the suite must run on every supported Python" >&2; exit 1; fi

# Not an intermediate file for make to delete once the stamp is made.
.PRECIOUS: $(VENV)-%/bin/python
$(VENV)-%/bin/python:
	@py='$(call python_for,$*)'; [ -n "$$py" ] || { echo "make: no CPython $* (see make pythons)" >&2; exit 1; }; \
	echo "$$py -m venv --upgrade-deps $(VENV)-$*"; "$$py" -m venv --upgrade-deps $(VENV)-$*

$(VENV)-%/.test: $(INSTALL_DEPS) | $(VENV)-%/bin/python
	$(VENV)-$*/bin/python -m pip --disable-pip-version-check -q install -e '.[test]'
	touch $@

# make pytest-3.X: the suite on 3.X only.
define _pytest_on
pytest-$(1): $(call venv_for,$(1))/.test $(TB_VENV)/.ok $(TB_FORWARD_VENV)/.ok \
             $(TB_SDK_VENV)/.ok chromium
	$(call venv_for,$(1))/bin/python -m pytest $$(PYTEST_ARGS)
.PHONY: pytest-$(1)
endef
$(foreach m,$(SUPPORTED),$(eval $(call _pytest_on,$(m))))

# One Python after another (timing-sensitive tests; CI has 2 cores); all run, then any
# failure fails the target, naming the Pythons that failed.  pytest's "no tests" (5) fails too.
pytest-all: pythons $(foreach m,$(PYTHONS),$(call venv_for,$(m))/.test) $(TB_VENV)/.ok \
            $(TB_FORWARD_VENV)/.ok $(TB_SDK_VENV)/.ok chromium
	@failed=; for pair in $(foreach m,$(PYTHONS),$(m)=$(call venv_for,$(m))); do \
	  m=$${pair%%=*}; venv=$${pair#*=}; \
	  echo "=== pytest on CPython $$m ($$venv: $$($$venv/bin/python -c 'import platform; print(platform.python_version())'))"; \
	  start=$$(date +%s); \
	  $$venv/bin/python -m pytest $(PYTEST_ARGS) || failed="$$failed $$m"; \
	  echo "=== CPython $$m: $$(( $$(date +%s) - start )) s"; \
	done; \
	if [ -n "$$failed" ]; then echo "make: the suite failed on CPython$$failed" >&2; exit 1; fi; \
	echo "=== the suite passed on CPython $(PYTHONS)"

# The tests of the caller's snapshot and the sender's encoding, once more with the compiled
# steps turned off (TBLOG_PURE_PYTHON=1): the pure-Python path is kept and tested too.
PURE_TESTS := $(addprefix tests/,test_handler.py test_perf_paths.py test_single_sources.py \
  test_properties.py test_redaction.py test_redaction_paths.py test_redaction_corpus.py \
  test_sampling.py test_counts_add_up.py test_caller_input.py test_bad_input.py \
  test_encode_fallbacks.py test_speedups.py test_fast_queue.py test_queue_and_processes.py \
  test_dedup.py test_trace_keep.py test_context.py test_otel.py)

pytest-pure: $(VENV)/.test
	TBLOG_PURE_PYTHON=1 $(BIN)/python -m pytest $(PURE_TESTS)

test: lint typecheck pytest-pure pytest-all

bench: $(VENV)/.bench
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(foreach m,$(SUPPORTED),$(VENV)-$(m)) $(TB_VENV) $(TB_FORWARD_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .cache
	rm -f tblog/*.so tblog/*.pyd
