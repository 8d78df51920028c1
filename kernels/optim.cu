// Fused multi-tensor optimizer updates (SGD, Adam/AdamW) and gradient clipping on CUDA
// (contracts: prim/primitives.h and prim/optim_records.h; CPU twin: src/cpu/optim.cpp, whose
// arithmetic is written the same way line for line).
//
// Multi-tensor apply: one launch updates many tensors. The host packs a table of per-tensor
// records (pointers, sizes, per-tensor hyper-parameters) and the first chunk of each tensor;
// every block takes one chunk of kChunk elements of one tensor, finding its tensor by a
// binary search over the chunk starts. The table travels as a __grid_constant__ kernel
// parameter (read in place from the constant bank, never copied to local memory), so a launch
// needs no device allocation, no host-to-device copy and no synchronisation. Since CUDA 12.1 a
// kernel may take 32764 bytes of parameters; a table uses 24 KiB, which holds about 200 Adam
// tensors, 300 SGD tensors or 1000 gradients. Longer lists take one launch per full table.
//
// Arithmetic: float for f32/f16/bf16 parameters (state f32), double for f64. f16/bf16 are
// loaded into float and stored rounded to nearest even.
//
// GradScaler's unscale_: one pass multiplies every gradient by 1/scale and raises a found-inf
// flag in device memory.
//
// clip_grad_norm: pass 1, one block per chunk writes |g|^p summed (or max |g|) over its chunk
// into a scratch array; pass 2, one block reduces the scratch array, writes the norm and the
// clip factor min(1, max_norm / (norm + 1e-6)) to device memory; pass 3 multiplies every
// gradient by that factor. Nothing waits on the host.
#include <cmath>

#include "common.cuh"
#include "cuda/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"
#include "prim/update_math.h"
#include "ember/core/storage.h"

