// The Hopper GEMM for f16/bf16 with f32 accumulation: TMA loads into a shared-memory ring, wgmma
// from shared memory, producer/consumer warp specialisation with register reallocation, mbarrier
// synchronisation and a persistent, L2-grouped tile schedule. sm_90a only: gemm_wgmma.cu (the
// launcher) is compiled with -gencode arch=compute_90a,code=sm_90a by its own CMake target; the
// host emulation (tests/emu/sm90) compiles this header as C++ against emulated primitives.
//
//   out (B, M, N) row-major = A (B, M, K) @ Bt (B, N, K)^T   (+ bias[n])
//
// Each operand is K-major (K contiguous: A row-major, B column-major) or MN-major (A
// column-major, B row-major); the four combinations are four instantiations. An MN-major tile is
// loaded as 64-column chunks and handed to wgmma with its transpose flag.
//
// Written from the PTX ISA (wgmma.mma_async, cp.async.bulk.tensor, mbarrier, setmaxnreg) and the
// CUDA programming guide (tensor maps). Design:
// - Block = 3 warpgroups (384 threads). Warpgroup 2 is the producer: after `setmaxnreg.dec` to 40
//   registers one thread walks the tiles and issues the TMA loads of each k-step (128-byte
//   swizzle) into stage s of a kStages-deep ring, announcing the bytes on the stage's `full`
//   mbarrier. Warpgroups 0 and 1 are consumers (`setmaxnreg.inc` to 232): each owns 64 rows of
//   the 128 x BN block tile, waits on `full`, issues four m64nBNk16 wgmma (K = 64 per stage)
//   straight from the swizzled shared tiles, and releases the stage on its `empty` mbarrier once
//   the wgmma group that read it has retired (one group stays in flight, so the tensor cores
//   never wait on the release).
// - Shared-memory descriptors: see smem_desc below. Stage buffers are 1024-byte aligned, as the
//   swizzle pattern requires.
// - Edges: TMA fills out-of-range box elements with zeros, so partial tiles in M, N and K need no
//   separate path; the epilogue stores with bounds checks.
// - Persistent: gridDim.x = min(tiles, SMs); block b takes tiles b, b + grid, ... in an order
//   that walks 8 tile-rows at a time (L2 reuse of A and Bt panels). While the consumers run the
//   epilogue of one tile, the producer is already loading the next one.
// - Epilogue: accumulators (+ bias) rounded to the element type and stored from registers, two
//   columns at a time when the row allows.
// Not done (yet): thread-block clusters with TMA multicast, a TMA-store epilogue, 8-bit types.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "../tile_order.cuh"
#include "gemm_wgmma.h"
#include "sm90_ops.cuh"

