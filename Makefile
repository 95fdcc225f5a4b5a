# Two commands: `make demo` and `make test`. Each creates .venv and installs what is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/edgemine demo

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) scripts/check_layers.py
	$(PY) -m pytest

# ruff; then the wheel's contents, the package layers (import-linter) and mypy on the installed layout
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) scripts/check_layers.py --mypy

bench: $(STAMP)
	$(PY) benchmarks/embed.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
