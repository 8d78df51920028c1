// Shared device-side plumbing for ember's CUDA kernels.
//
// What: the DType -> C++ type dispatch over the CUDA compute types (f32 f64 f16 bf16 i32 i64
// bool), float/half conversions (f16 and bf16 are loaded into float, computed there, stored
// rounded to nearest even), 16-byte packs for vectorised loads, and StridedInfo: the geometry
// of up to 4 operands of one elementwise launch, with size-1 dims dropped and contiguous dims
// merged on the host (as src/cpu/loops.h for_each_row does), so most launches see 1 or 2 dims.
// Why: every .cu file needs the same dispatch and the same offset arithmetic; keeping it here
// keeps each kernel file about its kernels. Templates stay shallow (compile time on 2 cores):
// each .cu instantiates only the types its host launchers dispatch to.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "cuda/runtime.h"
#include "ember/core/error.h"
#include "ember/core/tensor.h"
#include "ember/cuda.h"
#include "prim/elementwise_math.h"  // EMBER_HD and the shared math functors

namespace ember::cuda {

constexpr int kMaxDims = 8;    // dims a kernel handles after coalescing
constexpr int kThreads = 256;  // threads per block for grid-stride elementwise loops
constexpr int kWarp = 32;

// --- dtype dispatch ---------------------------------------------------------------------------
// EMBER_CUDA_DISPATCH_*(dtype, "op", NAME, [&] { ... NAME ... }): defines the C++ type NAME
// inside the lambda; dtypes outside the set throw ember::Error naming the op.
#define EMBER_CUDA_TYPE_CASE(ENUM, TYPE, NAME, ...) \
  case ::ember::DType::ENUM: {                      \
    using NAME = TYPE;                              \
    __VA_ARGS__();                                  \
    break;                                          \
  }
#define EMBER_CUDA_DISPATCH_ALL(dt, op, NAME, ...)                              \
  switch (dt) {                                                                 \
    EMBER_CUDA_TYPE_CASE(f32, float, NAME, __VA_ARGS__)                         \
    EMBER_CUDA_TYPE_CASE(f64, double, NAME, __VA_ARGS__)                        \
    EMBER_CUDA_TYPE_CASE(f16, __half, NAME, __VA_ARGS__)                        \
    EMBER_CUDA_TYPE_CASE(bf16, __nv_bfloat16, NAME, __VA_ARGS__)                \
    EMBER_CUDA_TYPE_CASE(i32, int32_t, NAME, __VA_ARGS__)                       \
    EMBER_CUDA_TYPE_CASE(i64, int64_t, NAME, __VA_ARGS__)                       \
    EMBER_CUDA_TYPE_CASE(boolean, bool, NAME, __VA_ARGS__)                      \
    default: EMBER_FAIL(op, "dtype ", dt, " has no CUDA kernel");               \
  }
// Everything but bool.
#define EMBER_CUDA_DISPATCH_NUMERIC(dt, op, NAME, ...)                          \
  switch (dt) {                                                                 \
    EMBER_CUDA_TYPE_CASE(f32, float, NAME, __VA_ARGS__)                         \
    EMBER_CUDA_TYPE_CASE(f64, double, NAME, __VA_ARGS__)                        \
    EMBER_CUDA_TYPE_CASE(f16, __half, NAME, __VA_ARGS__)                        \
    EMBER_CUDA_TYPE_CASE(bf16, __nv_bfloat16, NAME, __VA_ARGS__)                \
    EMBER_CUDA_TYPE_CASE(i32, int32_t, NAME, __VA_ARGS__)                       \
    EMBER_CUDA_TYPE_CASE(i64, int64_t, NAME, __VA_ARGS__)                       \
    default: EMBER_FAIL(op, "dtype ", dt, " is not supported by this CUDA kernel"); \
  }
#define EMBER_CUDA_DISPATCH_FLOAT(dt, op, NAME, ...)                            \
  switch (dt) {                                                                 \
    EMBER_CUDA_TYPE_CASE(f32, float, NAME, __VA_ARGS__)                         \
    EMBER_CUDA_TYPE_CASE(f64, double, NAME, __VA_ARGS__)                        \
    EMBER_CUDA_TYPE_CASE(f16, __half, NAME, __VA_ARGS__)                        \
    EMBER_CUDA_TYPE_CASE(bf16, __nv_bfloat16, NAME, __VA_ARGS__)                \
    default: EMBER_FAIL(op, "expected a float tensor, got ", dt);               \
  }
// Kernels that only move bits (copy without conversion, where, gather) dispatch on the
// element size: 4 instantiations cover all 7 dtypes.
#define EMBER_CUDA_DISPATCH_BITS(nbytes, op, NAME, ...)                         \
  switch (nbytes) {                                                             \
    case 1: { using NAME = uint8_t; __VA_ARGS__(); break; }                     \
    case 2: { using NAME = uint16_t; __VA_ARGS__(); break; }                    \
    case 4: { using NAME = uint32_t; __VA_ARGS__(); break; }                    \
    case 8: { using NAME = uint64_t; __VA_ARGS__(); break; }                    \
    default: EMBER_FAIL(op, "unsupported element size ", nbytes);              \
  }

// --- compute types and conversions ------------------------------------------------------------
template <class T> inline constexpr bool is_half_v =
    std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

// The type elementwise math runs in: float for f16/bf16, the type itself otherwise.
template <class T> struct AccOf { using type = T; };
template <> struct AccOf<__half> { using type = float; };
template <> struct AccOf<__nv_bfloat16> { using type = float; };
template <class T> using acc_t = typename AccOf<T>::type;

template <class T>
EMBER_HD acc_t<T> to_acc(T v) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
  else return v;
}
template <class T>
EMBER_HD T from_acc(acc_t<T> v) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(v);
  else return v;
}

