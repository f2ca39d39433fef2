# annumap: two commands for a user (`make demo`, `make test`), a few more for developers.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo test test-all lint format bench docs clean

$(VENV)/.stamp-base: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[plot]"
	touch $@

$(VENV)/.stamp-test: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[test,plot,dask]"
	touch $@ $(VENV)/.stamp-base

## demo: embed the bundled CBMC data, print a summary, write out/cbmc_umap.h5ad and out/cbmc_umap.png
demo: $(VENV)/.stamp-base
	$(PY) -m annumap.cli embed -o out/cbmc_umap.h5ad --plot out/cbmc_umap.png --color cell_type

## test: lint, then the test suite (slow cases and benchmarks excluded)
test: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

## test-all: also the slow cases
test-all: $(VENV)/.stamp-test
	$(PY) -m pytest -m "not benchmark"

lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check src tests

format: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format src tests benchmarks

$(VENV)/.stamp-doc: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[doc]"
	touch $@

## docs: the Sphinx (MyST) site from docs/, the API from docstrings and the tutorials; warnings are errors
docs: $(VENV)/.stamp-doc
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

## bench: the side-by-side benchmarks against scanpy (long; see benchmarks/README.md)
bench: $(VENV)/.stamp-test
	$(PY) benchmarks/neighbors.py
	$(PY) benchmarks/umap.py

clean:
	rm -rf out docs/_build docs/_generated docs/tutorials/[0-9]*.md .pytest_cache .ruff_cache
