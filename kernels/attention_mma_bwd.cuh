// The tensor-core backward of fused attention (FlashAttention-2 structure, mma.sync m16n8k16),
// included by attention.cu, which owns MaskArgs, allowed(), the D_i = dO . O row kernel and the
// dispatch. Two launches after the row kernel, both deterministic (no atomics):
//
// dK, dV (kv_kernel): one CTA of 4 warps per (b, h, tile of 64 keys); warp w owns keys
// 16w .. 16w + 15 and keeps their dK and dV rows in f32 registers. The CTA loops over query
// tiles (from the first query that may see the tile, when causal), Q, dO and the tile's
// logsumexp and D_i double-buffered in shared memory (cp.async copies of tile i + 1 in flight
// while tile i is multiplied). Per tile and warp, on tensor cores:
//   S^T  = K_w Q^T      (16 keys x queries; B fragments from Q's rows by ldmatrix)
//   dP^T = V_w dO^T     (same shape; B fragments from dO's rows)
//   P^T  = 2^(S^T scale log2 e - lse log2 e), masked per element by allowed()
//   dS^T = scale P^T (dP^T - D)
//   dV  += P^T dO,  dK += dS^T Q   (A fragments: the C fragments of P^T and dS^T rounded to the
//                                   input type; B fragments by ldmatrix.trans of dO's and Q's rows)
// Computing the transposed tiles is what lets P^T and dS^T stay in registers: the rows a warp
// owns (keys) are the rows of its accumulators.
//
// dQ (q_kernel): one CTA of 4 warps per (b, h, tile of 64 queries), warp w owning 16 query rows,
// K and V streamed 64 keys at a time and double-buffered as in the forward; S = Q K^T and
// dP = dO V^T are recomputed, dS = scale P (dP - D), dQ += dS K (dS's C fragments are the A
// fragments, K's B fragments by ldmatrix.trans). Causal: key tiles no query of the tile may see
// are never loaded.
//
// A row whose logsumexp is -inf (no allowed key) and rows past Tq get P = 0, hence zero
// gradients (its D_i is dO . 0 = 0). Shared rows are padded by 8 elements, as in the forward.
// Query tile of kv_kernel: 64 for D 64, 32 for D 128, so that dK and dV (2 D / 8 x 4 f32 per
// thread) and the two score tiles fit the 255 registers without spilling.
//
// Dropout (kDrop, separate instantiations; p = 0 pays nothing), as the CPU backward: each tile's
// keep mask (queries x keys) is drawn into shared memory (attention_dropout.cuh) while the
// tile's copies are in flight; dV += P_dropped^T dO with P_dropped = P / (1 - p) where kept and
// 0 where dropped, and dS = scale P (dP_dropped - D) with dP_dropped = dP / (1 - p) where kept,
// 0 where dropped (D = dO . O, O being the dropped output).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "attention_mma.cuh"

