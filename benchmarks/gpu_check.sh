#!/usr/bin/env bash
# The prepared device check of the GPU fast path (docs/gpu.md): on a fresh GPU machine with nothing of this
# project installed, in under 8 minutes, it
#   1. sets up: checks the Python packages the engine imports; those missing are installed, offline, from a
#      folder of wheels carried with the working tree (--wheels DIR, or $GPU_CHECK_WHEELS, or .whl/ in the
#      repository root; fill it on a machine with network with benchmarks/gpu_wheels.sh);
#   2. builds the full-size stand-in model by recipe: the `chatterbox` preset's built-in random weights
#      (every tensor made from its name and shape: no download, the same on every machine);
#   3. runs the tests marked `gpu` (pytest -m gpu tests/gpu);
#   4. runs the benchmark, eager vs CUDA graphs side by side (benchmarks/gpu_bench.py): T3 ms per tick per
#      bucket, flow ms per chunk, HiFT, the CFM -> HiFiGAN hand-off (bytes vs CUDA IPC), start-up time, GPU
#      memory, TTFB p50/p95 at c = 1, 8, 32, 64, RTF, underruns, the first-audio knobs and their fidelity;
# and writes gpu-check.json, gpu-check.md and the logs into $OUT (or --out DIR).
#
# --cpu-dry-run: the same script on a CPU at tiny sizes, in well under a minute (the CI test
# tests/benchmarks/test_gpu_check_dryrun.py runs it), so the next lent GPU machine runs it unchanged.
#
# Usage: benchmarks/gpu_check.sh [--cpu-dry-run] [--out DIR] [--wheels DIR] [--skip-tests] [--budget-s N]
#        (GPU_BENCH_ARGS="--sections t3,pipeline" passes arguments on to gpu_bench.py: a shorter rerun)
# Exit status: 0 when the tests passed and every benchmark section ran; 1 otherwise (the files say what failed).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DRY=0
OUT_DIR="${OUT:-}"
WHEELS="${GPU_CHECK_WHEELS:-}"
SKIP_TESTS=0
BUDGET=""
TOTAL_LIMIT_S=470  # the issue's 8 minutes, less the set-up's own seconds: the whole check is cut off here
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-dry-run) DRY=1 ;;
    --out) OUT_DIR="$2"; shift ;;
    --wheels) WHEELS="$2"; shift ;;
    --skip-tests) SKIP_TESTS=1 ;;
    --budget-s) BUDGET="$2"; shift ;;
    -h|--help) sed -n '2,/^set /p' "$0" | grep '^#'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$OUT_DIR" ]; then
  echo "gpu_check.sh: no output folder: set \$OUT or pass --out DIR" >&2
  exit 2
fi
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
LOG="$OUT_DIR/gpu-check.log"
: >"$LOG"
T0=$(date +%s)
say() { echo "gpu_check: $*" | tee -a "$LOG" >&2; }

