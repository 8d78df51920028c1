// Dropout on the attention probabilities inside the CUDA kernels, drawing exactly the CPU's
// mask (src/cpu/attention.cpp, prim/attention_params.h): score (b, h, i, j) is element
// e = ((b H + h) Tq + i) Tk + j of the (B, H, Tq, Tk) draw, which uses Philox block
// `offset + e / 4` (counter high word 0, key = seed), lane e % 4 (core/philox.h, the same
// function the CPU and random.cu call), and is kept when philox_uniform01(lane) < 1 - p.
//
// The comparison is done in integers: philox_uniform01(x) is m 2^-24 with m = x >> 8, exactly
// representable, and the CPU compares it (promoted to double) with keep = 1 - p. For an integer
// m, m 2^-24 < keep iff m < ceil(keep 2^24), and keep 2^24 is exact in double (a power-of-two
// scale), so `(x >> 8) < threshold` with threshold = ceil(keep 2^24) is the CPU's decision bit
// for bit. Kept probabilities are scaled by float(1 / keep), the CPU's f32 multiplier.
//
// The kernels draw a whole tile's mask at once into shared memory (fill_keep): the threads of
// the CTA share out the Philox blocks the tile's row segments touch, so each block is computed
// once per tile (kCols / 4 + 1 blocks per row of kCols keys) rather than once per element, and
// the per-element reads that follow are shared-memory byte loads. Philox is the cost of dropout
// on the GPU: 10 rounds of two 32x32->64 multiplies, about 25 integer instructions per score.
#pragma once
#include <cmath>
#include <cstdint>

#include "core/philox.h"

namespace ember::cuda::attn_dropout {

struct Dropout {
  uint64_t seed = 0, offset = 0;
  uint32_t threshold = 0;  // keep iff (bits >> 8) < threshold
  float scale = 1.f;       // 1 / (1 - p), applied to kept probabilities
  bool on = false;         // p > 0
};

// The kernel arguments for dropout probability p in [0, 1) and the stream (seed, offset).
inline Dropout make_dropout(double p, uint64_t seed, uint64_t offset) {
  Dropout d;
  if (!(p > 0)) return d;
  const double keep = 1.0 - p;  // the CPU's expression, so the same double
  d.seed = seed;
  d.offset = offset;
  // keep is in (0, 1] (1 when p is below half an ulp of 1), so the threshold is at most 2^24.
  d.threshold = static_cast<uint32_t>(std::ceil(keep * 16777216.0));
  d.scale = static_cast<float>(1.0 / keep);
  d.on = true;
  return d;
}

// Whether element e of the draw is kept (the CPU's decision for that element).
__host__ __device__ __forceinline__ bool keep_element(const Dropout& d, uint64_t e) {
  const PhiloxBlock r = philox_block(d.offset + e / 4, 0, d.seed);
  const uint32_t lo = (e & 1) ? r.v[1] : r.v[0], hi = (e & 1) ? r.v[3] : r.v[2];  // no dynamic index
  return (((e & 2) ? hi : lo) >> 8) < d.threshold;
}

// keep[r * kCols + c] = 1 when score (query i0 + r, key j0 + c) of pair bh is kept, for the
// (kRows, kCols) tile, computed by the kThreadsN threads of the CTA together. Rows past Tq get 0
// without a Philox call; keys past Tk get the decision of an element of the next row, which no
// kernel reads unmasked (those scores have P = 0). The caller synchronises before the reads.
template <int kRows, int kCols, int kThreadsN>
__device__ __forceinline__ void fill_keep(uint8_t* keep, const Dropout& d, int64_t bh, int64_t i0, int64_t j0,
                                          int64_t Tq, int64_t Tk) {
  constexpr int kBlocks = kCols / 4 + 1;  // Philox blocks a row segment of kCols elements may touch
  for (int task = threadIdx.x; task < kRows * kBlocks; task += kThreadsN) {
    const int r = task / kBlocks, kb = task % kBlocks;
    const bool row_ok = i0 + r < Tq;
    const uint64_t e0 = static_cast<uint64_t>(((bh * Tq + i0 + r) * Tk) + j0);  // element of column 0
    const int c0 = 4 * kb - static_cast<int>(e0 % 4);                           // column of the block's lane 0
    if (c0 >= kCols) continue;
    PhiloxBlock x{{0u, 0u, 0u, 0u}};
    if (row_ok) x = philox_block(d.offset + e0 / 4 + static_cast<uint64_t>(kb), 0, d.seed);
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const int c = c0 + l;
      if (c >= 0 && c < kCols) keep[r * kCols + c] = row_ok && (x.v[l] >> 8) < d.threshold;
    }
  }
}

}  // namespace ember::cuda::attn_dropout
