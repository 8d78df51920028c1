// The tensor-core forward of fused attention (FlashAttention-2 structure, mma.sync m16n8k16),
// included by attention.cu, which owns MaskArgs, allowed() and the dispatch.
//
// One CTA of 4 warps per (b, h, tile of 64 queries); warp w owns query rows 16w .. 16w + 15.
// - The Q tile is loaded once (cp.async, 16-byte chunks) and its A fragments kept in registers
//   for the whole key loop (D / 16 k-chunks x 4 registers).
// - K and V stream through shared memory 64 keys at a time, double-buffered: the cp.async
//   copies of tile j + 1 are in flight while tile j is multiplied.
// - S = Q K^T on tensor cores: B fragments of K^T straight from K's rows (ldmatrix, no
//   transpose: K is (keys, D) with D contiguous, which is the .col layout mma wants for B).
// - Scale, mask (the same allowed() as the SIMT kernel, per element), online softmax in f32
//   registers in base 2: each thread holds two rows (lane / 4 and lane / 4 + 8), the four
//   threads of a quad meet by two shuffles.
// - P V on tensor cores: the f32 accumulators of S, rounded to the input type, are already the
//   A fragments of P (the C layout of two n8 tiles is the A layout of one k16 chunk); V's B
//   fragments come from ldmatrix.trans of V's rows.
// - Causal: key tiles past the last key the tile's last query may see are never loaded.
// - Output O / l and the row logsumexp (natural log, f32) exactly as the SIMT forward writes
//   them, so the SIMT backward reads either. A row with no allowed key: output 0, lse -inf.
// - Dropout (kDrop, a separate instantiation so that p = 0 pays nothing): the tile's keep mask
//   is drawn into shared memory (attention_dropout.cuh) while the tile's copies are in flight;
//   l sums the undropped P (the logsumexp is that of P, as on the CPU), dropped elements are
//   zeroed before P V, and the output is scaled by 1 / (1 - p) with 1 / l.
// Shared rows are padded by 8 elements (16 bytes): row pitches of 144 or 272 bytes put the 8
// row addresses of an ldmatrix phase in 8 different 16-byte bank groups.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "attention_dropout.cuh"
#include "mma.cuh"

namespace ember::cuda::attn_mma {

constexpr int kBQ = 64, kBK = 64, kWarps = 4, kThreads = 32 * kWarps, kPad = 8;

template <int D, bool kDrop = false>
__host__ __device__ constexpr int smem_bytes() {
  // Q, and K and V double-buffered; with dropout, the (64, 64) keep mask of the tile.
  return (kBQ + 4 * kBK) * (D + kPad) * 2 + (kDrop ? kBQ * kBK : 0);
}
using attn_dropout::Dropout;

using mma::cp_async_commit;
using mma::cp_async_wait;
using mma::pack2;
using mma::smem_u32;
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  mma::cp_async_16(smem_u32(dst), src, valid ? 16 : 0);
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  mma::ldmatrix_x4<false>(r, smem_u32(p));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  mma::ldmatrix_x4<true>(r, smem_u32(p));
}
template <class T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  mma::mma_16816<T>(c, a, b0, b1);
}

// Rows [r0, r0 + kRows) of a contiguous (n, D) matrix into shared memory with pitch D + kPad;
// rows past n are zero-filled by cp.async's source size.
template <class T, int D, int kRows>
__device__ __forceinline__ void load_rows_async(T* dst, const T* src, int64_t r0, int64_t n) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  for (int idx = threadIdx.x; idx < kRows * kChunks; idx += kThreads) {
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    const bool valid = r0 + r < n;
    cp_async16(dst + r * (D + kPad) + c, valid ? src + (r0 + r) * D + c : src, valid);
  }
}

