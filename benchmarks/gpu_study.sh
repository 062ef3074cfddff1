#!/usr/bin/env bash
# The GPU study in one go (≤ 10 minutes on one H100/H200): studies/gpu-10min.toml through `reasonless study run`,
# then the headline tables of its report. Resumable: rerun the same command after a time-out to finish it.
#
#   bash benchmarks/gpu_study.sh                 # output in $OUT/gpu-study (or ./gpu-study-out)
#
# Builds the C++ core in place first when it is not importable (a fresh device machine has no network: no pip), as
# gpu_check.sh does.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${OUT:-$PWD/gpu-study-out}/gpu-study
mkdir -p "$DEST"
unset TRITON_INTERPRET
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if ! $PY -c "import reasonless._core" 2>/dev/null; then
  { cmake -S . -B build/gpu-check -DCMAKE_BUILD_TYPE=Release -G Ninja \
      -Dpybind11_DIR="$($PY -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v $PY)" &&
    cmake --build build/gpu-check -j "$(nproc)" &&
    { [ -e reasonless/kernels ] || ln -s ../kernels reasonless/kernels; }; } > "$DEST/build.log" 2>&1 \
    || { echo "build failed:"; tail -n 20 "$DEST/build.log"; exit 1; }
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
t0=$SECONDS
timeout "${LIMIT:-570}" $PY -m reasonless study run studies/gpu-10min.toml --out "$DEST" 2>&1 | tail -n 40
echo "wall: $((SECONDS - t0)) s"
$PY -m reasonless study status "$DEST"
[ -f "$DEST/report/report.md" ] && sed -n '1,/^## Learning curves/p' "$DEST/report/report.md"
