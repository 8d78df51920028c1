// The tensor-core GEMM for f16 and bf16 inputs with f32 accumulation (mma.sync m16n8k16).
//
//   C (M, N) row-major = A (M, K) @ B (K, N), batched over blockIdx-derived batch index.
//
// Design (see docs/gemm.md for the longer story):
// - Block tile 128x128x32, 256 threads = 8 warps laid out 2 (M) x 4 (N); each warp owns a
//   64x32 piece of C: 4 m16 tiles x 4 n8 tiles = 16 mma.sync per k16 step, 64 f32
//   accumulators per thread. Per k16 step a warp issues 4 ldmatrix.x4 for A and 2 for B, so
//   shared-memory traffic is 6 ldmatrix per 16 mma.
// - Global -> shared with cp.async.cg (16 bytes, L2 only: each tile is read once per block),
//   kStages = 4 stages deep: while the tensor cores work on stage s, the copies for the next
//   three k-tiles are in flight. 4 x 20 KB of shared memory lets two blocks share an SM.
// - Both operand layouts without copies. Think of B as B^T (N, K): then A and B^T are both
//   "row" operands (R rows, K columns) and each is stored either K-contiguous (A row-major,
//   B column-major) or R-contiguous (A column-major, B row-major). A K-contiguous tile is kept
//   as [R][BK] and read with ldmatrix; an R-contiguous tile is kept as [BK][R] (copied as it
//   lies in memory) and read with ldmatrix.trans, which hands each thread the same fragment.
// - Bank conflicts: every shared row is padded by 8 halves (16 bytes), so the 8 row addresses
//   of one ldmatrix phase fall on 8 different 16-byte bank groups (row pitch 80 B = 5 groups,
//   or 272 B = 17 groups: odd, hence all distinct mod 8).
// - Edges: cp.async's src-size operand copies only the valid bytes of a 16-byte chunk and
//   zero-fills the rest, so partial tiles in M, N and K need no separate path; zeros add
//   nothing to the dot products. Out-of-range chunks copy 0 bytes from the matrix base.
//   Requirements (checked by the host): both base pointers 16-byte aligned, leading
//   dimensions and batch strides multiples of 8 elements, K < 2^31. Anything else takes the
//   SIMT path.
// - Epilogue: an optional bias (one value per output column, Linear's) is added to the f32
//   accumulators, which are then rounded to the output type and stored with bounds checks,
//   two at a time (a 4-byte store) when N is even.
// - Block order: tiles are numbered in groups of 8 block-rows so that blocks running at the
//   same time share A row panels and B column panels in L2.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "mma.cuh"
#include "tile_order.cuh"

namespace ember::cuda::gemm_detail {

constexpr int kTcBM = 128, kTcBN = 128, kTcBK = 32, kTcStages = 4, kTcThreads = 256;
constexpr int kTcPad = 8;  // halves added to every shared row

// Shared-memory elements (halves) of one operand tile of `rows` rows in one stage.
__host__ __device__ constexpr int tc_tile_elems(bool k_contig, int rows) {
  return k_contig ? rows * (kTcBK + kTcPad) : kTcBK * (rows + kTcPad);
}
__host__ __device__ constexpr int tc_smem_bytes(bool a_k, bool b_k) {
  return kTcStages * (tc_tile_elems(a_k, kTcBM) + tc_tile_elems(b_k, kTcBN)) * 2;
}


using mma::cp_async_16;
using mma::cp_async_commit;
using mma::cp_async_wait;
using mma::ldmatrix_x4;
using mma::mma_16816;
using mma::smem_u32;

// One operand as the kernel sees it: R rows by K columns (A, or B^T), element (r, k) at
// ptr[r * ld + k] when K-contiguous, ptr[k * ld + r] otherwise; batch i starts at ptr + i * bs.
template <class T>
struct TcOperand {
  const T* ptr;
  int64_t ld;
  int64_t bs;
  int64_t rows;
};

// The cp.async copies of one operand tile (kRows x kTcBK) into a stage. Each of the 256
// threads owns kChunks fixed 16-byte chunks (8 halves) of the tile; what depends only on the
// thread is computed once per batch, so the k loop adds a k offset and little else. An
// out-of-range chunk (or the part of one past the edge) is zero-filled.
template <bool kKContig, int kRows, class T>
struct TcTileLoader {
  static constexpr int kChunks = kRows * kTcBK / 8 / kTcThreads;
  static_assert(kRows * kTcBK / 8 % kTcThreads == 0, "tile must split evenly over the threads");
  // Chunk i of thread t is chunk c = t + 256 i of the tile: K-contiguous tiles have kTcBK / 8
  // chunks per row (row c / 4, k chunk c % 4), R-contiguous ones kRows / 8 per k row.
  static constexpr int kPerRow = kKContig ? kTcBK / 8 : kRows / 8;
  const T* base;          // the batch's matrix
  const T* src[kChunks];  // the chunk's first element at k-tile 0 (base when out of range)
  int lim[kChunks];       // K-contiguous: K - k of the chunk if its row exists, else 0;
                          // R-contiguous: valid rows in the chunk (0..8)

