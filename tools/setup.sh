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
# C++ unit tests (doctest, run by ctest from tests/test_cpp_unit.py): on unless PR_BUILD_TESTS=OFF. doctest is a
# header-only library; the distribution's package is installed when missing and we may (root with apt-get).
PR_BUILD_TESTS=${PR_BUILD_TESTS:-ON}
have_doctest() {
  for dir in ${DOCTEST_INCLUDE_DIR:-} /usr/include /usr/local/include; do
    [ -f "$dir/doctest/doctest.h" ] && return 0
  done
  return 1
}
if [ "$PR_BUILD_TESTS" = ON ] && ! have_doctest; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup.sh: installing doctest-dev (C++ unit-test framework)"
    apt-get install -y -q doctest-dev >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q doctest-dev >/dev/null; }
  fi
  if ! have_doctest; then
    echo "setup.sh: doctest (the C++ unit-test framework) is missing and cannot be installed here (needs root and apt-get)." >&2
    echo "  Install it (Debian/Ubuntu: sudo apt-get install doctest-dev), or set DOCTEST_INCLUDE_DIR=<dir containing" >&2
    echo "  doctest/doctest.h>, or build without the C++ tests: PR_BUILD_TESTS=OFF bash tools/setup.sh" >&2
    echo "  (tests/test_cpp_unit.py then fails: the C++ tests are part of the test suite)." >&2
    exit 1
  fi
fi
CMAKE_DEFINES=(--config-settings=cmake.define.PR_BUILD_TESTS="$PR_BUILD_TESTS")
if [ -n "${DOCTEST_INCLUDE_DIR:-}" ]; then
  CMAKE_DEFINES+=(--config-settings=cmake.define.DOCTEST_INCLUDE_DIR="$DOCTEST_INCLUDE_DIR")
fi
# Editable install: Python sources are used in place, the native modules are built into build/.
mkdir -p build
# urdf + mujoco + mcap + rerun extras: the URDF loader, MuJoCo, the MCAP and Rerun exporters are tested too
flock build/.install.lock $VPIP install -q --no-build-isolation "${CMAKE_DEFINES[@]}" -e ".[test,parity,urdf,mujoco,mcap,rerun,egm]"
