# Single entry point for set-up, the demo and the tests.
# `make demo` and `make test` each create .venv when it is missing.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The torch build installed when .venv has none. On a CPU-only machine this
# pins the CPU wheel (here it is taken from the local wheel cache, no download).
# GPU users: install your own CUDA build into .venv first (see README); the
# set-up keeps whatever torch is already importable there.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup browser demo test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev,bench,server]"  # bench: matplotlib, for the harness plots the tests draw; server: tts-pipeline http
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/tts-pipeline say --seed 1 --max-new-tokens 125 --output-file demo.wav "Hello from the Chatterbox streaming engine."
	@echo "wrote demo.wav (24 kHz mono). Raw audio to a player:" >&2
	@echo "  bin/tts-pipeline say 'Hello.' | aplay -q -f S16_LE -r 24000 -c 1" >&2
	@echo "  bin/tts-pipeline say 'Hello.' | ffplay -nodisp -autoexit -f s16le -ar 24000 -ch_layout mono -" >&2
	@echo "  bin/tts-pipeline say 'Hello.' | play -q -t raw -e signed -b 16 -r 24000 -c 1 -" >&2

# The HTTP server's browser test drives Debian's headless Chromium with its chromedriver
# (nothing is downloaded at test time); without them that test fails rather than skips,
# so `make test` installs them from Debian's packages when they are missing.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  echo "installing Debian's chromium and chromium-driver for the browser test" >&2; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver; \
	fi

test: setup browser
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/bench_wire.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