  __device__ __forceinline__ TcTileLoader(const T* b, int64_t ld, int64_t rows, int64_t K, int64_t row0, int tid)
      : base(b) {
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      const int c = tid + i * kTcThreads;
      const int major = c / kPerRow, minor = c % kPerRow;
      if constexpr (kKContig) {  // major: row, minor: k chunk
        const int64_t gr = row0 + major;
        src[i] = gr < rows ? b + gr * ld + minor * 8 : b;
        lim[i] = gr < rows ? static_cast<int>(K - minor * 8) : 0;  // the host keeps K < 2^31
      } else {  // major: k row, minor: row chunk
        const int64_t gr = row0 + minor * 8;
        const int64_t left = rows - gr;
        src[i] = left > 0 ? b + major * ld + gr : b;
        lim[i] = left <= 0 ? 0 : (left >= 8 ? 8 : static_cast<int>(left));
      }
    }
  }

  // k-tile starting at k0 (a multiple of kTcBK).
  __device__ __forceinline__ void load(T* stage, int64_t ld, int64_t K, int64_t k0, int tid) const {
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      const int c = tid + i * kTcThreads;
      const int major = c / kPerRow, minor = c % kPerRow;
      int n, soff;
      const T* p;
      if constexpr (kKContig) {
        const int64_t left = lim[i] - k0;  // valid k from the chunk's start
        n = left <= 0 ? 0 : (left >= 8 ? 8 : static_cast<int>(left));
        p = src[i] + k0;
        soff = major * (kTcBK + kTcPad) + minor * 8;
      } else {
        n = k0 + major < K ? lim[i] : 0;
        p = src[i] + k0 * ld;
        soff = major * (kRows + kTcPad) + minor * 8;
      }
      cp_async_16(smem_u32(stage + soff), n > 0 ? p : base, n * 2);
    }
  }
};

// Shared address of the ldmatrix.x4 row this lane supplies for the 16x16 (rows x k) block at
// (r0, k0) of a stage. Matrices come out in "A order": j=0 rows 0-7 k 0-7, j=1 rows 8-15 k 0-7,
// j=2 rows 0-7 k 8-15, j=3 rows 8-15 k 8-15, which is exactly the m16n8k16 A fragment
// {a0, a1, a2, a3}; for B^T rows are n, so {j0, j2} is the fragment of n 0-7 and {j1, j3} that
// of n 8-15.
template <bool kKContig, int kRows>
__device__ __forceinline__ uint32_t tc_frag_addr(uint32_t stage, int r0, int k0, int lane) {
  const int j = lane >> 3, r8 = lane & 7;
  int off;
  if constexpr (kKContig) {
    off = (r0 + (j & 1) * 8 + r8) * (kTcBK + kTcPad) + k0 + (j >> 1) * 8;
  } else {
    off = (k0 + (j >> 1) * 8 + r8) * (kRows + kTcPad) + r0 + (j & 1) * 8;
  }
  return stage + static_cast<uint32_t>(off) * 2u;
}

template <class T>
__device__ __forceinline__ void store_pair(T* p, float x, float y) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(x, y);
  } else {
    *reinterpret_cast<__half2*>(p) = __floats2half2_rn(x, y);
  }
}
template <class T>
__device__ __forceinline__ void store_one(T* p, float x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    *p = __float2bfloat16_rn(x);
  } else {
    *p = __float2half_rn(x);
  }
}

