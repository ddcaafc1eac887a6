r"""Classic full-reference baselines for the Perceptual Score: PSNR and SSIM (batched PyTorch).

Inputs are ``[B, 3, H, W]`` float tensors in ``[0, 1]`` (data range 1).

* PSNR: :math:`10 \log_{10}(1 / \mathrm{MSE})` with MSE over all pixels and channels (MSE clamped to
  1e-10, so identical images give 100 dB rather than infinity).
* SSIM (Wang et al. 2004): Gaussian window 11x11, :math:`\sigma = 1.5`, :math:`K_1 = 0.01`, :math:`K_2 = 0.03`,
  computed per channel over the "valid" windows (no padding) and averaged over windows and channels.
  For images smaller than 11 pixels the window shrinks to the largest odd size that fits.

As distances (larger = more different): ``psnr_distance = -PSNR`` and ``ssim_distance = 1 - SSIM``.
"""

from __future__ import annotations

import torch

__all__ = ["psnr", "ssim", "psnr_distance", "ssim_distance", "gaussian_window"]


def _check(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name}: expected shape [B, C, H, W], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {x.dtype}")


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    _check("x", x)
    _check("y", y)
    if x.shape != y.shape:
        raise ValueError(f"y: expected the shape of x {tuple(x.shape)}, got {tuple(y.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB, ``[B]``."""
    _check_pair(x, y)
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return (10.0 * torch.log10(data_range**2 / mse)).to(x.dtype)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian window of odd length ``size``."""
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2.0
    g = torch.exp(-(r**2) / (2.0 * sigma**2))
    return g / g.sum()


def _band(g: torch.Tensor, n: int) -> torch.Tensor:
    """``[n, n - len(g) + 1]`` matrix ``M`` with ``(t @ M)[..., j] = sum_i g[i] t[..., j + i]`` (valid filtering)."""
    m = torch.zeros(n, n - g.numel() + 1, dtype=g.dtype, device=g.device)
    for i in range(g.numel()):
        m.diagonal(-i).copy_(g[i].expand(n - g.numel() + 1))
    return m


def ssim(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Per-image mean SSIM, ``[B]`` (see the module docstring for the exact definition)."""
    _check_pair(x, y)
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size: expected a positive odd int, got {win_size}")
    h, w = x.shape[-2:]
    win = min(win_size, h if h % 2 else h - 1, w if w % 2 else w - 1)
    if win < 1:
        raise ValueError(f"x: image too small for SSIM, got {h}x{w}")
    # the separable "valid" Gaussian filter as two GEMMs with banded matrices (one per axis) over the five
    # moments stacked together: the same sums as the depthwise convolution, several times faster on CPU in float64
    xd, yd = x.double(), y.double()
    g = gaussian_window(win, sigma, device=x.device)
    band_h, band_w = _band(g, h), _band(g, w)
    moments = torch.stack([xd, yd, xd * xd, yd * yd, xd * yd])  # [5, B, C, H, W]
    lead = moments.shape[:-2]
    oh, ow = h - win + 1, w - win + 1
    f = (moments.reshape(-1, w) @ band_w).view(-1, h, ow).transpose(1, 2).reshape(-1, h) @ band_h
    mx, my, exx, eyy, exy = f.view(*lead, ow, oh).transpose(-1, -2).unbind(0)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    sxx = exx - mx * mx
    syy = eyy - my * my
    sxy = exy - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).to(x.dtype)


def psnr_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``-PSNR`` (a distance: larger = more different)."""
    return -psnr(x, y)


def ssim_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM`` (a distance: larger = more different)."""
    return 1.0 - ssim(x, y)
