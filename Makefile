# deeppot: `make test` and `make demo` work on a fresh clone (they create .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -m "not slow" -n 2 --dist loadfile --durations=40

PLUGINS := plugins/deeppot-galpy plugins/deeppot-gala plugins/deeppot-agama

.PHONY: venv test test-all demo lint bench docs agama clean

# deeppot with its test and benchmark extras, and the interop plugins (pure Python; the
# agama plugin imports agama only when called: `make agama` builds it)
$(STAMP): pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS))
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev,bench]" $(addprefix -e ,$(PLUGINS))
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
	$(PY) -m benchmarks.bench_laplacian

# the documentation site (mkdocs; fails on broken links or references)
docs: $(STAMP)
	$(PY) -m pip install -e ".[docs]"
	$(VENV)/bin/mkdocs build --strict

# agama from the vendored source (needs libgsl-dev and libeigen3-dev; ~10 min on 2 cores)
AGAMA_SRC ?= ../shared/vendor/agama-src.tar.gz
agama: $(STAMP)
	$(PY) -m pip install numpy setuptools wheel
	rm -rf build/agama && mkdir -p build && tar -xzf $(AGAMA_SRC) -C build
	cd build/agama && CFLAGS="-I/usr/include/eigen3" $(abspath $(PY)) setup.py bdist_wheel --yes
	$(PY) -m pip install build/agama/dist/agama-*.whl

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
