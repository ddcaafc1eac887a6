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
  const bool x_zero = ix == Acc(0), y_zero = iy == Acc(0);
  const Acc tx = x_zero ? Acc(0) : (wxx * ix) * ix;
  const Acc ty = y_zero ? Acc(0) : (wyy * iy) * iy;
  const Acc txy = (x_zero || y_zero) ? Acc(0) : (wxy * ix) * iy;
  const Acc d = (tx + ty) - (txy + txy);
  return d < Acc(0) ? Acc(0) : d;  // not `d > 0 ? d : 0`: NaN (unchecked NaN/Inf input) must stay NaN, as in torch
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
