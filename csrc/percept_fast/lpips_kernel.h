// Per-pixel maths of lpips_distance, shared by the CPU (lpips_cpu.cpp) and CUDA (lpips_cuda.cu) kernels.
//
// For one pixel with channel vectors x, y and channel weights w (>= 0):
//   n(x)  = sqrt(sum_c x_c^2) + eps        (normalize='lpips', exactly lpips.normalize_tensor)
//         = sqrt(sum_c x_c^2 + eps^2)      (normalize='stable')
//   d     = sum_c w_c (x_c / n(x) - y_c / n(y))^2
//         = Swxx / n(x)^2 + Swyy / n(y)^2 - 2 Swxy / (n(x) n(y)),   Swab = sum_c w_c a_c b_c
// so one pass over the channels (five running sums, three when unweighted) gives d; every input element
// is read once. d is clamped at 0 (it is a weighted squared norm, w >= 0; the clamp only removes rounding) and
// NaN passes through, as in the reference.
// With x == y the three terms are computed by identical operations, so d == 0 exactly.
#pragma once

#include "common.h"

namespace percept_fast {

enum NormMode : int { kNormLpips = 0, kNormStable = 1 };

template <typename Acc>
struct LpipsSums {
  Acc xx, yy, wxx, wyy, wxy;
};

// 1 / n(x) from sum_c x_c^2.
template <typename Acc>
PR_HD Acc lpips_inv_norm(Acc sumsq, Acc eps, int mode) {
  const Acc n = (mode == kNormStable) ? pr_sqrt(sumsq + eps * eps) : pr_sqrt(sumsq) + eps;
  return Acc(1) / n;
}

template <typename Acc>
PR_HD Acc lpips_pixel(Acc xx, Acc yy, Acc wxx, Acc wyy, Acc wxy, Acc eps, int mode) {
  const Acc ix = lpips_inv_norm(xx, eps, mode);
  const Acc iy = lpips_inv_norm(yy, eps, mode);
  // A norm that overflowed to inf (huge finite inputs) makes that normalised vector exactly 0, as the reference's
  // x / inf does; the products below would give inf * 0 = NaN instead. NaN sums (NaN inputs) still give NaN.
  // (The products are computed unconditionally and then selected: branch-free, so CPU loops over pixels vectorise.)
  const bool x_zero = ix == Acc(0), y_zero = iy == Acc(0);
  const Acc px = (wxx * ix) * ix, py = (wyy * iy) * iy, pxy = (wxy * ix) * iy;
  const Acc tx = x_zero ? Acc(0) : px;
  const Acc ty = y_zero ? Acc(0) : py;
  const Acc txy = (x_zero | y_zero) ? Acc(0) : pxy;
  const Acc d = (tx + ty) - (txy + txy);
  return d < Acc(0) ? Acc(0) : d;  // not `d > 0 ? d : 0`: NaN (unchecked NaN/Inf input) must stay NaN, as in torch
}

// Backward of one pixel (the derivation is in percept_fast/ops/lpips_distance.py's docstring). With g the upstream
// gradient of d at this pixel (g_b / (H W) for the spatial mean, the map's gradient when spatial), ix = 1/n(x),
// iy = 1/n(y), s = ||x||, t = ||y||:
//   dd/dx_c = w_c (axx x_c - axy y_c) - kx x_c        axx = 2g ix^2, axy = 2g ix iy, ayy = 2g iy^2
//   dd/dy_c = w_c (ayy y_c - axy x_c) - ky y_c
//   kx = 2g (Swxx ix - Swxy iy) fx,  ky = 2g (Swyy iy - Swxy ix) fy
//   fx = ix^2 / s (normalize='lpips': dn/dx = x / s; 0 at s = 0, where the term is O(s))   = ix^3 ('stable')
// and dd/dw_c = g (x_c ix - y_c iy)^2. An overflowed norm (ix == 0; the forward takes that vector as 0) gives that
// input a zero gradient. `poison` is 0, or NaN when the pixel holds a NaN/Inf input: it is added to every
// coefficient, so that such a pixel's gradients are NaN, as autograd of the reference gives.
// x == y gives axx == axy == ayy and kx == -ky == 0 by identical operations: exactly zero gradients.
// The upstream gradient of d at (b, h, w): the map's (spatial) or g_b / (H W) (spatial mean); any strides.
template <typename Acc>
struct LpipsGradIn {
  const Acc* data;
  int64_t stride[4];
  bool spatial;
  Acc inv_p;
  PR_HD Acc at(int64_t b, int64_t h, int64_t w) const {
    return spatial ? data[b * stride[0] + h * stride[2] + w * stride[3]] : data[b * stride[0]] * inv_p;
  }
};

template <typename Acc>
struct LpipsGrad {
  Acc axx, axy, ayy, kx, ky, ix, iy;
};

template <typename Acc>
PR_HD LpipsGrad<Acc> lpips_pixel_grad(Acc xx, Acc yy, Acc wxx, Acc wyy, Acc wxy, Acc g, Acc eps, int mode,
                                      Acc poison) {
  LpipsGrad<Acc> r;
  Acc ix = lpips_inv_norm(xx, eps, mode);
  Acc iy = lpips_inv_norm(yy, eps, mode);
  const bool x_zero = ix == Acc(0), y_zero = iy == Acc(0);
  const Acc g2 = (g + g) + poison;
  r.axx = (g2 * ix) * ix;
  r.axy = (g2 * ix) * iy;
  r.ayy = (g2 * iy) * iy;
  const Acc px = x_zero ? Acc(0) : wxx * ix, py = y_zero ? Acc(0) : wyy * iy;
  const Acc pxy_x = y_zero ? Acc(0) : wxy * iy, pxy_y = x_zero ? Acc(0) : wxy * ix;
  Acc fx, fy;
  if (mode == kNormStable) {
    fx = (ix * ix) * ix;
    fy = (iy * iy) * iy;
  } else {  // divide by s before multiplying by ix^2: (Swxx ix - Swxy iy) / s stays bounded for tiny s
    const Acc s = pr_sqrt(xx), t = pr_sqrt(yy);
    fx = s > Acc(0) ? Acc(1) / s : Acc(0);
    fy = t > Acc(0) ? Acc(1) / t : Acc(0);
  }
  r.kx = x_zero ? poison : ((g2 * (px - pxy_x)) * fx) * (mode == kNormStable ? Acc(1) : ix * ix);
  r.ky = y_zero ? poison : ((g2 * (py - pxy_y)) * fy) * (mode == kNormStable ? Acc(1) : iy * iy);
  r.ix = ix;
  r.iy = iy;
  return r;
}

// The gradients of channel c of one pixel (wc = 1 when unweighted).
template <typename Acc>
PR_HD void lpips_channel_grad(const LpipsGrad<Acc>& r, Acc xv, Acc yv, Acc wc, Acc& gx, Acc& gy) {
  gx = wc * (r.axx * xv - r.axy * yv) - r.kx * xv;
  gy = wc * (r.ayy * yv - r.axy * xv) - r.ky * yv;
}

// dd/dw_c of one pixel: g (x_c / n(x) - y_c / n(y))^2 (g: the pixel's upstream gradient, poison added).
template <typename Acc>
PR_HD Acc lpips_channel_wgrad(const LpipsGrad<Acc>& r, Acc xv, Acc yv, Acc g) {
  const Acc t = xv * r.ix - yv * r.iy;
  return g * (t * t);
}

// Meanpool: d = sum_c (m_c / n(m) - k_c / n(k))^2 / C for the spatial means m, k (written as the explicit
// difference: the vectors are short, two passes over them are free).
template <typename Acc>
PR_HD Acc meanpool_finalize(const Acc* mx, const Acc* my, int64_t C, int64_t stride, Acc eps, int mode) {
  Acc sx = 0, sy = 0;
  for (int64_t c = 0; c < C; ++c) {
    sx += mx[c * stride] * mx[c * stride];
    sy += my[c * stride] * my[c * stride];
  }
  const Acc ix = lpips_inv_norm(sx, eps, mode), iy = lpips_inv_norm(sy, eps, mode);
  Acc d = 0;
  for (int64_t c = 0; c < C; ++c) {
    const Acc t = mx[c * stride] * ix - my[c * stride] * iy;
    d += t * t;
  }
  return d / static_cast<Acc>(C);
}

}  // namespace percept_fast
