// conv1d on CUDA: forward, backward-input and backward-weight as implicit GEMMs.
//
// Each pass is a product C (M, P) = A (M, R) @ B (R, P) per batch item z whose operands are
// never materialised: a "problem" struct says how to read A[m, r] and B[r, p] straight from
// the tensors (zero where a window hangs over the padding) and where C[m, p] goes.
//
//   pass             z                M (rows)      P (columns)        R (reduction)
//   forward          (n, group)       C_out/groups  L_out positions    (c, k): C_in/groups * K
//   backward-input   (n, group)       C_in/groups   L input positions  (o, k): C_out/groups * K
//   backward-weight  (split, group)   C_out/groups  (c, k)             (n, j): a slice of N * L_out
//
//   forward          A = w[g*og + m, r]                B = x[n, g*cg + c, p*stride - padding + k*dilation]
//   backward-input   A = w[g*og + o, m, k]             B = dy[n, g*og + o, (p + padding - k*dilation) / stride]
//                                                          (zero unless that division is exact and in range)
//   backward-weight  A = dy[n, g*og + m, j]            B = x[n, g*cg + c, j*stride - padding + k*dilation]
//
// One kernel template serves all three: a block owns a BM x BP tile of C; the reduction is
// walked in chunks of BR = 16 (c, k) — or (o, k), (n, j) — pairs: the block stages the A chunk
// (BM x BR) and the B chunk (BR x BP) in shared memory, converted to the accumulation type,
// and each thread multiplies RC rows by RL columns from there into registers. Output positions
// run across threads (column q of a thread is tx + q*TX, so stores coalesce), channels down
// them. Staging B element by element (im2col in shared memory) makes any stride, padding,
// dilation and group count correct with the same code, at the price of re-reading x for
// overlapping windows (those reads hit L1/L2).
//
// Two tile shapes: 64 x 64 (16 x 16 threads, 4 x 4 outputs each) when M >= 32, and 4 x 128
// (4 x 64 threads, 1 x 2 outputs each) for few channels per group (depthwise and small layers,
// where a 64-row tile would idle most of the block).
//
// Backward-weight reduces over all N * L_out positions into a small (C_out/g, cg*K) output,
// so its reduction is split across blockIdx "splits" (enough blocks to fill the GPU); each
// split writes an accumulation-type partial and a second kernel sums the partials in split
// order (deterministic, no atomics).
//
// Accumulation: f32 for f32/f16/bf16, f64 for f64. Index arithmetic: dims and reduction
// indices in int (the host checks they fit), element offsets in int64.
//
// These kernels have been compiled but not yet run on a GPU (see docs/conv.md).
#include <algorithm>
#include <climits>
#include <cstdint>

#include "common.cuh"
#include "cuda/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"
#include "ember/core/storage.h"

namespace ember::cuda {
namespace {

constexpr int kBR = 16;  // reduction chunk staged per step

struct ConvGeom {
  int N, C_in, L, C_out, K, L_out, stride, padding, dilation, groups;
  int cg, og;  // channels per group: input, output
};

// --- the three problems -------------------------------------------------------------------------
// Each says: rows(), cols(), the reduction range of batch item z, a(z, m, r), b(z, r, p),
// store(z, m, p, value), and which index the loaders should walk across consecutive threads
// (kAFastR: r, else m; kBFastR: r, else p) so that global reads coalesce.

template <class T>
struct ForwardProblem {
  using Acc = acc_t<T>;
  static constexpr bool kAFastR = true;   // a weight row is contiguous along (c, k)
  static constexpr bool kBFastR = false;  // x is contiguous along positions
  const T* x;     // (N, C_in, L)
  const T* w;     // (C_out, cg, K)
  const T* bias;  // (C_out) or null
  T* y;           // (N, C_out, L_out)
  ConvGeom g;

