// style_distance: pieces shared by the CPU (style_distance_cpu.cpp) and CUDA (style_distance.cu) kernels.
//
// Per sample, with X_a the [C, P = H*W] feature matrix of input a:
//   diff   regime: rows = channels, contraction over positions, D = X0 X0^T - X1 X1^T (C x C, symmetric);
//                  S = sum_ij D_ij^2 over the tiles (I <= J) of D, off-diagonal tiles weighted 2.
//   kernel regime: rows = positions, contraction over channels, K_ab = X_a^T X_b (P x P);
//                  S = ||K00||^2 + ||K11||^2 - 2 ||K01||^2, per tile pair (I <= J):
//                  w * sum(K00[I,J]^2 + K11[I,J]^2 - K01[I,J]^2 - K01[J,I]^T^2), w = 1 (I == J) or 2.
// The kernels return S (raw); Python divides by n^2 C^2. See percept_fast/ops/style_distance.py.
#pragma once

#include <cmath>
#include <cstdint>

#include "common.h"

namespace percept_fast {
namespace style {

// Number of upper-triangle tile pairs (I <= J) of an nt x nt tile grid.
PR_HD int64_t num_pairs(int64_t nt) { return nt * (nt + 1) / 2; }

// Pair index -> (I, J), I <= J, row-major over the upper triangle: (0,0), (0,1), ..., (0,nt-1), (1,1), ...
PR_HD void pair_to_tiles(int64_t pid, int64_t nt, int64_t* ti, int64_t* tj) {
  // Row I starts at s(I) = I*nt - I*(I-1)/2. Solve for the largest I with s(I) <= pid, then fix rounding.
  const double a = 2.0 * static_cast<double>(nt) + 1.0;
  int64_t i = static_cast<int64_t>((a - sqrt(a * a - 8.0 * static_cast<double>(pid))) * 0.5);
  if (i < 0) i = 0;
  if (i > nt - 1) i = nt - 1;
  while (i > 0 && i * nt - i * (i - 1) / 2 > pid) --i;
  while (i + 1 < nt && (i + 1) * nt - (i + 1) * i / 2 <= pid) ++i;
  *ti = i;
  *tj = i + (pid - (i * nt - i * (i - 1) / 2));
}

// Weight of a tile pair in the symmetric sums.
PR_HD double pair_weight(int64_t ti, int64_t tj) { return ti == tj ? 1.0 : 2.0; }

// Offset (elements) of spatial position p = h*W + w in a [B, C, H, W] view.
PR_HD int64_t spatial_offset(int64_t p, int64_t W, int64_t sh, int64_t sw) { return (p / W) * sh + (p % W) * sw; }

}  // namespace style
}  // namespace percept_fast
