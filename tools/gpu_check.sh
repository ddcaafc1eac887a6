#!/usr/bin/env bash
# GPU checks on a machine with an NVIDIA GPU and the CUDA toolkit: build (sm_90 by default), GPU tests, GPU
# benches. Usage: bash tools/gpu_check.sh [OUT_DIR]   (python3 must hold torch with CUDA, triton, pytest)
set -u
OUT=${1:-${OUT:-bench/results/gpu}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
ARCH=${CUDA_ARCH:-90}
step() { echo; echo "=== $* ($(date +%T))"; }
step device
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
step build
timeout 240 $PY -m pip install -q --no-build-isolation --no-deps -e . \
  -Cbuild-dir=build/gpu -Ccmake.define.CMAKE_CUDA_ARCHITECTURES="$ARCH" 2>&1 | grep -v "is ignored" | tail -20
$PY -c "import percept_fast._C_cuda, robot_rt._ballistics_cuda; print('cuda modules import')"
step gpu tests
timeout 240 $PY -m pytest -q -m gpu -p no:cacheprovider \
  tests/test_op_lpips_distance.py tests/test_op_meanpool_distance.py tests/test_op_style_distance.py \
  tests/test_metric.py tests/test_lpips_parity.py tests/test_ballistics.py tests/test_ballistics_triton.py \
  tests/test_env_core.py 2>&1 | tail -25
step benches
for b in bench_op_lpips_distance bench_op_meanpool_distance bench_op_style_distance bench_ballistics; do
  echo "--- $b"
  timeout 100 $PY bench/$b.py --device cuda 2>&1 | tail -40
done
echo "--- bench_envs"
timeout 90 $PY bench/bench_envs.py --cuda --cases native,cuda --quick 2>&1 | tail -20
tar czf "$OUT/gpu_results.tgz" bench/results/*.json 2>/dev/null
ls -la "$OUT"
