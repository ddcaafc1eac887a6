#!/usr/bin/env bash
# Creates .venv (if missing), installs the pinned PyTorch and the project (editable, with its native core).
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPIP=".venv/bin/python -m pip"
# torch 2.14.1 + torchvision 0.29.1 are the versions the lpips parity tests need (and that lie on this machine's disk).
if ! .venv/bin/python -c "import torch, torchvision, sys; sys.exit(0 if torch.__version__.startswith('2.14.1') else 1)" 2>/dev/null; then
  $VPIP install -q torch==2.14.1 torchvision==0.29.1
fi
$VPIP install -q "scikit-build-core>=0.10" "pybind11>=2.12" ninja cmake
# Editable install: Python sources are used in place, the native modules are built into build/.
mkdir -p build
flock build/.install.lock $VPIP install -q --no-build-isolation -e ".[test,parity]"
