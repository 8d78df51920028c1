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
// The SIMT kernels here ran on an H200 (docs/conv.md). Tensor-core versions of the same three
// problems live in conv_mma.cuh (f16/bf16, and f32 as TF32 when cuda::allow_tf32() is on); they
// have not run on a GPU yet. use_mma below decides per call: the dtype, EMBER_CONV_KERNEL
// (mma by default, simt forces these kernels), a GEMM of at least 32 x 32 x 32, and a first-use
// self-check against the SIMT kernel per (device, dtype, pass).
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common.cuh"
#include "conv_mma.cuh"
#include "conv_problem.cuh"
#include "cuda/once_verdict.h"
#include "cuda/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"
#include "ember/core/storage.h"
#include "ember/cuda.h"

namespace ember::cuda {
namespace {

constexpr int kBR = 16;  // reduction chunk staged per step

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

// --- the tensor-core kernels (conv_mma.cuh) -----------------------------------------------------

// f16/bf16 operands, and f32 operands rounded to TF32.
template <class T>
constexpr bool kMmaType = is_half_v<T> || std::is_same_v<T, float>;

// Rows of the tensor-core block tile: 128 when M > 64, else 64 (conv_mma.cuh explains).
int mma_tile_rows(int M) { return M > 64 ? 128 : 64; }

template <int kPass, int BM, class Problem>
void launch_mma_tiles(const Problem& prob, int M, int P, int64_t Z, cudaStream_t stream, const char* op) {
  constexpr int BP = conv_mma::kBP;
  const int64_t col_tiles = (P + BP - 1) / BP, row_tiles = (M + BM - 1) / BM;
  EMBER_CHECK(col_tiles * Z <= INT_MAX && row_tiles <= 65535, op, "problem too large for one launch: ",
              col_tiles * Z, " x ", row_tiles, " tiles");
  const dim3 grid(static_cast<unsigned>(col_tiles * Z), static_cast<unsigned>(row_tiles));
  conv_mma::conv1d_mma_kernel<kPass, BM, Problem>
      <<<grid, conv_mma::kThreads, 0, stream>>>(prob, static_cast<int>(col_tiles));
  EMBER_CUDA_LAUNCH_CHECK();
}

template <int kPass, class Problem>
void launch_mma(const Problem& prob, int M, int P, int64_t Z, cudaStream_t stream, const char* op) {
  if constexpr (kMmaType<typename Problem::Elem>) {
    if (M == 0 || P == 0 || Z == 0) return;
    if (mma_tile_rows(M) == 128) launch_mma_tiles<kPass, 128>(prob, M, P, Z, stream, op);
    else launch_mma_tiles<kPass, 64>(prob, M, P, Z, stream, op);
  } else {
    EMBER_FAIL(op, "no tensor-core conv1d kernel for this dtype");
  }
}

// --- the three passes on raw pointers (the ops below, and the self-check) ------------------------

template <class T>
void run_forward(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, bool mma, cudaStream_t stream) {
  const char* op = "conv1d";
  ForwardProblem<T> prob{x, w, bias, y, g};
  const int64_t Z = static_cast<int64_t>(g.N) * g.groups;
  if (mma) launch_mma<conv_mma::kForward>(prob, g.og, g.L_out, Z, stream, op);
  else launch(prob, g.og, g.L_out, Z, stream, op);
}

template <class T>
void run_backward_input(const ConvGeom& g, const T* dy, const T* w, T* dx, bool mma, cudaStream_t stream) {
  const char* op = "conv1d_backward_input";
  BackwardInputProblem<T> prob{dy, w, dx, g};
  const int64_t Z = static_cast<int64_t>(g.N) * g.groups;
  if (mma) launch_mma<conv_mma::kBackwardInput>(prob, g.cg, g.L, Z, stream, op);
  else launch(prob, g.cg, g.L, Z, stream, op);
}

// Backward-weight reduces over all N * L_out positions into a small output, so the reduction
// is split into `splits` slices of `len` positions (a multiple of the kernel's chunk), enough
// blocks for `blocks_per_sm` per SM, each slice at least 8 chunks; `forced` > 0 asks for that
// many slices (the self-check exercises the partial sums with it).
struct WeightSplit {
  int splits, len;
};
WeightSplit weight_split(const ConvGeom& g, int tile_m, int tile_p, int chunk, int blocks_per_sm, int forced) {
  const int M = g.og, P = g.cg * g.K;
  const int64_t total = static_cast<int64_t>(g.N) * g.L_out;
  const int64_t tiles = ((P + tile_p - 1) / tile_p) * static_cast<int64_t>((M + tile_m - 1) / tile_m) * g.groups;
  const int64_t chunks = (total + chunk - 1) / chunk;
  const int64_t sms = multiprocessor_count(current_device());
  const int64_t want = forced > 0 ? forced : (blocks_per_sm * sms + tiles - 1) / tiles;
  const int64_t most = forced > 0 ? chunks : chunks / 8;
  int64_t splits = std::max<int64_t>(1, std::min<int64_t>(want, most));
  int64_t len = ((chunks + splits - 1) / splits) * chunk;
  if (len == 0) len = chunk;
  splits = std::max<int64_t>(1, (total + len - 1) / len);  // no empty split
  return {static_cast<int>(splits), static_cast<int>(len)};
}

// sum_partials_kernel's grid-stride loop: grid_for caps the grid, so any size is covered.
template <class T>
void run_backward_weight(const ConvGeom& g, const T* dy, const T* x, T* dw, bool mma, int forced_splits, int dev,
                         cudaStream_t stream) {
  const char* op = "conv1d_backward_weight";
  using A = acc_t<T>;
  const int M = g.og, P = g.cg * g.K;
  WeightSplit sp{};
  if constexpr (kMmaType<T>) {
    if (mma) sp = weight_split(g, mma_tile_rows(M), conv_mma::kBP, conv_mma::Cfg<T>::kBR, 2, forced_splits);
  }
  if (!mma) sp = weight_split(g, 64, 64, kBR, 4, forced_splits);
  const int64_t wsize = static_cast<int64_t>(g.C_out) * P;
  // Scratch from the caching allocator: released at scope exit, reused only in stream order.
  Storage scratch(sp.splits > 1 ? static_cast<size_t>(sp.splits * wsize) * sizeof(A) : 0, Device::cuda(dev));
  BackwardWeightProblem<T> prob{dy, x, dw, sp.splits > 1 ? static_cast<A*>(scratch.data()) : nullptr, sp.splits,
                                sp.len, g};
  const int64_t Z = static_cast<int64_t>(sp.splits) * g.groups;
  if (mma) launch_mma<conv_mma::kBackwardWeight>(prob, M, P, Z, stream, op);
  else launch(prob, M, P, Z, stream, op);
  if (sp.splits > 1) {
    sum_partials_kernel<T><<<grid_for(wsize, kThreads), kThreads, 0, stream>>>(prob.partial, dw, wsize, sp.splits);
    EMBER_CUDA_LAUNCH_CHECK();
  }
}

// --- which kernel runs --------------------------------------------------------------------------

// EMBER_CONV_KERNEL=mma (default) or simt: whether the tensor-core kernels may run at all.
bool mma_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("EMBER_CONV_KERNEL");
    if (e == nullptr || *e == '\0' || std::strcmp(e, "mma") == 0) return true;
    EMBER_CHECK(std::strcmp(e, "simt") == 0, "conv1d", "EMBER_CONV_KERNEL=\"", e,
                "\" is not a kernel; use mma (the default) or simt");
    return false;
  }();
  return on;
}