namespace ember::cuda::sm90::wgmma_detail {

constexpr int kBM = 128, kTileK = 64, kStages = 4, kConsumers = 2;
constexpr int kThreads = 128 * (kConsumers + 1);
constexpr int kProducerRegs = 40, kConsumerRegs = 232;

template <int BN>
constexpr int smem_bytes() {
  // stage buffers, the mbarriers, and slack to align the ring to 1024 bytes
  return kStages * (kBM + BN) * kTileK * 2 + 2 * kStages * 8 + 1024;
}

// The launch grid: one block per tile up to one block per SM (the rest is walked persistently).
inline unsigned grid_blocks(int64_t M, int64_t N, int64_t batches, int block_n, int sms) {
  const int64_t tiles = ((M + kBM - 1) / kBM) * ((N + block_n - 1) / block_n) * batches;
  return static_cast<unsigned>(tiles < sms ? tiles : sms);
}

// The arguments of cuTensorMapEncodeTiled for one operand, a (rows, K) matrix as a 3-D tensor:
// K-major {K, rows, batch} with box {64, box_rows, 1}, MN-major {rows, K, batch} with box
// {64, 64, 1}; 128-byte swizzle, zero fill out of bounds.
struct TensorMapArgs {
  CUtensorMapDataType dtype;
  cuuint32_t rank;
  void* address;
  cuuint64_t dims[3];
  cuuint64_t strides[2];  // bytes, dims 1 and 2
  cuuint32_t box[3];
  cuuint32_t elem_strides[3];
  CUtensorMapInterleave interleave;
  CUtensorMapSwizzle swizzle;
  CUtensorMapL2promotion l2_promotion;
  CUtensorMapFloatOOBfill oob_fill;
};
inline TensorMapArgs tensor_map_args(bool bf16, const Operand& op, int64_t K, int64_t batches, int box_rows) {
  TensorMapArgs m{};
  m.dtype = bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  m.rank = 3;
  m.address = const_cast<void*>(op.ptr);
  const int64_t inner = op.k_major ? K : op.rows, outer = op.k_major ? op.rows : K;
  m.dims[0] = static_cast<cuuint64_t>(inner);
  m.dims[1] = static_cast<cuuint64_t>(outer);
  m.dims[2] = static_cast<cuuint64_t>(batches);
  // Byte strides of dims 1 and 2; a single batch gets a harmless whole-matrix stride.
  const int64_t bs = batches == 1 ? op.ld * outer : op.batch_stride;
  m.strides[0] = static_cast<cuuint64_t>(op.ld * 2);
  m.strides[1] = static_cast<cuuint64_t>(bs * 2);
  m.box[0] = static_cast<cuuint32_t>(op.k_major ? kTileK : 64);
  m.box[1] = static_cast<cuuint32_t>(op.k_major ? box_rows : kTileK);
  m.box[2] = 1;
  m.elem_strides[0] = m.elem_strides[1] = m.elem_strides[2] = 1;
  m.interleave = CU_TENSOR_MAP_INTERLEAVE_NONE;
  m.swizzle = CU_TENSOR_MAP_SWIZZLE_128B;
  m.l2_promotion = CU_TENSOR_MAP_L2_PROMOTION_L2_256B;
  m.oob_fill = CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE;
  return m;
}


#if EMBER_SM90_DEVICE_CODE

// An operand tile in 128-byte-swizzled shared memory (swizzle mode 1). The swizzle atom is 8
// rows of 128 bytes (1024 bytes, stored contiguously):
// - K-major: a row is 64 elements of K; atoms follow each other along M/N, 1024 bytes apart
//   (stride byte offset); the leading byte offset is unused (16).
// - MN-major: a row is 64 elements of M/N; atoms along K are 1024 bytes apart (stride byte
//   offset) and atoms along M/N (the next 64 columns) kMnChunkBytes apart (leading byte offset).
constexpr uint32_t kMnChunkBytes = 64 * kTileK * 2;  // one 64-wide M/N chunk of a stage
template <bool kKMajor>
__device__ __forceinline__ uint64_t smem_desc(const void* p) {
  const uint64_t addr = smem_u32(p);
  const uint64_t lbo = kKMajor ? 16 : kMnChunkBytes;
  return ((addr & 0x3FFFF) >> 4) | ((lbo >> 4) << 16) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}
// Descriptor units (16 bytes) between consecutive k16 slices: 32 bytes along a K-major row, or
// two 8-row atoms (2048 bytes) of an MN-major tile.
template <bool kKMajor>
constexpr uint64_t kK16Step = kKMajor ? 2 : 128;

template <class T, int BN, bool kAKMajor, bool kBKMajor>
__device__ __forceinline__ void wgmma_k16(float (&d)[BN / 2], uint64_t da, uint64_t db, int acc) {
  constexpr int ta = kAKMajor ? 0 : 1, tb = kBKMajor ? 0 : 1;
  if constexpr (BN == 256 && std::is_same_v<T, __nv_bfloat16>)
    wgmma_m64n256k16_bf16<ta, tb>(d, da, db, acc);
  else if constexpr (BN == 256)
    wgmma_m64n256k16_f16<ta, tb>(d, da, db, acc);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>)
    wgmma_m64n128k16_bf16<ta, tb>(d, da, db, acc);
  else
    wgmma_m64n128k16_f16<ta, tb>(d, da, db, acc);
}

// Loads one operand's (rows x 64) slice of a stage: a K-major operand in one box {64 K, rows},
// an MN-major one in rows / 64 boxes {64 rows, 64 K}, each a 64-column chunk of the tile.
template <bool kKMajor, int kRows, class T>
__device__ __forceinline__ void load_operand(T* dst, const CUtensorMap* map, uint64_t* bar, int k0, int r0, int batch) {
  if constexpr (kKMajor) {
    tma_load_3d(dst, map, bar, k0, r0, batch);
  } else {
#pragma unroll
    for (int c = 0; c < kRows / 64; ++c) tma_load_3d(dst + c * 64 * kTileK, map, bar, r0 + 64 * c, k0, batch);
  }
}

template <class T>
__device__ __forceinline__ float to_f32(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __bfloat162float(v);
  else
    return __half2float(v);
}
template <class T>
__device__ __forceinline__ T from_f32(float v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __float2bfloat16_rn(v);
  else
    return __float2half_rn(v);
}

template <class T>
__device__ __forceinline__ uint16_t bits16(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __bfloat16_as_ushort(v);
  else
    return __half_as_ushort(v);
}

#endif  // EMBER_SM90_DEVICE_CODE