// dst = convert<D>(src) with the CPU backend's rules (src/cpu/elementwise.cpp): halves go
// through float both ways (so f64 -> f16 rounds twice, as the CPU does), bool is `!= 0`.
template <class D, class S>
EMBER_HD D convert(S s) {
  if constexpr (std::is_same_v<D, S>) {
    return s;
  } else if constexpr (is_half_v<S>) {
    return convert<D>(to_acc(s));
  } else if constexpr (is_half_v<D>) {
    return from_acc<D>(static_cast<float>(s));
  } else if constexpr (std::is_same_v<D, bool>) {
    return s != S(0);
  } else {
    return static_cast<D>(s);
  }
}

// --- vector packs -------------------------------------------------------------------------------
// N elements loaded or stored with one instruction (up to 16 bytes: float4, 8 halves, ...).
template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};
template <class T> inline constexpr int kPackOf = 16 / static_cast<int>(sizeof(T));

inline bool is_aligned(const void* p, size_t alignment) {
  return reinterpret_cast<uintptr_t>(p) % alignment == 0;
}

// --- strided geometry ---------------------------------------------------------------------------
// Sizes and per-operand strides (elements) of one launch, innermost dim first, after dropping
// size-1 dims and merging dims every operand walks contiguously. ndim == 0: one element.
// Passed to kernels by value (N = 4: 328 bytes of kernel parameters).
template <int N>
struct StridedInfo {
  int ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[N][kMaxDims] = {};
};

// Builds the StridedInfo of `shape` walked by N operands with the given strides; throws
// ember::Error (op `op`) when more than kMaxDims dims remain after coalescing.
template <int N>
StridedInfo<N> make_strided_info(const char* op, const Shape& shape, const std::array<const Shape*, N>& strides) {
  // Outermost-first coalescing, exactly as for_each_row: merge dim d into the previous kept
  // dim when every operand steps across the pair as one run.
  Shape sizes;
  std::array<Shape, N> st;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = !sizes.empty();
    for (int k = 0; k < N && merge; ++k) merge = st[k].back() == (*strides[k])[d] * shape[d];
    if (merge) {
      sizes.back() *= shape[d];
      for (int k = 0; k < N; ++k) st[k].back() = (*strides[k])[d];
    } else {
      sizes.push_back(shape[d]);
      for (int k = 0; k < N; ++k) st[k].push_back((*strides[k])[d]);
    }
  }
  EMBER_CHECK(static_cast<int>(sizes.size()) <= kMaxDims, op, "the CUDA backend handles at most ", kMaxDims,
              " dims after merging contiguous ones; shape ", shape_str(shape), " leaves ", sizes.size());
  StridedInfo<N> info;
  info.ndim = static_cast<int>(sizes.size());
  for (int d = 0; d < info.ndim; ++d) {
    const int from = info.ndim - 1 - d;  // reverse: innermost first
    info.sizes[d] = sizes[from];
    for (int k = 0; k < N; ++k) info.strides[k][d] = st[k][from];
  }
  return info;
}

// True when every operand walks the elements as one dense run (the vectorised fast path).
template <int N>
bool is_dense(const StridedInfo<N>& info) {
  if (info.ndim == 0) return true;
  if (info.ndim > 1) return false;
  for (int k = 0; k < N; ++k)
    if (info.strides[k][0] != 1) return false;
  return true;
}

// off[k] = element offset of operand k for the linear (row-major over the coalesced shape)
// index `linear`.
template <int N>
__device__ __forceinline__ void strided_offsets(const StridedInfo<N>& info, int64_t linear, int64_t (&off)[N]) {
#pragma unroll
  for (int k = 0; k < N; ++k) off[k] = 0;
#pragma unroll
  for (int d = 0; d < kMaxDims; ++d) {
    if (d == info.ndim) break;
    // The outermost dim needs no division: what is left of `linear` is its coordinate.
    int64_t i = linear;
    if (d + 1 < info.ndim) {
      const int64_t q = linear / info.sizes[d];
      i = linear - q * info.sizes[d];
      linear = q;
    }
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] += i * info.strides[k][d];
  }
}

// --- launching ----------------------------------------------------------------------------------
// First index and step of a grid-stride loop, in int64 (n may exceed 2^31).
__device__ __forceinline__ int64_t grid_start() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_step() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// Makes t's GPU current for one backend call and names the stream its launches go on.
struct DeviceScope {
  DeviceGuard guard;
  cudaStream_t stream;
  explicit DeviceScope(const Tensor& t)
      : guard(t.device().index), stream(current_stream(t.device().index)) {}
};

}  // namespace ember::cuda
