#!/usr/bin/env bash
# Fill .whl/ (or DIR) with the wheels benchmarks/gpu_check.sh installs, offline, on a GPU machine whose image
# lacks them (the lent H200's image has torch, numpy, msgpack, click, safetensors, tokenizers, tqdm and
# pytest, but not these; /work/.library/device/KINDS.md lists it). Run it on a machine with network;
# the wheels are for CPython 3.12 on x86-64 Linux (the device image's python3), a few MB in all, never committed
# (.whl/ is in .gitignore: name it in the device call's `carry`).
# Usage: benchmarks/gpu_wheels.sh [DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/.whl}"
PY="${PYTHON:-python3}"
[ -x "$ROOT/.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && PY="$ROOT/.venv/bin/python"
# name==version: the engine's imports missing there (pyproject.toml's lower bounds), and cffi/pycparser for soundfile
PACKAGES="pyzmq==26.2.0 soundfile==0.12.1 cffi==1.17.1 pycparser==2.22 soxr==0.5.0.post1 platformdirs==4.3.6 pysbd==0.3.4"
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any"
mkdir -p "$DIR"
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS \
  -d "$DIR" $PACKAGES
ls -l "$DIR"