// grid.x = tiles_m * tiles_n (grouped order); batch = blockIdx.z * gridDim.y + blockIdx.y.
// kAK: A is K-contiguous (row-major); kBK: B is K-contiguous (column-major).
template <class T, bool kAK, bool kBK>
__global__ void __launch_bounds__(kTcThreads, 2)
    gemm_mma_kernel(TcOperand<T> a, TcOperand<T> bt, T* __restrict__ out, const T* __restrict__ bias, int64_t M,
                    int64_t N, int64_t K, int64_t batches, bool pair_store) {
  extern __shared__ __align__(128) unsigned char tc_smem[];
  T* smem = reinterpret_cast<T*>(tc_smem);
  constexpr int kAElems = tc_tile_elems(kAK, kTcBM), kBElems = tc_tile_elems(kBK, kTcBN);
  constexpr int kStageElems = kAElems + kBElems;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp >> 2, warp_n = warp & 3;  // 2 x 4 warps, each 64 x 32 of C
  const int64_t tiles_m = (M + kTcBM - 1) / kTcBM, tiles_n = (N + kTcBN - 1) / kTcBN;
  int64_t tm, tn;
  grouped_tile(blockIdx.x, tiles_m, tiles_n, tm, tn);
  const int64_t m0 = tm * kTcBM, n0 = tn * kTcBN;
  const int k_tiles = static_cast<int>((K + kTcBK - 1) / kTcBK);
  const uint32_t smem_base = smem_u32(smem);

  // One batch per (y, z) pair; the grid may round the batch count up.
  const int64_t batch = int64_t(blockIdx.z) * gridDim.y + blockIdx.y;
  if (batch >= batches) return;  // the whole block leaves before any barrier
  const T* pa = a.ptr + batch * a.bs;
  const T* pb = bt.ptr + batch * bt.bs;

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

  const TcTileLoader<kAK, kTcBM, T> load_a(pa, a.ld, M, K, m0, tid);
  const TcTileLoader<kBK, kTcBN, T> load_b(pb, bt.ld, N, K, n0, tid);
  auto load_stage = [&](int kt) {
    T* st = smem + (kt % kTcStages) * kStageElems;
    const int64_t k0 = int64_t(kt) * kTcBK;
    load_a.load(st, a.ld, K, k0, tid);
    load_b.load(st + kAElems, bt.ld, K, k0, tid);
  };

  // Prologue: the first kStages-1 k-tiles in flight, one commit group each (empty groups
  // past the end keep the group count uniform).
#pragma unroll
  for (int s = 0; s < kTcStages - 1; ++s) {
    if (s < k_tiles) load_stage(s);
    cp_async_commit();
  }

  for (int kt = 0; kt < k_tiles; ++kt) {
    // Groups committed so far: kStages-1+kt; leaving kStages-2 pending means k-tile kt has
    // landed for this thread, and the barrier makes every thread's copies visible. It also
    // guarantees that all warps finished k-tile kt-1, whose stage is refilled next.
    cp_async_wait<kTcStages - 2>();
    __syncthreads();
    if (kt + kTcStages - 1 < k_tiles) load_stage(kt + kTcStages - 1);
    cp_async_commit();

    const uint32_t sa = smem_base + static_cast<uint32_t>((kt % kTcStages) * kStageElems) * 2u;
    const uint32_t sb = sa + static_cast<uint32_t>(kAElems) * 2u;
#pragma unroll
    for (int kk = 0; kk < kTcBK; kk += 16) {
      // B fragments for the warp's 32 columns first, then one A fragment per m16 row:
      // 8 + 4 fragment registers live instead of 8 + 16.
      uint32_t bf[2][4];
#pragma unroll
      for (int nj = 0; nj < 2; ++nj)
        ldmatrix_x4<!kBK>(bf[nj], tc_frag_addr<kBK, kTcBN>(sb, warp_n * 32 + nj * 16, kk, lane));
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) {
        uint32_t af[4];
        ldmatrix_x4<!kAK>(af, tc_frag_addr<kAK, kTcBM>(sa, warp_m * 64 + mi * 16, kk, lane));
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
          mma_16816<T>(acc[mi][ni], af, bf[ni >> 1][ni & 1], bf[ni >> 1][(ni & 1) + 2]);
      }
    }
  }
  cp_async_wait<0>();  // only empty groups can remain; leave none behind at exit

  // C fragment: c0, c1 at (row g, cols 2t, 2t+1), c2, c3 at row g + 8; g = lane / 4, t = lane % 4.
  T* po = out + batch * M * N;
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t row = m0 + warp_m * 64 + mi * 16 + g + half * 8;
      if (row >= M) continue;
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
        const int64_t col = n0 + warp_n * 32 + ni * 8 + 2 * t;
        float x = acc[mi][ni][half * 2], y = acc[mi][ni][half * 2 + 1];
        if (bias) {  // Linear's fused bias, added in f32 before rounding
          if (col < N) x += static_cast<float>(bias[col]);
          if (col + 1 < N) y += static_cast<float>(bias[col + 1]);
        }
        T* p = po + row * N + col;
        if (pair_store && col + 1 < N) {
          store_pair<T>(p, x, y);
        } else {
          if (col < N) store_one<T>(p, x);
          if (col + 1 < N) store_one<T>(p + 1, y);
        }
      }
    }
  }
}

}  // namespace ember::cuda::gemm_detail
