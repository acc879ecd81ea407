# The two commands for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CODEC ?= facebook/encodec_32khz
OUT ?= out/demo
PYTEST_ARGS ?= -n 2

.PHONY: demo test test-fast bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The main job. Until sampling lands it is the codec round trip of a generated clip; without network
# access to the hub it says so and uses random weights.
demo: $(VENV)/.installed
	$(PY) -m musicgen_jax.codec roundtrip --codec $(CODEC) --fallback-random $(OUT)

test: $(VENV)/.installed-test
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.installed-test
	$(PY) -m pytest $(PYTEST_ARGS) -m "not slow"

bench: $(VENV)/.installed-test
	$(PY) -m benchmarks.codec --write

clean:
	rm -rf $(VENV) out .pytest_cache
