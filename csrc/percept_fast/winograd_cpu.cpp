// Winograd transforms F(2x2, 3x3) and F(3x3, 3x3) for a 3x3 stride-1 convolution on channels_last float32 maps (CPU).
//
// Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016): with d an n x n input tile (n = m + 2,
// tiles step by m) and g a 3x3 kernel, the m x m output tile of their correlation is
//   Y = A^T [ (G g G^T) .* (B^T d B) ] A.
// F(2, 3), points 0, 1, -1, inf:
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  A^T = [1 1 1 0; 0 1 -1 -1],
//   G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].
// F(3, 3), points 0, 1, -1, 2, inf (Toom-Cook: A^T and G Vandermonde, B^T the inverse transposed; its rows scaled to
// integers, G's rows by the inverse factors):
//   B^T = [2 -1 -2 1 0; 0 2 1 -1 0; 0 -2 3 -1 0; 0 -1 0 1 0; 0 2 -1 -2 1],  A^T = [1 1 1 1 0; 0 1 -1 2 0; 0 1 1 4 1],
//   G = [1/2 0 0; 1/2 1/2 1/2; 1/6 -1/6 1/6; 1/6 1/3 2/3; 0 0 1]
// (percept_fast/backbones/winograd.py holds G and a plain-PyTorch transcription of both).
// Summed over input channels, each of the n^2 tile positions xi is a matrix product (tiles x C_in) @ (C_in x C_out):
// n^2 / m^2 multiply-adds per output pixel and channel pair (4 for F(2, 3), 2.8 for F(3, 3)) where the direct
// convolution takes 9. The products run in oneDNN (winograd.py: one grouped 1x1 convolution, group xi); this file
// holds the two memory-bound transforms around them, on a range of tile rows (of the N * T_h rows of all images) so
// that a caller can run the three steps on chunks that stay in cache:
//   input:  x [N, H, W, C] -> V [rows, T_w, n^2, C]   (V[.., xi, c] = (B^T d B)[xi] of channel c's tile; zeros
//           outside x: the convolution's padding)
//   output: M [rows, T_w, n^2, K] -> y [N, H_out, W_out, K]   (A^T m A, plus bias, optional ReLU; outputs past the
//           edge are cropped)
// Tile (t_h, t_w) covers output rows m t_h .. m t_h + m - 1 and reads input rows m t_h - pad_h .. + n - 1.
// Inner loops run over channels (contiguous in both layouts), so they vectorise.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "registry.h"

