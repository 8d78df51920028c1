// Row and column reductions, arg-max/min and softmax on CUDA (contracts of
// prim/primitives.h, mirroring src/cpu/reduce.cpp).
//
// Shapes: reduce_rows, arg_reduce_rows, softmax_rows take x contiguous (M, R) and reduce each
// row; sum_cols takes x contiguous (R, M) and sums each column into out (M).
// Rows: a row of R <= 1024 elements goes to one warp (8 rows per 256-thread block, reductions
// by warp shuffles only); a longer row gets a whole block (warp shuffles, then one partial per
// warp through shared memory). When long rows are too few to fill the GPU (M = 1 is every
// full reduction), reduce_rows splits each row into chunks reduced by separate blocks into a
// scratch buffer, and a second warp-per-row pass combines the chunks.
// Columns: a block is 32 columns x 8 row lanes; each thread walks its column (coalesced: a
// warp reads 32 neighbouring elements of one row), the 8 lanes meet in shared memory. Few
// columns and many rows: the rows are split into chunks over blockIdx.y and combined by a
// second pass, as for rows.
// Accumulators: double for every floating input (f16, bf16, f32, f64), int64 for integers, in
// rows and columns alike. A thread adds its elements one after another: R / 256 of them in an
// unsplit long row (thousands when many long rows fill the GPU without a split), R / 8 in an
// unsplit column sum, 32 chunk partials per lane in a split row's second pass. In float such a
// chain drifts with its length (a constant input repeats the same rounding error in every
// thread, so nothing cancels in the tree); in double it stays below 1e-12 relative for any
// length ember can hold, and the one rounding to the output type dominates, as on the CPU
// (src/cpu/reduce.cpp). The cost is small where it matters: the loops are bound by memory
// bandwidth, and sm_90 adds doubles at half the float rate. max/min/prod use the same
// accumulator (max/min are exact either way; a float prod gains range and digits).
#include <algorithm>

#include "common.cuh"
#include "cuda/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"
#include "ember/core/storage.h"
#include "row_reduce.cuh"

