# autologs — the two commands: `make demo` (the main job) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test stop install bench bench-smoke clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11+ or run make PYTHON=python3"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)  ## create the venv and install autologs with its test tools

demo: $(STAMP)  ## start the broker and a worker, simulate a day, print the logs
	$(BIN)/autologs demo

stop:  ## stop the worker and the broker that the demo started
	@if [ -x $(BIN)/autologs ]; then $(BIN)/autologs stop; fi

test: $(STAMP)  ## install, fetch and start the broker, run every test
	$(BIN)/autologs broker start
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP)  ## run the benchmarks and update the README's figures
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/autologs broker start
	$(BIN)/python -m bench.run

bench-smoke: $(STAMP)  ## a few thousand events through the benchmark harness
	$(BIN)/autologs broker start
	$(BIN)/python -m bench.run --smoke

clean: stop  ## remove the venv and local data (.autologs)
	rm -rf $(VENV) .autologs