namespace ember::cuda::attn_mma_bwd {

using attn_mma::cp_async_commit;
using attn_mma::cp_async_wait;
using attn_mma::kPad;
using attn_mma::kThreads;  // 4 warps
using attn_mma::ldmatrix_x4;
using attn_mma::ldmatrix_x4_trans;
using attn_mma::load_rows_async;
using attn_mma::mma16816;
using attn_mma::pack2;

constexpr int kBK = 64;  // keys per kv_kernel CTA, and per streamed tile of q_kernel
constexpr int kBQ = 64;  // queries per q_kernel CTA
constexpr float kLog2e = 1.4426950408889634f;

template <int D>
__host__ __device__ constexpr int kv_query_tile() {
  return D == 64 ? 64 : 32;
}
template <int D, bool kDrop = false>
__host__ __device__ constexpr int kv_smem_bytes() {
  // K and V once; Q and dO double-buffered; lse * log2 e and D_i double-buffered; with dropout
  // the (query tile, 64 keys) keep mask.
  return (2 * kBK + 4 * kv_query_tile<D>()) * (D + kPad) * 2 + 4 * kv_query_tile<D>() * 4 +
         (kDrop ? kv_query_tile<D>() * kBK : 0);
}
template <int D, bool kDrop = false>
__host__ __device__ constexpr int q_smem_bytes() {
  // Q, dO; K and V double-buffered; with dropout the (64, 64) keep mask.
  return (2 * kBQ + 4 * kBK) * (D + kPad) * 2 + (kDrop ? kBQ * kBK : 0);
}
using attn_dropout::Dropout;

// A fragments of rows 16 w .. 16 w + 15, k-chunk c (columns 16c .. 16c + 15) of a tile with
// pitch kP: the x4 matrices are (rows 0-7, cols 0-7), (rows 8-15, cols 0-7), (rows 0-7,
// cols 8-15), (rows 8-15, cols 8-15), i.e. a0..a3.
template <int kP, class T>
__device__ __forceinline__ void load_a(uint32_t (&r)[4], const T* tile, int warp, int lane, int c) {
  ldmatrix_x4(r, tile + (16 * warp + (lane % 16)) * kP + 16 * c + 8 * (lane / 16));
}
// B fragments for n-block nb (rows 8 nb .. 8 nb + 7 of the tile are the n index, its columns
// the k index) and k-chunks c, c + 1: r[0], r[1] = b0, b1 of chunk c; r[2], r[3] of chunk c + 1.
template <int kP, class T>
__device__ __forceinline__ void load_b(uint32_t (&r)[4], const T* tile, int lane, int nb, int c) {
  ldmatrix_x4(r, tile + (8 * nb + (lane % 8)) * kP + 16 * c + 8 * (lane / 8));
}
// B fragments where the tile's rows are the k index (k-chunk kc: rows 16 kc .. 16 kc + 15) and
// its columns the n index (n-blocks n, n + 1): r[0], r[1] for block n, r[2], r[3] for n + 1.
template <int kP, class T>
__device__ __forceinline__ void load_b_trans(uint32_t (&r)[4], const T* tile, int lane, int kc, int n) {
  ldmatrix_x4_trans(r, tile + (16 * kc + (lane % 8) + 8 * ((lane / 8) % 2)) * kP + 8 * n + 8 * (lane / 16));
}

// lse * log2 e (-inf past Tq) and D_i (0 past Tq) of queries [i0, i0 + kRows) into shared memory.
template <int kRows>
__device__ __forceinline__ void stage_rows(float* ls, float* ds, const float* lse, const float* di, int64_t i0,
                                           int64_t Tq) {
  for (int r = threadIdx.x; r < kRows; r += kThreads) {
    const int64_t i = i0 + r;
    ls[r] = i < Tq ? lse[i] * kLog2e : -INFINITY;
    ds[r] = i < Tq ? di[i] : 0.f;
  }
}

template <class T, int D, class Mask, bool kDrop>
__global__ void __launch_bounds__(kThreads)
    kv_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
              const T* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ di,
              T* __restrict__ dk, T* __restrict__ dv, Mask m, int64_t BH, int64_t H, float scale, float scale_log2,
              Dropout dr) {
  constexpr int kP = D + kPad, kDK = D / 16, kDN = D / 8, kQ = kv_query_tile<D>(), kQN = kQ / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Ks = reinterpret_cast<T*>(smem_raw);  // (64, D)
  T* Vs = Ks + kBK * kP;                   // (64, D)
  T* Qs = Vs + kBK * kP;                   // [2] (kQ, D)
  T* dOs = Qs + 2 * kQ * kP;               // [2] (kQ, D)
  float* Ls = reinterpret_cast<float*>(dOs + 2 * kQ * kP);  // [2] (kQ)
  float* Ds = Ls + 2 * kQ;                                  // [2] (kQ)
  uint8_t* keep = reinterpret_cast<uint8_t*>(Ds + 2 * kQ);  // (kQ queries, 64 keys), kDrop only
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t Tq = m.Tq, Tk = m.Tk;
  const int64_t j0 = int64_t(blockIdx.x) * kBK;
  const bool want_k = dk != nullptr, want_v = dv != nullptr;

  for (int64_t bh = blockIdx.y; bh < BH; bh += gridDim.y) {
    const int64_t b = bh / H, h = bh % H;
    const T* qb = q + bh * Tq * D;
    const T* gb = dout + bh * Tq * D;
    const float* lb = lse + bh * Tq;
    const float* db = di + bh * Tq;
    __syncthreads();  // the previous (b, h) is done with every buffer
    int64_t istart = 0;  // queries before the first one that may see key j0 contribute nothing
    if (m.causal) istart = max(int64_t{0}, j0 - (Tk - Tq)) / kQ * kQ;
    const int n_tiles = istart < Tq ? static_cast<int>((Tq - istart + kQ - 1) / kQ) : 0;
    load_rows_async<T, D, kBK>(Ks, k + bh * Tk * D, j0, Tk);
    load_rows_async<T, D, kBK>(Vs, v + bh * Tk * D, j0, Tk);
    if (n_tiles > 0) {
      load_rows_async<T, D, kQ>(Qs, qb, istart, Tq);
      load_rows_async<T, D, kQ>(dOs, gb, istart, Tq);
      stage_rows<kQ>(Ls, Ds, lb, db, istart, Tq);
    }
    cp_async_commit();

    float gk[kDN][4], gv[kDN][4];
#pragma unroll
    for (int n = 0; n < kDN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) gk[n][e] = gv[n][e] = 0.f;

    for (int it = 0; it < n_tiles; ++it) {
      const int buf = it & 1;
      const int64_t i0 = istart + int64_t(it) * kQ;
      if (it + 1 < n_tiles) {  // the next tile's copies go out before this one is used
        load_rows_async<T, D, kQ>(Qs + (buf ^ 1) * kQ * kP, qb, i0 + kQ, Tq);
        load_rows_async<T, D, kQ>(dOs + (buf ^ 1) * kQ * kP, gb, i0 + kQ, Tq);
        stage_rows<kQ>(Ls + (buf ^ 1) * kQ, Ds + (buf ^ 1) * kQ, lb, db, i0 + kQ, Tq);
      }
      cp_async_commit();
      // The previous tile's reads of keep ended at the loop's last barrier.
      if constexpr (kDrop) attn_dropout::fill_keep<kQ, kBK, kThreads>(keep, dr, bh, i0, j0, Tq, Tk);
      cp_async_wait<1>();  // everything but the group just committed has landed
      __syncthreads();
      // Which of this thread's 4 kQN elements the masks allow, as bits 4n + e, before the
      // products: the mask reads then never compete with the score tiles for registers.
      uint32_t allow = 0;
#pragma unroll
      for (int n = 0; n < kQN; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (allowed(m, b, h, i0 + 8 * n + 2 * t + (e % 2), j0 + 16 * warp + g + 8 * (e / 2)))
            allow |= 1u << (4 * n + e);
      const T* Qt = Qs + buf * kQ * kP;
      const T* dOt = dOs + buf * kQ * kP;
      const float* Lt = Ls + buf * kQ;
      const float* Dt = Ds + buf * kQ;

      // S^T = K_w Q^T and dP^T = V_w dO^T, (16 keys x kQ queries) per warp.
      float s[kQN][4], dp[kQN][4];
#pragma unroll
      for (int n = 0; n < kQN; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.f;
#pragma unroll
      for (int c = 0; c < kDK; c += 2) {
        uint32_t ka0[4], ka1[4], va0[4], va1[4];
        load_a<kP>(ka0, Ks, warp, lane, c);
        load_a<kP>(ka1, Ks, warp, lane, c + 1);
        load_a<kP>(va0, Vs, warp, lane, c);
        load_a<kP>(va1, Vs, warp, lane, c + 1);
#pragma unroll
        for (int n = 0; n < kQN; ++n) {
          uint32_t f[4];
          load_b<kP>(f, Qt, lane, n, c);
          mma16816<T>(s[n], ka0, f[0], f[1]);
          mma16816<T>(s[n], ka1, f[2], f[3]);
          load_b<kP>(f, dOt, lane, n, c);
          mma16816<T>(dp[n], va0, f[0], f[1]);
          mma16816<T>(dp[n], va1, f[2], f[3]);
        }
      }

      // P^T and dS^T in place: element e of block n is key 16w + g + 8 (e / 2), query
      // 8n + 2t + e % 2 of the tile.
#pragma unroll
      for (int n = 0; n < kQN; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int ic = 8 * n + 2 * t + (e % 2);
          const float l2 = Lt[ic];
          const bool ok = l2 != -INFINITY && ((allow >> (4 * n + e)) & 1u);
          const float p = ok ? exp2f(s[n][e] * scale_log2 - l2) : 0.f;
          if constexpr (kDrop) {
            const bool kept = keep[ic * kBK + 16 * warp + g + 8 * (e / 2)];
            s[n][e] = kept ? p * dr.scale : 0.f;
            dp[n][e] = scale * p * ((kept ? dp[n][e] * dr.scale : 0.f) - Dt[ic]);
          } else {
            s[n][e] = p;
            dp[n][e] = scale * p * (dp[n][e] - Dt[ic]);
          }
        }
      }

      // dV += P^T dO, dK += dS^T Q over the tile's queries (k-chunks of 16 queries).
#pragma unroll
      for (int kc = 0; kc < kQ / 16; ++kc) {
        uint32_t pf[4], sf[4];
        pf[0] = pack2<T>(s[2 * kc][0], s[2 * kc][1]);
        pf[1] = pack2<T>(s[2 * kc][2], s[2 * kc][3]);
        pf[2] = pack2<T>(s[2 * kc + 1][0], s[2 * kc + 1][1]);
        pf[3] = pack2<T>(s[2 * kc + 1][2], s[2 * kc + 1][3]);
        sf[0] = pack2<T>(dp[2 * kc][0], dp[2 * kc][1]);
        sf[1] = pack2<T>(dp[2 * kc][2], dp[2 * kc][3]);
        sf[2] = pack2<T>(dp[2 * kc + 1][0], dp[2 * kc + 1][1]);
        sf[3] = pack2<T>(dp[2 * kc + 1][2], dp[2 * kc + 1][3]);
#pragma unroll
        for (int n = 0; n < kDN; n += 2) {
          uint32_t f[4];
          if (want_v) {
            load_b_trans<kP>(f, dOt, lane, kc, n);
            mma16816<T>(gv[n], pf, f[0], f[1]);
            mma16816<T>(gv[n + 1], pf, f[2], f[3]);
          }
          if (want_k) {
            load_b_trans<kP>(f, Qt, lane, kc, n);
            mma16816<T>(gk[n], sf, f[0], f[1]);
            mma16816<T>(gk[n + 1], sf, f[2], f[3]);
          }
        }
      }
      __syncthreads();  // every warp is done with this buffer before it is refilled
    }
    cp_async_wait<0>();

    // Rows g and g + 8 of this warp's 16 keys (zeros when no query may see them).
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t j = j0 + 16 * warp + g + 8 * r;
      if (j >= Tk) continue;
#pragma unroll
      for (int n = 0; n < kDN; ++n) {
        const int64_t off = (bh * Tk + j) * D + 8 * n + 2 * t;
        if (want_k) *reinterpret_cast<uint32_t*>(dk + off) = pack2<T>(gk[n][2 * r], gk[n][2 * r + 1]);
        if (want_v) *reinterpret_cast<uint32_t*>(dv + off) = pack2<T>(gv[n][2 * r], gv[n][2 * r + 1]);
      }
    }
  }
}