  __device__ int rows() const { return g.og; }
  __device__ int cols() const { return g.L_out; }
  __device__ void reduction(int, int& r0, int& r1) const { r0 = 0; r1 = g.cg * g.K; }
  __device__ Acc a(int z, int m, int r) const {
    const int grp = z % g.groups;
    return to_acc(w[static_cast<int64_t>(grp * g.og + m) * (g.cg * g.K) + r]);
  }
  __device__ Acc b(int z, int r, int p) const {
    const int n = z / g.groups, grp = z % g.groups;
    const int c = r / g.K, k = r - c * g.K;
    const int64_t pos = static_cast<int64_t>(p) * g.stride - g.padding + static_cast<int64_t>(k) * g.dilation;
    if (pos < 0 || pos >= g.L) return Acc(0);
    return to_acc(x[(static_cast<int64_t>(n) * g.C_in + grp * g.cg + c) * g.L + pos]);
  }
  __device__ void store(int z, int m, int p, Acc v) const {
    const int n = z / g.groups, co = (z % g.groups) * g.og + m;
    if (bias) v += to_acc(bias[co]);
    y[(static_cast<int64_t>(n) * g.C_out + co) * g.L_out + p] = from_acc<T>(v);
  }
};

template <class T>
struct BackwardInputProblem {
  using Acc = acc_t<T>;
  static constexpr bool kAFastR = true;   // (o, k) with k contiguous in w
  static constexpr bool kBFastR = false;  // dy is contiguous along positions
  const T* dy;  // (N, C_out, L_out)
  const T* w;   // (C_out, cg, K)
  T* dx;        // (N, C_in, L)
  ConvGeom g;

  __device__ int rows() const { return g.cg; }
  __device__ int cols() const { return g.L; }
  __device__ void reduction(int, int& r0, int& r1) const { r0 = 0; r1 = g.og * g.K; }
  __device__ Acc a(int z, int m, int r) const {
    const int grp = z % g.groups;
    const int o = r / g.K, k = r - o * g.K;
    return to_acc(w[(static_cast<int64_t>(grp * g.og + o) * g.cg + m) * g.K + k]);
  }
  __device__ Acc b(int z, int r, int p) const {
    const int n = z / g.groups, grp = z % g.groups;
    const int o = r / g.K, k = r - o * g.K;
    // Output position j reads input p through tap k when j*stride = p + padding - k*dilation.
    const int64_t num = static_cast<int64_t>(p) + g.padding - static_cast<int64_t>(k) * g.dilation;
    if (num < 0 || num % g.stride != 0) return Acc(0);
    const int64_t j = num / g.stride;
    if (j >= g.L_out) return Acc(0);
    return to_acc(dy[(static_cast<int64_t>(n) * g.C_out + grp * g.og + o) * g.L_out + j]);
  }
  __device__ void store(int z, int m, int p, Acc v) const {
    const int n = z / g.groups, ci = (z % g.groups) * g.cg + m;
    dx[(static_cast<int64_t>(n) * g.C_in + ci) * g.L + p] = from_acc<T>(v);
  }
};

template <class T>
struct BackwardWeightProblem {
  using Acc = acc_t<T>;
  static constexpr bool kAFastR = true;  // dy is contiguous along (n, j)'s j
  static constexpr bool kBFastR = true;  // so is x along j
  const T* dy;     // (N, C_out, L_out)
  const T* x;      // (N, C_in, L)
  T* dw;           // (C_out, cg, K): written directly when splits == 1
  Acc* partial;    // (splits, C_out, cg*K): written when splits > 1
  int splits;
  int split_len;   // reduction positions per split (a multiple of kBR)
  ConvGeom g;

