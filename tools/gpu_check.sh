#!/usr/bin/env bash
# One-shot GPU check (issue 15, item 5): build the CUDA modules, run every GPU test, every op bench (those with a
# --grad mode also as a loss: forward + gradient) and the end-to-end LPIPS benches (forward, and forward + backward
# as a loss) on the GPU, in under 8 minutes, saving JSON into $OUT.
#
#   bash tools/gpu_check.sh [OUT_DIR]            # on a machine with an NVIDIA GPU and the CUDA toolkit
#   bash tools/gpu_check.sh --dry-run [OUT_DIR]  # anywhere: the CPU-possible parts, quickly (checks the script)
#   bash tools/gpu_check.sh --list               # prints the steps (name, time limit, command); runs nothing
#
# python3 (or $PYTHON) must hold torch with CUDA, triton and pytest (with pytest-xdist the GPU tests run in parallel).
# Without a CUDA device (and not --dry-run/--list) it stops at once with exit status 2. Every step has its own
# timeout and a failing step never stops the next; steps that would not fit in the remaining budget (BUDGET_S,
# default 470 s) are skipped. The summary (step, status,
# seconds) is printed at the end and written to $OUT/gpu_check_summary.json; the GPU tests' results to
# $OUT/gpu_tests.json (+ junit XML), each bench's JSON into $OUT. Exit status: 0 when every step passed, 1 otherwise.
set -u
DRY=0
LIST=0
case "${1:-}" in
  --dry-run) DRY=1 && shift ;;
  --list) LIST=1 && DRY=0 && shift ;;
  -h | --help) sed -n '2,15p' "$0" && exit 0 ;;
esac
OUT=${1:-${OUT:-bench/results/gpu}}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd) # absolute: the steps run from the repository root
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && [ "$DRY" = 1 ]; then PY=.venv/bin/python; fi
ARCH=${CUDA_ARCH:-90}
BUDGET_S=${BUDGET_S:-470}
START=$(date +%s)
SUMMARY="$OUT/gpu_check_summary.tsv"
: >"$SUMMARY"
DEV=cuda
[ "$DRY" = 1 ] && DEV=cpu
if [ "$DRY" = 0 ] && [ "$LIST" = 0 ]; then
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check.sh: no NVIDIA GPU here (nvidia-smi missing or lists no device); nothing was run." >&2
    echo "  On a CPU-only machine: bash tools/gpu_check.sh --dry-run (CPU parts) or --list (the steps)." >&2
    exit 2
  fi
  if ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check.sh: $PY has no CUDA-enabled torch (torch.cuda.is_available() is False); nothing was run." >&2
    exit 2
  fi
fi

# run NAME TIMEOUT_S CMD...: runs CMD with a timeout (skipped when the budget cannot hold it), logs to $OUT/NAME.log,
# appends "NAME<TAB>status<TAB>seconds" to the summary; never fails the script.
run() {
  local name=$1 limit=$2
  shift 2
  local now left t0 rc status
  if [ "$LIST" = 1 ]; then
    printf '%s\t%ss\t%s\n' "$name" "$limit" "$*"
    return 0
  fi
  now=$(date +%s)
  left=$((BUDGET_S - (now - START)))
  if [ "$left" -lt 15 ]; then
    printf '%s\tskipped (budget)\t0\n' "$name" >>"$SUMMARY"
    echo "=== $name: skipped, ${left}s of the budget left"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo
  echo "=== $name ($(date +%T), limit ${limit}s)"
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  tail -n 25 "$OUT/$name.log"
  case $rc in
    0) status=ok ;;
    124 | 137) status="timeout (${limit}s)" ;;
    *) status="failed (rc $rc)" ;;
  esac
  printf '%s\t%s\t%s\n' "$name" "$status" "$(($(date +%s) - t0))" >>"$SUMMARY"
}

# ---------------------------------------------------------------------------------------------------- device
if [ "$DRY" = 0 ]; then
  run device 20 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; \
    $PY -c \"import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())\""
  # the CUDA modules, built for this GPU (percept_fast._C_cuda, robot_rt's); ninja uses every core
  run build 170 bash -c "$PY -m pip install -q --no-build-isolation --no-deps -e . -Cbuild-dir=build/gpu \
    -Ccmake.define.CMAKE_CUDA_ARCHITECTURES=$ARCH 2>&1 | grep -v 'is ignored' | tail -20; \
    $PY -c 'import percept_fast._C_cuda, robot_rt._ballistics_cuda; print(\"cuda modules import\")'"
fi

# ------------------------------------------------------------------------------------------------ GPU tests
# every test file with a gpu-marked test (discovered, not listed), only its gpu tests
GPU_TESTS=$(grep -lE "mark\.gpu|pytestmark.*gpu" tests/test_*.py 2>/dev/null | tr '\n' ' ')
echo "gpu test files: $GPU_TESTS"
# Serially they need ~400 s on a fresh H200 machine, most of it compiling (Triton, inductor) on the CPU: with
# pytest-xdist (the test extra) they run in GPU_TEST_WORKERS processes (default 8) sharing the one GPU.
TEST_LIMIT=${GPU_TEST_LIMIT:-200}
[ "$DRY" = 1 ] && TEST_LIMIT=120
PARALLEL=()
if [ "$LIST" = 0 ] && $PY -c "import xdist" 2>/dev/null; then
  PARALLEL=(-n "${GPU_TEST_WORKERS:-8}")
  [ "$DRY" = 1 ] && PARALLEL=(-n 2)
