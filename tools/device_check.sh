#!/usr/bin/env bash
# tools/gpu_check.sh on a lent GPU machine that has torch, triton and pytest but not this project's pure-Python
# dependencies, and cannot download them: the wheels travel with the working tree.
#
#   bash tools/device_check.sh --fetch          # here: downloads the wheels into .devwheels/ (git-ignored)
#   bash tools/device_check.sh [GPU_CHECK_ARGS]  # there (the device tool, carry ['.devwheels']): installs them
#                                                # without dependencies, runs tools/gpu_check.sh, and leaves its
#                                                # summary, test and bench JSON plus a tarball of every log in $OUT
#
# The wheels: lpips 0.1.4 (the parity tests), gymnasium and farama-notifications (robot_rt.envs), pytest-xdist and
# execnet (the GPU tests in parallel). Exit status: gpu_check.sh's.
set -u
cd "$(dirname "$0")/.."
WHEELS=(lpips==0.1.4 gymnasium farama-notifications pytest-xdist execnet)
if [ "${1:-}" = "--fetch" ]; then
  PY=${PYTHON:-.venv/bin/python}
  mkdir -p .devwheels
  # the versions installed here (the ones the tests ran with), where they are
  PINNED=$("$PY" -c '
import importlib.metadata as md, sys
for spec in sys.argv[1:]:
    name = spec.split("==")[0]
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(spec)
' "${WHEELS[@]}")
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d .devwheels $PINNED 2>&1 | grep -v "is ignored"
  ls .devwheels
  exit 0
fi
PY=${PYTHON:-python3}
if ls .devwheels/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-deps .devwheels/*.whl 2>&1 | grep -v "is ignored"
else
  echo "device_check.sh: no .devwheels/*.whl (run --fetch here and carry .devwheels); going on without them" >&2
fi
RESULTS=/tmp/gpu_check_results
rm -rf "$RESULTS"
bash tools/gpu_check.sh "$@" "$RESULTS"
rc=$?
if [ -n "${OUT:-}" ]; then
  cp "$RESULTS"/*.json "$OUT"/ 2>/dev/null
  tar czf "$OUT/gpu_check_logs.tar.gz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
fi
exit $rc
