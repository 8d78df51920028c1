// Layer norm on CUDA (contracts in prim/primitives.h, mirroring src/cpu/norm.cpp).
//
// Shapes: x, y, dy, dx (M, N) contiguous; weight, bias, dw, db (N); mean, rstd (M).
// Rows: a row of N <= 1024 elements goes to one warp (8 rows per 256-thread block, sums by
// warp shuffles only); a longer row gets a whole block (warp shuffles, then one partial per
// warp through shared memory). Rows are grid-stride, so any M fits the capped grid.
// Forward reads a row three times (sum -> mean, squared deviations -> rstd, output): the
// second and third reads hit L1/L2, and the two-pass variance stays accurate when
// |mean| >> std, where a one-pass E[x^2] - E[x]^2 cancels.
// Backward, input: one more row pass computes sum(g) and sum(g * xhat) (g = dy * weight), a
// last one writes dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
// Backward, weight and bias: column sums over all M rows. A block is 32 columns x 8 row lanes
// (a warp reads 32 neighbouring elements of one row: coalesced); rows are cut into chunks over
// blockIdx.y, each chunk writes one partial row to a scratch buffer, and a second kernel adds
// the chunks' partials column by column (the same two-pass shape as sum_cols in reduce.cu).
// Accumulators: float for f16/bf16/f32 (halves are loaded into float and stored rounded),
// double for f64; mean and rstd are stored in that accumulator type.
#include <algorithm>

#include "common.cuh"
#include "cuda/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"
#include "ember/core/storage.h"
#include "row_reduce.cuh"

namespace ember::cuda {
namespace {

constexpr int64_t kWarpRowMax = 1024;            // longest row a single warp normalises
constexpr int kRowsPerBlock = kThreads / kWarp;  // warp-per-row layout
constexpr int kColRows = 8;                      // row lanes of a parameter-gradient block
constexpr int64_t kTargetBlocks = 1024;          // enough blocks to fill an H100 (132 SMs) a few times
constexpr int64_t kMinChunkRows = 64;            // >= 8 rows per thread in a parameter-gradient chunk

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// --- row sums ---------------------------------------------------------------------------------
// The combine of the row all-reduces (row_reduce.cuh). Its block step folds the warp sums from
// warp 0's instead of from A(0): the same value bit for bit, as a sum that starts at +0 never
// becomes -0 (so 0 + s == s), and a NaN stays NaN.
struct SumFn {
  template <class A>
  __device__ __forceinline__ A operator()(A a, A b) const { return a + b; }
};

unsigned row_grid(int64_t rows, bool block_per_row) { return grid_for(rows, block_per_row ? 1 : kRowsPerBlock); }

// --- kernels ------------------------------------------------------------------------------------

// y row = (x row - mean) * rstd * w + b; w, b may be null (1 and 0).
template <class T, bool kBlockPerRow>
__global__ void layer_norm_forward_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                          T* __restrict__ y, acc_t<T>* __restrict__ mean,
                                          acc_t<T>* __restrict__ rstd, int64_t M, int64_t N, acc_t<T> eps) {
  using A = acc_t<T>;
  using G = RowGroup<kBlockPerRow>;
  __shared__ A scratch[kWarp];
  const A inv_n = A(1) / static_cast<A>(N);
  for (int64_t m = G::first_row(); m < M; m += G::row_step()) {
    const T* xr = x + m * N;  // (N)
    T* yr = y + m * N;        // (N)
    A s = A(0);
    for (int64_t j = G::lane(); j < N; j += G::width()) s += to_acc(xr[j]);
    const A mu = G::allreduce(s, SumFn{}, scratch) * inv_n;
    A ss = A(0);
    for (int64_t j = G::lane(); j < N; j += G::width()) {
      const A d = to_acc(xr[j]) - mu;
      ss += d * d;
    }
    const A rs = A(1) / sqrt(G::allreduce(ss, SumFn{}, scratch) * inv_n + eps);
    if (G::lane() == 0) {
      mean[m] = mu;
      rstd[m] = rs;
    }
    for (int64_t j = G::lane(); j < N; j += G::width()) {
      A v = (to_acc(xr[j]) - mu) * rs;
      if (w) v *= to_acc(w[j]);
      if (b) v += to_acc(b[j]);
      yr[j] = from_acc<T>(v);
    }
  }
}

// dx row = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w (w null: 1).
template <class T, bool kBlockPerRow>
__global__ void layer_norm_backward_input_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                                 const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ rstd,
                                                 const T* __restrict__ w, T* __restrict__ dx, int64_t M, int64_t N) {
  using A = acc_t<T>;
  using G = RowGroup<kBlockPerRow>;
  __shared__ A scratch[kWarp];
  const A inv_n = A(1) / static_cast<A>(N);
  for (int64_t m = G::first_row(); m < M; m += G::row_step()) {
    const T* dyr = dy + m * N;  // (N)
    const T* xr = x + m * N;    // (N)
    T* dxr = dx + m * N;        // (N)
    const A mu = mean[m], rs = rstd[m];
    A sum_g = A(0), sum_gx = A(0);
    for (int64_t j = G::lane(); j < N; j += G::width()) {
      const A g = w ? to_acc(dyr[j]) * to_acc(w[j]) : to_acc(dyr[j]);
      sum_g += g;
      sum_gx += g * (to_acc(xr[j]) - mu) * rs;
    }
    const A mg = G::allreduce(sum_g, SumFn{}, scratch) * inv_n;
    const A mgx = G::allreduce(sum_gx, SumFn{}, scratch) * inv_n;
    for (int64_t j = G::lane(); j < N; j += G::width()) {
      const A g = w ? to_acc(dyr[j]) * to_acc(w[j]) : to_acc(dyr[j]);
      dxr[j] = from_acc<T>(rs * (g - mg - (to_acc(xr[j]) - mu) * rs * mgx));
    }
  }
}

