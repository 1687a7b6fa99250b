# Developer and CI entry points. `make test` is what CI runs (see .ci/run).

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
VENV_STAMP := $(VENV)/.installed
# What the venv holds: .[ml,infer,serve,monitor,trade,k8s,dev] at the versions of the
# lock (make lock).
EXTRAS := ml,infer,serve,monitor,trade,k8s,dev
LOCK := locks/dev.txt
PG_BIN ?= /usr/lib/postgresql/15/bin
LINT_PATHS := $(wildcard services tests benchmarks)
PYTEST_ARGS ?=
# Two workers, one per core of the build machine; PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2

# Python 3.12 to build the venv with: pyenv's 3.12.1 when pyenv is there, else python3.12.
ifneq ($(shell command -v pyenv 2>/dev/null),)
PYTHON ?= PYENV_VERSION=3.12.1 pyenv exec python
else
PYTHON ?= python3.12
endif

# apt needs root; use sudo only when not root already.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

CHECKOV_VENV := $(VENV)/tools/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
UV_VENV := $(VENV)/tools/uv
UV_STAMP := $(UV_VENV)/.installed
UV_VERSION := 0.13.9

.PHONY: help venv lock postgres chromium checkov test lint demo clean distclean

help:
	@echo "make venv      create $(VENV) (Python 3.12) with .[$(EXTRAS)] as locked in $(LOCK)"
	@echo "make lock      resolve pyproject.toml again into locks/ (the venv's and each image's)"
	@echo "make postgres  install the PostgreSQL 15 server the tests start (apt)"
	@echo "make chromium  install the headless browser the dashboard tests drive (apt)"
	@echo "make test      run the test suite (real PostgreSQL and S3 on loopback)"
	@echo "make lint      ruff check, ruff format --check, mypy, the import contracts"
	@echo "make demo      replay the bundled sample end to end under var/demo"
	@echo "make clean     remove caches and the demo's state (distclean: also $(VENV))"

venv: $(VENV_STAMP)

# Reinstalls only when pyproject.toml or the lock changes; recreates the venv if it is not
# Python 3.12. Exactly the locked versions (hash-checked; --no-deps: the lock lists every
# dependency, and pip check proves it), then the project itself, editable.
$(VENV_STAMP): pyproject.toml $(LOCK)
	@if ! $(VENV)/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' \
		2>/dev/null; then \
		echo "Creating $(VENV) with $(PYTHON)"; \
		rm -rf $(VENV); \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(VENV)/bin/python -m pip install --no-deps --require-hashes -r $(LOCK)
	$(VENV)/bin/python -m pip install --no-deps -e .
	$(VENV)/bin/python -m pip check
	@touch $@

# The lock files (locks/lock.py says what each is for): run after editing the
# dependencies in pyproject.toml, then `make venv`. Pins change only where pyproject.toml
# needs them to; `make lock LOCK_ARGS=--upgrade` takes the newest versions allowed.
lock: $(UV_STAMP)
	$(UV_VENV)/bin/python locks/lock.py --uv $(UV_VENV)/bin/uv $(LOCK_ARGS)

$(UV_STAMP):
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install 'uv==$(UV_VERSION)'
	@touch $@

# checkov pins libraries that clash with ours (packaging, boto3, networkx): its own venv.
checkov: $(CHECKOV_STAMP)

$(CHECKOV_STAMP): $(VENV_STAMP)
	$(VENV)/bin/python -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install 'checkov==3.3.*'
	@touch $@

postgres:
	@if [ -x "$(PG_BIN)/initdb" ] && [ -x "$(PG_BIN)/pg_ctl" ]; then \
		echo "PostgreSQL server binaries found in $(PG_BIN)"; \
	else \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; \
	fi

# tests/dashboard drive Debian's chromium through its chromedriver (selenium).
chromium:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
		echo "chromium and chromedriver found in /usr/bin"; \
	else \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; \
	fi

test: venv postgres chromium checkov lint
	$(VENV)/bin/python -m pytest -q --durations=30 -n $(PYTEST_WORKERS) --dist loadscope \
		--no-loadscope-reorder $(PYTEST_ARGS)

# The import contracts (stages never import each other; layers) are in pyproject.toml.
lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

demo: venv
	$(VENV)/bin/mlops demo

clean:
	rm -rf .pytest_cache .ruff_cache .mypy_cache .import_linter_cache build dist var/demo
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -print0 | xargs -0 rm -rf
	find . -path ./$(VENV) -prune -o -type d -name '*.egg-info' -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)
