// Flash-attention-style fused attention on CUDA (contracts in prim/primitives.h, mirroring
// src/cpu/attention.cpp). f16/bf16 in and out, f32 arithmetic, head dim D in {64, 128}
// (template parameter), any sequence lengths, causal, key padding and bool masks.
//
// Forward: one CTA of 128 threads per (b, h, tile of kFwdBQ = 64 queries). The Q tile stays in
// shared memory; K and V stream through it kFwdBK = 32 keys at a time. Thread (ty, tx) =
// (tid / 8, tid % 8) owns score rows ty*4 .. ty*4+3 and columns tx, tx+8, tx+16, tx+24 of each
// (64, 32) tile, and output columns tx + 8c of the same rows. Online softmax (in base 2: the
// scores are pre-multiplied by scale * log2 e): per row a running max m and sum l; a new
// tile's max m' rescales the accumulators by 2^(m - m'). The eight threads of a row meet by
// warp shuffles (xor 1, 2, 4 stay inside aligned groups of 8 lanes). Probabilities go through
// shared memory once, for the P V product. The (Tq, Tk) matrix never exists; the row
// logsumexp m ln 2 + ln l is saved for the backward. Causal: key tiles past the last key the
// tile's last query may see are skipped. A row with no allowed key keeps l = 0: output 0,
// logsumexp -inf (exp2(-inf - 0) = 0 keeps NaN out of the running values).
//
// Backward (three launches; P recomputed per tile from the logsumexp, no atomics):
//   1. D_i = sum_d dO[i, d] O[i, d], a warp per row.
//   2. dK, dV: one CTA per (b, h, tile of 32 keys), looping over 32-query tiles (from the
//      first query that may see the tile, when causal): P = 2^(s log2 e - lse log2 e),
//      dS = scale P (dP - D_i) with dP = dO V^T; dV += P^T dO, dK += dS^T Q.
//   3. dQ: one CTA per (b, h, tile of 32 queries), looping over key tiles: dQ += dS K.
//   Both compute their (32, 32) tile of P and dS the same way (tile_grads); the recomputation
//   of S and dP in pass 3 is the price of a deterministic dQ without f32 atomics.
// Shared rows are padded to D + 2 halves so that the 4-byte reads of neighbouring rows fall on
// different banks. These are SIMT FMAs; the tensor-core kernels (attention_mma.cuh forward,
// attention_mma_bwd.cuh backward) are the default and fall back to these when
// EMBER_ATTENTION_KERNEL=simt, when a pointer is not 16-byte aligned, or when their first-use
// check on a device disagrees with these (docs/attention.md).
//
// Dropout (p > 0) runs separate instantiations of every kernel (template flag kDrop, so p = 0
// runs code without a trace of it) that draw the CPU's Philox mask per tile into shared memory
// (attention_dropout.cuh): the forward sums l over the undropped P (the logsumexp is P's),
// zeroes dropped probabilities before P V and scales O by 1 / (1 - p); the backward uses
// P_dropped for dV and masks and scales dP before dS, as src/cpu/attention.cpp does. The first
// use per (device, dtype, head dim) checks the SIMT dropout kernels against a host computation
// of the CPU's stream (and refuses dropout with an error if they disagree), and the tensor-core
// dropout kernels against the SIMT ones (falling back to SIMT for dropout if they disagree).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "attention_dropout.cuh"
#include "attention_mma.cuh"
#include "attention_mma_bwd.cuh"
#include "common.cuh"
#include "cuda/kernels.h"
#include "cuda/once_verdict.h"
#include "prim/primitives.h"
#include "prim/registry.h"
#include "ember/core/storage.h"

namespace ember::cuda {
namespace {

constexpr int kAttnThreads = 128;      // 16 row groups (ty) x 8 column lanes (tx)
constexpr int kFwdBQ = 64, kFwdBK = 32;  // forward: queries per CTA, keys per streamed tile
constexpr int kBwdB = 32;              // backward: queries and keys per tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr int64_t kMaxGridY = 65535;
using attn_dropout::Dropout;

struct MaskArgs {
  const bool* pad;    // (B, Tk), true = ignore the key; or null
  const bool* bmask;  // element (b, h, i, j) at b s0 + h s1 + i s2 + j s3, true = may attend; or null
  int64_t s0, s1, s2, s3;
  int64_t Tq, Tk;
  bool causal;
};

__device__ __forceinline__ bool allowed(const MaskArgs& m, int64_t b, int64_t h, int64_t i, int64_t j) {
  if (i >= m.Tq || j >= m.Tk) return false;
  if (m.causal && j > i + (m.Tk - m.Tq)) return false;
  if (m.pad && m.pad[b * m.Tk + j]) return false;
  if (m.bmask && !m.bmask[b * m.s0 + h * m.s1 + i * m.s2 + j * m.s3]) return false;
  return true;
}

template <class T>
__device__ __forceinline__ float2 load2(const T* p) {
  if constexpr (std::is_same_v<T, __half>) return __half22float2(*reinterpret_cast<const __half2*>(p));
  else return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
}

__device__ __forceinline__ float group8_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 4));
}
__device__ __forceinline__ float group8_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v + __shfl_xor_sync(0xffffffffu, v, 4);
}

// Rows [r0, r0 + kRows) of a contiguous (n, D) matrix into shared memory with row pitch D + 2;
// rows past n are zero. 4-byte (2-element) copies, consecutive threads on consecutive pairs.
template <class T, int D, int kRows>
__device__ __forceinline__ void load_tile(T* __restrict__ dst, const T* __restrict__ src, int64_t r0, int64_t n) {
  constexpr int kPairs = D / 2;
  for (int idx = threadIdx.x; idx < kRows * kPairs; idx += kAttnThreads) {
    const int r = idx / kPairs, c = (idx % kPairs) * 2;
    uint32_t bits = 0;
    if (r0 + r < n) bits = *reinterpret_cast<const uint32_t*>(src + (r0 + r) * D + c);
    *reinterpret_cast<uint32_t*>(dst + r * (D + 2) + c) = bits;
  }
}

// --- forward ------------------------------------------------------------------------------------

