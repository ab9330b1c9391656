# Two commands on a fresh clone: `make run` and `make test`. Both create .venv
# when it is missing and install the project into it; the install is redone
# only when pyproject.toml changes, so second calls start at once.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test lint bench clean

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch first, pinned: it resolves to the local CPU wheel; a range would pull CUDA builds.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev,export]"
	@touch $(INSTALLED)

run: $(INSTALLED)
	$(BIN)/rayfolio run

test: $(INSTALLED)
	$(BIN)/pytest

lint: $(INSTALLED)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(INSTALLED)
	$(BIN)/python bench/data_pipeline.py
	$(BIN)/python -m bench.env_throughput

clean:
	rm -rf runs .pytest_cache .ruff_cache .hypothesis