  __device__ int rows() const { return g.og; }
  __device__ int cols() const { return g.cg * g.K; }
  __device__ void reduction(int z, int& r0, int& r1) const {
    const int64_t total = static_cast<int64_t>(g.N) * g.L_out;
    const int64_t begin = static_cast<int64_t>(z / g.groups) * split_len;
    r0 = static_cast<int>(begin < total ? begin : total);
    r1 = static_cast<int>(begin + split_len < total ? begin + split_len : total);
  }
  __device__ Acc a(int z, int m, int r) const {
    const int grp = z % g.groups;
    const int n = r / g.L_out, j = r - n * g.L_out;
    return to_acc(dy[(static_cast<int64_t>(n) * g.C_out + grp * g.og + m) * g.L_out + j]);
  }
  __device__ Acc b(int z, int r, int p) const {
    const int grp = z % g.groups;
    const int n = r / g.L_out, j = r - n * g.L_out;
    const int c = p / g.K, k = p - c * g.K;
    const int64_t pos = static_cast<int64_t>(j) * g.stride - g.padding + static_cast<int64_t>(k) * g.dilation;
    if (pos < 0 || pos >= g.L) return Acc(0);
    return to_acc(x[(static_cast<int64_t>(n) * g.C_in + grp * g.cg + c) * g.L + pos]);
  }
  __device__ void store(int z, int m, int p, Acc v) const {
    const int split = z / g.groups, co = (z % g.groups) * g.og + m;
    const int64_t at = static_cast<int64_t>(co) * (g.cg * g.K) + p;
    if (splits == 1) dw[at] = from_acc<T>(v);
    else partial[static_cast<int64_t>(split) * g.C_out * (g.cg * g.K) + at] = v;
  }
};

// --- the kernel ---------------------------------------------------------------------------------
// grid: x = column tiles * Z (batch items; consecutive blocks share z), y = row tiles.
template <class Problem, int TY, int TX, int RC, int RL>
__global__ void __launch_bounds__(TY * TX) conv1d_gemm_kernel(Problem prob, int col_tiles) {
  using Acc = typename Problem::Acc;
  constexpr int kThreadsPerBlock = TY * TX;
  constexpr int BM = TY * RC, BP = TX * RL;
  // +1 column: the loaders write along the reduction index for some problems; the padding
  // keeps those stores off a single bank.
  __shared__ Acc As[kBR][BM + 1];  // A chunk, stored reduction-major
  __shared__ Acc Bs[kBR][BP + 1];

  const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;
  const int z = blockIdx.x / col_tiles;
  const int p0 = (blockIdx.x % col_tiles) * BP, m0 = blockIdx.y * BM;
  const int M = prob.rows(), P = prob.cols();
  int r_begin, r_end;
  prob.reduction(z, r_begin, r_end);

  Acc acc[RC][RL];
#pragma unroll
  for (int i = 0; i < RC; ++i)
#pragma unroll
    for (int q = 0; q < RL; ++q) acc[i][q] = Acc(0);

  for (int r0 = r_begin; r0 < r_end; r0 += kBR) {
    for (int e = tid; e < BM * kBR; e += kThreadsPerBlock) {
      const int rr = Problem::kAFastR ? e % kBR : e / BM;
      const int m = Problem::kAFastR ? e / kBR : e % BM;
      const int r = r0 + rr;
      As[rr][m] = (m0 + m < M && r < r_end) ? prob.a(z, m0 + m, r) : Acc(0);
    }
    for (int e = tid; e < kBR * BP; e += kThreadsPerBlock) {
      const int rr = Problem::kBFastR ? e % kBR : e / BP;
      const int p = Problem::kBFastR ? e / kBR : e % BP;
      const int r = r0 + rr;
      Bs[rr][p] = (p0 + p < P && r < r_end) ? prob.b(z, r, p0 + p) : Acc(0);
    }
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < kBR; ++rr) {
      Acc av[RC], bv[RL];
#pragma unroll
      for (int i = 0; i < RC; ++i) av[i] = As[rr][ty * RC + i];
#pragma unroll
      for (int q = 0; q < RL; ++q) bv[q] = Bs[rr][tx + q * TX];
#pragma unroll
      for (int i = 0; i < RC; ++i)
#pragma unroll
        for (int q = 0; q < RL; ++q) acc[i][q] += av[i] * bv[q];
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < RC; ++i) {
    const int m = m0 + ty * RC + i;
    if (m >= M) continue;
#pragma unroll
    for (int q = 0; q < RL; ++q) {
      const int p = p0 + tx + q * TX;
      if (p < P) prob.store(z, m, p, acc[i][q]);
    }
  }
}

// dw[i] = sum over splits of partial[s, i], in split order.
template <class T>
__global__ void sum_partials_kernel(const acc_t<T>* partial, T* dw, int64_t size, int splits) {
  for (int64_t i = grid_start(); i < size; i += grid_step()) {
    acc_t<T> s = 0;
    for (int k = 0; k < splits; ++k) s += partial[static_cast<int64_t>(k) * size + i];
    dw[i] = from_acc<T>(s);
  }
}

// --- host side ----------------------------------------------------------------------------------

// Sizes the kernels index in int. Half of INT_MAX leaves room for the last chunk's overshoot
// (r0 + kBR) and for the tile arithmetic.
constexpr int64_t kIntLimit = INT_MAX / 2;

int to_int(int64_t v, const char* what, const char* op) {
  EMBER_CHECK(v >= 0 && v <= kIntLimit, op, what, " = ", v, " is too large for the CUDA conv1d kernels (limit ",
              kIntLimit, ")");
  return static_cast<int>(v);
}

// x_like (N, C_in, L), w_like (C_out, cg, K), y_like (N, C_out, L_out).
ConvGeom make_geom(const char* op, const Tensor& x_like, const Tensor& w_like, const Tensor& y_like,
                   int64_t stride, int64_t padding, int64_t dilation, int64_t groups) {
  ConvGeom g{};
  g.N = to_int(x_like.size(0), "batch", op);
  g.C_in = to_int(x_like.size(1), "C_in", op);
  g.L = to_int(x_like.size(2), "input length", op);
  g.C_out = to_int(w_like.size(0), "C_out", op);
  g.K = to_int(w_like.size(2), "kernel size", op);
  g.L_out = to_int(y_like.size(2), "output length", op);
  g.stride = to_int(stride, "stride", op);
  g.padding = to_int(padding, "padding", op);
  g.dilation = to_int(dilation, "dilation", op);
  g.groups = to_int(groups, "groups", op);
  g.cg = g.C_in / g.groups;
  g.og = g.C_out / g.groups;
  // Reduction lengths, reduction positions and padded coordinates stay in int.
  to_int(static_cast<int64_t>(g.cg) * g.K, "C_in/groups * K", op);
  to_int(static_cast<int64_t>(g.og) * g.K, "C_out/groups * K", op);
  to_int(static_cast<int64_t>(g.N) * g.L_out, "N * L_out", op);
  to_int(static_cast<int64_t>(g.L) + g.padding + static_cast<int64_t>(g.K) * g.dilation, "padded length", op);
  return g;
}

template <class Problem, int TY, int TX, int RC, int RL>
void launch_tiles(const Problem& prob, int M, int P, int64_t Z, cudaStream_t stream, const char* op) {
  constexpr int BM = TY * RC, BP = TX * RL;
  const int64_t col_tiles = (P + BP - 1) / BP, row_tiles = (M + BM - 1) / BM;
  EMBER_CHECK(col_tiles * Z <= INT_MAX && row_tiles <= 65535, op, "problem too large for one launch: ",
              col_tiles * Z, " x ", row_tiles, " tiles");
  const dim3 grid(static_cast<unsigned>(col_tiles * Z), static_cast<unsigned>(row_tiles));
  conv1d_gemm_kernel<Problem, TY, TX, RC, RL><<<grid, TY * TX, 0, stream>>>(prob, static_cast<int>(col_tiles));
  EMBER_CUDA_LAUNCH_CHECK();
}

// Picks the tile shape by the number of rows (channels per group).
template <class Problem>
void launch(const Problem& prob, int M, int P, int64_t Z, cudaStream_t stream, const char* op) {
  if (M == 0 || P == 0 || Z == 0) return;
  if (M >= 32) launch_tiles<Problem, 16, 16, 4, 4>(prob, M, P, Z, stream, op);
  else launch_tiles<Problem, 4, 64, 1, 2>(prob, M, P, Z, stream, op);
}


}  // namespace

void conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out_overwrite,
                    int64_t stride, int64_t padding, int64_t dilation, int64_t groups) {
  if (out_overwrite.numel() == 0) return;
  const ConvGeom g = make_geom("conv1d", x, w, out_overwrite, stride, padding, dilation, groups);
  DeviceScope scope(out_overwrite);
  EMBER_CUDA_DISPATCH_FLOAT(x.dtype(), "conv1d", T, [&] {
    ForwardProblem<T> prob{static_cast<const T*>(x.data_ptr()), static_cast<const T*>(w.data_ptr()),
                           ptr_or_null<T>(bias), static_cast<T*>(out_overwrite.data_ptr()), g};
    launch(prob, g.og, g.L_out, static_cast<int64_t>(g.N) * g.groups, scope.stream, "conv1d");
  });
}