# --- 1. Python and packages -------------------------------------------------------------------------
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY="python3"; fi
export PYTHONUNBUFFERED=1
# import name -> what it is: the engine's run-time imports and the tests' (pyproject.toml's dependencies)
NEEDED="torch numpy zmq msgpack soundfile click safetensors tokenizers soxr platformdirs pysbd tqdm pytest"
missing() { "$PY" - "$@" <<'EOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
EOF
}
MISSING="$(missing $NEEDED)"
if [ -n "$MISSING" ]; then
  [ -z "$WHEELS" ] && [ -d "$ROOT/.whl" ] && WHEELS="$ROOT/.whl"
  if [ -z "$WHEELS" ] || ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    say "missing Python packages: $MISSING; no wheels to install them from (fill .whl/ with benchmarks/gpu_wheels.sh)"
    exit 1
  fi
  SITE="${TMPDIR:-/tmp}/gpu-check-site"
  say "installing the carried wheels from $WHEELS into $SITE (missing: $MISSING)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
    >>"$LOG" 2>&1 || { say "pip could not install the wheels (see $LOG)"; exit 1; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  MISSING="$(missing $NEEDED)"
  if [ -n "$MISSING" ]; then say "still missing after the wheels: $MISSING"; exit 1; fi
fi
"$PY" - >>"$LOG" 2>&1 <<'EOF'
import sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
EOF
if [ "$DRY" = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  say "no CUDA device visible to $PY (on a CPU machine use --cpu-dry-run)"
  exit 1
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used \
  --format=csv >>"$LOG" 2>&1

# --- 2. the stand-in model by recipe ---------------------------------------------------------------
if [ "$DRY" = 1 ]; then PRESET=tiny; DTYPE=float32; DEVICE=cpu; else PRESET=chatterbox; DTYPE=bfloat16; DEVICE=cuda; fi
say "stand-in model: built-in '$PRESET' preset (random weights from each tensor's name and shape), $DTYPE on $DEVICE"
"$PY" - "$PRESET" "$DEVICE" >>"$LOG" 2>&1 <<'EOF' || { say "could not build the stand-in model (see the log)"; exit 1; }
import sys, time
from stages.common.spec import ModelSpec
from stages.t3.part import load_t3_part
t0 = time.perf_counter()
part = load_t3_part(ModelSpec(preset=sys.argv[1], device=sys.argv[2]), max_slots=1, cuda_graphs=False)
n = sum(p.numel() for p in part.batch.model.model.parameters())
print(f"stand-in T3 at {sys.argv[1]}: {n / 1e6:.0f} M parameters built in {time.perf_counter() - t0:.1f} s")
EOF

# --- 3. the tests marked gpu -------------------------------------------------------------------------
STATUS=0
if [ "$SKIP_TESTS" = 0 ]; then
  TEST_LIMIT=$([ "$DRY" = 1 ] && echo 60 || echo 200)  # GPU: ~4 pipeline starts at tiny + the bucket sweeps
  say "tests: pytest -m gpu tests/gpu (limit ${TEST_LIMIT} s)"
  timeout "$TEST_LIMIT" "$PY" -m pytest -q -m gpu tests/gpu -rs -p no:cacheprovider \
    --junitxml="$OUT_DIR/gpu-tests.xml" >"$OUT_DIR/gpu-tests.log" 2>&1
  RC=$?
  tail -n 15 "$OUT_DIR/gpu-tests.log" | tee -a "$LOG" >&2
  if [ "$RC" != 0 ]; then say "gpu tests failed or timed out (rc $RC): $OUT_DIR/gpu-tests.log"; STATUS=1; fi
fi

# --- 4. the benchmark --------------------------------------------------------------------------------
ELAPSED=$(( $(date +%s) - T0 ))
LEFT=$(( TOTAL_LIMIT_S - ELAPSED ))
ARGS=(--out "$OUT_DIR")
if [ "$DRY" = 1 ]; then
  ARGS+=(--dry-run)  # the rehearsal runs every section once (no budget), cut off only by the total limit
else
  [ -z "$BUDGET" ] && BUDGET=$(( LEFT - 60 ))  # new sections stop starting here; the last one may take a minute
fi
[ -n "$BUDGET" ] && ARGS+=(--budget-s "$BUDGET")
# shellcheck disable=SC2206
[ -n "${GPU_BENCH_ARGS:-}" ] && ARGS+=($GPU_BENCH_ARGS)  # e.g. "--sections t3,pipeline" for a shorter rerun
say "benchmark: $LEFT s left of ${TOTAL_LIMIT_S} s${BUDGET:+; sections start until ${BUDGET} s}"
timeout "$LEFT" "$PY" benchmarks/gpu_bench.py "${ARGS[@]}" >"$OUT_DIR/gpu-bench.log" 2>&1
RC=$?
if [ "$RC" != 0 ]; then say "benchmark: a section failed or the run was cut off (rc $RC): $OUT_DIR/gpu-bench.log"; STATUS=1; fi
[ -f "$OUT_DIR/gpu-check.md" ] && cat "$OUT_DIR/gpu-check.md"
say "done in $(( $(date +%s) - T0 )) s, status $STATUS; files in $OUT_DIR"
exit $STATUS
