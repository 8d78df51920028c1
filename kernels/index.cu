// Index kernels on CUDA: gather/scatter_add, index_select/index_add, one_hot (contracts of
// prim/primitives.h, mirroring src/cpu/index.cpp). Index tensors arrive contiguous i64
// and already bounds-checked by the ops layer.
//
// gather / scatter_add: one thread per element of the index tensor (shape I, any rank <= 8);
//   the target's offset is sum over d != dim of coord[d] * stride[d], plus index * stride[dim].
//   x (gather) may be strided; out and src are contiguous with I's shape (gather), or out is
//   the target and src is contiguous with I's shape (scatter_add).
// index_select / index_add: tensors seen as (outer, D, inner) around `dim`; the selected side
//   is (outer, n, inner) with n = index.numel(), all contiguous. index_select copies rows of
//   `inner` elements in the widest unit (up to 16 bytes) that the row size and alignment allow,
//   so embedding lookups move float4s.
// Scatters add with atomicAdd (repeated indices are the normal case): native on sm_90 for
// f32, f64, f16 and bf16; i64 goes through the unsigned 64-bit overload (two's complement).
#include "common.cuh"
#include "cuda/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"

namespace ember::cuda {
namespace {

// --- atomics ------------------------------------------------------------------------------------
__device__ __forceinline__ void atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(double* p, double v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(__half* p, __half v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(__nv_bfloat16* p, __nv_bfloat16 v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(int32_t* p, int32_t v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(int64_t* p, int64_t v) {
  static_assert(sizeof(int64_t) == sizeof(unsigned long long));
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}

// --- gather / scatter geometry ------------------------------------------------------------------
// Sizes and strides innermost first, so kernels index them with unrolled constants (a runtime
// index into a kernel parameter array would copy it to local memory).
struct IndexGeometry {
  int ndim = 0;                     // rank of the index tensor; 0: one element at offset index * 0
  int64_t dim_stride = 0;           // the target's stride along the indexed dim
  int64_t sizes[kMaxDims] = {};     // the index tensor's shape
  int64_t strides[kMaxDims] = {};   // the target's strides, 0 at the indexed dim
};

IndexGeometry make_index_geometry(const char* op, const Tensor& index, const Tensor& target, int64_t dim) {
  EMBER_CHECK(index.dim() <= kMaxDims, op, "the CUDA backend handles at most ", kMaxDims, " dims, got index of shape ",
              shape_str(index.shape()));
  IndexGeometry g;
  g.ndim = static_cast<int>(index.dim());
  if (g.ndim == 0) return g;  // 0-d target and index (the ops check their ranks agree)
  g.dim_stride = target.stride(dim);
  for (int k = 0; k < g.ndim; ++k) {
    const int64_t d = g.ndim - 1 - k;
    g.sizes[k] = index.size(d);
    g.strides[k] = d == dim ? 0 : target.stride(d);
  }
  return g;
}

// Offset in the target of index element `linear` whose value is `idx`.
__device__ __forceinline__ int64_t target_offset(const IndexGeometry& g, int64_t linear, int64_t idx) {
  int64_t off = idx * g.dim_stride;
#pragma unroll
  for (int k = 0; k < kMaxDims; ++k) {
    if (k == g.ndim) break;
    const int64_t q = linear / g.sizes[k];
    off += (linear - q * g.sizes[k]) * g.strides[k];
    linear = q;
  }
  return off;
}

// --- kernels ------------------------------------------------------------------------------------

// out[i] = x[target_offset(i, index[i])]; moves bits (B: an unsigned type of the element size).
template <class B>
__global__ void gather_kernel(IndexGeometry g, int64_t n, const B* x, const int64_t* index, B* out) {
  for (int64_t i = grid_start(); i < n; i += grid_step()) out[i] = x[target_offset(g, i, index[i])];
}

// out[target_offset(i, index[i])] += src[i].
template <class T>
__global__ void scatter_add_kernel(IndexGeometry g, int64_t n, T* out, const int64_t* index, const T* src) {
  for (int64_t i = grid_start(); i < n; i += grid_step()) atomic_add(out + target_offset(g, i, index[i]), src[i]);
}

// out (outer, n, inner) = x (outer, D, inner) at rows index[j]; inner counted in copy units U.
template <class U>
__global__ void index_select_kernel(const U* x, U* out, const int64_t* index, int64_t outer, int64_t n, int64_t D,
                                    int64_t inner) {
  const int64_t total = outer * n * inner;
  for (int64_t i = grid_start(); i < total; i += grid_step()) {
    const int64_t c = i % inner, r = i / inner;
    const int64_t j = r % n, o = r / n;
    out[i] = x[(o * D + index[j]) * inner + c];
  }
}

// out (outer, D, inner) at rows index[j] += alpha * src (outer, n, inner).
template <class T>
__global__ void index_add_kernel(T* out, const T* src, const int64_t* index, int64_t outer, int64_t n, int64_t D,
                                 int64_t inner, acc_t<T> alpha) {
  const int64_t total = outer * n * inner;
  for (int64_t i = grid_start(); i < total; i += grid_step()) {
    const int64_t c = i % inner, r = i / inner;
    const int64_t j = r % n, o = r / n;
    atomic_add(out + (o * D + index[j]) * inner + c, from_acc<T>(alpha * to_acc(src[i])));
  }
}

// out (N, classes) i64 = (index[i] == c).
__global__ void one_hot_kernel(const int64_t* index, int64_t* out, int64_t total, int64_t classes) {
  for (int64_t i = grid_start(); i < total; i += grid_step()) out[i] = index[i / classes] == i % classes ? 1 : 0;
}

// --- helpers ------------------------------------------------------------------------------------

int64_t prod_range(const Shape& s, int64_t b, int64_t e) {
  int64_t p = 1;
  for (int64_t i = b; i < e; ++i) p *= s[i];
  return p;
}

template <class U>
void launch_index_select(cudaStream_t stream, const Tensor& x, const Tensor& index, const Tensor& out, int64_t outer,
                         int64_t n, int64_t D, int64_t inner_bytes) {
  const int64_t inner = inner_bytes / static_cast<int64_t>(sizeof(U));
  index_select_kernel<U><<<grid_for(outer * n * inner, kThreads), kThreads, 0, stream>>>(
      static_cast<const U*>(x.data_ptr()), static_cast<U*>(out.data_ptr()), static_cast<const int64_t*>(index.data_ptr()),
      outer, n, D, inner);
  EMBER_CUDA_LAUNCH_CHECK();
}

}  // namespace

void gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  const int64_t n = index.numel();
  if (n == 0) return;
  DeviceScope scope(out);
  const IndexGeometry g = make_index_geometry("gather", index, x, dim);
  EMBER_CUDA_DISPATCH_BITS(x.element_size(), "gather", B, [&] {
    gather_kernel<B><<<grid_for(n, kThreads), kThreads, 0, scope.stream>>>(
        g, n, static_cast<const B*>(x.data_ptr()), static_cast<const int64_t*>(index.data_ptr()),
        static_cast<B*>(out.data_ptr()));
    EMBER_CUDA_LAUNCH_CHECK();
  });
}

void scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  const int64_t n = index.numel();
  if (n == 0) return;
  DeviceScope scope(out);
  const IndexGeometry g = make_index_geometry("scatter_add", index, out, dim);
  EMBER_CUDA_DISPATCH_NUMERIC(out.dtype(), "scatter_add", T, [&] {
    scatter_add_kernel<T><<<grid_for(n, kThreads), kThreads, 0, scope.stream>>>(
        g, n, static_cast<T*>(out.data_ptr()), static_cast<const int64_t*>(index.data_ptr()),
        static_cast<const T*>(src.data_ptr()));
    EMBER_CUDA_LAUNCH_CHECK();
  });
}

void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  const int64_t outer = prod_range(x.shape(), 0, dim), D = x.size(dim);
  const int64_t inner = prod_range(x.shape(), dim + 1, x.dim());
  const int64_t n = index.numel();
  if (outer * n * inner == 0) return;
  DeviceScope scope(out);
  // The widest copy unit that divides a row and fits both pointers' alignment.
  const int64_t row_bytes = inner * static_cast<int64_t>(x.element_size());
  auto fits = [&](int64_t unit) {
    return row_bytes % unit == 0 && is_aligned(x.data_ptr(), unit) && is_aligned(out.data_ptr(), unit);
  };
  if (fits(16)) launch_index_select<uint4>(scope.stream, x, index, out, outer, n, D, row_bytes);
  else if (fits(8)) launch_index_select<uint64_t>(scope.stream, x, index, out, outer, n, D, row_bytes);
  else if (fits(4)) launch_index_select<uint32_t>(scope.stream, x, index, out, outer, n, D, row_bytes);
  else if (fits(2)) launch_index_select<uint16_t>(scope.stream, x, index, out, outer, n, D, row_bytes);
  else launch_index_select<uint8_t>(scope.stream, x, index, out, outer, n, D, row_bytes);
}

void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, double alpha) {
  const int64_t outer = prod_range(out.shape(), 0, dim), D = out.size(dim);
  const int64_t inner = prod_range(out.shape(), dim + 1, out.dim());
  const int64_t n = index.numel();
  if (outer * n * inner == 0) return;
  DeviceScope scope(out);
  EMBER_CUDA_DISPATCH_NUMERIC(out.dtype(), "index_add", T, [&] {
    index_add_kernel<T><<<grid_for(outer * n * inner, kThreads), kThreads, 0, scope.stream>>>(
        static_cast<T*>(out.data_ptr()), static_cast<const T*>(src.data_ptr()),
        static_cast<const int64_t*>(index.data_ptr()), outer, n, D, inner, static_cast<acc_t<T>>(alpha));
    EMBER_CUDA_LAUNCH_CHECK();
  });
}

void one_hot(const Tensor& index, const Tensor& out, int64_t classes) {
  const int64_t total = index.numel() * classes;
  if (total == 0) return;
  DeviceScope scope(out);
  one_hot_kernel<<<grid_for(total, kThreads), kThreads, 0, scope.stream>>>(
      static_cast<const int64_t*>(index.data_ptr()), static_cast<int64_t*>(out.data_ptr()), total, classes);
  EMBER_CUDA_LAUNCH_CHECK();
}

void register_index_kernels() {
  prim::define<prim::gather>(prim::Backend::cuda, &gather);
  prim::define<prim::scatter_add>(prim::Backend::cuda, &scatter_add);
  prim::define<prim::index_select>(prim::Backend::cuda, &index_select);
  prim::define<prim::index_add>(prim::Backend::cuda, &index_add);
  prim::define<prim::one_hot>(prim::Backend::cuda, &one_hot);
}

}  // namespace ember::cuda
