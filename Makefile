# Every target creates and reuses its own virtual environment in .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo bench-store clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[graphite,carbon,test]'
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check graphite_istat tests benchmarks
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

demo: venv
	$(BIN)/python -m graphite_istat.demo

bench-store: venv
	$(BIN)/python benchmarks/bench_store.py

clean:
	rm -rf $(VENV) build dist *.egg-info
