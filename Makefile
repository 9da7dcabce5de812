# The two commands in README.md. Each sets itself up on a fresh Debian 12 /
# Raspberry Pi OS machine with only git, python3 and make installed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PACKAGES := custody agent firmware_bridge sync ledger bench lab

.PHONY: demo test check lint typecheck bench clean setup

setup: $(STAMP)

$(STAMP): pyproject.toml deploy/ensure-debian-packages.sh
	./deploy/ensure-debian-packages.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,fuzz]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m lab.demo

lint: $(STAMP)
	$(PY) -m ruff check $(PACKAGES) tests
	$(PY) -m ruff format --check $(PACKAGES) tests

typecheck: $(STAMP)
	$(PY) -m mypy

test: lint typecheck
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench capture --json

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