template <class T, int D, bool kDrop>
__global__ void __launch_bounds__(kAttnThreads)
    attention_forward_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                             T* __restrict__ out, float* __restrict__ lse, MaskArgs m, int64_t BH, int64_t H,
                             float scale_log2, Dropout dr) {
  constexpr int kP = D + 2, kC = D / 8;
  __shared__ __align__(16) T Qs[kFwdBQ * kP];  // (64, D)
  __shared__ __align__(16) T Ks[kFwdBK * kP];  // (32, D)
  __shared__ __align__(16) T Vs[kFwdBK * kP];  // (32, D)
  __shared__ float Ps[kFwdBQ][kFwdBK + 1];     // (64, 32) probabilities of the current tile
  __shared__ uint8_t keep[kDrop ? kFwdBQ * kFwdBK : 1];  // its dropout mask
  const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
  const int64_t Tq = m.Tq, Tk = m.Tk;
  const int64_t q0 = int64_t(blockIdx.x) * kFwdBQ;
  const float neg_inf = -INFINITY;
  for (int64_t bh = blockIdx.y; bh < BH; bh += gridDim.y) {
    const int64_t b = bh / H, h = bh % H;
    const T* kb = k + bh * Tk * D;  // (Tk, D)
    const T* vb = v + bh * Tk * D;  // (Tk, D)
    __syncthreads();                // the previous pair is done with Qs
    load_tile<T, D, kFwdBQ>(Qs, q + bh * Tq * D, q0, Tq);
    float o[4][kC], mrow[4], lrow[4];
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      mrow[a] = neg_inf;
      lrow[a] = 0.f;
#pragma unroll
      for (int c = 0; c < kC; ++c) o[a][c] = 0.f;
    }
    int64_t kend = Tk;  // keys [0, kend) may be seen by some query of the tile
    if (m.causal) kend = min(Tk, max(int64_t{0}, q0 + kFwdBQ + Tk - Tq));
    for (int64_t j0 = 0; j0 < kend; j0 += kFwdBK) {
      __syncthreads();  // Ks, Vs, Ps free (and Qs written, on the first tile)
      load_tile<T, D, kFwdBK>(Ks, kb, j0, Tk);
      load_tile<T, D, kFwdBK>(Vs, vb, j0, Tk);
      if constexpr (kDrop) attn_dropout::fill_keep<kFwdBQ, kFwdBK, kAttnThreads>(keep, dr, bh, q0, j0, Tq, Tk);
      __syncthreads();
      float s[4][4];
#pragma unroll
      for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int c = 0; c < 4; ++c) s[a][c] = 0.f;
#pragma unroll 4
      for (int d = 0; d < D; d += 2) {
        float2 qa[4], ka[4];
#pragma unroll
        for (int a = 0; a < 4; ++a) qa[a] = load2(Qs + (ty * 4 + a) * kP + d);
#pragma unroll
        for (int c = 0; c < 4; ++c) ka[c] = load2(Ks + (tx + 8 * c) * kP + d);
#pragma unroll
        for (int a = 0; a < 4; ++a)
#pragma unroll
          for (int c = 0; c < 4; ++c) s[a][c] += qa[a].x * ka[c].x + qa[a].y * ka[c].y;
      }
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        const int64_t i = q0 + ty * 4 + a;
        float tmax = neg_inf;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          s[a][c] = allowed(m, b, h, i, j0 + tx + 8 * c) ? s[a][c] * scale_log2 : neg_inf;
          tmax = fmaxf(tmax, s[a][c]);
        }
        const float mnew = fmaxf(mrow[a], group8_max(tmax));
        const float muse = mnew == neg_inf ? 0.f : mnew;  // all masked so far: keep exp2 finite
        const float alpha = exp2f(mrow[a] - muse);
        float psum = 0.f;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const float p = exp2f(s[a][c] - muse);
          psum += p;  // l is the undropped normaliser (the logsumexp is P's, as on the CPU)
          if constexpr (kDrop) Ps[ty * 4 + a][tx + 8 * c] = keep[(ty * 4 + a) * kFwdBK + tx + 8 * c] ? p : 0.f;
          else Ps[ty * 4 + a][tx + 8 * c] = p;
        }
        lrow[a] = lrow[a] * alpha + group8_sum(psum);
        mrow[a] = mnew;
#pragma unroll
        for (int c = 0; c < kC; ++c) o[a][c] *= alpha;
      }
      __syncthreads();
#pragma unroll 4
      for (int j = 0; j < kFwdBK; ++j) {
        float p[4];
#pragma unroll
        for (int a = 0; a < 4; ++a) p[a] = Ps[ty * 4 + a][j];
#pragma unroll
        for (int c = 0; c < kC; ++c) {
          const float vv = to_acc(Vs[j * kP + tx + 8 * c]);
#pragma unroll
          for (int a = 0; a < 4; ++a) o[a][c] += p[a] * vv;
        }
      }
    }
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      const int64_t i = q0 + ty * 4 + a;
      if (i >= Tq) continue;
      const bool dead = lrow[a] == 0.f;  // no key allowed
      const float inv = dead ? 0.f : (kDrop ? dr.scale : 1.f) / lrow[a];
#pragma unroll
      for (int c = 0; c < kC; ++c) out[(bh * Tq + i) * D + tx + 8 * c] = from_acc<T>(o[a][c] * inv);
      if (tx == 0) lse[bh * Tq + i] = dead ? neg_inf : mrow[a] / kLog2e + logf(lrow[a]);
    }
  }
}

// --- backward -----------------------------------------------------------------------------------

// D_i = sum_d dO[i, d] O[i, d]: a warp per row, rows grid-stride.
template <class T, int D>
__global__ void attention_row_dot_kernel(const T* __restrict__ dout, const T* __restrict__ out,
                                         float* __restrict__ di, int64_t rows) {
  const int lane = threadIdx.x % kWarp, warps = blockDim.x / kWarp;
  for (int64_t r = int64_t(blockIdx.x) * warps + threadIdx.x / kWarp; r < rows; r += int64_t(gridDim.x) * warps) {
    float acc = 0.f;
    for (int d = lane; d < D; d += kWarp) acc += to_acc(dout[r * D + d]) * to_acc(out[r * D + d]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) di[r] = acc;
  }
}

// P and dS = scale P (dP - D_i) of the (32 queries from i0, 32 keys from j0) tile into Ps and
// dSs. Thread (ty, tx) computes rows ty*2, ty*2+1 and columns tx + 8c, c < 4. lse and di
// point at the pair's rows.
template <class T, int D, bool kDrop>
__device__ __forceinline__ void tile_grads(const T* Qs, const T* dOs, const T* Ks, const T* Vs,
                                           float (*Ps)[kBwdB + 1], float (*dSs)[kBwdB + 1], const uint8_t* keep,
                                           const Dropout& dr, const float* lse, const float* di, const MaskArgs& m,
                                           int64_t b, int64_t h, int64_t i0, int64_t j0, float scale,
                                           float scale_log2) {
  constexpr int kP = D + 2;
  const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
  float s[2][4], dp[2][4];
#pragma unroll
  for (int a = 0; a < 2; ++a)
#pragma unroll
    for (int c = 0; c < 4; ++c) s[a][c] = dp[a][c] = 0.f;
#pragma unroll 4
  for (int d = 0; d < D; d += 2) {
    float2 qa[2], ga[2], ka[4], va[4];
#pragma unroll
    for (int a = 0; a < 2; ++a) {
      qa[a] = load2(Qs + (ty * 2 + a) * kP + d);
      ga[a] = load2(dOs + (ty * 2 + a) * kP + d);
    }
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      ka[c] = load2(Ks + (tx + 8 * c) * kP + d);
      va[c] = load2(Vs + (tx + 8 * c) * kP + d);
    }
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        s[a][c] += qa[a].x * ka[c].x + qa[a].y * ka[c].y;
        dp[a][c] += ga[a].x * va[c].x + ga[a].y * va[c].y;
      }
  }
