"""The LPIPS loss gradient's error against the float64 truth (lpips in float64): lpips in float32, ours with oneDNN's
direct convolutions (PackedTrunk(winograd=False)), ours with Winograd. From the repository root:

    .venv/bin/python docs/results/2026-12-06/winograd/gradient_accuracy.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "bench"))
import bench_e2e_lpips_loss as bench  # noqa: E402

from percept_fast.backbones import packed_trunk  # noqa: E402


def input_grad(fn, x, t):
    pred = x.clone().requires_grad_()
    fn(pred, t).sum().backward()
    return pred.grad.double()


def main() -> None:
    torch.set_num_threads(2)
    original_init = packed_trunk.PackedTrunk.__init__

    def direct_init(self, layers, shape, winograd=True):
        original_init(self, layers, shape, winograd=False)

    for net, size, batch in (("vgg", 224, 2), ("vgg", 64, 8), ("alex", 224, 4)):
        x, t = bench.make_inputs(size, batch, "cpu", torch.float32)
        truth = input_grad(bench.build(net, "lpips", "cpu", torch.float64), x.double(), t.double())
        grads = {
            "lpips float32": input_grad(bench.build(net, "lpips", "cpu", torch.float32), x, t),
            "ours, Winograd": input_grad(bench.build(net, "ours", "cpu", torch.float32), x, t),
        }
        packed_trunk.PackedTrunk.__init__ = direct_init
        try:
            grads["ours, direct"] = input_grad(bench.build(net, "ours", "cpu", torch.float32), x, t)
        finally:
            packed_trunk.PackedTrunk.__init__ = original_init
        for name, g in grads.items():
            d = g - truth
            scale = truth.abs().max()
            print(
                f"{net} {size} px, batch {batch}: {name:15s} relative L2 {float(d.norm() / truth.norm()):.2e}, "
                f"max {float(d.abs().max() / scale):.2e} and 99.9th percentile "
                f"{float(d.abs().flatten().quantile(0.999) / scale):.2e} of the largest entry",
                flush=True,
            )


if __name__ == "__main__":
    main()
