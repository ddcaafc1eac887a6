"""Shared pytest setup: tests marked ``gpu`` are skipped when no CUDA device is available; fixtures."""

import os

import pytest
from hypothesis import settings

# CI runs the same examples every time (no flaky red builds); local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture
def no_tf32():
    """TF32 off for CUDA matmuls and convolutions (exact fp32 comparisons), restored after the test."""
    import torch

    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.fixture(autouse=True)
def isolated_robot_state(tmp_path_factory, monkeypatch):
    """Each test keeps robot_rt's between-run state (EGM run markers, docs/egm.md) in a directory of its own, so one
    test's stop never latches another's run, and nothing is written to the user's state directory. Subprocesses
    inherit it through the environment."""
    monkeypatch.setenv("ROBOT_RT_STATE_DIR", str(tmp_path_factory.mktemp("robot_rt_state")))