#pragma unroll
  for (int a = 0; a < 2; ++a) {
    const int64_t i = i0 + ty * 2 + a;
    const float l = i < m.Tq ? lse[i] : -INFINITY;
    const float dsum = i < m.Tq ? di[i] : 0.f;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const bool ok = l != -INFINITY && allowed(m, b, h, i, j0 + tx + 8 * c);
      const float p = ok ? exp2f(s[a][c] * scale_log2 - l * kLog2e) : 0.f;
      if constexpr (kDrop) {  // P_dropped for dV; dP masked and scaled before dS
        const bool kept = keep[(ty * 2 + a) * kBwdB + tx + 8 * c];
        Ps[ty * 2 + a][tx + 8 * c] = kept ? p * dr.scale : 0.f;
        dSs[ty * 2 + a][tx + 8 * c] = scale * p * ((kept ? dp[a][c] * dr.scale : 0.f) - dsum);
      } else {
        Ps[ty * 2 + a][tx + 8 * c] = p;
        dSs[ty * 2 + a][tx + 8 * c] = scale * p * (dp[a][c] - dsum);
      }
    }
  }
}

// dK, dV of one 32-key tile per CTA.
template <class T, int D, bool kDrop>
__global__ void __launch_bounds__(kAttnThreads)
    attention_backward_kv_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                 const T* __restrict__ dout, const float* __restrict__ lse,
                                 const float* __restrict__ di, T* __restrict__ dk, T* __restrict__ dv, MaskArgs m,
                                 int64_t BH, int64_t H, float scale, float scale_log2, Dropout dr) {
  constexpr int kP = D + 2, kC = D / 8;
  __shared__ __align__(16) T Qs[kBwdB * kP], dOs[kBwdB * kP], Ks[kBwdB * kP], Vs[kBwdB * kP];
  __shared__ float Ps[kBwdB][kBwdB + 1], dSs[kBwdB][kBwdB + 1];
  __shared__ uint8_t keep[kDrop ? kBwdB * kBwdB : 1];  // the tile's dropout mask
  const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
  const int64_t Tq = m.Tq, Tk = m.Tk;
  const int64_t j0 = int64_t(blockIdx.x) * kBwdB;
  for (int64_t bh = blockIdx.y; bh < BH; bh += gridDim.y) {
    const int64_t b = bh / H, h = bh % H;
    __syncthreads();
    load_tile<T, D, kBwdB>(Ks, k + bh * Tk * D, j0, Tk);
    load_tile<T, D, kBwdB>(Vs, v + bh * Tk * D, j0, Tk);
    float gk[2][kC], gv[2][kC];
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
      for (int c = 0; c < kC; ++c) gk[a][c] = gv[a][c] = 0.f;
    int64_t istart = 0;  // queries before the first one that may see key j0 contribute nothing
    if (m.causal) istart = max(int64_t{0}, j0 - (Tk - Tq)) / kBwdB * kBwdB;
    for (int64_t i0 = istart; i0 < Tq; i0 += kBwdB) {
      __syncthreads();
      load_tile<T, D, kBwdB>(Qs, q + bh * Tq * D, i0, Tq);
      load_tile<T, D, kBwdB>(dOs, dout + bh * Tq * D, i0, Tq);
      if constexpr (kDrop) attn_dropout::fill_keep<kBwdB, kBwdB, kAttnThreads>(keep, dr, bh, i0, j0, Tq, Tk);
      __syncthreads();
      tile_grads<T, D, kDrop>(Qs, dOs, Ks, Vs, Ps, dSs, keep, dr, lse + bh * Tq, di + bh * Tq, m, b, h, i0, j0, scale,
                              scale_log2);
      __syncthreads();
#pragma unroll 4
      for (int i = 0; i < kBwdB; ++i) {
        float p[2], ds[2];
#pragma unroll
        for (int a = 0; a < 2; ++a) {
          p[a] = Ps[i][ty * 2 + a];
          ds[a] = dSs[i][ty * 2 + a];
        }
#pragma unroll
        for (int c = 0; c < kC; ++c) {
          const float qv = to_acc(Qs[i * kP + tx + 8 * c]), gov = to_acc(dOs[i * kP + tx + 8 * c]);
#pragma unroll
          for (int a = 0; a < 2; ++a) {
            gv[a][c] += p[a] * gov;
            gk[a][c] += ds[a] * qv;
          }
        }
      }
    }
#pragma unroll
    for (int a = 0; a < 2; ++a) {
      const int64_t j = j0 + ty * 2 + a;
      if (j >= Tk) continue;
#pragma unroll
      for (int c = 0; c < kC; ++c) {
        if (dk) dk[(bh * Tk + j) * D + tx + 8 * c] = from_acc<T>(gk[a][c]);
        if (dv) dv[(bh * Tk + j) * D + tx + 8 * c] = from_acc<T>(gv[a][c]);
      }
    }
  }
}

// dQ of one 32-query tile per CTA.
template <class T, int D, bool kDrop>
__global__ void __launch_bounds__(kAttnThreads)
    attention_backward_q_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                const T* __restrict__ dout, const float* __restrict__ lse,
                                const float* __restrict__ di, T* __restrict__ dq, MaskArgs m, int64_t BH, int64_t H,
                                float scale, float scale_log2, Dropout dr) {
  constexpr int kP = D + 2, kC = D / 8;
  __shared__ __align__(16) T Qs[kBwdB * kP], dOs[kBwdB * kP], Ks[kBwdB * kP], Vs[kBwdB * kP];
  __shared__ float Ps[kBwdB][kBwdB + 1], dSs[kBwdB][kBwdB + 1];
  __shared__ uint8_t keep[kDrop ? kBwdB * kBwdB : 1];  // the tile's dropout mask
  const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
  const int64_t Tq = m.Tq, Tk = m.Tk;
  const int64_t i0 = int64_t(blockIdx.x) * kBwdB;
  for (int64_t bh = blockIdx.y; bh < BH; bh += gridDim.y) {
    const int64_t b = bh / H, h = bh % H;
    __syncthreads();
    load_tile<T, D, kBwdB>(Qs, q + bh * Tq * D, i0, Tq);
    load_tile<T, D, kBwdB>(dOs, dout + bh * Tq * D, i0, Tq);
    float gq[2][kC];
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
      for (int c = 0; c < kC; ++c) gq[a][c] = 0.f;
    int64_t kend = Tk;
    if (m.causal) kend = min(Tk, max(int64_t{0}, i0 + kBwdB + Tk - Tq));
    for (int64_t j0 = 0; j0 < kend; j0 += kBwdB) {
      __syncthreads();
      load_tile<T, D, kBwdB>(Ks, k + bh * Tk * D, j0, Tk);
      load_tile<T, D, kBwdB>(Vs, v + bh * Tk * D, j0, Tk);
      if constexpr (kDrop) attn_dropout::fill_keep<kBwdB, kBwdB, kAttnThreads>(keep, dr, bh, i0, j0, Tq, Tk);
      __syncthreads();
      tile_grads<T, D, kDrop>(Qs, dOs, Ks, Vs, Ps, dSs, keep, dr, lse + bh * Tq, di + bh * Tq, m, b, h, i0, j0, scale,
                              scale_log2);
      __syncthreads();
#pragma unroll 4
      for (int j = 0; j < kBwdB; ++j) {
        float ds[2];
#pragma unroll
        for (int a = 0; a < 2; ++a) ds[a] = dSs[ty * 2 + a][j];
#pragma unroll
        for (int c = 0; c < kC; ++c) {
          const float kv = to_acc(Ks[j * kP + tx + 8 * c]);
#pragma unroll
          for (int a = 0; a < 2; ++a) gq[a][c] += ds[a] * kv;
        }
      }
    }
#pragma unroll
    for (int a = 0; a < 2; ++a) {
      const int64_t i = i0 + ty * 2 + a;
      if (i >= Tq) continue;
#pragma unroll
      for (int c = 0; c < kC; ++c) dq[(bh * Tq + i) * D + tx + 8 * c] = from_acc<T>(gq[a][c]);
    }
  }
}

