// Row reductions shared by reduce.cu, loss.cu and norm.cu: a warp all-reduce by shuffles, a
// block all-reduce through shared scratch, and RowGroup, the two ways a block's threads share
// rows (a warp per row, or the whole block on one row).
//
// Design: everything is generic over the value type T and a combine functor C (T, T) -> T, so
// a kernel's reduction is just its state type plus how two states merge (a sum, a max, an
// arg-best pick, an online-softmax merge). The order is fixed and the same for every caller:
// a xor butterfly (offsets 16, 8, 4, 2, 1) inside each warp, then, in a block, every thread
// folds the warps' results left to right starting from warp 0's. Every lane/thread ends with
// the result. A struct T needs a shfl_xor(T, int) overload next to its definition (found by
// argument-dependent lookup); scalars use the one here. The combines used are commutative, so
// the butterfly's (a, b) vs (b, a) pairing does not matter.
// Barriers: block_allreduce syncs after writing the warp results and again after reading them,
// because the caller reuses scratch for its next row (or next reduction of the same row).
#pragma once
#include <cstdint>

#include "common.cuh"

namespace ember::cuda {

template <class T>
__device__ __forceinline__ T shfl_xor(T v, int mask) {
  return __shfl_xor_sync(0xffffffffu, v, mask);
}

// Butterfly: every lane of the warp ends with the same value; all 32 lanes must call it.
template <class T, class C>
__device__ __forceinline__ T warp_allreduce(T v, const C& combine) {
#pragma unroll
  for (int mask = kWarp / 2; mask > 0; mask >>= 1) v = combine(v, shfl_xor(v, mask));
  return v;
}

// Every thread of the block gets the combination of all threads' v; all threads must call it.
// scratch: kWarp entries of shared memory.
template <class T, class C>
__device__ T block_allreduce(T v, const C& combine, T* scratch) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  v = warp_allreduce(v, combine);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = scratch[0];
  for (int w = 1; w < warps; ++w) v = combine(v, scratch[w]);
  __syncthreads();  // scratch is reused by the next row
  return v;
}

// How a block's threads share rows: the whole block on one row (kBlockPerRow), or one warp per
// row. Row loops are grid-stride; every thread of a group runs the same row iterations, so all
// of them reach allreduce()'s shuffles (and, in the block layout, its barriers).
template <bool kBlockPerRow>
struct RowGroup {
  __device__ static int lane() { return kBlockPerRow ? threadIdx.x : threadIdx.x % kWarp; }
  __device__ static int width() { return kBlockPerRow ? blockDim.x : kWarp; }
  __device__ static int64_t first_row() {
    return kBlockPerRow ? blockIdx.x
                        : static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  }
  __device__ static int64_t row_step() {
    return kBlockPerRow ? gridDim.x : static_cast<int64_t>(gridDim.x) * (blockDim.x / kWarp);
  }
  // scratch: kWarp entries of shared memory (unused by the warp layout).
  template <class T, class C>
  __device__ static T allreduce(T v, const C& combine, T* scratch) {
    if constexpr (kBlockPerRow) return block_allreduce(v, combine, scratch);
    else return warp_allreduce(v, combine);
  }
};

// Calls f(x) for row[i], i in [begin, end) with i = begin + lane + k * width as a strided loop
// would, but reads the body of the range in 16-byte vectors (the part from the first 16-byte
// boundary on, in whole vectors): each thread then keeps several wide loads in flight instead
// of one narrow one, which is what a bandwidth-bound row reduction needs. The head before the
// boundary and the tail after the last whole vector are read element by element. Elements
// reach f in a different order than a plain strided loop, so the reduction's order differs;
// it is still fixed for a given shape and alignment. Element types of 2, 4 or 8 bytes take the
// vector path; others (bool, 1-byte integers) the plain loop.
template <class T, class F>
__device__ __forceinline__ void row_for_each(const T* row, int64_t begin, int64_t end, int lane, int width, F&& f) {
  constexpr int kSize = static_cast<int>(sizeof(T));
  if constexpr (kSize == 2 || kSize == 4 || kSize == 8) {
    constexpr int V = 16 / kSize;
    const uintptr_t addr = reinterpret_cast<uintptr_t>(row + begin);
    int64_t head = end - begin;  // misaligned element storage: everything element by element
    if (addr % kSize == 0) head = min(head, static_cast<int64_t>(((16 - addr % 16) % 16) / kSize));
    for (int64_t i = begin + lane; i < begin + head; i += width) f(row[i]);
    const int64_t vb = begin + head, nvec = (end - vb) / V;
    const uint4* vp = reinterpret_cast<const uint4*>(row + vb);
#pragma unroll 4
    for (int64_t k = lane; k < nvec; k += width) {
      const uint4 bits = vp[k];
      const T* e = reinterpret_cast<const T*>(&bits);
#pragma unroll
      for (int j = 0; j < V; ++j) f(e[j]);
    }
    for (int64_t i = vb + nvec * V + lane; i < end; i += width) f(row[i]);
  } else {
    for (int64_t i = begin + lane; i < end; i += width) f(row[i]);
  }
}

// out[i] = f(row[i]) for i in [0, n), strided over `width` lanes like row_for_each: 16-byte
// vector loads and stores for the body when row and out sit at the same offset within 16
// bytes (contiguous rows of one length from 16-byte-aligned bases always do), element by
// element otherwise and for the head and tail.
template <class T, class F>
__device__ __forceinline__ void row_map(const T* row, T* out, int64_t n, int lane, int width, F&& f) {
  constexpr int kSize = static_cast<int>(sizeof(T));
  if constexpr (kSize == 2 || kSize == 4 || kSize == 8) {
    constexpr int V = 16 / kSize;
    const uintptr_t a = reinterpret_cast<uintptr_t>(row), o = reinterpret_cast<uintptr_t>(out);
    int64_t head = n;
    if (a % kSize == 0 && a % 16 == o % 16) head = min(head, static_cast<int64_t>(((16 - a % 16) % 16) / kSize));
    for (int64_t i = lane; i < head; i += width) out[i] = f(row[i]);
    const int64_t nvec = (n - head) / V;
    const uint4* vin = reinterpret_cast<const uint4*>(row + head);
    uint4* vout = reinterpret_cast<uint4*>(out + head);
#pragma unroll 4
    for (int64_t k = lane; k < nvec; k += width) {
      const uint4 bits = vin[k];
      const T* e = reinterpret_cast<const T*>(&bits);
      uint4 res;
      T* r = reinterpret_cast<T*>(&res);
#pragma unroll
      for (int j = 0; j < V; ++j) r[j] = f(e[j]);
      vout[k] = res;
    }
    for (int64_t i = head + nvec * V + lane; i < n; i += width) out[i] = f(row[i]);
  } else {
    for (int64_t i = lane; i < n; i += width) out[i] = f(row[i]);
  }
}

}  // namespace ember::cuda