template <class T, int BN, bool kAKMajor, bool kBKMajor>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_wgmma_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                      T* __restrict__ out, const T* __restrict__ bias, int M, int N, int K, int batches,
                      bool pair_store) {
#if EMBER_SM90_DEVICE_CODE
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  T* sa = reinterpret_cast<T*>(smem);   // [kStages][kBM][kTileK], swizzled by TMA
  T* sb = sa + kStages * kBM * kTileK;  // [kStages][BN][kTileK]
  uint64_t* full = reinterpret_cast<uint64_t*>(sb + kStages * BN * kTileK);
  uint64_t* empty = full + kStages;

  const int wg = threadIdx.x / 128, tid = threadIdx.x % 128;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 1);                  // the producer's arrive + the TMA bytes
      mbar_init(&empty[s], kConsumers * 128);  // every consumer thread
    }
    fence_mbarrier_init();
  }
  __syncthreads();

  const int64_t tiles_m = (M + kBM - 1) / kBM, tiles_n = (N + BN - 1) / BN;
  const int64_t per_batch = tiles_m * tiles_n, total = per_batch * batches;
  const int k_tiles = (K + kTileK - 1) / kTileK;

  if (wg == kConsumers) {
    // Producer warpgroup: one thread issues every load.
    setmaxnreg_dec<kProducerRegs>();
    if (tid == 0) {
      int stage = 0;
      uint32_t phase = 0;
      constexpr uint32_t bytes = (kBM + BN) * kTileK * sizeof(T);
      for (int64_t t = blockIdx.x; t < total; t += gridDim.x) {
        const int batch = static_cast<int>(t / per_batch);
        int64_t tm, tn;
        grouped_tile(t % per_batch, tiles_m, tiles_n, tm, tn);
        for (int kt = 0; kt < k_tiles; ++kt) {
          mbar_wait(&empty[stage],
                    phase ^ 1);  // a fresh barrier counts as released
          mbar_arrive_expect_tx(&full[stage], bytes);
          load_operand<kAKMajor, kBM>(sa + stage * kBM * kTileK, &map_a, &full[stage], kt * kTileK,
                                      static_cast<int>(tm * kBM), batch);
          load_operand<kBKMajor, BN>(sb + stage * BN * kTileK, &map_b, &full[stage], kt * kTileK,
                                     static_cast<int>(tn * BN), batch);
          if (++stage == kStages) {
            stage = 0;
            phase ^= 1;
          }
        }
      }
    }
    return;
  }

  // Consumer warpgroups.
  setmaxnreg_inc<kConsumerRegs>();
  float acc[BN / 2];
  int stage = 0;
  uint32_t phase = 0;
  const int warp = tid / 32, lane = tid % 32;
  for (int64_t t = blockIdx.x; t < total; t += gridDim.x) {
    const int64_t batch = t / per_batch;
    int64_t tm, tn;
    grouped_tile(t % per_batch, tiles_m, tiles_n, tm, tn);
    int prev = -1;
    for (int kt = 0; kt < k_tiles; ++kt) {
      mbar_wait(&full[stage], phase);
      // This warpgroup's 64 rows of A: 64 K-major rows, or MN-major chunk wg (same offset).
      const uint64_t da = smem_desc<kAKMajor>(sa + stage * kBM * kTileK + wg * 64 * kTileK);
      const uint64_t db = smem_desc<kBKMajor>(sb + stage * BN * kTileK);
      fence_regs(acc);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kTileK / 16; ++kk)
        wgmma_k16<T, BN, kAKMajor, kBKMajor>(acc, da + kK16Step<kAKMajor> * kk, db + kK16Step<kBKMajor> * kk,
                                             (kt > 0 || kk > 0) ? 1 : 0);
      wgmma_commit_group();
      fence_regs(acc);
      // The group before this one has retired: its stage can be refilled.
      wgmma_wait_group<1>();
      if (prev >= 0) mbar_arrive(&empty[prev]);
      prev = stage;
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1;
      }
    }
    wgmma_wait_group<0>();
    fence_regs(acc);
    if (prev >= 0) mbar_arrive(&empty[prev]);

    // Epilogue. Fragment of m64nBN f32: n8 block j, thread lane -> rows lane/4 and lane/4 + 8 of
    // the warp's 16, columns 8j + 2 (lane % 4) + {0, 1}.
    T* po = out + batch * static_cast<int64_t>(M) * N;
    const int64_t row0 = tm * kBM + wg * 64 + warp * 16 + lane / 4;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
      const int64_t col = tn * BN + 8 * j + 2 * (lane % 4);
      if (col >= N) continue;
      const bool two = col + 1 < N;
      const float b0 = bias ? to_f32(bias[col]) : 0.f;
      const float b1 = (bias && two) ? to_f32(bias[col + 1]) : 0.f;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t row = row0 + 8 * h;
        if (row >= M) continue;
        T* p = po + row * N + col;
        const T v0 = from_f32<T>(acc[4 * j + 2 * h] + b0);
        if (two && pair_store) {
          const T v1 = from_f32<T>(acc[4 * j + 2 * h + 1] + b1);
          *reinterpret_cast<uint32_t*>(p) = uint32_t{bits16(v0)} | (uint32_t{bits16(v1)} << 16);
        } else {
          p[0] = v0;
          if (two) p[1] = from_f32<T>(acc[4 * j + 2 * h + 1] + b1);
        }
      }
    }
  }
#else
  // Built for another architecture: the host never launches it there (wgmma_unsupported).
  __trap();
#endif
}

}  // namespace ember::cuda::sm90::wgmma_detail
