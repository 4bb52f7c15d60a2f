# One-command entry points. `make test` and `make demo` create .venv and install the package (CPU torch pinned
# through constraints-cpu.txt) on first use, so both work from a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test test-slow demo lint mutation

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints-cpu.txt -e ".[dev]"
	touch $@

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

demo: setup
	$(VENV)/bin/sentmim demo

lint: setup
	$(VENV)/bin/ruff check sentmim recipes tests benchmarks

# Mutation testing of the wiring modules (mutmut; about an hour on 2 cores, so not part of `make test`):
# writes benchmarks/mutation/results/after.json; see benchmarks/mutation/README.md.
mutation: setup
	$(PY) benchmarks/mutation/run_mutation.py --label after
