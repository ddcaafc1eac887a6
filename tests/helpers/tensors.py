"""Feature tensors for the percept_fast op tests: random ``[B, C, H, W]`` maps in a chosen memory layout."""

from __future__ import annotations

import torch

# memory layouts make_features builds: dense NCHW / NHWC, and three strided views (every other column, every other
# channel of a wider tensor, H and W swapped in memory)
LAYOUTS = ["contiguous", "channels_last", "sliced_w", "sliced_c", "transposed_hw"]
# and, for the backward tests, one sample broadcast over the batch (stride 0): its gradient sums over the batch
GRAD_LAYOUTS = [*LAYOUTS, "expanded_b"]


def make_features(
    shape: tuple[int, int, int, int],
    dtype: torch.dtype,
    layout: str = "contiguous",
    seed: int = 0,
    device: str | torch.device = "cpu",
    *,
    zero_frac: float = 0.0,
    offset: float = 0.0,
) -> torch.Tensor:
    """Standard-normal features (+ ``offset``) of ``shape`` in ``layout``; ``zero_frac`` of the channel vectors
    (whole ``[:, :, h, w]`` columns) set to zero, the normalisation's singular point."""
    g = torch.Generator().manual_seed(seed)
    B, C, H, W = shape
    t = torch.randn(shape, generator=g)
    if offset:
        t = t + offset
    if zero_frac > 0:
        mask = torch.rand(B, 1, H, W, generator=g) < zero_frac
        t = t.masked_fill(mask, 0.0)
    t = t.to(dtype).to(device)
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "sliced_w":
        big = torch.zeros(B, C, H, 2 * W, dtype=dtype, device=device)
        big[..., ::2] = t
        return big[..., ::2]
    if layout == "sliced_c":
        big = torch.zeros(B, 2 * C + 1, H, W, dtype=dtype, device=device)
        big[:, 1::2] = t
        return big[:, 1::2]
    if layout == "transposed_hw":
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "expanded_b":
        return t[:1].expand(B, C, H, W)
    raise ValueError(f"layout: expected one of {GRAD_LAYOUTS}, got {layout!r}")


def interpreter_env() -> dict[str, str]:
    """Environment of a subprocess that runs a test module under the Triton interpreter: ``TRITON_INTERPRET=1``
    (set before triton is imported) and the tests directory on the path (for ``helpers``)."""
    import os
    from pathlib import Path

    tests_dir = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=path)


def interpret_floats_as_fp32() -> None:
    """Makes the Triton interpreter pass Python float arguments to a kernel as fp32 scalars, as a compiled kernel
    gets them (the launcher's signature types every float ``fp32``); by default the interpreter keeps them Python
    floats, which hid a float64 precision loss on the GPU. Call in a ``TRITON_INTERPRET=1`` subprocess."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    original = interpreter._implicit_cvt

    def cvt(arg):
        if isinstance(arg, float):
            return tl.tensor(interpreter.TensorHandle(np.array([arg], dtype=np.float32), tl.float32), tl.float32)
        return original(arg)

    interpreter._implicit_cvt = cvt