fi
run gpu_tests "$TEST_LIMIT" $PY -m pytest -q -m gpu -p no:cacheprovider -rfEs --durations=15 "${PARALLEL[@]}" \
  --junitxml="$OUT/gpu_tests.xml" $GPU_TESTS
[ "$LIST" = 0 ] && $PY - "$OUT/gpu_tests.xml" "$OUT/gpu_tests.json" <<'EOF' || true
import json, sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception as e:  # no XML (the step did not run or crashed before writing it)
    json.dump({"error": str(e)}, open(sys.argv[2], "w"), indent=2)
    sys.exit(0)
cases = []
for tc in root.iter("testcase"):
    status = "passed"
    for tag in ("failure", "error", "skipped"):
        el = tc.find(tag)
        if el is not None:
            status = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
            msg = (el.get("message") or "")[:300]
            break
    else:
        msg = ""
    cases.append({"test": f"{tc.get('classname')}::{tc.get('name')}", "status": status, "seconds": float(tc.get("time") or 0), "message": msg})
counts = {s: sum(c["status"] == s for c in cases) for s in ("passed", "failed", "error", "skipped")}
json.dump({"counts": counts, "cases": cases}, open(sys.argv[2], "w"), indent=2)
print("gpu tests:", counts)
EOF

# ---------------------------------------------------------------------------------------------- op benches
# (their torch.compile column compiles every case: left out unless GPU_CHECK_COMPILE=1, it would not fit the budget)
for b in bench/bench_op_*.py; do
  name=$(basename "$b" .py)
  extra=()
  # (the option is the bench's own or, for run_layer_op_bench's benches, bench/_common.py's: a grep for the first
  # alone missed two benches, whose compile columns then overran their step on the H200)
  if [ "${GPU_CHECK_COMPILE:-0}" != 1 ] && grep -qE -- '"--no-compile"|run_layer_op_bench' "$b"; then
    extra=(--no-compile)
  fi
  if [ "$DRY" = 1 ]; then
    run "$name" 90 $PY "$b" --device cpu --quick "${extra[@]}" --out "$OUT"
  else
    run "$name" 60 $PY "$b" --device cuda "${extra[@]}" --out "$OUT"
  fi
done

# ------------------------------------------------------------------------ end to end: forward and forward+backward
# batch 64 at 224 px, fp32 and bf16, against the lpips package (compiled variants skipped: their compilation alone
# would not fit the budget; the CPU bench reports them)
if [ "$DRY" = 1 ]; then
  E2E=(--device cpu --quick --rounds 2 --no-memory --impls lpips,ours --out "$OUT")
else
  E2E=(--device cuda --nets alex,vgg --sizes 224 --batch224 64 --dtype float32,bfloat16 --rounds 10
    --impls lpips,ours,ours-autograd --out "$OUT")
fi
run e2e_lpips_fwd 60 $PY bench/bench_e2e_lpips_loss.py --mode fwd "${E2E[@]}" --name "e2e_lpips_fwd_$DEV"
run e2e_lpips_loss 90 $PY bench/bench_e2e_lpips_loss.py --mode fwdbwd "${E2E[@]}" --name "e2e_lpips_loss_$DEV"

# ------------------------------------------------------- op benches as a loss: forward + gradient w.r.t. fx (--grad)
# (after the end-to-end benches: the fused backward kernels, CUDA and Triton, against autograd of the reference)
for b in bench/bench_op_*.py; do
  grep -q 'make_grad_call=' "$b" || continue
  name=$(basename "$b" .py)_grad
  if [ "$DRY" = 1 ]; then
    run "$name" 90 $PY "$b" --grad --device cpu --quick --no-compile --out "$OUT"
  else
    run "$name" 60 $PY "$b" --grad --device cuda --no-compile --out "$OUT"
  fi
done

# ------------------------------------------------------------------------------- robot_rt GPU benches (if time)
if [ "$DRY" = 0 ]; then
  # bench_ballistics writes bench/results/<--name>.json only: copied into $OUT
  run bench_ballistics 40 bash -c "$PY bench/bench_ballistics.py --device cuda --name ballistics_cuda && cp bench/results/ballistics_cuda.json '$OUT/'"
  run bench_envs 40 $PY bench/bench_envs.py --cuda --cases native,cuda --quick --out "$OUT"
fi

# ---------------------------------------------------------------------------------------------------- summary
[ "$LIST" = 1 ] && exit 0
$PY - "$SUMMARY" "$OUT/gpu_check_summary.json" "$(($(date +%s) - START))" "$DRY" <<'EOF' || cat "$SUMMARY"
import json, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
steps = [{"step": r[0], "status": r[1], "seconds": int(r[2])} for r in rows]
total = int(sys.argv[3])
json.dump({"dry_run": sys.argv[4] == "1", "total_seconds": total, "steps": steps}, open(sys.argv[2], "w"), indent=2)
print(f"\n=== summary ({total} s{', dry run' if sys.argv[4] == '1' else ''})")
for s in steps:
    print(f"  {s['step']:<28} {s['status']:<22} {s['seconds']:>4} s")
EOF
ls -la "$OUT"
# exit status: 0 only when every step ran and passed
! cut -f2 "$SUMMARY" | grep -qv '^ok$'
