"""C++ unit tests (doctest executables under csrc/**/tests/, registered with ctest by cmake/CppTests.cmake).

The README's test command builds them (tools/setup.sh turns PR_BUILD_TESTS on) and this module runs them with
ctest. It fails, never skips, when they were not built in this checkout or when a test source has no built,
up-to-date executable: CI must never pass without running them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOW_TO_BUILD = (
    "run `bash tools/setup.sh` (builds them with PR_BUILD_TESTS=ON; needs doctest: apt-get install doctest-dev)"
)


def _build_dir() -> Path:
    """scikit-build-core's build directory of this interpreter (pyproject: build-dir = build/{wheel_tag})."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}-"
    candidates = sorted(p.parent for p in (ROOT / "build").glob(f"{tag}*/CMakeCache.txt"))
    if not candidates:
        pytest.fail(f"no native build of this checkout for {tag}* under {ROOT / 'build'}: {HOW_TO_BUILD}")
    return candidates[0]


def _tool(name: str) -> str:
    local = Path(sys.executable).parent / name  # the cmake package of the venv ships ctest next to python
    found = str(local) if local.is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found (expected {local}): {HOW_TO_BUILD}")
    return found


def _registered_tests(build: Path) -> dict[str, Path]:
    """ctest's test list: name -> executable."""
    cache = (build / "CMakeCache.txt").read_text(errors="replace")
    if "PR_BUILD_TESTS:BOOL=ON" not in cache:
        pytest.fail(f"the native build {build} was configured without the C++ unit tests: {HOW_TO_BUILD}")
    listing = subprocess.run(
        [_tool("ctest"), "--test-dir", str(build), "--show-only=json-v1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if listing.returncode != 0:
        pytest.fail(f"ctest --show-only failed in {build}:\n{listing.stdout}\n{listing.stderr}")
    tests = json.loads(listing.stdout)["tests"]
    return {t["name"]: Path(t["command"][0]) for t in tests if t.get("command")}


def _test_sources() -> dict[str, Path]:
    """Every C++ test source: ctest name (its path under csrc/ without the extension) -> file."""
    csrc = ROOT / "csrc"
    return {str(p.relative_to(csrc).with_suffix("")): p for p in sorted(csrc.glob("**/tests/*.cpp"))}


def test_every_cpp_test_source_is_built_and_registered():
    sources = _test_sources()
    assert sources, "no C++ unit-test sources found under csrc/**/tests/"
    registered = _registered_tests(_build_dir())
    missing = sorted(set(sources) - set(registered))
    assert not missing, f"C++ test sources without a ctest test (not built?): {missing}; {HOW_TO_BUILD}"
    stale = [
        name
        for name, src in sources.items()
        if not registered[name].is_file() or registered[name].stat().st_mtime < src.stat().st_mtime
    ]
    assert not stale, f"C++ test executables missing or older than their sources: {stale}; {HOW_TO_BUILD}"


def test_cpp_unit_tests_pass():
    build = _build_dir()
    registered = _registered_tests(build)
    assert registered, f"ctest finds no tests in {build}: {HOW_TO_BUILD}"
    run = subprocess.run(
        [_tool("ctest"), "--test-dir", str(build), "--output-on-failure", "--parallel", "2", "--timeout", "300"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"C++ unit tests failed (ctest exit {run.returncode}):\n{output[-20000:]}"
    assert "100% tests passed" in output, output[-5000:]
