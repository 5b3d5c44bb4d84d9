# Every target creates and reuses its own virtual environment in .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo bench bench-quick bench-store bench-ingest bench-render bench-agent bench-parse bench-names bench-functions clean

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

# Benchmarks print tables; targets and figures are in the issues' notes and benchmarks/RESULTS.md.
bench: venv
	$(BIN)/python benchmarks/bench_compare.py

bench-quick: venv
	$(BIN)/python benchmarks/bench_compare.py --quick

bench-store: venv
	$(BIN)/python benchmarks/bench_store.py

bench-ingest: venv
	$(BIN)/python benchmarks/bench_ingest.py

bench-render: venv
	$(BIN)/python benchmarks/bench_render.py

bench-agent: venv
	$(BIN)/python benchmarks/bench_agent.py

bench-parse: venv
	$(BIN)/python benchmarks/bench_parse.py

bench-names: venv
	$(BIN)/python benchmarks/bench_names.py

bench-functions: venv
	$(BIN)/python benchmarks/bench_functions.py

clean:
	rm -rf $(VENV) build dist *.egg-info