// part_w[chunk, col] = sum of dy * xhat and part_b[chunk, col] = sum of dy over the rows of
// chunk blockIdx.y (rows_per_chunk rows each); either output may be null. Block: (kWarp
// columns, kColRows row lanes); column tiles are grid-stride over blockIdx.x.
template <class T>
__global__ void layer_norm_param_partial_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                                const acc_t<T>* __restrict__ mean,
                                                const acc_t<T>* __restrict__ rstd, acc_t<T>* __restrict__ part_w,
                                                acc_t<T>* __restrict__ part_b, int64_t M, int64_t N,
                                                int64_t rows_per_chunk) {
  using A = acc_t<T>;
  __shared__ A sw[kColRows][kWarp + 1];
  __shared__ A sb[kColRows][kWarp + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t chunk = blockIdx.y;
  const int64_t r0 = chunk * rows_per_chunk, r1 = min(M, r0 + rows_per_chunk);
  const int64_t tiles = (N + kWarp - 1) / kWarp;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {  // the same trip count for the whole block
    const int64_t col = tile * kWarp + tx;
    A aw = A(0), ab = A(0);
    if (col < N)
      for (int64_t r = r0 + ty; r < r1; r += kColRows) {
        const A g = to_acc(dy[r * N + col]);
        aw += g * (to_acc(x[r * N + col]) - mean[r]) * rstd[r];
        ab += g;
      }
    sw[ty][tx] = aw;
    sb[ty][tx] = ab;
    __syncthreads();
    if (ty == 0 && col < N) {
      for (int k = 1; k < kColRows; ++k) {
        aw += sw[k][tx];
        ab += sb[k][tx];
      }
      if (part_w) part_w[chunk * N + col] = aw;
      if (part_b) part_b[chunk * N + col] = ab;
    }
    __syncthreads();
  }
}

// dw[col] = sum over chunks of part_w[chunk, col] (likewise db); chunks may be 0 (M = 0: zeros).
template <class T>
__global__ void layer_norm_param_finish_kernel(const acc_t<T>* __restrict__ part_w,
                                               const acc_t<T>* __restrict__ part_b, T* __restrict__ dw,
                                               T* __restrict__ db, int64_t chunks, int64_t N) {
  using A = acc_t<T>;
  for (int64_t col = grid_start(); col < N; col += grid_step()) {
    A aw = A(0), ab = A(0);
    for (int64_t c = 0; c < chunks; ++c) {
      if (dw) aw += part_w[c * N + col];
      if (db) ab += part_b[c * N + col];
    }
    if (dw) dw[col] = from_acc<T>(aw);
    if (db) db[col] = from_acc<T>(ab);
  }
}

// --- host launchers -----------------------------------------------------------------------------


template <class T>
void forward_typed(cudaStream_t stream, const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                   const Tensor& out, const Tensor& mean, const Tensor& rstd, int64_t M, int64_t N) {
  using A = acc_t<T>;
  const T* px = static_cast<const T*>(x.data_ptr());
  const T* pw = ptr_or_null<T>(weight);
  const T* pb = ptr_or_null<T>(bias);
  T* py = static_cast<T*>(out.data_ptr());
  A* pm = static_cast<A*>(mean.data_ptr());
  A* pr = static_cast<A*>(rstd.data_ptr());
  const bool block_per_row = N > kWarpRowMax;
  const unsigned grid = row_grid(M, block_per_row);
  if (block_per_row)
    layer_norm_forward_kernel<T, true><<<grid, kThreads, 0, stream>>>(px, pw, pb, py, pm, pr, M, N, static_cast<A>(eps));
  else
    layer_norm_forward_kernel<T, false><<<grid, kThreads, 0, stream>>>(px, pw, pb, py, pm, pr, M, N, static_cast<A>(eps));
  EMBER_CUDA_LAUNCH_CHECK();
}

template <class T>
void backward_typed(cudaStream_t stream, const Tensor& grad_out, const Tensor& x, const Tensor& mean,
                    const Tensor& rstd, const Tensor& weight, const Tensor& grad_x, const Tensor& grad_weight,
                    const Tensor& grad_bias, int64_t M, int64_t N) {
  using A = acc_t<T>;
  const T* pdy = static_cast<const T*>(grad_out.data_ptr());
  const T* px = static_cast<const T*>(x.data_ptr());
  const A* pm = static_cast<const A*>(mean.data_ptr());
  const A* pr = static_cast<const A*>(rstd.data_ptr());
  if (grad_x.defined() && M > 0) {
    const T* pw = ptr_or_null<T>(weight);
    T* pdx = static_cast<T*>(grad_x.data_ptr());
    const bool block_per_row = N > kWarpRowMax;
    const unsigned grid = row_grid(M, block_per_row);
    if (block_per_row)
      layer_norm_backward_input_kernel<T, true><<<grid, kThreads, 0, stream>>>(pdy, px, pm, pr, pw, pdx, M, N);
    else
      layer_norm_backward_input_kernel<T, false><<<grid, kThreads, 0, stream>>>(pdy, px, pm, pr, pw, pdx, M, N);
    EMBER_CUDA_LAUNCH_CHECK();
  }
  if (!grad_weight.defined() && !grad_bias.defined()) return;
  T* pdw = mut_ptr_or_null<T>(grad_weight);
  T* pdb = mut_ptr_or_null<T>(grad_bias);
  const int64_t tiles = ceil_div(N, kWarp);
  int64_t chunks = 0, rows_per_chunk = 0;
  if (M > 0) {
    chunks = std::max<int64_t>(1, std::min(ceil_div(kTargetBlocks, tiles), ceil_div(M, kMinChunkRows)));
    chunks = std::min<int64_t>(chunks, 65535);  // gridDim.y limit
    rows_per_chunk = ceil_div(M, chunks);
    chunks = ceil_div(M, rows_per_chunk);  // no empty chunk
  }
  // Scratch from the caching allocator: freed at scope exit, reused only in stream order.
  const size_t part_bytes = static_cast<size_t>(std::max<int64_t>(chunks, 1) * N) * sizeof(A);
  Storage scratch_w(pdw ? part_bytes : 0, grad_out.device());
  Storage scratch_b(pdb ? part_bytes : 0, grad_out.device());
  A* part_w = pdw ? static_cast<A*>(scratch_w.data()) : nullptr;  // (chunks, N)
  A* part_b = pdb ? static_cast<A*>(scratch_b.data()) : nullptr;  // (chunks, N)
  if (chunks > 0) {
    const dim3 block(kWarp, kColRows);
    const dim3 grid(grid_for(tiles, 1), static_cast<unsigned>(chunks));
    layer_norm_param_partial_kernel<T><<<grid, block, 0, stream>>>(pdy, px, pm, pr, part_w, part_b, M, N,
                                                                   rows_per_chunk);
    EMBER_CUDA_LAUNCH_CHECK();
  }
  layer_norm_param_finish_kernel<T><<<grid_for(N, kThreads), kThreads, 0, stream>>>(part_w, part_b, pdw, pdb, chunks, N);
  EMBER_CUDA_LAUNCH_CHECK();
}

}  // namespace

void layer_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, const Tensor& out,
                        const Tensor& mean, const Tensor& rstd, int64_t M, int64_t N) {
  if (M == 0) return;
  DeviceScope scope(out);
  EMBER_CUDA_DISPATCH_FLOAT(x.dtype(), "layer_norm", T,
                            [&] { forward_typed<T>(scope.stream, x, weight, bias, eps, out, mean, rstd, M, N); });
}

void layer_norm_backward(const Tensor& grad_out, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                         const Tensor& weight, const Tensor& grad_x, const Tensor& grad_weight,
                         const Tensor& grad_bias, int64_t M, int64_t N) {
  DeviceScope scope(x);
  EMBER_CUDA_DISPATCH_FLOAT(x.dtype(), "layer_norm_backward", T, [&] {
    backward_typed<T>(scope.stream, grad_out, x, mean, rstd, weight, grad_x, grad_weight, grad_bias, M, N);
  });
}

void register_norm_kernels() {
  prim::define<prim::layer_norm_forward>(prim::Backend::cuda, &layer_norm_forward);
  prim::define<prim::layer_norm_backward>(prim::Backend::cuda, &layer_norm_backward);
}

}  // namespace ember::cuda