// --- host launchers -----------------------------------------------------------------------------

MaskArgs mask_args(const AttentionParams& p) {
  MaskArgs m{};
  m.pad = p.key_padding.defined() ? static_cast<const bool*>(p.key_padding.data_ptr()) : nullptr;
  m.bmask = nullptr;
  if (p.mask.defined()) {  // the op routes float masks to the composed path
    m.bmask = static_cast<const bool*>(p.mask.data_ptr());
    m.s0 = p.mask.stride(0), m.s1 = p.mask.stride(1), m.s2 = p.mask.stride(2), m.s3 = p.mask.stride(3);
  }
  m.Tq = p.Tq, m.Tk = p.Tk;
  m.causal = p.causal;
  return m;
}

dim3 tile_grid(int64_t n, int tile, int64_t BH) {
  return dim3(static_cast<unsigned>((n + tile - 1) / tile), static_cast<unsigned>(std::min(BH, kMaxGridY)));
}

// One instantiation (dropout or not) of the two forward kernels.
template <class T, int D, bool kDrop>
void launch_forward_as(bool tensor_cores, const T* q, const T* k, const T* v, T* out, float* lse, const MaskArgs& m,
                       int64_t BH, int64_t H, float scale_log2, const Dropout& dr, cudaStream_t stream) {
  if (tensor_cores) {
    constexpr int smem = attn_mma::smem_bytes<D, kDrop>();
    static std::once_flag attr[64];
    const int dev = current_device();
    std::call_once(attr[dev % 64], [] {
      EMBER_CUDA_CHECK(cudaFuncSetAttribute(attn_mma::forward_kernel<T, D, MaskArgs, kDrop>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    });
    attn_mma::forward_kernel<T, D, MaskArgs, kDrop><<<tile_grid(m.Tq, attn_mma::kBQ, BH), attn_mma::kThreads, smem,
                                                      stream>>>(q, k, v, out, lse, m, BH, H, scale_log2, dr);
  } else {
    attention_forward_kernel<T, D, kDrop><<<tile_grid(m.Tq, kFwdBQ, BH), kAttnThreads, 0, stream>>>(
        q, k, v, out, lse, m, BH, H, scale_log2, dr);
  }
  EMBER_CUDA_LAUNCH_CHECK();
}

// The two forward kernels on raw pointers: the SIMT one above and the tensor-core one
// (attention_mma.cuh). Same inputs, same outputs (O and the row logsumexp). dr.on picks the
// dropout instantiations, so p = 0 runs kernels without a trace of dropout.
template <class T, int D>
void launch_forward(bool tensor_cores, const T* q, const T* k, const T* v, T* out, float* lse, const MaskArgs& m,
                    int64_t BH, int64_t H, float scale_log2, cudaStream_t stream, const Dropout& dr = {}) {
  if (dr.on) launch_forward_as<T, D, true>(tensor_cores, q, k, v, out, lse, m, BH, H, scale_log2, dr, stream);
  else launch_forward_as<T, D, false>(tensor_cores, q, k, v, out, lse, m, BH, H, scale_log2, dr, stream);
}

// EMBER_ATTENTION_KERNEL=mma (default) or simt: whether the tensor-core kernels (forward and
// backward) may run. Read on every call (a getenv is nothing beside a launch), so a test can
// switch kernels within one process.
bool tensor_core_enabled() {
  const char* e = std::getenv("EMBER_ATTENTION_KERNEL");
  if (e == nullptr || *e == '\0' || std::strcmp(e, "mma") == 0) return true;
  EMBER_CHECK(std::strcmp(e, "simt") == 0, "scaled_dot_product_attention", "EMBER_ATTENTION_KERNEL=\"", e,
              "\" is not a kernel; use mma (the default) or simt");
  return false;
}

// The dropout stream of the first-use checks: p = 0.25 (1 / (1 - p) = 4/3), any seed and offset.
Dropout check_dropout() { return attn_dropout::make_dropout(0.25, 0x5eed2024ULL, 12345); }

// The first time a (device, dtype, head dim) would run the tensor-core forward, it runs on a
// small problem beside the SIMT kernel (ragged query and key tiles, causal with Tk > Tq, key
// padding); if outputs or logsumexps differ by more than the rounding of P to the
// input type explains, the tensor-core kernel is not used for that combination in this process
// and a line on stderr says so. A guard for a kernel that is new on a device. The dropout
// instantiations (kDrop) have their own verdict: both kernels run with the check's dropout
// stream (kCheckDropout), the SIMT one being itself checked against the host (dropout_checked).
template <class T, int D, bool kDrop>
bool tensor_core_forward_check_run(int dev, cudaStream_t stream) {
  const Dropout dr = kDrop ? check_dropout() : Dropout{};
  constexpr int64_t B = 2, H = 1, Tq = 100, Tk = 150, BH = B * H;
  const int64_t nq = BH * Tq * D, nk = BH * Tk * D;
  std::vector<T> host(static_cast<size_t>(nq + 2 * nk));
  for (size_t i = 0; i < host.size(); ++i)
    host[i] = static_cast<T>(static_cast<float>(static_cast<int>((i * 2654435761u) >> 9) % 41 - 20) / 16.f);
  std::vector<unsigned char> pad(static_cast<size_t>(B * Tk), 0);
  for (int64_t j = 0; j < Tk; ++j) pad[static_cast<size_t>(j)] = j >= 7;  // batch 0: only keys 0..6
  const size_t bytes_in = host.size() * sizeof(T), bytes_out = static_cast<size_t>(2 * nq) * sizeof(T),
               bytes_lse = static_cast<size_t>(2 * BH * Tq) * sizeof(float);
  Storage buf(bytes_in + bytes_out + bytes_lse + pad.size() + 64, Device::cuda(dev));
  unsigned char* base = static_cast<unsigned char*>(buf.data());
  T* dq = reinterpret_cast<T*>(base);
  T* dk = dq + nq;
  T* dv = dk + nk;
  T* o_mma = reinterpret_cast<T*>(base + bytes_in);
  T* o_simt = o_mma + nq;
  float* l_mma = reinterpret_cast<float*>(base + bytes_in + bytes_out);
  float* l_simt = l_mma + BH * Tq;
  bool* dpad = reinterpret_cast<bool*>(base + bytes_in + bytes_out + bytes_lse);
  EMBER_CUDA_CHECK(cudaMemcpyAsync(dq, host.data(), bytes_in, cudaMemcpyHostToDevice, stream));
  EMBER_CUDA_CHECK(cudaMemcpyAsync(dpad, pad.data(), pad.size(), cudaMemcpyHostToDevice, stream));
  const float scale_log2 = kLog2e / std::sqrt(static_cast<float>(D));
  for (bool causal : {false, true}) {
    MaskArgs m{dpad, nullptr, 0, 0, 0, 0, Tq, Tk, causal};
    launch_forward<T, D>(true, dq, dk, dv, o_mma, l_mma, m, BH, H, scale_log2, stream, dr);
    launch_forward<T, D>(false, dq, dk, dv, o_simt, l_simt, m, BH, H, scale_log2, stream, dr);
    std::vector<T> o(static_cast<size_t>(2 * nq));
    std::vector<float> l(static_cast<size_t>(2 * BH * Tq));
    EMBER_CUDA_CHECK(cudaMemcpyAsync(o.data(), o_mma, bytes_out, cudaMemcpyDeviceToHost, stream));
    EMBER_CUDA_CHECK(cudaMemcpyAsync(l.data(), l_mma, bytes_lse, cudaMemcpyDeviceToHost, stream));
    EMBER_CUDA_CHECK(cudaStreamSynchronize(stream));
    double worst_o = 0, worst_l = 0;
    bool finite_match = true;
    for (int64_t i = 0; i < nq; ++i) {
      const double a = static_cast<float>(o[i]), b = static_cast<float>(o[nq + i]);
      if (!(std::fabs(a - b) <= 1e30)) finite_match = false;  // NaN or inf on one side
      worst_o = std::max(worst_o, std::fabs(a - b));
    }
    for (int64_t i = 0; i < BH * Tq; ++i) {
      const float a = l[i], b = l[BH * Tq + i];
      if (std::isinf(a) || std::isinf(b)) {
        if (a != b) finite_match = false;
        continue;
      }
      if (!(std::fabs(a - b) <= 1e30)) finite_match = false;
      worst_l = std::max(worst_l, static_cast<double>(std::fabs(a - b)));
    }
    // |O| <= 1.25 here (times 1 / (1 - p) with dropout); P rounded to the input type before P V
    // costs about 2^-8 relative.
    if (!(finite_match && worst_o <= 0.03 * dr.scale && worst_l <= 1e-3)) {
      std::fprintf(stderr,
                   "ember: the tensor-core attention forward (%s, D %d, %s%s) disagreed with the SIMT kernel on "
                   "device %d (largest differences: output %g, logsumexp %g); using the SIMT kernel from now on%s\n",
                   std::is_same_v<T, __half> ? "f16" : "bf16", D, causal ? "causal" : "full",
                   kDrop ? ", dropout" : "", dev, worst_o, worst_l, kDrop ? " for dropout" : "");
      return false;
    }
  }
  return true;
}

template <class T, int D, bool kDrop>
bool tensor_core_forward_checked(cudaStream_t stream) {
  static OnceVerdict<64> verdicts;  // per device (one instance per dtype, head dim and dropout)
  const int dev = current_device();
  return verdicts.get(dev, "the tensor-core attention self-check", "using the SIMT kernel",
                      [&] { return tensor_core_forward_check_run<T, D, kDrop>(dev, stream); },
                      stream_capturing(stream));
}

template <class T, int D>
void require_dropout_checked(cudaStream_t stream);

template <class T, int D>
void forward_typed(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& p, const Tensor& out,
                   const Tensor& lse) {
  const int64_t BH = p.B * p.H;
  if (BH == 0 || p.Tq == 0) return;
  const float scale_log2 = static_cast<float>(p.scale) * kLog2e;
  cudaStream_t stream = current_stream();
  const T *pq = static_cast<const T*>(q.data_ptr()), *pk = static_cast<const T*>(k.data_ptr()),
          *pv = static_cast<const T*>(v.data_ptr());
  const Dropout dr = attn_dropout::make_dropout(p.dropout, p.seed, p.offset);
  if (dr.on) require_dropout_checked<T, D>(stream);
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  const bool tc = tensor_core_enabled() && aligned(pq) && aligned(pk) && aligned(pv) &&
                  tensor_core_forward_checked<T, D, false>(stream) &&
                  (!dr.on || tensor_core_forward_checked<T, D, true>(stream));
  launch_forward<T, D>(tc, pq, pk, pv, static_cast<T*>(out.data_ptr()), static_cast<float*>(lse.data_ptr()),
                       mask_args(p), BH, p.H, scale_log2, stream, dr);
}

// One instantiation (dropout or not) of the two backward paths.
template <class T, int D, bool kDrop>
void launch_backward_as(bool tensor_cores, const T* q, const T* k, const T* v, const T* dout, const float* lse,
                        const float* di, T* dq, T* dk, T* dv, const MaskArgs& m, int64_t BH, int64_t H, float scale,
                        const Dropout& dr, cudaStream_t stream) {
  namespace bw = attn_mma_bwd;
  const float scale_log2 = scale * kLog2e;
  if (tensor_cores) {
    constexpr int kv_smem = bw::kv_smem_bytes<D, kDrop>(), q_smem = bw::q_smem_bytes<D, kDrop>();
    static std::once_flag attr[64];
    const int dev = current_device();
    std::call_once(attr[dev % 64], [] {
      EMBER_CUDA_CHECK(cudaFuncSetAttribute(bw::kv_kernel<T, D, MaskArgs, kDrop>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, kv_smem));
      EMBER_CUDA_CHECK(cudaFuncSetAttribute(bw::q_kernel<T, D, MaskArgs, kDrop>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, q_smem));
    });
    if (dk || dv) {
      bw::kv_kernel<T, D, MaskArgs, kDrop><<<tile_grid(m.Tk, bw::kBK, BH), bw::kThreads, kv_smem, stream>>>(
          q, k, v, dout, lse, di, dk, dv, m, BH, H, scale, scale_log2, dr);
      EMBER_CUDA_LAUNCH_CHECK();
    }
    if (dq) {
      bw::q_kernel<T, D, MaskArgs, kDrop><<<tile_grid(m.Tq, bw::kBQ, BH), bw::kThreads, q_smem, stream>>>(
          q, k, v, dout, lse, di, dq, m, BH, H, scale, scale_log2, dr);
      EMBER_CUDA_LAUNCH_CHECK();
    }
    return;
  }
  if (dk || dv) {
    attention_backward_kv_kernel<T, D, kDrop><<<tile_grid(m.Tk, kBwdB, BH), kAttnThreads, 0, stream>>>(
        q, k, v, dout, lse, di, dk, dv, m, BH, H, scale, scale_log2, dr);
    EMBER_CUDA_LAUNCH_CHECK();
  }
  if (dq) {
    attention_backward_q_kernel<T, D, kDrop><<<tile_grid(m.Tq, kBwdB, BH), kAttnThreads, 0, stream>>>(
        q, k, v, dout, lse, di, dq, m, BH, H, scale, scale_log2, dr);
    EMBER_CUDA_LAUNCH_CHECK();
  }
}

// The two backward paths on raw pointers, after D_i (di) is computed: the SIMT kernels above
// or the tensor-core ones (attention_mma_bwd.cuh). dq, dk, dv may each be null (not wanted).
template <class T, int D>
void launch_backward(bool tensor_cores, const T* q, const T* k, const T* v, const T* dout, const float* lse,
                     const float* di, T* dq, T* dk, T* dv, const MaskArgs& m, int64_t BH, int64_t H, float scale,
                     cudaStream_t stream, const Dropout& dr = {}) {
  if (dr.on)
    launch_backward_as<T, D, true>(tensor_cores, q, k, v, dout, lse, di, dq, dk, dv, m, BH, H, scale, dr, stream);
  else
    launch_backward_as<T, D, false>(tensor_cores, q, k, v, dout, lse, di, dq, dk, dv, m, BH, H, scale, dr, stream);
}

template <class T, int D>
void launch_row_dot(const T* dout, const T* out, float* di, int64_t rows, cudaStream_t stream) {
  attention_row_dot_kernel<T, D><<<grid_for(rows, kThreads / kWarp), kThreads, 0, stream>>>(dout, out, di, rows);
  EMBER_CUDA_LAUNCH_CHECK();
}

// The first time a (device, dtype, head dim) would run the tensor-core backward, it runs beside
// the SIMT kernels on three small ragged problems (B 2, H 1, key padding leaving batch 0 seven
// keys): Tq 100 / Tk 150 full and causal (Tk > Tq), and Tq 150 / Tk 100 causal, whose first 50
// queries see no key (zero gradients, and a NaN there would show). Inputs are multiples of
// 1/16 in [-1.25, 1.25]; O and the logsumexp come from the SIMT forward. Tolerance: the
// tensor-core path rounds P and dS to the input type (relative u = 2^-8 for bf16, 2^-11 for
// f16) before each of its three products, where the SIMT path keeps them in f32, and both round
// the result to the input type (u / 2 each). Over a sum of n terms with independent rounding
// errors that is a few u of the largest gradient, so 8u of each gradient's largest magnitude
// passes rounding and fails an indexing or masking error, which is of the order of the
// gradient itself. On a larger difference, or a NaN or inf on one side only, the SIMT kernels
// are kept for that combination in this process, with a line on stderr.
// With kDrop (the dropout instantiations, their own verdict) the forward and both backward
// paths run with the check's dropout stream.
template <class T, int D, bool kDrop>
bool tensor_core_backward_check_run(int dev, cudaStream_t stream) {
  const Dropout dr = kDrop ? check_dropout() : Dropout{};
  struct Case {
    int64_t Tq, Tk;
    bool causal;
  };
  constexpr int64_t B = 2, H = 1, BH = B * H, Tmax = 150;
  constexpr Case cases[] = {{100, 150, false}, {100, 150, true}, {150, 100, true}};
  const int64_t n = BH * Tmax * D;  // elements of one (B, H, Tmax, D) tensor
  std::vector<T> host(static_cast<size_t>(4 * n));  // q, k, v, dO
  for (size_t i = 0; i < host.size(); ++i)
    host[i] = static_cast<T>(static_cast<float>(static_cast<int>((i * 2654435761u) >> 9) % 41 - 20) / 16.f);
  // One buffer: q k v dO | O | dQ dK dV (mma) | dQ dK dV (SIMT) | lse di | padding mask.
  const size_t tb = static_cast<size_t>(n) * sizeof(T), fb = static_cast<size_t>(BH * Tmax) * sizeof(float);
  Storage buf(11 * tb + 2 * fb + static_cast<size_t>(B * Tmax) + 64, Device::cuda(dev));
  unsigned char* base = static_cast<unsigned char*>(buf.data());
  const auto at = [&](int slot) { return reinterpret_cast<T*>(base + static_cast<size_t>(slot) * tb); };
  T *q = at(0), *k = at(1), *v = at(2), *dout = at(3), *o = at(4);
  float* lse = reinterpret_cast<float*>(base + 11 * tb);
  float* di = lse + BH * Tmax;
  bool* dpad = reinterpret_cast<bool*>(base + 11 * tb + 2 * fb);
  EMBER_CUDA_CHECK(cudaMemcpyAsync(q, host.data(), 4 * tb, cudaMemcpyHostToDevice, stream));
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  const double u = std::is_same_v<T, __half> ? 1.0 / 2048 : 1.0 / 256;
  for (const Case& c : cases) {
    std::vector<unsigned char> pad(static_cast<size_t>(B * c.Tk), 0);
    for (int64_t j = 7; j < c.Tk; ++j) pad[static_cast<size_t>(j)] = 1;  // batch 0: only keys 0..6
    EMBER_CUDA_CHECK(cudaMemcpyAsync(dpad, pad.data(), pad.size(), cudaMemcpyHostToDevice, stream));
    const MaskArgs m{dpad, nullptr, 0, 0, 0, 0, c.Tq, c.Tk, c.causal};
    launch_forward<T, D>(false, q, k, v, o, lse, m, BH, H, scale * kLog2e, stream, dr);
    launch_row_dot<T, D>(dout, o, di, BH * c.Tq, stream);
    launch_backward<T, D>(true, q, k, v, dout, lse, di, at(5), at(6), at(7), m, BH, H, scale, stream, dr);
    launch_backward<T, D>(false, q, k, v, dout, lse, di, at(8), at(9), at(10), m, BH, H, scale, stream, dr);
    std::vector<T> got(static_cast<size_t>(6 * n));
    EMBER_CUDA_CHECK(cudaMemcpyAsync(got.data(), at(5), 6 * tb, cudaMemcpyDeviceToHost, stream));
    EMBER_CUDA_CHECK(cudaStreamSynchronize(stream));
    double rel[3] = {0, 0, 0};
    bool ok = true;
    for (int w = 0; w < 3; ++w) {  // dQ (Tq rows), dK, dV (Tk rows)
      const int64_t len = BH * (w == 0 ? c.Tq : c.Tk) * D;
      const T* a = got.data() + w * n;
      const T* s = got.data() + (3 + w) * n;
      double worst = 0, largest = 0;
      for (int64_t i = 0; i < len; ++i) {
        const double x = static_cast<float>(a[i]), y = static_cast<float>(s[i]);
        if (!(std::fabs(x - y) <= 1e30)) ok = false;  // NaN or inf on one side
        worst = std::max(worst, std::fabs(x - y));
        largest = std::max(largest, std::fabs(y));
      }
      rel[w] = worst / std::max(largest, 1e-3);
      if (!(rel[w] <= 8 * u)) ok = false;
    }
    if (!ok) {
      std::fprintf(stderr,
                   "ember: the tensor-core attention backward (%s, D %d, Tq %lld, Tk %lld, %s%s) disagreed with the "
                   "SIMT kernels on device %d (largest differences relative to the largest gradient: dQ %g, dK %g, "
                   "dV %g); using the SIMT kernels from now on%s\n",
                   std::is_same_v<T, __half> ? "f16" : "bf16", D, static_cast<long long>(c.Tq),
                   static_cast<long long>(c.Tk), c.causal ? "causal" : "full", kDrop ? ", dropout" : "", dev, rel[0],
                   rel[1], rel[2], kDrop ? " for dropout" : "");
      return false;
    }
  }
  return true;
}

template <class T, int D, bool kDrop>
bool tensor_core_backward_checked(cudaStream_t stream) {
  static OnceVerdict<64> verdicts;  // per device (one instance per dtype, head dim and dropout)
  const int dev = current_device();
  return verdicts.get(dev, "the tensor-core attention backward self-check", "using the SIMT kernels",
                      [&] { return tensor_core_backward_check_run<T, D, kDrop>(dev, stream); },
                      stream_capturing(stream));
}

// The dropout kernels' first use per (device, dtype, head dim): the SIMT forward and backward with
// dropout (check_dropout's stream) against a computation in double on the host, written from the
// CPU kernel's formulas (src/cpu/attention.cpp: keep iff philox_uniform01 < 1 - p, in double), on
// a small ragged problem: B 2, H 1, Tq 37, Tk 45 (odd, so row starts fall on every lane of a
// Philox block), two key tiles and two query tiles, causal with Tq < Tk, batch 0 seeing only keys
// 0..6. A wrong element of the mask moves outputs and gradients by a sizeable fraction of their
// magnitude; rounding (f32 arithmetic, outputs rounded to the input type) stays within 4u of the
// largest magnitude (u = 2^-11 f16, 2^-8 bf16). The tensor-core dropout kernels are compared with
// these SIMT ones by their own checks.
template <class T, int D>
bool dropout_check_run(int dev, cudaStream_t stream) {
  constexpr int64_t B = 2, H = 1, BH = B * H, Tq = 37, Tk = 45;
  const Dropout dr = check_dropout();
  const double keep_p = 1.0 - 0.25;
  const int64_t nq = BH * Tq * D, nk = BH * Tk * D;
  std::vector<T> host(static_cast<size_t>(2 * nq + 2 * nk));  // q, k, v, dO
  for (size_t i = 0; i < host.size(); ++i)
    host[i] = static_cast<T>(static_cast<float>(static_cast<int>((i * 2654435761u) >> 9) % 41 - 20) / 16.f);
  std::vector<unsigned char> pad(static_cast<size_t>(B * Tk), 0);
  for (int64_t j = 7; j < Tk; ++j) pad[static_cast<size_t>(j)] = 1;  // batch 0: only keys 0..6
  // One buffer: q k v dO | O dQ dK dV | lse di | padding mask.
  const size_t in_elems = host.size(), fb = static_cast<size_t>(BH * Tq) * sizeof(float);
  Storage buf(2 * in_elems * sizeof(T) + 2 * fb + pad.size() + 64, Device::cuda(dev));
  T* q = static_cast<T*>(buf.data());
  T *k = q + nq, *v = k + nk, *dout = v + nk, *o = dout + nq, *dq = o + nq, *dk = dq + nq, *dv = dk + nk;
  float* lse = reinterpret_cast<float*>(dv + nk);
  float* di = lse + BH * Tq;
  bool* dpad = reinterpret_cast<bool*>(di + BH * Tq);
  EMBER_CUDA_CHECK(cudaMemcpyAsync(q, host.data(), in_elems * sizeof(T), cudaMemcpyHostToDevice, stream));
  EMBER_CUDA_CHECK(cudaMemcpyAsync(dpad, pad.data(), pad.size(), cudaMemcpyHostToDevice, stream));
  const MaskArgs m{dpad, nullptr, 0, 0, 0, 0, Tq, Tk, true};
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  launch_forward<T, D>(false, q, k, v, o, lse, m, BH, H, scale * kLog2e, stream, dr);
  launch_row_dot<T, D>(dout, o, di, BH * Tq, stream);
  launch_backward<T, D>(false, q, k, v, dout, lse, di, dq, dk, dv, m, BH, H, scale, stream, dr);
  std::vector<T> got(in_elems);  // O dQ dK dV
  EMBER_CUDA_CHECK(cudaMemcpyAsync(got.data(), o, in_elems * sizeof(T), cudaMemcpyDeviceToHost, stream));
  EMBER_CUDA_CHECK(cudaStreamSynchronize(stream));

  const auto in = [&](int64_t at) { return static_cast<double>(static_cast<float>(host[static_cast<size_t>(at)])); };
  std::vector<double> want(in_elems, 0.0);  // O dQ dK dV, as got
  double* wo = want.data();
  double *wdq = wo + nq, *wdk = wdq + nq, *wdv = wdk + nk;
  std::vector<double> P(static_cast<size_t>(Tk)), Pd(static_cast<size_t>(Tk)), kept(static_cast<size_t>(Tk));
  for (int64_t bh = 0; bh < BH; ++bh)
    for (int64_t i = 0; i < Tq; ++i) {
      const int64_t qi = (bh * Tq + i) * D, gi = 2 * nk + nq + qi;  // q row, dO row (host offsets)
      double mx = -INFINITY;
      for (int64_t j = 0; j < Tk; ++j) {
        const bool ok = !pad[static_cast<size_t>((bh / H) * Tk + j)] && j <= i + (Tk - Tq);
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += in(qi + d) * in(nq + (bh * Tk + j) * D + d);
        P[j] = ok ? dot * scale : -INFINITY;
        mx = std::max(mx, P[j]);
      }
      double sum = 0;
      for (int64_t j = 0; j < Tk; ++j) {
        P[j] = P[j] == -INFINITY ? 0.0 : std::exp(P[j] - mx);
        sum += P[j];
      }
      for (int64_t j = 0; j < Tk; ++j) {
        P[j] /= sum;
        const uint64_t e = static_cast<uint64_t>((bh * Tq + i) * Tk + j);
        const PhiloxBlock r = philox_block(dr.offset + e / 4, 0, dr.seed);
        kept[j] = philox_uniform01(r.v[e % 4]) < keep_p ? 1.0 / keep_p : 0.0;
        Pd[j] = P[j] * kept[j];
        for (int64_t d = 0; d < D; ++d) wo[qi + d] += Pd[j] * in(nq + nk + (bh * Tk + j) * D + d);
      }
      double Di = 0;
      for (int64_t d = 0; d < D; ++d) Di += in(gi + d) * wo[qi + d];
      for (int64_t j = 0; j < Tk; ++j) {
        const int64_t kj = (bh * Tk + j) * D;
        double dp = 0;
        for (int64_t d = 0; d < D; ++d) dp += in(gi + d) * in(nq + nk + kj + d);
        const double ds = scale * P[j] * (dp * kept[j] - Di);
        for (int64_t d = 0; d < D; ++d) {
          wdv[kj + d] += Pd[j] * in(gi + d);
          wdq[qi + d] += ds * in(nq + kj + d);
          wdk[kj + d] += ds * in(qi + d);
        }
      }
    }
  const double u = std::is_same_v<T, __half> ? 1.0 / 2048 : 1.0 / 256;
  const int64_t starts[5] = {0, nq, 2 * nq, 2 * nq + nk, 2 * nq + 2 * nk};
  double rel[4];
  bool ok = true;
  for (int w = 0; w < 4; ++w) {  // O, dQ, dK, dV
    double worst = 0, largest = 0;
    for (int64_t i = starts[w]; i < starts[w + 1]; ++i) {
      const double x = static_cast<float>(got[static_cast<size_t>(i)]), y = want[static_cast<size_t>(i)];
      if (!(std::fabs(x - y) <= 1e30)) ok = false;  // NaN or inf
      worst = std::max(worst, std::fabs(x - y));
      largest = std::max(largest, std::fabs(y));
    }
    rel[w] = worst / std::max(largest, 1e-3);
    if (!(rel[w] <= 4 * u)) ok = false;
  }
  if (!ok)
    std::fprintf(stderr,
                 "ember: the CUDA attention dropout kernels (%s, D %d) disagreed with the host's computation of the "
                 "CPU's dropout stream on device %d (largest differences relative to the largest value: output %g, "
                 "dQ %g, dK %g, dV %g); the fused CUDA path refuses dropout from now on "
                 "(EMBER_ATTENTION_DROPOUT=composed runs it through the composed path)\n",
                 std::is_same_v<T, __half> ? "f16" : "bf16", D, dev, rel[0], rel[1], rel[2], rel[3]);
  return ok;
}

// Throws unless the dropout kernels passed their first-use check on this device. There is no
// older kernel in this backend to fall back to (dropout used to run only in the composed path,
// above the backend), so a failed check stops the call with an error instead of computing with
// an unverified mask.
template <class T, int D>
void require_dropout_checked(cudaStream_t stream) {
  static OnceVerdict<64> verdicts;  // per device (one instance per dtype and head dim)
  const int dev = current_device();
  const bool capturing = stream_capturing(stream);
  const bool ok = verdicts.get(dev, "the attention dropout self-check", "the fused CUDA path refuses dropout",
                               [&] { return dropout_check_run<T, D>(dev, stream); }, capturing);
  EMBER_CHECK(ok, "scaled_dot_product_attention", "the CUDA dropout kernels (",
              std::is_same_v<T, __half> ? "f16" : "bf16", ", D ", D, ") are not verified on device ", dev,
              capturing ? ": their first-use check cannot run during CUDA graph capture (run one step before "
                          "capturing)"
                        : ": their first-use check failed (see the line above on stderr)",
              "; EMBER_ATTENTION_DROPOUT=composed runs attention dropout through the composed path");
}

template <class T, int D>
void backward_typed(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                    const Tensor& lse, const AttentionParams& p, const Tensor& grad_q, const Tensor& grad_k,
                    const Tensor& grad_v) {
  const int64_t BH = p.B * p.H;
  if (BH == 0) return;
  cudaStream_t stream = current_stream();
  const T* pq = static_cast<const T*>(q.data_ptr());
  const T* pk = static_cast<const T*>(k.data_ptr());
  const T* pv = static_cast<const T*>(v.data_ptr());
  const T* pdo = static_cast<const T*>(grad_out.data_ptr());
  const float* pl = static_cast<const float*>(lse.data_ptr());
  if (p.Tq == 0) {  // no query: dK and dV are zero, dQ is empty
    for (const Tensor* t : {&grad_k, &grad_v})
      if (t->defined())
        EMBER_CUDA_CHECK(cudaMemsetAsync(t->data_ptr(), 0, static_cast<size_t>(t->numel()) * sizeof(T), stream));
    return;
  }
  T* pdq = grad_q.defined() ? static_cast<T*>(grad_q.data_ptr()) : nullptr;
  T* pdk = grad_k.defined() ? static_cast<T*>(grad_k.data_ptr()) : nullptr;
  T* pdv = grad_v.defined() ? static_cast<T*>(grad_v.data_ptr()) : nullptr;
  if (!pdq && !pdk && !pdv) return;
  // The tensor-core kernels copy 16-byte chunks and store 4-byte pairs.
  const Dropout dr = attn_dropout::make_dropout(p.dropout, p.seed, p.offset);
  if (dr.on) require_dropout_checked<T, D>(stream);
  auto aligned = [](const void* ptr) { return ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  const bool tc = tensor_core_enabled() && aligned(pq) && aligned(pk) && aligned(pv) && aligned(pdo) &&
                  aligned(pdq) && aligned(pdk) && aligned(pdv) && tensor_core_backward_checked<T, D, false>(stream) &&
                  (!dr.on || tensor_core_backward_checked<T, D, true>(stream));
  // Scratch from the caching allocator: freed at scope exit, reused only in stream order.
  const int64_t rows = BH * p.Tq;
  Storage di_buf(static_cast<size_t>(rows) * sizeof(float), q.device());
  float* di = static_cast<float*>(di_buf.data());  // (B, H, Tq)
  launch_row_dot<T, D>(pdo, static_cast<const T*>(out.data_ptr()), di, rows, stream);
  launch_backward<T, D>(tc, pq, pk, pv, pdo, pl, di, pdq, pdk, pdv, mask_args(p), BH, p.H, static_cast<float>(p.scale),
                        stream, dr);
}

// Calls f.template operator()<T, D>() for the (dtype, head dim) pair; the op layer only sends
// the pairs instantiated here.
template <class F>
void dispatch(const char* op, DType dt, int64_t D, F&& f) {
  EMBER_CHECK((dt == DType::f16 || dt == DType::bf16) && (D == 64 || D == 128), op,
              "the fused CUDA kernel takes f16/bf16 with head dim 64 or 128, got ", dt, " D = ", D);
  if (dt == DType::f16) {
    if (D == 64) f.template operator()<__half, 64>();
    else f.template operator()<__half, 128>();
  } else {
    if (D == 64) f.template operator()<__nv_bfloat16, 64>();
    else f.template operator()<__nv_bfloat16, 128>();
  }
}

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& p,
                       const Tensor& out, const Tensor& lse) {
  dispatch("scaled_dot_product_attention", q.dtype(), p.D,
           [&]<class T, int D>() { forward_typed<T, D>(q, k, v, p, out, lse); });
}

void attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, const AttentionParams& p, const Tensor& grad_q,
                        const Tensor& grad_k, const Tensor& grad_v) {
  dispatch("sdpa_backward", q.dtype(), p.D, [&]<class T, int D>() {
    backward_typed<T, D>(grad_out, q, k, v, out, lse, p, grad_q, grad_k, grad_v);
  });
}

void register_attention_kernels() {
  prim::define<prim::attention_forward>(prim::Backend::cuda, &attention_forward);
  prim::define<prim::attention_backward>(prim::Backend::cuda, &attention_backward);
}

}  // namespace ember::cuda
