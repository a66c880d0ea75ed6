# Two entry points for a fresh machine (Python 3.11+ and make):
#   make demo   set up .venv and run the order-saga demo (in-memory broker, SQLite store)
#   make test   set up .venv, lint (ruff), type-check (mypy --strict), run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test lint typecheck unit setup bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sagawire demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/sagawire bench --broker memory:// --store sqlite:///sagawire-bench.db --sagas 20000 --concurrency 512

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.db *.db-wal *.db-shm
