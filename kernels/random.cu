// Random fills on CUDA (random_fill of prim/primitives.h).
//
// Philox is counter-based (src/core/philox.h, shared with the CPU): element i of a draw comes
// from block `offset + i / 4`, lane i % 4, keyed by the seed. One thread computes one block and
// writes its (up to) 4 elements, so the CUDA stream is the CPU's stream element for element,
// whatever the grid (uniform and bernoulli bit-identical; normal equal to the last ulp of
// log/sin/cos). Shape: out contiguous, any shape, n = numel elements.
// Values are produced in double by random_value and stored as the CPU does: static_cast to the
// dtype, and f16/bf16 through float (the CPU draws them as f32 and rounds to the half type).
#include "common.cuh"
#include "cuda/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"
#include "core/philox.h"

namespace ember::cuda {
namespace {

template <class T>
__device__ __forceinline__ T store_value(double v) {
  if constexpr (is_half_v<T>) return from_acc<T>(static_cast<float>(v));
  else return static_cast<T>(v);
}

template <class T>
__global__ void random_fill_kernel(T* out, int64_t n, RandomKind kind, uint64_t seed, uint64_t offset, double a,
                                   double b) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t blk = grid_start(); blk < blocks; blk += grid_step()) {
    const PhiloxBlock r = philox_block(offset + static_cast<uint64_t>(blk), 0, seed);
    const int64_t base = blk * 4;
#pragma unroll
    for (int lane = 0; lane < 4; ++lane)
      if (base + lane < n) out[base + lane] = store_value<T>(random_value(kind, r, lane, a, b));
  }
}

}  // namespace

void random_fill(RandomKind kind, const Tensor& out, uint64_t seed, uint64_t offset, double a, double b) {
  const int64_t n = out.numel();
  if (n == 0) return;
  DeviceScope scope(out);
  EMBER_CUDA_DISPATCH_NUMERIC(out.dtype(), "random", T, [&] {
    random_fill_kernel<T><<<grid_for((n + 3) / 4, kThreads), kThreads, 0, scope.stream>>>(
        static_cast<T*>(out.data_ptr()), n, kind, seed, offset, a, b);
    EMBER_CUDA_LAUNCH_CHECK();
  });
}

void register_random_kernels() {
  prim::define<prim::random_fill>(prim::Backend::cuda, &random_fill);
}

}  // namespace ember::cuda
