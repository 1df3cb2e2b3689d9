# deeppot: `make test` and `make demo` work on a fresh clone (they create .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -m "not slow" -n 2 --durations=15

.PHONY: venv test test-all demo lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev,bench]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# everything, slow end-to-end runs included, with 10x the fuzz examples
test-all: $(STAMP)
	DEEPPOT_HYPOTHESIS_EXAMPLES=200 $(PY) -m pytest -n 2

# The Plummer demo (deeppot/configs/demo.toml): <= 10 minutes on 2 cores; resumes from runs/demo.
demo: $(STAMP)
	$(VENV)/bin/deeppot demo

lint: $(STAMP)
	$(VENV)/bin/ruff check deeppot tests benchmarks plugins

bench: $(STAMP)
	$(PY) benchmarks/bench_laplacian.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
