"""Benchmark lpips_distance: the fused backends vs eager PyTorch and torch.compile on backbone layer shapes.

Shapes: AlexNet (conv1..conv5), VGG-16 (conv1_2..conv5_3) and ResNet-50 (layer1..layer4) feature maps for
64x64 and 224x224 inputs, batch 64. Per case and backend (the fused C++ / Triton / CUDA kernels, ``torch``: the
eager reference, ``compile``: ``torch.compile(fullgraph=True)`` of the same reference call, inductor): median
time, ratio vs eager and vs compile, the read floor (one ``sum`` over each input: the time to read the inputs
once, measured in the same rounds) and the time over it, effective bandwidth (bytes of both inputs read once /
time) and its fraction of the machine's copy bandwidth, extra peak memory. Inputs are validated without the
NaN/Inf scan (``check_finite=False``). Each case is timed in ``--rounds`` rounds (default 3) over all backends and
the floor, and the best round per backend is kept (robust to bursts of load on a shared machine; the ratios are
between those best medians). ``--layers`` selects cases.

On the CPU, cases whose two inputs exceed ``--max-input-mib`` (default 512 MiB) are skipped and listed.
``--quick``: a few small cases, batch 8.

``--grad``: the forward and the gradient w.r.t. the first input instead (the distance as a loss).

    .venv/bin/python bench/bench_op_lpips_distance.py [--quick] [--device cuda] [--dtype all] [--channels-last] [--grad]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc  # noqa: E402

from percept_fast.ops import lpips_distance  # noqa: E402


def make_call(fx: torch.Tensor, fy: torch.Tensor):
    w = torch.rand(fx.shape[1], device=fx.device)
    reference = bc.compiled(lambda a, b: lpips_distance(a, b, w, backend="torch", check_finite=False))

    def call(be):
        if be == "compile":
            return reference(fx, fy)
        return lpips_distance(fx, fy, w, backend=be, check_finite=False)

    return call


def make_grad_call(fx: torch.Tensor, fy: torch.Tensor):
    """``--grad``: the forward and the gradient w.r.t. ``fx`` (the distance as a loss against a fixed ``fy``): the
    fused backends' backward kernels against autograd of the eager and of the compiled reference."""
    w = torch.rand(fx.shape[1], device=fx.device)
    reference = bc.compiled(lambda a, b: lpips_distance(a, b, w, backend="torch", check_finite=False))
    x = fx.detach().requires_grad_()

    def call(be):
        out = reference(x, fy) if be == "compile" else lpips_distance(x, fy, w, backend=be, check_finite=False)
        return torch.autograd.grad(out.sum(), [x])[0]

    return call


def main(argv=None) -> int:
    return bc.run_layer_op_bench(
        "lpips_distance", "lpips_forward", make_call, __doc__.splitlines()[0], argv, make_grad_call=make_grad_call
    )


if __name__ == "__main__":
    sys.exit(main())