void conv1d_backward_input(const Tensor& grad_out, const Tensor& w, const Tensor& grad_input_overwrite,
                           int64_t stride, int64_t padding, int64_t dilation, int64_t groups) {
  if (grad_input_overwrite.numel() == 0) return;
  const char* op = "conv1d_backward_input";
  const ConvGeom g = make_geom(op, grad_input_overwrite, w, grad_out, stride, padding, dilation, groups);
  DeviceScope scope(grad_input_overwrite);
  EMBER_CUDA_DISPATCH_FLOAT(w.dtype(), op, T, [&] {
    BackwardInputProblem<T> prob{static_cast<const T*>(grad_out.data_ptr()), static_cast<const T*>(w.data_ptr()),
                                 static_cast<T*>(grad_input_overwrite.data_ptr()), g};
    launch(prob, g.cg, g.L, static_cast<int64_t>(g.N) * g.groups, scope.stream, op);
  });
}

void conv1d_backward_weight(const Tensor& grad_out, const Tensor& x, const Tensor& grad_weight_overwrite,
                            int64_t stride, int64_t padding, int64_t dilation, int64_t groups) {
  if (grad_weight_overwrite.numel() == 0) return;
  const char* op = "conv1d_backward_weight";
  const ConvGeom g = make_geom(op, x, grad_weight_overwrite, grad_out, stride, padding, dilation, groups);
  DeviceScope scope(grad_weight_overwrite);
  const int M = g.og, P = g.cg * g.K;
  const int total = g.N * g.L_out;
  // Enough splits of the reduction for about 4 blocks per SM, each split at least 8 chunks.
  const int64_t tiles = ((P + 63) / 64) * ((M + 63) / 64) * static_cast<int64_t>(g.groups);
  const int64_t chunks = (static_cast<int64_t>(total) + kBR - 1) / kBR;
  const int64_t want = (4LL * multiprocessor_count(current_device()) + tiles - 1) / tiles;
  int splits = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(want, chunks / 8)));
  int split_len = static_cast<int>(((chunks + splits - 1) / splits) * kBR);
  if (split_len == 0) split_len = kBR;
  splits = static_cast<int>(std::max<int64_t>(1, (total + split_len - 1) / split_len));  // no empty split
  const int64_t wsize = grad_weight_overwrite.numel();
  EMBER_CUDA_DISPATCH_FLOAT(x.dtype(), op, T, [&] {
    using A = acc_t<T>;
    // Scratch from the caching allocator: released at scope exit, reused only in stream order.
    Storage scratch(splits > 1 ? static_cast<size_t>(splits * wsize) * sizeof(A) : 0, grad_weight_overwrite.device());
    BackwardWeightProblem<T> prob{static_cast<const T*>(grad_out.data_ptr()),
                                  static_cast<const T*>(x.data_ptr()),
                                  static_cast<T*>(grad_weight_overwrite.data_ptr()),
                                  splits > 1 ? static_cast<A*>(scratch.data()) : nullptr,
                                  splits,
                                  split_len,
                                  g};
    launch(prob, M, P, static_cast<int64_t>(splits) * g.groups, scope.stream, op);
    if (splits > 1) {
      sum_partials_kernel<T><<<grid_for(wsize, kThreads), kThreads, 0, scope.stream>>>(
          prob.partial, static_cast<T*>(grad_weight_overwrite.data_ptr()), wsize, splits);
      EMBER_CUDA_LAUNCH_CHECK();
    }
  });
}

void register_conv_kernels() {
  prim::define<prim::conv1d_forward>(prim::Backend::cuda, &conv1d_forward);
  prim::define<prim::conv1d_backward_input>(prim::Backend::cuda, &conv1d_backward_input);
  prim::define<prim::conv1d_backward_weight>(prim::Backend::cuda, &conv1d_backward_weight);
}

}  // namespace ember::cuda