const char* pass_name(int pass) {
  if (pass == conv_mma::kForward) return "forward";
  return pass == conv_mma::kBackwardInput ? "backward-input" : "backward-weight";
}
template <class T>
const char* mma_type_name() {
  return std::is_same_v<T, __half> ? "f16" : std::is_same_v<T, __nv_bfloat16> ? "bf16" : "f32 as TF32";
}

// The first time a (device, dtype, pass) would run on tensor cores, the pass runs on two small
// ragged problems beside the SIMT kernel: (N 3, C_in 80, L 150, C_out 72, k3, stride 2,
// padding 3, dilation 2, groups 2: 64-row tiles, partial in every dimension) and (N 2, C_in 70,
// L 161, C_out 130, k5, padding 2: 128-row tiles; backward-weight split in 3). Inputs are
// multiples of 1/16 in [-1.25, 1.25], exact in f16, bf16 and TF32, so every product is a
// multiple of 2^-8 below 2 and every sum here (at most 650 terms) a multiple of 2^-8 below
// 2^11: exact in f32 in any order. Both kernels therefore reach the same f32 value and round it
// the same way; the tolerance, one unit in the last place of the output type (2^-10 relative
// for f16, 2^-7 for bf16, 2^-20 for f32), only leaves room for the tensor cores' internal
// rounding. A wrong index is off by O(1). Outputs start as NaN (0xFF bytes), so an element a
// kernel leaves unwritten fails too. On a mismatch the tensor cores are not used for that
// combination in this process and one stderr line says so.
template <class T, int kPass>
bool mma_check_run(int dev, cudaStream_t stream) {
  struct Case {
    int N, C_in, L, C_out, K, stride, padding, dilation, groups, splits;
  };
  constexpr Case kCases[] = {{3, 80, 150, 72, 3, 2, 3, 2, 2, 0}, {2, 70, 161, 130, 5, 1, 2, 1, 1, 3}};
  const double tol = std::is_same_v<T, __half> ? 0x1p-10 : std::is_same_v<T, __nv_bfloat16> ? 0x1p-7 : 0x1p-20;
  for (const Case& c : kCases) {
    ConvGeom g{};
    g.N = c.N, g.C_in = c.C_in, g.L = c.L, g.C_out = c.C_out, g.K = c.K;
    g.stride = c.stride, g.padding = c.padding, g.dilation = c.dilation, g.groups = c.groups;
    g.cg = c.C_in / c.groups, g.og = c.C_out / c.groups;
    g.L_out = (c.L + 2 * c.padding - c.dilation * (c.K - 1) - 1) / c.stride + 1;
    const int64_t nx = static_cast<int64_t>(g.N) * g.C_in * g.L, nw = static_cast<int64_t>(g.C_out) * g.cg * g.K,
                  nb = g.C_out, ny = static_cast<int64_t>(g.N) * g.C_out * g.L_out;
    const int64_t nout = kPass == conv_mma::kForward ? ny : kPass == conv_mma::kBackwardInput ? nx : nw;
    std::vector<T> host(static_cast<size_t>(nx + nw + nb + ny));
    for (size_t i = 0; i < host.size(); ++i)
      host[i] = static_cast<T>(static_cast<float>(static_cast<int>((i * 2654435761u) >> 9) % 41 - 20) / 16.f);
    Storage buf((host.size() + 2 * static_cast<size_t>(nout)) * sizeof(T), Device::cuda(dev));
    T* base = static_cast<T*>(buf.data());
    const T *x = base, *w = base + nx, *b = w + nw, *dy = b + nb;
    T* out = base + host.size();  // [0, nout): tensor cores, [nout, 2 nout): SIMT
    EMBER_CUDA_CHECK(cudaMemcpyAsync(base, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
    EMBER_CUDA_CHECK(cudaMemsetAsync(out, 0xFF, 2 * static_cast<size_t>(nout) * sizeof(T), stream));
    for (const bool mma : {true, false}) {
      T* o = mma ? out : out + nout;
      if constexpr (kPass == conv_mma::kForward) run_forward<T>(g, x, w, b, o, mma, stream);
      else if constexpr (kPass == conv_mma::kBackwardInput) run_backward_input<T>(g, dy, w, o, mma, stream);
      else run_backward_weight<T>(g, dy, x, o, mma, mma ? c.splits : 0, dev, stream);
    }
    std::vector<T> got(2 * static_cast<size_t>(nout));
    EMBER_CUDA_CHECK(cudaMemcpyAsync(got.data(), out, got.size() * sizeof(T), cudaMemcpyDeviceToHost, stream));
    EMBER_CUDA_CHECK(cudaStreamSynchronize(stream));
    double worst = 0;  // largest |mma - simt| / (tol * max(1, |simt|)); NaN on either side: infinite
    for (int64_t i = 0; i < nout; ++i) {
      const double a = static_cast<float>(got[static_cast<size_t>(i)]);
      const double s = static_cast<float>(got[static_cast<size_t>(nout + i)]);
      const double r = std::fabs(a - s) / (tol * std::max(1.0, std::fabs(s)));
      worst = std::max(worst, std::isnan(r) ? HUGE_VAL : r);
    }
    if (!(worst <= 1.0)) {
      std::fprintf(stderr,
                   "ember: the tensor-core conv1d %s (%s) disagreed with the SIMT kernel on device %d (N %d, C_in %d, "
                   "L %d, C_out %d, k%d, stride %d, padding %d, dilation %d, groups %d: largest difference %g times "
                   "the tolerance); using the SIMT kernel from now on\n",
                   pass_name(kPass), mma_type_name<T>(), dev, c.N, c.C_in, c.L, c.C_out, c.K, c.stride, c.padding,
                   c.dilation, c.groups, worst);
      return false;
    }
  }
  return true;
}

template <class T, int kPass>
bool mma_checked(cudaStream_t stream) {
  static OnceVerdict<64> verdicts;  // per device (one instance per dtype and pass)
  const int dev = current_device();
  return verdicts.get(dev, "the tensor-core conv1d self-check", "using the SIMT kernel",
                      [&] { return mma_check_run<T, kPass>(dev, stream); }, stream_capturing(stream));
}

// The dispatch rule: tensor cores when the dtype has them (f16, bf16; f32 only with
// cuda::allow_tf32()), EMBER_CONV_KERNEL does not say simt, the GEMM is at least 32 rows
// (channels per group), 32 columns and 32 reduction terms deep (below that most of a 64 x 128
// tile would multiply zeros and the SIMT tiles, the 4-row one included, do better), and the
// first-use self-check of this (device, dtype, pass) passed.
template <class T, int kPass>
bool use_mma(int64_t M, int64_t P, int64_t R, cudaStream_t stream) {
  if constexpr (!kMmaType<T>) {
    return false;
  } else {
    if (std::is_same_v<T, float> && !allow_tf32()) return false;
    if (!mma_enabled()) return false;
    if (M < 32 || P < 32 || R < 32) return false;
    return mma_checked<T, kPass>(stream);
  }
}

thread_local const char* t_last_kernel = "none";

}  // namespace

const char* last_conv1d_kernel() { return t_last_kernel; }  // ember/cuda.h

void conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out_overwrite,
                    int64_t stride, int64_t padding, int64_t dilation, int64_t groups) {
  if (out_overwrite.numel() == 0) return;
  const ConvGeom g = make_geom("conv1d", x, w, out_overwrite, stride, padding, dilation, groups);
  DeviceScope scope(out_overwrite);
  EMBER_CUDA_DISPATCH_FLOAT(x.dtype(), "conv1d", T, [&] {
    const bool mma = use_mma<T, conv_mma::kForward>(g.og, g.L_out, static_cast<int64_t>(g.cg) * g.K, scope.stream);
    run_forward<T>(g, static_cast<const T*>(x.data_ptr()), static_cast<const T*>(w.data_ptr()), ptr_or_null<T>(bias),
                   static_cast<T*>(out_overwrite.data_ptr()), mma, scope.stream);
    t_last_kernel = mma ? "mma" : "simt";
  });
}

