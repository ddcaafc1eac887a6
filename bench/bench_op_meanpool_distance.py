"""Benchmark meanpool_distance: every available backend vs the torch reference on backbone layer shapes.

Shapes: AlexNet (conv1..conv5), VGG-16 (conv1_2..conv5_3) and ResNet-50 (layer1..layer4) feature maps for
64x64 and 224x224 inputs, batch 64. Reported per case and backend: median time, speed-up vs the torch
reference (same run), effective bandwidth (bytes of both inputs read once / time) and its fraction of the
machine's copy bandwidth (measured in the same run), time over the bandwidth floor, extra peak memory.
Inputs are validated without the NaN/Inf scan (``check_finite=False``: an extra read for the torch
reference; the C++ kernels do it in their own pass, at no measurable cost). ``--layers`` selects cases.
Each case is timed in ``--rounds`` rounds (default 3) over all backends and the best round per backend is kept
(robust to bursts of load on a shared machine; the ratio is between those best medians).

On the CPU, cases whose two inputs exceed ``--max-input-mib`` (default 512 MiB) are skipped and listed. ``--quick``: a few small cases, batch 8.

    .venv/bin/python bench/bench_op_meanpool_distance.py [--quick] [--device cuda] [--dtype all] [--channels-last]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc  # noqa: E402

from percept_fast.ops import meanpool_distance  # noqa: E402


def make_call(fx: torch.Tensor, fy: torch.Tensor):
    def call(be):
        return meanpool_distance(fx, fy, backend=be, check_finite=False)

    return call


def main(argv=None) -> int:
    return bc.run_layer_op_bench(
        "meanpool_distance", "meanpool_forward", make_call, __doc__.splitlines()[0], argv, default_rounds=3
    )


if __name__ == "__main__":
    sys.exit(main())
