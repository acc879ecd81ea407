# The two commands for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL ?= facebook/musicgen-small
CODEC ?= facebook/encodec_32khz
OUT ?= out/demo
# each test file on one worker, so its module fixtures are built once (the suite: 17m59s -> 16m32s here)
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: demo demo-codec lint test test-fast bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

# audiocraft, the reference the audiocraft export and the metrics are tested against: its sources only (its
# requirements pin torch 2.1 and CUDA-only packages; tests/audiocraft_api.py stands in for the modules it does
# not use); the metric networks' references: torchvggish (its requirements, torch, numpy and resampy, are in the
# test extra), hear21passt (it imports timm and torchaudio for what the tests stand in for) and laion_clap (it pins
# numpy < 2, runs on numpy 2 for what the tests use; torchlibrosa is in the test extra); descript's DAC reference,
# descript-audio-codec (descript-audiotools pins protobuf < 3.20 against TensorFlow's, torchaudio has no build for
# our torch: tests/codec/descript_api.py stands in for what it imports and does not run)
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[train,test]'
	$(PY) -m pip install -q --no-deps audiocraft==1.3.0 torchvggish==0.2 hear21passt==0.0.26 laion_clap==1.1.7 \
		descript-audio-codec==1.0.0
	touch $@

# The main job: text-to-music with MODEL (converted on first use, cached under ~/.cache/musicgen_jax).
demo: $(VENV)/.installed
	$(PY) sample.py --model $(MODEL) --duration 8 --out $(OUT) \
		--prompt "lofi hip hop beat with a mellow jazzy piano, 90 bpm" \
		--prompt "epic orchestral film score with brass and timpani"

# The codec alone: round trip of a generated clip; without the hub it says so and uses random weights.
demo-codec: $(VENV)/.installed
	$(PY) -m musicgen_jax.codec roundtrip --codec $(CODEC) --fallback-random $(OUT)/codec

# ruff's lint rules and formatter (pyproject.toml), checked before the tests
lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: lint
	$(PY) -m pytest $(PYTEST_ARGS) -m "not slow and not e2e"

# storage: 12 of musicgen-small's 24 layers (its full training state beside the emulator exceeds 24 GB)
bench: $(VENV)/.installed-test
	$(PY) -m benchmarks.codec --write
	$(PY) -m benchmarks.text --write
	$(PY) -m benchmarks.sampling --write
	$(PY) -m benchmarks.layers --write
	$(PY) -m benchmarks.data --write
	$(PY) -m benchmarks.train --write
	$(PY) -m benchmarks.storage --layers 12 --write

clean:
	rm -rf $(VENV) out .pytest_cache