template <class T, int D, class Mask, bool kDrop>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
                   float* __restrict__ lse, Mask m, int64_t BH, int64_t H, float scale_log2, Dropout dr) {
  constexpr int kP = D + kPad, kDK = D / 16, kDN = D / 8, kKN = kBK / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Qs = reinterpret_cast<T*>(smem_raw);  // (64, D)
  T* Ks = Qs + kBQ * kP;                   // [2] (64, D)
  T* Vs = Ks + 2 * kBK * kP;               // [2] (64, D)
  uint8_t* keep = reinterpret_cast<uint8_t*>(Vs + 2 * kBK * kP);  // (64 queries, 64 keys), kDrop only
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;  // fragment row group and column pair
  const int64_t Tq = m.Tq, Tk = m.Tk;
  const int64_t q0 = int64_t(blockIdx.x) * kBQ;
  const float neg_inf = -INFINITY;

  for (int64_t bh = blockIdx.y; bh < BH; bh += gridDim.y) {
    const int64_t b = bh / H, h = bh % H;
    const T* kb = k + bh * Tk * D;
    const T* vb = v + bh * Tk * D;
    __syncthreads();  // the previous (b, h) is done with every buffer
    int64_t kend = Tk;
    if (m.causal) kend = min(Tk, max(int64_t{0}, q0 + kBQ + Tk - Tq));
    const int n_tiles = static_cast<int>((kend + kBK - 1) / kBK);
    load_rows_async<T, D, kBQ>(Qs, q + bh * Tq * D, q0, Tq);
    if (n_tiles > 0) {
      load_rows_async<T, D, kBK>(Ks, kb, 0, Tk);
      load_rows_async<T, D, kBK>(Vs, vb, 0, Tk);
    }
    cp_async_commit();

    // This warp's Q fragments: rows 16w + (lane % 16), k-chunk c: the x4 matrices are
    // (rows 0-7, cols 0-7), (rows 8-15, cols 0-7), (rows 0-7, cols 8-15), (rows 8-15, cols 8-15).
    uint32_t qf[kDK][4];
    float o[kDN][4];
#pragma unroll
    for (int n = 0; n < kDN; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float mrow[2] = {neg_inf, neg_inf}, lrow[2] = {0.f, 0.f};

    for (int jt = 0; jt < n_tiles; ++jt) {
      const int buf = jt & 1;
      if (jt + 1 < n_tiles) {  // the next tile's copies go out before this one is used
        load_rows_async<T, D, kBK>(Ks + (buf ^ 1) * kBK * kP, kb, int64_t(jt + 1) * kBK, Tk);
        load_rows_async<T, D, kBK>(Vs + (buf ^ 1) * kBK * kP, vb, int64_t(jt + 1) * kBK, Tk);
      }
      cp_async_commit();
      // The previous tile's reads of keep ended at the loop's last barrier.
      if constexpr (kDrop) attn_dropout::fill_keep<kBQ, kBK, kThreads>(keep, dr, bh, q0, int64_t(jt) * kBK, Tq, Tk);
      cp_async_wait<1>();  // everything but the group just committed has landed
      __syncthreads();
      if (jt == 0) {
#pragma unroll
        for (int c = 0; c < kDK; ++c) {
          const int row = warp * 16 + (lane % 16), col = c * 16 + (lane / 16) * 8;
          ldmatrix_x4(qf[c], Qs + row * kP + col);
        }
      }
      const T* Kt = Ks + buf * kBK * kP;
      const T* Vt = Vs + buf * kBK * kP;
      const int64_t j0 = int64_t(jt) * kBK;

      // S (16 x 64) = Q K^T. B fragment of key block n (8 keys), k-chunk c: ldmatrix.x4 over
      // key rows 8n + (lane % 8), columns 16c + 8 * (lane / 8) covers k-chunks c (b0, b1) for
      // lanes 0-15 and c + 1... instead take two chunks per x4: matrices (keys, cols 16c..+7),
      // (keys, 16c+8..+15), (keys, 16c+16..+23), (keys, 16c+24..+31).
      float s[kKN][4];
#pragma unroll
      for (int n = 0; n < kKN; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
      for (int n = 0; n < kKN; ++n) {
#pragma unroll
        for (int c = 0; c < kDK; c += 2) {
          uint32_t kf[4];
          ldmatrix_x4(kf, Kt + (8 * n + (lane % 8)) * kP + 16 * c + 8 * (lane / 8));
          mma16816<T>(s[n], qf[c], kf[0], kf[1]);
          mma16816<T>(s[n], qf[c + 1], kf[2], kf[3]);
        }
      }

      // Scale and mask; thread holds rows g (s[n][0..1]) and g + 8 (s[n][2..3]), columns
      // 8n + 2t + {0, 1}.
      const int64_t i0 = q0 + warp * 16 + g;
      float tmax[2] = {neg_inf, neg_inf};
#pragma unroll
      for (int n = 0; n < kKN; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t i = i0 + 8 * (e / 2), j = j0 + 8 * n + 2 * t + (e % 2);
          s[n][e] = allowed(m, b, h, i, j) ? s[n][e] * scale_log2 : neg_inf;
          tmax[e / 2] = fmaxf(tmax[e / 2], s[n][e]);
        }
      }
      float alpha[2], muse[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        tmax[r] = fmaxf(tmax[r], __shfl_xor_sync(0xffffffffu, tmax[r], 1));
        tmax[r] = fmaxf(tmax[r], __shfl_xor_sync(0xffffffffu, tmax[r], 2));
        const float mnew = fmaxf(mrow[r], tmax[r]);
        muse[r] = mnew == neg_inf ? 0.f : mnew;  // all masked so far: keep exp2 finite
        alpha[r] = exp2f(mrow[r] - muse[r]);
        mrow[r] = mnew;
      }
      float psum[2] = {0.f, 0.f};
#pragma unroll
      for (int n = 0; n < kKN; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[n][e] = exp2f(s[n][e] - muse[e / 2]);
          psum[e / 2] += s[n][e];
        }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        psum[r] += __shfl_xor_sync(0xffffffffu, psum[r], 1);
        psum[r] += __shfl_xor_sync(0xffffffffu, psum[r], 2);
        lrow[r] = lrow[r] * alpha[r] + psum[r];
      }
      if constexpr (kDrop) {  // after the sums: l is the undropped normaliser
#pragma unroll
        for (int n = 0; n < kKN; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (!keep[(warp * 16 + g + 8 * (e / 2)) * kBK + 8 * n + 2 * t + (e % 2)]) s[n][e] = 0.f;
      }
#pragma unroll
      for (int n = 0; n < kDN; ++n) {
        o[n][0] *= alpha[0];
        o[n][1] *= alpha[0];
        o[n][2] *= alpha[1];
        o[n][3] *= alpha[1];
      }

      // O += P V. P's A fragment for key chunk kc (16 keys) is S blocks 2kc and 2kc + 1.
      // V's B fragment for output block n (8 columns of D), key chunk kc: ldmatrix.x4.trans over
      // key rows 16kc + (lane % 16)... as two n-blocks per x4: matrices (keys 0-7, cols 8n..),
      // (keys 8-15, cols 8n..), (keys 0-7, cols 8n+8..), (keys 8-15, cols 8n+8..).
#pragma unroll
      for (int kc = 0; kc < kBK / 16; ++kc) {
        uint32_t pf[4];
        pf[0] = pack2<T>(s[2 * kc][0], s[2 * kc][1]);
        pf[1] = pack2<T>(s[2 * kc][2], s[2 * kc][3]);
        pf[2] = pack2<T>(s[2 * kc + 1][0], s[2 * kc + 1][1]);
        pf[3] = pack2<T>(s[2 * kc + 1][2], s[2 * kc + 1][3]);
#pragma unroll
        for (int n = 0; n < kDN; n += 2) {
          uint32_t vf[4];
          const int key = 16 * kc + (lane % 8) + 8 * ((lane / 8) % 2);
          const int col = 8 * n + 8 * (lane / 16);
          ldmatrix_x4_trans(vf, Vt + key * kP + col);
          mma16816<T>(o[n], pf, vf[0], vf[1]);
          mma16816<T>(o[n + 1], pf, vf[2], vf[3]);
        }
      }
      __syncthreads();  // every warp is done with this buffer before it is refilled
    }
    cp_async_wait<0>();

    // Epilogue: rows g and g + 8 of this warp.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t i = q0 + warp * 16 + g + 8 * r;
      if (i >= Tq) continue;
      const bool dead = lrow[r] == 0.f;
      const float inv = dead ? 0.f : (kDrop ? dr.scale : 1.f) / lrow[r];
      T* orow = out + (bh * Tq + i) * D;
#pragma unroll
      for (int n = 0; n < kDN; ++n)
        *reinterpret_cast<uint32_t*>(orow + 8 * n + 2 * t) = pack2<T>(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
      if (t == 0) lse[bh * Tq + i] = dead ? neg_inf : mrow[r] / 1.4426950408889634f + logf(lrow[r]);
    }
  }
}

}  // namespace ember::cuda::attn_mma