namespace ember::cuda {
namespace {

constexpr int64_t kWarpRowMax = 1024;             // longest row a single warp reduces
constexpr int kRowsPerBlock = kThreads / kWarp;   // warp-per-row layout
constexpr int64_t kTargetBlocks = 1024;           // enough blocks to fill an H100 (132 SMs) a few times
constexpr int64_t kMinRowChunk = 16 * kThreads;   // a split row chunk gives each thread >= 16 elements
constexpr int kColRows = 8;                       // row lanes of a sum_cols block
constexpr int64_t kMinColChunk = 32 * kColRows;   // >= 32 rows per thread in a split column sum

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// --- accumulators -------------------------------------------------------------------------------
// The type reduce_rows and sum_cols accumulate in (see the file comment).
template <class T> struct ReduceAccOf { using type = T; };
template <> struct ReduceAccOf<float> { using type = double; };
template <> struct ReduceAccOf<__half> { using type = double; };
template <> struct ReduceAccOf<__nv_bfloat16> { using type = double; };
template <> struct ReduceAccOf<int32_t> { using type = int64_t; };
template <class T> using reduce_acc_t = typename ReduceAccOf<T>::type;

template <class A>
EMBER_HD bool is_nan_value(A v) {
  if constexpr (std::is_floating_point_v<A>) return v != v;
  else return false;
}

template <class A>
EMBER_HD A reduce_identity(ReduceOp op) {
  constexpr bool kFloat = std::is_floating_point_v<A>;
  switch (op) {
    case ReduceOp::sum: return A(0);
    case ReduceOp::prod: return A(1);
    case ReduceOp::max: return kFloat ? -std::numeric_limits<A>::infinity() : std::numeric_limits<A>::lowest();
    case ReduceOp::min: return kFloat ? std::numeric_limits<A>::infinity() : std::numeric_limits<A>::max();
  }
  return A(0);
}

// max/min propagate NaN: a NaN operand wins.
template <class A>
EMBER_HD A reduce_combine(ReduceOp op, A a, A b) {
  switch (op) {
    case ReduceOp::sum: return a + b;
    case ReduceOp::prod: return a * b;
    case ReduceOp::max: return (is_nan_value(a) || a > b) ? a : b;
    case ReduceOp::min: return (is_nan_value(a) || a < b) ? a : b;
  }
  return a;
}

struct ReduceFn {
  ReduceOp op;
  template <class A>
  EMBER_HD A operator()(A a, A b) const { return reduce_combine(op, a, b); }
};

// The winner of an arg-reduction so far; i < 0: no element seen yet.
template <class A>
struct ArgBest {
  A v;
  int64_t i;
};
// Symmetric in (a, b), so any reduction order gives the CPU's answer: the first NaN if there
// is one, else the first index of the extreme value.
struct ArgPickFn {
  bool is_max;
  template <class A>
  EMBER_HD ArgBest<A> operator()(const ArgBest<A>& a, const ArgBest<A>& b) const {
    if (a.i < 0) return b;
    if (b.i < 0) return a;
    const bool a_nan = is_nan_value(a.v), b_nan = is_nan_value(b.v);
    if (a_nan || b_nan) {
      if (a_nan && b_nan) return a.i < b.i ? a : b;
      return a_nan ? a : b;
    }
    if (a.v == b.v) return a.i < b.i ? a : b;
    return (is_max ? a.v > b.v : a.v < b.v) ? a : b;
  }
};

// Online softmax state over part of a row: max m and sum of exp(x - m).
template <class A>
struct SoftmaxState {
  A m;
  A s;
};
template <class A>
EMBER_HD SoftmaxState<A> softmax_push(SoftmaxState<A> st, A v) {
  if (v > st.m) {
    st.s = st.s * std::exp(st.m - v) + A(1);  // rescale the old sum to the new max
    st.m = v;
  } else if (!(v == -std::numeric_limits<A>::infinity())) {  // -inf adds 0; skip -inf - -inf = NaN
    st.s += std::exp(v - st.m);  // a NaN v makes s NaN, which propagates to the whole row
  }
  return st;
}
struct SoftmaxMergeFn {
  template <class A>
  EMBER_HD SoftmaxState<A> operator()(const SoftmaxState<A>& a, const SoftmaxState<A>& b) const {
    const A m = a.m > b.m ? a.m : b.m;
    if (m == -std::numeric_limits<A>::infinity()) return {m, a.s + b.s};
    return {m, a.s * std::exp(a.m - m) + b.s * std::exp(b.m - m)};
  }
};

// --- shuffles of the struct states (row_reduce.cuh's warp_allreduce finds them by ADL) --------
template <class A>
__device__ __forceinline__ ArgBest<A> shfl_xor(ArgBest<A> v, int mask) {
  return {cuda::shfl_xor(v.v, mask), cuda::shfl_xor(v.i, mask)};
}
template <class A>
__device__ __forceinline__ SoftmaxState<A> shfl_xor(SoftmaxState<A> v, int mask) {
  return {cuda::shfl_xor(v.m, mask), cuda::shfl_xor(v.s, mask)};
}

// Grid for `rows` rows in either layout.
unsigned row_grid(int64_t rows, bool block_per_row) { return grid_for(rows, block_per_row ? 1 : kRowsPerBlock); }

// --- kernels ------------------------------------------------------------------------------------

// out[s] = reduction of segment s, s in [0, segments): segment s is chunk (s % chunks) of row
// (s / chunks) of the (segments / chunks, R) matrix x, i.e. elements [c * len, min(R, c * len + len)).
// Unsplit rows have chunks = 1, len = R.
template <class In, class Out, bool kBlockPerRow>
__global__ void reduce_rows_kernel(const In* x, Out* out, int64_t segments, int64_t R, int64_t chunks,
                                   int64_t len, ReduceOp op) {
  using A = reduce_acc_t<In>;
  using G = RowGroup<kBlockPerRow>;
  __shared__ A scratch[kWarp];
  const ReduceFn combine{op};
  for (int64_t s = G::first_row(); s < segments; s += G::row_step()) {
    const In* row = x + (s / chunks) * R;
    const int64_t begin = (s % chunks) * len, end = min(R, begin + len);
    A acc = reduce_identity<A>(op);
    row_for_each(row, begin, end, G::lane(), G::width(), [&](In v) { acc = combine(acc, convert<A>(v)); });
    acc = G::allreduce(acc, combine, scratch);
    if (G::lane() == 0) out[s] = convert<Out>(acc);
  }
}

// out[chunk * M + c] = sum of x[r, c] over the rows r of `chunk` (rows_per_chunk rows each);
// gridDim.y is the number of chunks. Block: (kWarp columns, kColRows row lanes).
template <class In, class A, class Out>
__global__ void sum_cols_kernel(const In* x, Out* out, int64_t R, int64_t M, int64_t rows_per_chunk) {
  __shared__ A partial[kColRows][kWarp + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t chunk = blockIdx.y;
  const int64_t r0 = chunk * rows_per_chunk, r1 = min(R, r0 + rows_per_chunk);
  const int64_t tiles = (M + kWarp - 1) / kWarp;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t col = tile * kWarp + tx;
    A acc = A(0);
    if (col < M)
      for (int64_t r = r0 + ty; r < r1; r += kColRows) acc += convert<A>(x[r * M + col]);
    partial[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && col < M) {
      for (int k = 1; k < kColRows; ++k) acc += partial[k][tx];
      out[chunk * M + col] = convert<Out>(acc);
    }
    __syncthreads();
  }
}

// values[m], indices[m] = the extreme element of row m and its first index.
template <class T, bool kBlockPerRow>
__global__ void arg_reduce_rows_kernel(const T* x, T* values, int64_t* indices, int64_t M, int64_t R, bool is_max) {
  using A = acc_t<T>;  // exact for every T: halves widen to float, integers stay themselves
  using G = RowGroup<kBlockPerRow>;
  __shared__ ArgBest<A> scratch[kWarp];
  const ArgPickFn pick{is_max};
  for (int64_t m = G::first_row(); m < M; m += G::row_step()) {
    const T* row = x + m * R;
    ArgBest<A> best{A(0), -1};
    for (int64_t i = G::lane(); i < R; i += G::width()) best = pick(best, ArgBest<A>{to_acc(row[i]), i});
    best = G::allreduce(best, pick, scratch);
    if (G::lane() == 0) {
      values[m] = from_acc<T>(best.v);
      indices[m] = best.i;
    }
  }
}

// out row = softmax (or log-softmax) of x row: one pass for the max and the sum of exponentials
// (online, rescaling the sum when the max grows), one pass writing the outputs.
template <class T, bool kBlockPerRow>
__global__ void softmax_rows_kernel(const T* x, T* out, int64_t M, int64_t R, bool log_softmax) {
  using A = acc_t<T>;
  using G = RowGroup<kBlockPerRow>;
  __shared__ SoftmaxState<A> scratch[kWarp];
  const SoftmaxMergeFn merge;
  for (int64_t m = G::first_row(); m < M; m += G::row_step()) {
    const T* row = x + m * R;
    T* orow = out + m * R;
    SoftmaxState<A> st{-std::numeric_limits<A>::infinity(), A(0)};
    row_for_each(row, int64_t{0}, R, G::lane(), G::width(), [&](T v) { st = softmax_push(st, to_acc(v)); });
    st = G::allreduce(st, merge, scratch);
    const A log_sum = std::log(st.s);
    row_map(row, orow, R, G::lane(), G::width(), [&](T v) {
      const A shifted = to_acc(v) - st.m;
      return from_acc<T>(log_softmax ? shifted - log_sum : std::exp(shifted) / st.s);
    });
  }
}

// --- host launchers -----------------------------------------------------------------------------

template <class T>
void reduce_rows_typed(cudaStream_t stream, ReduceOp op, const Tensor& x, const Tensor& out, int64_t M, int64_t R) {
  using A = reduce_acc_t<T>;
  const T* px = static_cast<const T*>(x.data_ptr());
  T* po = static_cast<T*>(out.data_ptr());
  if (R <= kWarpRowMax) {
    reduce_rows_kernel<T, T, false><<<row_grid(M, false), kThreads, 0, stream>>>(px, po, M, R, 1, R, op);
    EMBER_CUDA_LAUNCH_CHECK();
    return;
  }
  int64_t chunks = std::max<int64_t>(1, std::min(ceil_div(kTargetBlocks, M), ceil_div(R, kMinRowChunk)));
  if (chunks == 1) {
    reduce_rows_kernel<T, T, true><<<row_grid(M, true), kThreads, 0, stream>>>(px, po, M, R, 1, R, op);
    EMBER_CUDA_LAUNCH_CHECK();
    return;
  }
  const int64_t len = ceil_div(R, chunks);
  chunks = ceil_div(R, len);  // no empty chunk
  // Scratch from the caching allocator: freed at scope exit, reused only in stream order.
  Storage scratch(static_cast<size_t>(M * chunks) * sizeof(A), out.device());
  A* partial = static_cast<A*>(scratch.data());  // (M, chunks)
  reduce_rows_kernel<T, A, true><<<row_grid(M * chunks, true), kThreads, 0, stream>>>(px, partial, M * chunks, R,
                                                                                        chunks, len, op);
  EMBER_CUDA_LAUNCH_CHECK();
  reduce_rows_kernel<A, T, false><<<row_grid(M, false), kThreads, 0, stream>>>(partial, po, M, chunks, 1, chunks, op);
  EMBER_CUDA_LAUNCH_CHECK();
}

template <class T>
void sum_cols_typed(cudaStream_t stream, const Tensor& x, const Tensor& out, int64_t R, int64_t M) {
  using A = reduce_acc_t<T>;
  const T* px = static_cast<const T*>(x.data_ptr());
  T* po = static_cast<T*>(out.data_ptr());
  const dim3 block(kWarp, kColRows);
  const int64_t tiles = ceil_div(M, kWarp);
  const unsigned grid_x = grid_for(tiles, 1);
  int64_t chunks = std::max<int64_t>(1, std::min(ceil_div(kTargetBlocks, tiles), ceil_div(R, kMinColChunk)));
  if (chunks == 1) {
    sum_cols_kernel<T, A, T><<<dim3(grid_x, 1), block, 0, stream>>>(px, po, R, M, std::max<int64_t>(R, 1));
    EMBER_CUDA_LAUNCH_CHECK();
    return;
  }
  const int64_t rows = ceil_div(R, chunks);
  chunks = ceil_div(R, rows);
  Storage scratch(static_cast<size_t>(chunks * M) * sizeof(A), out.device());
  A* partial = static_cast<A*>(scratch.data());  // (chunks, M)
  sum_cols_kernel<T, A, A><<<dim3(grid_x, static_cast<unsigned>(chunks)), block, 0, stream>>>(px, partial, R, M, rows);
  EMBER_CUDA_LAUNCH_CHECK();
  sum_cols_kernel<A, A, T><<<dim3(grid_x, 1), block, 0, stream>>>(partial, po, chunks, M, chunks);
  EMBER_CUDA_LAUNCH_CHECK();
}

}  // namespace

void reduce_rows(ReduceOp op, const Tensor& x, const Tensor& out, int64_t M, int64_t R) {
  if (M == 0) return;
  DeviceScope scope(out);
  EMBER_CUDA_DISPATCH_NUMERIC(x.dtype(), "reduce", T, [&] { reduce_rows_typed<T>(scope.stream, op, x, out, M, R); });
}

void sum_cols(const Tensor& x, const Tensor& out, int64_t R, int64_t M) {
  if (M == 0) return;
  DeviceScope scope(out);
  EMBER_CUDA_DISPATCH_NUMERIC(x.dtype(), "sum", T, [&] { sum_cols_typed<T>(scope.stream, x, out, R, M); });
}

void arg_reduce_rows(bool is_max, const Tensor& x, const Tensor& values, const Tensor& indices, int64_t M,
                     int64_t R) {
  if (M == 0) return;
  DeviceScope scope(values);
  const bool block_per_row = R > kWarpRowMax;
  EMBER_CUDA_DISPATCH_NUMERIC(x.dtype(), is_max ? "max" : "min", T, [&] {
    const T* px = static_cast<const T*>(x.data_ptr());
    T* pv = static_cast<T*>(values.data_ptr());
    int64_t* pi = static_cast<int64_t*>(indices.data_ptr());
    const unsigned grid = row_grid(M, block_per_row);
    if (block_per_row) arg_reduce_rows_kernel<T, true><<<grid, kThreads, 0, scope.stream>>>(px, pv, pi, M, R, is_max);
    else arg_reduce_rows_kernel<T, false><<<grid, kThreads, 0, scope.stream>>>(px, pv, pi, M, R, is_max);
    EMBER_CUDA_LAUNCH_CHECK();
  });
}

void softmax_rows(bool log, const Tensor& x, const Tensor& out, int64_t M, int64_t R) {
  if (M == 0 || R == 0) return;
  DeviceScope scope(out);
  const bool block_per_row = R > kWarpRowMax;
  EMBER_CUDA_DISPATCH_FLOAT(x.dtype(), log ? "log_softmax" : "softmax", T, [&] {
    const T* px = static_cast<const T*>(x.data_ptr());
    T* po = static_cast<T*>(out.data_ptr());
    const unsigned grid = row_grid(M, block_per_row);
    if (block_per_row) softmax_rows_kernel<T, true><<<grid, kThreads, 0, scope.stream>>>(px, po, M, R, log);
    else softmax_rows_kernel<T, false><<<grid, kThreads, 0, scope.stream>>>(px, po, M, R, log);
    EMBER_CUDA_LAUNCH_CHECK();
  });
}

void register_reduce_kernels() {
  prim::define<prim::reduce_rows>(prim::Backend::cuda, &reduce_rows);
  prim::define<prim::sum_cols>(prim::Backend::cuda, &sum_cols);
  prim::define<prim::arg_reduce_rows>(prim::Backend::cuda, &arg_reduce_rows);
  prim::define<prim::softmax_rows>(prim::Backend::cuda, &softmax_rows);
}

}  // namespace ember::cuda