template <class T, int D, class Mask, bool kDrop>
__global__ void __launch_bounds__(kThreads)
    q_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ dout,
             const float* __restrict__ lse, const float* __restrict__ di, T* __restrict__ dq, Mask m, int64_t BH,
             int64_t H, float scale, float scale_log2, Dropout dr) {
  constexpr int kP = D + kPad, kDK = D / 16, kDN = D / 8, kKN = kBK / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Qs = reinterpret_cast<T*>(smem_raw);  // (64, D)
  T* dOs = Qs + kBQ * kP;                  // (64, D)
  T* Ks = dOs + kBQ * kP;                  // [2] (64, D)
  T* Vs = Ks + 2 * kBK * kP;               // [2] (64, D)
  uint8_t* keep = reinterpret_cast<uint8_t*>(Vs + 2 * kBK * kP);  // (64 queries, 64 keys), kDrop only
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t Tq = m.Tq, Tk = m.Tk;
  const int64_t q0 = int64_t(blockIdx.x) * kBQ;

  for (int64_t bh = blockIdx.y; bh < BH; bh += gridDim.y) {
    const int64_t b = bh / H, h = bh % H;
    const T* kb = k + bh * Tk * D;
    const T* vb = v + bh * Tk * D;
    __syncthreads();  // the previous (b, h) is done with every buffer
    int64_t kend = Tk;  // keys [0, kend) may be seen by some query of the tile
    if (m.causal) kend = min(Tk, max(int64_t{0}, q0 + kBQ + Tk - Tq));
    const int n_tiles = static_cast<int>((kend + kBK - 1) / kBK);
    load_rows_async<T, D, kBQ>(Qs, q + bh * Tq * D, q0, Tq);
    load_rows_async<T, D, kBQ>(dOs, dout + bh * Tq * D, q0, Tq);
    if (n_tiles > 0) {
      load_rows_async<T, D, kBK>(Ks, kb, 0, Tk);
      load_rows_async<T, D, kBK>(Vs, vb, 0, Tk);
    }
    cp_async_commit();

    // This thread's rows g and g + 8 of the warp's 16: lse * log2 e and D_i.
    float l2[2], dsum[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t i = q0 + 16 * warp + g + 8 * r;
      l2[r] = i < Tq ? lse[bh * Tq + i] * kLog2e : -INFINITY;
      dsum[r] = i < Tq ? di[bh * Tq + i] : 0.f;
    }
    float gq[kDN][4];
#pragma unroll
    for (int n = 0; n < kDN; ++n) gq[n][0] = gq[n][1] = gq[n][2] = gq[n][3] = 0.f;

    for (int jt = 0; jt < n_tiles; ++jt) {
      const int buf = jt & 1;
      if (jt + 1 < n_tiles) {
        load_rows_async<T, D, kBK>(Ks + (buf ^ 1) * kBK * kP, kb, int64_t(jt + 1) * kBK, Tk);
        load_rows_async<T, D, kBK>(Vs + (buf ^ 1) * kBK * kP, vb, int64_t(jt + 1) * kBK, Tk);
      }
      cp_async_commit();
      if constexpr (kDrop) attn_dropout::fill_keep<kBQ, kBK, kThreads>(keep, dr, bh, q0, int64_t(jt) * kBK, Tq, Tk);
      cp_async_wait<1>();
      __syncthreads();
      const T* Kt = Ks + buf * kBK * kP;
      const T* Vt = Vs + buf * kBK * kP;
      const int64_t j0 = int64_t(jt) * kBK;
      uint32_t allow = 0;  // bits 4n + e, as in kv_kernel
#pragma unroll
      for (int n = 0; n < kKN; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (allowed(m, b, h, q0 + 16 * warp + g + 8 * (e / 2), j0 + 8 * n + 2 * t + (e % 2)))
            allow |= 1u << (4 * n + e);

      // S = Q_w K^T and dP = dO_w V^T, (16 queries x 64 keys) per warp.
      float s[kKN][4], dp[kKN][4];
#pragma unroll
      for (int n = 0; n < kKN; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.f;
#pragma unroll
      for (int c = 0; c < kDK; c += 2) {
        uint32_t qa0[4], qa1[4], ga0[4], ga1[4];
        load_a<kP>(qa0, Qs, warp, lane, c);
        load_a<kP>(qa1, Qs, warp, lane, c + 1);
        load_a<kP>(ga0, dOs, warp, lane, c);
        load_a<kP>(ga1, dOs, warp, lane, c + 1);
#pragma unroll
        for (int n = 0; n < kKN; ++n) {
          uint32_t f[4];
          load_b<kP>(f, Kt, lane, n, c);
          mma16816<T>(s[n], qa0, f[0], f[1]);
          mma16816<T>(s[n], qa1, f[2], f[3]);
          load_b<kP>(f, Vt, lane, n, c);
          mma16816<T>(dp[n], ga0, f[0], f[1]);
          mma16816<T>(dp[n], ga1, f[2], f[3]);
        }
      }

      // dS in place: element e of block n is query 16w + g + 8 (e / 2), key 8n + 2t + e % 2.
#pragma unroll
      for (int n = 0; n < kKN; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e / 2;
          const bool ok = l2[r] != -INFINITY && ((allow >> (4 * n + e)) & 1u);
          const float p = ok ? exp2f(s[n][e] * scale_log2 - l2[r]) : 0.f;
          float dpd = dp[n][e];
          if constexpr (kDrop) {
            const bool kept = keep[(16 * warp + g + 8 * r) * kBK + 8 * n + 2 * t + (e % 2)];
            dpd = kept ? dpd * dr.scale : 0.f;
          }
          dp[n][e] = scale * p * (dpd - dsum[r]);
        }
      }

      // dQ += dS K over the tile's keys (k-chunks of 16 keys).
#pragma unroll
      for (int kc = 0; kc < kBK / 16; ++kc) {
        uint32_t sf[4];
        sf[0] = pack2<T>(dp[2 * kc][0], dp[2 * kc][1]);
        sf[1] = pack2<T>(dp[2 * kc][2], dp[2 * kc][3]);
        sf[2] = pack2<T>(dp[2 * kc + 1][0], dp[2 * kc + 1][1]);
        sf[3] = pack2<T>(dp[2 * kc + 1][2], dp[2 * kc + 1][3]);
#pragma unroll
        for (int n = 0; n < kDN; n += 2) {
          uint32_t f[4];
          load_b_trans<kP>(f, Kt, lane, kc, n);
          mma16816<T>(gq[n], sf, f[0], f[1]);
          mma16816<T>(gq[n + 1], sf, f[2], f[3]);
        }
      }
      __syncthreads();  // every warp is done with this buffer before it is refilled
    }
    cp_async_wait<0>();

#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t i = q0 + 16 * warp + g + 8 * r;
      if (i >= Tq) continue;
      T* row = dq + (bh * Tq + i) * D;
#pragma unroll
      for (int n = 0; n < kDN; ++n)
        *reinterpret_cast<uint32_t*>(row + 8 * n + 2 * t) = pack2<T>(gq[n][2 * r], gq[n][2 * r + 1]);
    }
  }
}

}  // namespace ember::cuda::attn_mma_bwd