namespace ember::cuda {
namespace {

using prim::AdamArgs;
using prim::GradArgs;
using prim::GradBucket;
using prim::SGDArgs;

constexpr int kOptThreads = 512;
constexpr int64_t kChunk = 65536;  // elements per block: 128 per thread
constexpr size_t kTableBytes = 24 * 1024;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The per-launch table: n records, chunk_begin[t] = first chunk (block) of tensor t.
template <class Rec>
struct Table {
  static constexpr int kCap = static_cast<int>((kTableBytes - 16) / (sizeof(Rec) + sizeof(int64_t)));
  int n;
  int64_t chunk_begin[kCap + 1];
  Rec rec[kCap];
};
static_assert(sizeof(Table<AdamArgs>) <= 30 * 1024, "kernel parameters are limited to 32764 bytes");
static_assert(sizeof(Table<SGDArgs>) <= 30 * 1024, "kernel parameters are limited to 32764 bytes");
static_assert(sizeof(Table<GradArgs>) <= 30 * 1024, "kernel parameters are limited to 32764 bytes");

// The tensor whose chunks contain `chunk`: the last t with chunk_begin[t] <= chunk. Every
// thread of a block searches the same entries (uniform constant-bank reads).
template <class Rec>
__device__ __forceinline__ int find_tensor(const Table<Rec>& tab, int64_t chunk) {
  int lo = 0, hi = tab.n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (tab.chunk_begin[mid] <= chunk) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// This block's element range [begin, end) of tensor t.
template <class Rec>
__device__ __forceinline__ void chunk_range(const Table<Rec>& tab, int& t, int64_t& begin, int64_t& end) {
  const int64_t chunk = blockIdx.x;
  t = find_tensor(tab, chunk);
  begin = (chunk - tab.chunk_begin[t]) * kChunk;
  const int64_t stop = begin + kChunk;
  end = tab.rec[t].numel < stop ? tab.rec[t].numel : stop;
}

template <class A>
__device__ __forceinline__ A dev_pow(A x, A y) {
  if constexpr (std::is_same_v<A, double>) return ::pow(x, y);
  else return ::powf(x, y);
}

// Packs records into tables and calls launch(table, chunks) once per full table. Empty
// tensors take no chunk.
template <class Rec, class Launch>
void launch_tables(const std::vector<Rec>& recs, Launch&& launch) {
  Table<Rec> tab;
  tab.n = 0;
  int64_t chunks = 0;
  auto flush = [&] {
    if (tab.n == 0) return;
    tab.chunk_begin[tab.n] = chunks;
    EMBER_CHECK(chunks <= 0x7fffffff, "optim", "one launch would need ", chunks, " blocks");
    launch(tab, chunks);
    tab.n = 0;
    chunks = 0;
  };
  for (const Rec& r : recs) {
    if (r.numel <= 0) continue;
    if (tab.n == Table<Rec>::kCap) flush();
    tab.chunk_begin[tab.n] = chunks;
    tab.rec[tab.n++] = r;
    chunks += ceil_div(r.numel, kChunk);
  }
  flush();
}

// --- SGD ------------------------------------------------------------------------------------------
template <class T>
__global__ void __launch_bounds__(kOptThreads) sgd_kernel(const __grid_constant__ Table<SGDArgs> tab) {
  using A = acc_t<T>;
  int t;
  int64_t begin, end;
  chunk_range(tab, t, begin, end);
  const SGDArgs& a = tab.rec[t];
  T* p = static_cast<T*>(a.param);
  const T* g = static_cast<const T*>(a.grad);
  A* buf = static_cast<A*>(a.momentum_buffer);
  if (a.skip != nullptr && *a.skip != 0.0f) return;  // a captured step the GradScaler skips
  const A lr = A(a.hyper ? a.hyper[0] : a.lr), wd = A(a.weight_decay), mom = A(a.momentum), damp = A(1.0 - a.dampening);
  for (int64_t i = begin + threadIdx.x; i < end; i += kOptThreads)
    p[i] = from_acc<T>(optim_math::sgd_update(to_acc(p[i]), to_acc(g[i]), buf ? buf + i : nullptr, a.first,
                                              a.nesterov, lr, wd, mom, damp));
}

// --- Adam / AdamW ---------------------------------------------------------------------------------
template <class T>
__global__ void __launch_bounds__(kOptThreads) adam_kernel(const __grid_constant__ Table<AdamArgs> tab, int decoupled) {
  using A = acc_t<T>;
  int t;
  int64_t begin, end;
  chunk_range(tab, t, begin, end);
  const AdamArgs& a = tab.rec[t];
  T* p = static_cast<T*>(a.param);
  const T* g = static_cast<const T*>(a.grad);
  A* m = static_cast<A*>(a.exp_avg);
  A* v = static_cast<A*>(a.exp_avg_sq);
  A* vmax = static_cast<A*>(a.max_exp_avg_sq);
  if (a.skip != nullptr && *a.skip != 0.0f) return;  // a captured step the GradScaler skips
  const A lr = A(a.hyper ? a.hyper[0] : a.lr), wd = A(a.weight_decay), b1 = A(a.beta1), b2 = A(a.beta2),
          eps = A(a.eps);
  const A step_size = A(a.hyper ? a.hyper[1] : a.step_size),
          bc2_sqrt = A(a.hyper ? a.hyper[2] : a.bias_correction2_sqrt);
  for (int64_t i = begin + threadIdx.x; i < end; i += kOptThreads)
    p[i] = from_acc<T>(optim_math::adam_update(to_acc(p[i]), to_acc(g[i]), m[i], v[i], vmax ? vmax + i : nullptr,
                                               decoupled != 0, lr, wd, b1, b2, eps, step_size, bc2_sqrt));
}

// --- gradient norm and clipping -------------------------------------------------------------------
enum NormKind : int { kL2 = 0, kL1 = 1, kLinf = 2, kLp = 3 };

__device__ __forceinline__ double combine(double a, double b, bool is_max) {
  return is_max ? ((a != a || a > b) ? a : b) : a + b;  // max lets a NaN through from either side
}

// Sum (or max) over the block; the result is valid in thread 0. blockDim.x is a multiple of 32.
__device__ double block_reduce(double v, bool is_max) {
  __shared__ double warp_vals[32];
  for (int o = kWarp / 2; o > 0; o >>= 1) v = combine(v, __shfl_down_sync(0xffffffffu, v, o), is_max);
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  if (lane == 0) warp_vals[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x / kWarp) ? warp_vals[lane] : 0.0;  // 0: identity of both (values are >= 0)
    for (int o = kWarp / 2; o > 0; o >>= 1) v = combine(v, __shfl_down_sync(0xffffffffu, v, o), is_max);
  }
  return v;
}

// partials[chunk] = sum |g|^p (or max |g|) over this block's chunk.
template <class T>
__global__ void __launch_bounds__(kOptThreads)
    grad_norm_kernel(const __grid_constant__ Table<GradArgs> tab, int kind, double p, double* partials) {
  using A = acc_t<T>;
  int t;
  int64_t begin, end;
  chunk_range(tab, t, begin, end);
  const T* g = static_cast<const T*>(tab.rec[t].grad);
  const A pa = A(p);
  A acc = A(0);
  for (int64_t i = begin + threadIdx.x; i < end; i += kOptThreads) {
    A x = to_acc(g[i]);
    x = x < A(0) ? -x : x;
    if (kind == kL2) acc += x * x;
    else if (kind == kL1) acc += x;
    else if (kind == kLinf) acc = (acc != acc || acc > x) ? acc : x;
    else acc += dev_pow(x, pa);
  }
  const double total = block_reduce(static_cast<double>(acc), kind == kLinf);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// One block: combines the n partials, writes the norm and the clip factor.
template <class Out>
__global__ void grad_norm_finalize(const double* partials, int64_t n, int kind, double p, double max_norm,
                                   Out* norm_out, double* factor_out) {
  const bool is_max = kind == kLinf;
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc = combine(acc, partials[i], is_max);
  acc = block_reduce(acc, is_max);
  if (threadIdx.x == 0) {
    double norm = acc;
    if (kind == kL2) norm = ::sqrt(acc);
    else if (kind == kLp) norm = ::pow(acc, 1.0 / p);
    *norm_out = static_cast<Out>(norm);
    double f = max_norm / (norm + 1e-6);
    if (f > 1.0) f = 1.0;  // clamp(max=1); a NaN factor stays NaN
    *factor_out = f;
  }
}

template <class T>
__global__ void __launch_bounds__(kOptThreads) scale_kernel(const __grid_constant__ Table<GradArgs> tab, const double* factor) {
  using A = acc_t<T>;
  int t;
  int64_t begin, end;
  chunk_range(tab, t, begin, end);
  T* g = static_cast<T*>(tab.rec[t].grad);
  const A f = A(*factor);
  for (int64_t i = begin + threadIdx.x; i < end; i += kOptThreads) g[i] = from_acc<T>(to_acc(g[i]) * f);
}

template <class T>
__global__ void __launch_bounds__(kOptThreads) clamp_kernel(const __grid_constant__ Table<GradArgs> tab, double clip_value) {
  using A = acc_t<T>;
  int t;
  int64_t begin, end;
  chunk_range(tab, t, begin, end);
  T* g = static_cast<T*>(tab.rec[t].grad);
  const A hi = A(clip_value), lo = -hi;
  for (int64_t i = begin + threadIdx.x; i < end; i += kOptThreads) {
    const A x = to_acc(g[i]);
    g[i] = from_acc<T>(x < lo ? lo : (x > hi ? hi : x));  // NaN compares false: kept
  }
}

// Every gradient *= inv_scale; a block that met an inf or NaN (before or after the multiply)
// sets *found_inf = 1 (every writer writes the same value; nobody writes 0).
template <class T>
__global__ void __launch_bounds__(kOptThreads)
    unscale_kernel(const __grid_constant__ Table<GradArgs> tab, double inv_scale, float* found_inf) {
  using A = acc_t<T>;
  int t;
  int64_t begin, end;
  chunk_range(tab, t, begin, end);
  T* g = static_cast<T*>(tab.rec[t].grad);
  const A f = A(inv_scale);
  int nonfinite = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kOptThreads) {
    const A x = to_acc(g[i]) * f;
    nonfinite |= isfinite(x) ? 0 : 1;
    g[i] = from_acc<T>(x);
  }
  if (__syncthreads_or(nonfinite) && threadIdx.x == 0) *found_inf = 1.0f;
}

int norm_kind(double p) {
  if (std::isinf(p)) return kLinf;
  if (p == 2.0) return kL2;
  if (p == 1.0) return kL1;
  return kLp;
}

}  // namespace

void sgd_step(Device device, DType dtype, const std::vector<SGDArgs>& tensors) {
  DeviceGuard guard(device.index);
  cudaStream_t stream = current_stream(device.index);
  EMBER_CUDA_DISPATCH_FLOAT(dtype, "SGD", T, [&] {
    launch_tables(tensors, [&](const Table<SGDArgs>& tab, int64_t chunks) {
      sgd_kernel<T><<<static_cast<unsigned>(chunks), kOptThreads, 0, stream>>>(tab);
      EMBER_CUDA_LAUNCH_CHECK();
    });
  });
}

void adam_step(Device device, DType dtype, bool decoupled, const std::vector<AdamArgs>& tensors) {
  DeviceGuard guard(device.index);
  cudaStream_t stream = current_stream(device.index);
  EMBER_CUDA_DISPATCH_FLOAT(dtype, decoupled ? "AdamW" : "Adam", T, [&] {
    launch_tables(tensors, [&](const Table<AdamArgs>& tab, int64_t chunks) {
      adam_kernel<T><<<static_cast<unsigned>(chunks), kOptThreads, 0, stream>>>(tab, decoupled ? 1 : 0);
      EMBER_CUDA_LAUNCH_CHECK();
    });
  });
}

void clip_grad_norm(Device device, const std::vector<GradBucket>& buckets, double p, double max_norm,
                    const Tensor& total_norm, bool scale) {
  DeviceGuard guard(device.index);
  cudaStream_t stream = current_stream(device.index);
  const int kind = norm_kind(p);
  int64_t total_chunks = 0;
  for (const GradBucket& b : buckets)
    for (const GradArgs& g : b.grads)
      if (g.numel > 0) total_chunks += ceil_div(g.numel, kChunk);
  // (partials, then the clip factor), stream-ordered scratch from the caching allocator.
  Storage scratch(static_cast<size_t>(total_chunks + 1) * sizeof(double), device);
  double* partials = static_cast<double*>(scratch.data());
  double* factor = partials + total_chunks;

  int64_t base = 0;
  for (const GradBucket& b : buckets) {
    EMBER_CUDA_DISPATCH_FLOAT(b.dtype, "clip_grad_norm_", T, [&] {
      launch_tables(b.grads, [&](const Table<GradArgs>& tab, int64_t chunks) {
        grad_norm_kernel<T><<<static_cast<unsigned>(chunks), kOptThreads, 0, stream>>>(tab, kind, p, partials + base);
        EMBER_CUDA_LAUNCH_CHECK();
        base += chunks;
      });
    });
  }
  if (total_norm.dtype() == DType::f64) {
    grad_norm_finalize<double><<<1, 1024, 0, stream>>>(partials, total_chunks, kind, p, max_norm,
                                                       static_cast<double*>(total_norm.data_ptr()), factor);
  } else {
    grad_norm_finalize<float><<<1, 1024, 0, stream>>>(partials, total_chunks, kind, p, max_norm,
                                                      static_cast<float*>(total_norm.data_ptr()), factor);
  }
  EMBER_CUDA_LAUNCH_CHECK();
  if (!scale) return;
  for (const GradBucket& b : buckets) {
    EMBER_CUDA_DISPATCH_FLOAT(b.dtype, "clip_grad_norm_", T, [&] {
      launch_tables(b.grads, [&](const Table<GradArgs>& tab, int64_t chunks) {
        scale_kernel<T><<<static_cast<unsigned>(chunks), kOptThreads, 0, stream>>>(tab, factor);
        EMBER_CUDA_LAUNCH_CHECK();
      });
    });
  }
}

void clamp_grads(Device device, DType dtype, const std::vector<GradArgs>& grads, double clip_value) {
  DeviceGuard guard(device.index);
  cudaStream_t stream = current_stream(device.index);
  EMBER_CUDA_DISPATCH_FLOAT(dtype, "clip_grad_value_", T, [&] {
    launch_tables(grads, [&](const Table<GradArgs>& tab, int64_t chunks) {
      clamp_kernel<T><<<static_cast<unsigned>(chunks), kOptThreads, 0, stream>>>(tab, clip_value);
      EMBER_CUDA_LAUNCH_CHECK();
    });
  });
}

void unscale_grads(Device device, DType dtype, const std::vector<GradArgs>& grads, double inv_scale,
                   const Tensor& found_inf) {
  DeviceGuard guard(device.index);
  cudaStream_t stream = current_stream(device.index);
  float* flag = static_cast<float*>(found_inf.data_ptr());
  EMBER_CUDA_DISPATCH_FLOAT(dtype, "GradScaler.unscale_", T, [&] {
    launch_tables(grads, [&](const Table<GradArgs>& tab, int64_t chunks) {
      unscale_kernel<T><<<static_cast<unsigned>(chunks), kOptThreads, 0, stream>>>(tab, inv_scale, flag);
      EMBER_CUDA_LAUNCH_CHECK();
    });
  });
}

void register_optim_kernels() {
  prim::define<prim::sgd_step>(prim::Backend::cuda, &sgd_step);
  prim::define<prim::adam_step>(prim::Backend::cuda, &adam_step);
  prim::define<prim::clip_grad_norm>(prim::Backend::cuda, &clip_grad_norm);
  prim::define<prim::clamp_grads>(prim::Backend::cuda, &clamp_grads);
  prim::define<prim::unscale_grads>(prim::Backend::cuda, &unscale_grads);
}

}  // namespace ember::cuda
