"""tools/gpu_check.sh: lists every GPU test file, every op bench and both end-to-end benches as steps, and refuses to
run (exit status 2, a clear message) on a machine without a GPU."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _has_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def test_list_names_every_gpu_test_file_op_bench_and_e2e_bench(tmp_path):
    res = subprocess.run(["bash", str(SCRIPT), "--list", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    steps = {}
    for line in res.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            steps[parts[0]] = (int(parts[1].rstrip("s")), parts[2])
    gpu_files = sorted(
        p.name for p in (ROOT / "tests").glob("test_*.py") if re.search(r"mark\.gpu|pytestmark.*gpu", p.read_text())
    )
    assert gpu_files, "no gpu-marked test found"
    assert "-m gpu" in steps["gpu_tests"][1]
    for name in gpu_files:
        assert f"tests/{name}" in steps["gpu_tests"][1]
    for bench in (ROOT / "bench").glob("bench_op_*.py"):
        assert f"bench/{bench.name} --device cuda" in steps[bench.stem][1]
        # the torch.compile columns would not fit the budget (inductor compiles every case): off unless asked for
        assert "--no-compile" in steps[bench.stem][1], steps[bench.stem]
        if "make_grad_call=" in bench.read_text():  # the op as a loss: its fused backward kernels
            grad_cmd = steps[bench.stem + "_grad"][1]
            assert f"bench/{bench.name} --grad --device cuda" in grad_cmd and "--no-compile" in grad_cmd
    assert any(name.endswith("_grad") for name in steps), "no op bench runs as a loss"
    assert "--durations" in steps["gpu_tests"][1]
    assert "--mode fwd " in steps["e2e_lpips_fwd"][1] and "--device cuda" in steps["e2e_lpips_fwd"][1]
    assert "--mode fwdbwd " in steps["e2e_lpips_loss"][1]
    assert all(str(tmp_path) in cmd for name, (_, cmd) in steps.items() if name.startswith(("bench_op", "e2e")))
    assert not list(tmp_path.glob("*.json")), "--list ran something"


@pytest.mark.skipif(_has_gpu(), reason="a GPU is present: the script would run")
def test_refuses_without_gpu(tmp_path):
    res = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "no NVIDIA GPU" in res.stderr and "--dry-run" in res.stderr
    assert not list(tmp_path.glob("*.log")), "a step ran"