void conv1d_backward_input(const Tensor& grad_out, const Tensor& w, const Tensor& grad_input_overwrite,
                           int64_t stride, int64_t padding, int64_t dilation, int64_t groups) {
  if (grad_input_overwrite.numel() == 0) return;
  const char* op = "conv1d_backward_input";
  const ConvGeom g = make_geom(op, grad_input_overwrite, w, grad_out, stride, padding, dilation, groups);
  DeviceScope scope(grad_input_overwrite);
  EMBER_CUDA_DISPATCH_FLOAT(w.dtype(), op, T, [&] {
    const bool mma =
        use_mma<T, conv_mma::kBackwardInput>(g.cg, g.L, static_cast<int64_t>(g.og) * g.K, scope.stream);
    run_backward_input<T>(g, static_cast<const T*>(grad_out.data_ptr()), static_cast<const T*>(w.data_ptr()),
                          static_cast<T*>(grad_input_overwrite.data_ptr()), mma, scope.stream);
    t_last_kernel = mma ? "mma" : "simt";
  });
}

void conv1d_backward_weight(const Tensor& grad_out, const Tensor& x, const Tensor& grad_weight_overwrite,
                            int64_t stride, int64_t padding, int64_t dilation, int64_t groups) {
  if (grad_weight_overwrite.numel() == 0) return;
  const char* op = "conv1d_backward_weight";
  const ConvGeom g = make_geom(op, x, grad_weight_overwrite, grad_out, stride, padding, dilation, groups);
  DeviceScope scope(grad_weight_overwrite);
  EMBER_CUDA_DISPATCH_FLOAT(x.dtype(), op, T, [&] {
    const bool mma = use_mma<T, conv_mma::kBackwardWeight>(g.og, static_cast<int64_t>(g.cg) * g.K,
                                                           static_cast<int64_t>(g.N) * g.L_out, scope.stream);
    run_backward_weight<T>(g, static_cast<const T*>(grad_out.data_ptr()), static_cast<const T*>(x.data_ptr()),
                           static_cast<T*>(grad_weight_overwrite.data_ptr()), mma, 0,
                           grad_weight_overwrite.device().index, scope.stream);
    t_last_kernel = mma ? "mma" : "simt";
  });
}

void register_conv_kernels() {
  prim::define<prim::conv1d_forward>(prim::Backend::cuda, &conv1d_forward);
  prim::define<prim::conv1d_backward_input>(prim::Backend::cuda, &conv1d_backward_input);
  prim::define<prim::conv1d_backward_weight>(prim::Backend::cuda, &conv1d_backward_weight);
}

}  // namespace ember::cuda
