"""bench/_common.read_floor_call: the read floor reads each input once, in place (no copy), whatever the layout."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _common():
    spec = importlib.util.spec_from_file_location("bench_common_under_test", BENCH / "_common.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses and typing resolve names through it)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_the_read_floor_reads_each_element_once_without_a_copy(layout, dtype):
    common = _common()
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randn(3, 5, 4, 6, generator=g, dtype=torch.float64).to(dtype) for _ in range(2))
    if layout == "channels_last":
        x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x, y = x[:, :, :, ::2], y[:, :, :, ::2]
    results = common.read_floor_call(x, y)
    if dtype != torch.float16 and layout != "strided":  # a pair read together: one dot over both, in memory order
        (dot,) = results
        torch.testing.assert_close(dot, (x.double() * y.double()).sum().to(dtype), rtol=1e-5, atol=1e-5)
        for t in (x, y):  # the views it reads are the tensors' own storage
            view = common._memory_order_view(t)
            assert view.data_ptr() == t.data_ptr() and view.numel() == t.numel()
    else:  # a sum per input
        assert len(results) == 2
        for r, t in zip(results, (x, y)):
            torch.testing.assert_close(r, t.float().sum(), rtol=1e-4, atol=1e-4)
