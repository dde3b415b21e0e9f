PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/python examples/etl/demo.py

lint: $(STAMP)
	$(BIN)/ruff check longrun tests examples bench
	$(BIN)/mypy longrun
	$(BIN)/mypy --strict tests/typing

bench: $(STAMP)
	$(BIN)/python bench/iterate_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info