namespace percept_fast {
namespace {

// Runs f(begin, end) over [0, n) on `threads` threads (1: inline, the caller's thread).
template <typename F>
void run_rows(int64_t n, int threads, F&& f) {
  if (threads <= 1 || n < 2) {
    f(int64_t{0}, n);
    return;
  }
  parallel_for_pooled(n, std::max<int64_t>(1, n / threads), f);
}

void check_positive(int64_t v, const char* name) {
  if (v < 1) throw std::invalid_argument(std::string("winograd: ") + name + " must be >= 1");
}

void check_rows(int64_t row_begin, int64_t row_end, int64_t N, int64_t tiles_h) {
  if (row_begin < 0 || row_end <= row_begin || row_end > N * tiles_h)
    throw std::invalid_argument("winograd: tile rows must satisfy 0 <= row_begin < row_end <= N * tiles_h");
}

// The 1-D transforms of one tile line (compile-time coefficients; the 2-D ones apply them to columns, then rows).
struct F2x3 {
  static constexpr int kM = 2, kN = 4;
  static inline void bt(const float* d, float* o) {
    o[0] = d[0] - d[2];
    o[1] = d[1] + d[2];
    o[2] = d[2] - d[1];
    o[3] = d[1] - d[3];
  }
  static inline void at(const float* m, float* o) {
    o[0] = m[0] + m[1] + m[2];
    o[1] = m[1] - m[2] - m[3];
  }
};

struct F3x3 {
  static constexpr int kM = 3, kN = 5;
  static inline void bt(const float* d, float* o) {
    o[0] = 2.0f * (d[0] - d[2]) + d[3] - d[1];
    o[1] = 2.0f * d[1] + d[2] - d[3];
    o[2] = 3.0f * d[2] - 2.0f * d[1] - d[3];
    o[3] = d[3] - d[1];
    o[4] = 2.0f * (d[1] - d[3]) - d[2] + d[4];
  }
  static inline void at(const float* m, float* o) {
    o[0] = m[0] + m[1] + m[2] + m[3];
    o[1] = m[1] - m[2] + 2.0f * m[3];
    o[2] = m[1] + m[2] + 4.0f * m[3] + m[4];
  }
};

// f(tile, begin, end) over the tile rows [0, rows) on `threads` threads, tile F2x3{} or F3x3{} for the output tile
// side m (checked by the callers).
template <typename F>
void run_tile_rows(int m, int64_t rows, int threads, F&& f) {
  const auto rows_of = [&](auto tile) {
    run_rows(rows, threads, [&](int64_t begin, int64_t end) { f(tile, begin, end); });
  };
  if (m == 2)
    rows_of(F2x3{});
  else
    rows_of(F3x3{});
}

void check_common(int64_t N, int64_t tiles_h, int64_t tiles_w, int64_t row_begin, int64_t row_end) {
  check_positive(N, "N");
  check_positive(tiles_h, "tiles_h");
  check_positive(tiles_w, "tiles_w");
  check_rows(row_begin, row_end, N, tiles_h);
}

template <typename T>
void input_rows(const float* x, int64_t H, int64_t W, int64_t C, int64_t pad_h, int64_t pad_w, int64_t tiles_h,
                int64_t tiles_w, int64_t row_begin, int64_t begin, int64_t end, float* v) {
  constexpr int M = T::kM, N = T::kN;
  std::vector<float> zeros(static_cast<size_t>(C), 0.0f);
  const float* d[N * N];
  for (int64_t row = row_begin + begin; row < row_begin + end; ++row) {
    const int64_t n = row / tiles_h, th = row % tiles_h;
    for (int64_t tw = 0; tw < tiles_w; ++tw) {
      for (int i = 0; i < N; ++i) {
        const int64_t r = M * th - pad_h + i;
        for (int j = 0; j < N; ++j) {
          const int64_t q = M * tw - pad_w + j;
          d[N * i + j] = (r >= 0 && r < H && q >= 0 && q < W) ? x + ((n * H + r) * W + q) * C : zeros.data();
        }
      }
      float* __restrict out = v + ((row - row_begin) * tiles_w + tw) * N * N * C;
#pragma GCC ivdep  // out never overlaps the input rows
      for (int64_t c = 0; c < C; ++c) {
        float t[N][N];
        for (int j = 0; j < N; ++j) {  // B^T d: each column
          float col[N], tcol[N];
          for (int i = 0; i < N; ++i) col[i] = d[N * i + j][c];
          T::bt(col, tcol);
          for (int i = 0; i < N; ++i) t[i][j] = tcol[i];
        }
        for (int i = 0; i < N; ++i) {  // (B^T d) B: each row
          float o[N];
          T::bt(t[i], o);
          for (int j = 0; j < N; ++j) out[(N * i + j) * C + c] = o[j];
        }
      }
    }
  }
}

void input_transform(uintptr_t x_ptr, int64_t N, int64_t H, int64_t W, int64_t C, int64_t pad_h, int64_t pad_w,
                     int m, int64_t tiles_h, int64_t tiles_w, int64_t row_begin, int64_t row_end, uintptr_t v_ptr,
                     int threads) {
  check_positive(H, "H");
  check_positive(W, "W");
  check_positive(C, "C");
  check_common(N, tiles_h, tiles_w, row_begin, row_end);
  if (m != 2 && m != 3) throw std::invalid_argument("winograd: m must be 2 or 3");
  if (pad_h < 0 || pad_w < 0) throw std::invalid_argument("winograd: negative padding");
  if (x_ptr == 0 || v_ptr == 0) throw std::invalid_argument("winograd: null pointer");
  const float* x = reinterpret_cast<const float*>(x_ptr);
  float* v = reinterpret_cast<float*>(v_ptr);
  pybind11::gil_scoped_release nogil;
  run_tile_rows(m, row_end - row_begin, threads, [&](auto tile, int64_t begin, int64_t end) {
    input_rows<decltype(tile)>(x, H, W, C, pad_h, pad_w, tiles_h, tiles_w, row_begin, begin, end, v);
  });
}

// One tile's channels: A^T m A + bias (then ReLU when Relu) for k in [0, K), into the tile's M x M output rows o.
template <typename T, bool Relu>
void output_tile(const float* __restrict in, const float* __restrict bias, int64_t K, float* const* o) {
  constexpr int M = T::kM, N = T::kN;
  float* __restrict oo[M * M];
  for (int i = 0; i < M * M; ++i) oo[i] = o[i];
#pragma GCC ivdep  // the output rows never overlap m or each other (cropped ones go to distinct sinks)
  for (int64_t k = 0; k < K; ++k) {
    float s[M][N];
    for (int j = 0; j < N; ++j) {  // A^T m: each column
      float col[N], scol[M];
      for (int i = 0; i < N; ++i) col[i] = in[(N * i + j) * K + k];
      T::at(col, scol);
      for (int a = 0; a < M; ++a) s[a][j] = scol[a];
    }
    const float b = bias[k];
    for (int a = 0; a < M; ++a) {  // (A^T m) A: each row
      float y[M];
      T::at(s[a], y);
      for (int c = 0; c < M; ++c) {
        float value = y[c] + b;
        if (Relu) value = std::max(value, 0.0f);
        oo[M * a + c][k] = value;
      }
    }
  }
}

template <typename T>
void output_rows(const float* m, int64_t tiles_h, int64_t tiles_w, int64_t K, const float* bias, bool relu,
                 int64_t H_out, int64_t W_out, int64_t row_begin, int64_t begin, int64_t end, float* y) {
  constexpr int M = T::kM, N = T::kN;
  std::vector<float> sink(static_cast<size_t>((M * M - 1) * K));  // cropped outputs (never the tile's first)
  float* o[M * M];
  for (int64_t row = row_begin + begin; row < row_begin + end; ++row) {
    const int64_t n = row / tiles_h, th = row % tiles_h;
    for (int64_t tw = 0; tw < tiles_w; ++tw) {
      const float* in = m + ((row - row_begin) * tiles_w + tw) * N * N * K;
      for (int a = 0; a < M; ++a)
        for (int b = 0; b < M; ++b) {
          const int64_t r = M * th + a, q = M * tw + b;
          o[M * a + b] = (r < H_out && q < W_out) ? y + ((n * H_out + r) * W_out + q) * K
                                                  : sink.data() + (M * a + b - 1) * K;
        }
      if (relu)
        output_tile<T, true>(in, bias, K, o);
      else
        output_tile<T, false>(in, bias, K, o);
    }
  }
}

void output_transform(uintptr_t m_ptr, int64_t N, int64_t tiles_h, int64_t tiles_w, int64_t K, uintptr_t bias_ptr,
                      bool relu, int64_t H_out, int64_t W_out, int m, int64_t row_begin, int64_t row_end,
                      uintptr_t y_ptr, int threads) {
  check_positive(K, "K");
  check_positive(H_out, "H_out");
  check_positive(W_out, "W_out");
  check_common(N, tiles_h, tiles_w, row_begin, row_end);
  if (m != 2 && m != 3) throw std::invalid_argument("winograd: m must be 2 or 3");
  if (tiles_h != (H_out + m - 1) / m || tiles_w != (W_out + m - 1) / m)
    throw std::invalid_argument("winograd: tiles do not cover the output (tiles = ceil(out / m))");
  if (m_ptr == 0 || y_ptr == 0) throw std::invalid_argument("winograd: null pointer");
  const float* mp = reinterpret_cast<const float*>(m_ptr);
  std::vector<float> no_bias;
  const float* bias = reinterpret_cast<const float*>(bias_ptr);
  if (bias == nullptr) {
    no_bias.assign(static_cast<size_t>(K), 0.0f);
    bias = no_bias.data();
  }
  float* y = reinterpret_cast<float*>(y_ptr);
  pybind11::gil_scoped_release nogil;
  run_tile_rows(m, row_end - row_begin, threads, [&](auto tile, int64_t begin, int64_t end) {
    output_rows<decltype(tile)>(mp, tiles_h, tiles_w, K, bias, relu, H_out, W_out, row_begin, begin, end, y);
  });
}

void register_winograd(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("winograd_input_transform", &input_transform, py::arg("x"), py::arg("N"), py::arg("H"), py::arg("W"),
        py::arg("C"), py::arg("pad_h"), py::arg("pad_w"), py::arg("m"), py::arg("tiles_h"), py::arg("tiles_w"),
        py::arg("row_begin"), py::arg("row_end"), py::arg("out"), py::arg("threads"),
        "Winograd F(m x m, 3x3) input transform (m = 2 or 3, n = m + 2): x [N,H,W,C] float32 -> out "
        "[row_end - row_begin, tiles_w, n*n, C], the tile rows [row_begin, row_end) of [N * tiles_h, tiles_w] "
        "(B^T d B per n x n tile; tile row t of an image starts at input row m t - pad).");
  m.def("winograd_output_transform", &output_transform, py::arg("m_tiles"), py::arg("N"), py::arg("tiles_h"),
        py::arg("tiles_w"), py::arg("K"), py::arg("bias"), py::arg("relu"), py::arg("H_out"), py::arg("W_out"),
        py::arg("m"), py::arg("row_begin"), py::arg("row_end"), py::arg("out"), py::arg("threads"),
        "Winograd F(m x m, 3x3) output transform: m_tiles [row_end - row_begin, tiles_w, n*n, K] float32 (tile rows "
        "[row_begin, row_end) of [N * tiles_h, tiles_w]) -> their pixels of out [N,H_out,W_out,K] (A^T m A + bias, "
        "optional ReLU; bias 0 = none).");
}

}  // namespace

PF_REGISTER_OP(winograd, register_winograd)

}  // namespace percept_fast
