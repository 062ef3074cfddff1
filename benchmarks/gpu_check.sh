#!/usr/bin/env bash
# One-shot GPU check for a lent CUDA machine (no network there): build the C++ core, run the CUDA tests, then
# time attention, decode, training, sampling and a GRPO step, and print one short Markdown table per part at the end.
#
#   bash benchmarks/gpu_check.sh            # sized for one call of the device tool: done within DEADLINE=540 s
#   QUICK=0 DEADLINE=3600 bash benchmarks/gpu_check.sh    # the issues' full sizes (longer)
#
# Full logs go to $OUT (or ./gpu-check-logs); the summary is printed last so that the tail of the output holds it.
# Every part has its own time limit, cut to what is left before DEADLINE (seconds since the start), and a failure
# in one part does not stop the others. The CUDA tests, and the quick training run, use one fixed kernel config
# (REASONLESS_AUTOTUNE=0): autotuning every small test shape would take minutes of compilation.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LOGS=${OUT:-$ROOT/gpu-check-logs}
mkdir -p "$LOGS"
SUMMARY=$LOGS/summary.md
: > "$SUMMARY"
QUICK=${QUICK:-1}
DEADLINE=${DEADLINE:-540}
PY=${PYTHON:-python3}
export PYTHONPATH=$ROOT
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET

part() {  # part NAME SECONDS COMMAND...: run with a limit, log everything, keep the table lines for the summary
  local name=$1 limit=$2; shift 2
  local log=$LOGS/$name.log t0=$SECONDS cmd="$*" left=$((DEADLINE - SECONDS - 10))
  if [ "$left" -lt 20 ]; then
    echo "=== $name: skipped, ${left}s left before DEADLINE=${DEADLINE}" | tee -a "$SUMMARY"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (limit ${limit}s): ${cmd:0:160}" | tee -a "$SUMMARY"
  timeout "$limit" "$@" > "$log" 2>&1
  local rc=$?
  grep -E '^\||^[0-9]+ (passed|failed)|^FAILED|^ERROR' "$log" >> "$SUMMARY"
  if [ "$rc" -ne 0 ]; then
    echo "part $name: exit $rc after $((SECONDS - t0)) s (124 = time limit); last lines:" >> "$SUMMARY"
    tail -n 15 "$log" >> "$SUMMARY"
  else
    echo "part $name: ok in $((SECONDS - t0)) s" >> "$SUMMARY"
  fi
  echo >> "$SUMMARY"
}

{
  echo "# gpu_check $(date -u +%Y-%m-%dT%H:%MZ) on $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
  $PY -c "import torch, triton; print(f'torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}')" 2>&1
  echo
} | tee -a "$SUMMARY"

if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device visible to $PY; this script is for a GPU machine" | tee -a "$SUMMARY"
  exit 1
fi

# The C++ core, built in place (as a developer build): reasonless/_core*.so next to the package, and the kernels
# reachable as reasonless.kernels through a link.
export PY
part build 240 bash -c 'cmake -S . -B build/gpu-check -DCMAKE_BUILD_TYPE=Release -G Ninja \
    -Dpybind11_DIR="$($PY -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v $PY)" &&
  cmake --build build/gpu-check -j "$(nproc)" &&
  { [ -e reasonless/kernels ] || ln -s ../kernels reasonless/kernels; } &&
  $PY -c "import reasonless._core, reasonless.kernels.flash_attn, reasonless.kernels.decode; print(\"| build | ok |\")"'

# Compiling a kernel per test shape dominates the tests' time on a fresh machine: spread it over processes.
PARALLEL=""
$PY -c "import xdist" 2>/dev/null && PARALLEL="-n 8"
REASONLESS_AUTOTUNE=0 part cuda-tests 180 $PY -m pytest -q -p no:cacheprovider $PARALLEL tests/test_kernels_flash.py \
  tests/test_kernels_decode.py tests/test_model.py tests/test_sample.py

if [ "$QUICK" = 1 ]; then
  part attention 120 $PY benchmarks/bench_attention.py --quick
  part decode 50 $PY benchmarks/bench_decode.py --quick
  REASONLESS_AUTOTUNE=0 part train 120 $PY benchmarks/bench_train.py --preset paper --seq-len 8192 --rows 2 \
    --steps 8 --warmup-steps 3 --count 1500 --backends torch,triton
  part sample 90 $PY benchmarks/bench_sample.py --device cuda --preset paper --batch 64 --new-tokens 1000 --hf
  part grpo 90 $PY benchmarks/bench_grpo.py --device cuda --preset paper --grid 30 --prompts 64 --group 8 \
    --budget 300 --steps 2 --hf
else
  part attention 400 $PY benchmarks/bench_attention.py
  part decode 200 $PY benchmarks/bench_decode.py
  part train 400 $PY benchmarks/bench_train.py --preset paper --seq-len 8192 --rows 4 --steps 20 --warmup-steps 5 \
    --count 4000 --backends torch,triton
  part sample 600 $PY benchmarks/bench_sample.py --device cuda --preset paper --batch 64 --new-tokens 5000 --hf
  part grpo 600 $PY benchmarks/bench_grpo.py --device cuda --preset paper --grid 30 --prompts 64 --group 8 \
    --budget 1000 --steps 3 --hf
fi

echo "##### summary"
cat "$SUMMARY"
