// conv1d's three implicit GEMMs on tensor cores: mma.sync m16n8k16 for f16/bf16 operands and
// m16n8k8 TF32 for f32 operands (the latter only when cuda::allow_tf32() is on), f32 accumulate.
//
// The problems are kernels/conv.cu's (ForwardProblem, BackwardInputProblem,
// BackwardWeightProblem): C (M, P) = A (M, R) @ B (R, P) per batch item z, A and B read straight
// from the tensors, the epilogue (bias, rounding to the output type, backward-weight's split
// partials) is the problem's store(). What is new here is how a block fills its shared tiles
// and multiplies them.
//
// Tiles. A block of 256 threads (8 warps, 2 along M x 4 along P) owns BM x 128 of C, BM = 128
// when M > 64, else 64 (a 128-row tile would leave half the block idle for 33..64 rows, and the
// 32-row warp tiles keep every warp busy down to M = 32). Each warp owns (BM/2) x 32: BM/32 m16
// tiles x 4 n8 tiles, 64 or 32 f32 accumulators a thread. The reduction is walked in chunks of
// BR = 32 (f16/bf16: two k16 steps) or 16 (TF32: two k8 steps; a 32-bit tile is twice the bytes).
//
// Staging (the im2col tile is built in shared memory, never in global memory). Convolution
// windows make B a gather: a chunk row (c, k) of the forward's B is x shifted by k*dilation and
// read at stride `stride`, with zeros over the padding, and backward-input's B keeps only the
// taps that land on the stride. A copy of whole 16-byte chunks (cp.async) does not fit that, so
// each thread loads its elements of the next chunk with ordinary predicated loads into
// registers (NA + NB = 32 for f16/bf16, 16 for TF32), the warps multiply the current chunk out
// of shared memory meanwhile, and then the registers are written to the other of two shared
// buffers: one barrier per chunk, global latency hidden behind the mma work. Elements outside
// M, P, the reduction or the input (padding, strides that miss) are loaded as zero, so edge
// tiles need no other path. No alignment is required of any tensor.
//
// Which element a thread loads is fixed so that its index arithmetic is mostly per chunk:
//   A [BM][BR]: lane along r (coalesced along a weight row, or along dy's positions for
//       backward-weight), rows m = tid/BR + i*(256/BR); one division per chunk decodes r.
//   B, forward and backward-input [BR][128]: lane along the output (input) positions p, which
//       stay fixed for the thread; rows r = tid/128 + 2i are decoded to (c, k) once per chunk and
//       stepped from there.
//   B, backward-weight [128][BR]: lane along r = (n, j) (contiguous in x for stride 1), columns
//       (c, k) fixed for the block and decoded once into a shared table.
// Shared layouts and bank conflicts: r-contiguous rows are padded to BR + 8 halves (80 bytes,
// 5 16-byte groups) or BR + 4 words for TF32 (20 words), p-contiguous rows to 136 elements
// (272 bytes = 17 groups; or 136 words, 8 mod 32): ldmatrix phases (8 row addresses) and the
// TF32 fragment loads (g*pitch + t, g < 8, t < 4) then fall on distinct banks. f16/bf16 tiles
// are read with ldmatrix (.trans for the p-contiguous B), TF32 tiles word by word (ldmatrix
// moves 16-bit elements; its transpose would split the 32-bit ones). f32 values are rounded to
// TF32 once, when written to shared memory.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "mma.cuh"

namespace ember::cuda::conv_mma {

enum Pass : int { kForward = 0, kBackwardInput = 1, kBackwardWeight = 2 };

constexpr int kThreads = 256;
constexpr int kBP = 128;  // columns (P) per block tile

// Per operand type: what a thread holds between the global load and the shared store (Raw),
// what shared memory holds (S), the reduction chunk and the row padding.
template <class T>
struct Cfg {
  static constexpr bool kTf32 = std::is_same_v<T, float>;
  using Raw = std::conditional_t<kTf32, float, unsigned short>;  // f16/bf16 as their bits
  using S = std::conditional_t<kTf32, uint32_t, unsigned short>;
  static constexpr int kBR = kTf32 ? 16 : 32;
  static constexpr int kPadR = kTf32 ? 4 : 8;  // elements added to an r-contiguous row (16 bytes)
  static constexpr int kPadP = 8;              // elements added to a p-contiguous row
};

template <class T>
__device__ __forceinline__ typename Cfg<T>::Raw load_raw(const T* p) {
  if constexpr (Cfg<T>::kTf32) {
    return __ldg(p);
  } else {
    return __ldg(reinterpret_cast<const unsigned short*>(p));
  }
}
template <class T>
__device__ __forceinline__ typename Cfg<T>::S to_shared(typename Cfg<T>::Raw v) {
  if constexpr (Cfg<T>::kTf32) {
    return mma::to_tf32(v);
  } else {
    return v;
  }
}

// Block tile BM x 128 of the problem's C for batch item z; grid as the SIMT kernel's:
// x = column tiles * Z (consecutive blocks share z), y = row tiles.
template <int kPass, int BM, class Prob>
__global__ void __launch_bounds__(kThreads, BM == 128 ? 1 : 2) conv1d_mma_kernel(Prob prob, int col_tiles) {
  using T = typename Prob::Elem;
  using C = Cfg<T>;
  using Raw = typename C::Raw;
  using S = typename C::S;
  constexpr int BR = C::kBR, BP = kBP;
  constexpr bool kBRc = kPass == kBackwardWeight;  // B tile [BP][BR] (else [BR][BP])
  constexpr int kAPitch = BR + C::kPadR;
  constexpr int kBPitch = kBRc ? BR + C::kPadR : BP + C::kPadP;
  constexpr int kAElems = BM * kAPitch;
  constexpr int kStage = kAElems + (kBRc ? BP : BR) * kBPitch;
  constexpr int NA = BM * BR / kThreads, NB = BR * BP / kThreads;
  constexpr int kAStep = kThreads / BR;                      // rows between a thread's A elements
  constexpr int kBStep = kBRc ? kThreads / BR : kThreads / BP;  // B: columns (r-contig) or r rows
  constexpr int WM = BM / 2, MI = WM / 16, NI = 4;          // warp tile WM x 32
  static_assert((kAElems * sizeof(S)) % 16 == 0 && (kStage * sizeof(S)) % 16 == 0, "16-byte aligned tiles");
  static_assert(NA * kThreads == BM * BR && NB * kThreads == BR * BP, "tiles split evenly over the threads");

  __shared__ __align__(16) S smem[2 * kStage];
  __shared__ int2 ptab[kBRc ? BP : 1];  // backward-weight: (c, k*dilation - padding) per column

  const auto& g = prob.g;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp >> 2, warp_n = warp & 3;
  const int z = blockIdx.x / col_tiles;
  const int p0 = (blockIdx.x % col_tiles) * BP, m0 = blockIdx.y * BM;
  const int M = prob.rows(), P = prob.cols();
  int r_begin, r_end;
  prob.reduction(z, r_begin, r_end);
  const int grp = z % g.groups, zq = z / g.groups;  // zq: the sample (forward, backward-input)

  // --- A: this thread's rows and the source ------------------------------------------------------
  const int ar = tid % BR, am = tid / BR;
  const int a_left = M - m0 - am;
  const int a_valid = a_left <= 0 ? 0 : (a_left + kAStep - 1) / kAStep;  // may exceed NA
  const T* a_src;
  int64_t a_mstride;
  if constexpr (kPass == kForward) {
    a_src = prob.w + static_cast<int64_t>(grp) * g.og * g.cg * g.K;
    a_mstride = static_cast<int64_t>(g.cg) * g.K;
  } else if constexpr (kPass == kBackwardInput) {
    a_src = prob.w + static_cast<int64_t>(grp) * g.og * g.cg * g.K;
    a_mstride = g.K;
  } else {
    a_src = prob.dy + static_cast<int64_t>(grp) * g.og * g.L_out;
    a_mstride = g.L_out;
  }
  const int64_t a_row0 = static_cast<int64_t>(m0 + am) * a_mstride, a_istep = kAStep * a_mstride;

  // --- B: this thread's columns and the source -----------------------------------------------------
  const int bp = kBRc ? tid / BR : tid % BP;  // first column (r-contig) or the column (p-contig)
  const int br = kBRc ? tid % BR : tid / BP;  // the reduction row (r-contig) or the first one
  const T* b_src;
  if constexpr (kPass == kForward) {
    b_src = prob.x + (static_cast<int64_t>(zq) * g.C_in + static_cast<int64_t>(grp) * g.cg) * g.L;
  } else if constexpr (kPass == kBackwardInput) {
    b_src = prob.dy + (static_cast<int64_t>(zq) * g.C_out + static_cast<int64_t>(grp) * g.og) * g.L_out;
  } else {
    b_src = prob.x + static_cast<int64_t>(grp) * g.cg * g.L;
    for (int pl = tid; pl < BP; pl += kThreads) {
      const int p = p0 + pl;
      const int c = p < P ? p / g.K : -1;
      ptab[pl] = make_int2(c, p < P ? (p - c * g.K) * g.dilation - g.padding : 0);
    }
    __syncthreads();
  }
  const bool b_pv = p0 + bp < P;  // p-contig: the thread's column exists

  // Loads the thread's elements of the chunk starting at r0 into registers (zero where absent).
  auto load = [&](Raw (&ra)[NA], Raw (&rb)[NB], int r0) {
    {
      const int r = r0 + ar;
      const bool rv = r < r_end;
      int64_t off = 0;
      if (rv) {
        if constexpr (kPass == kForward) {
          off = r;
        } else if constexpr (kPass == kBackwardInput) {
          const int o = r / g.K, k = r - o * g.K;
          off = static_cast<int64_t>(o) * g.cg * g.K + k;
        } else {
          const int n = r / g.L_out, j = r - n * g.L_out;
          off = static_cast<int64_t>(n) * g.C_out * g.L_out + j;
        }
      }
      const T* pa = a_src + off + a_row0;
#pragma unroll
      for (int i = 0; i < NA; ++i) ra[i] = (rv && i < a_valid) ? load_raw(pa + i * a_istep) : Raw(0);
    }
    if constexpr (kPass == kBackwardWeight) {
      const int r = r0 + br;
      const bool rv = r < r_end;
      const int n = rv ? r / g.L_out : 0, j = rv ? r - n * g.L_out : 0;
      const T* pb = b_src + static_cast<int64_t>(n) * g.C_in * g.L;
      const int jpos = j * g.stride;
#pragma unroll
      for (int i = 0; i < NB; ++i) {
        const int2 t = ptab[bp + i * kBStep];
        const int pos = jpos + t.y;
        const bool ok = rv && t.x >= 0 && pos >= 0 && pos < g.L;
        rb[i] = ok ? load_raw(pb + static_cast<int64_t>(t.x) * g.L + pos) : Raw(0);
      }
    } else {
      // Reduction rows r0 + br + i*kBStep, decoded once into (channel, tap) and stepped.
      const int r = r0 + br;
      int c = r / g.K, k = r - c * g.K;
      const int64_t chan_len = kPass == kForward ? g.L : g.L_out;
      int64_t coff = static_cast<int64_t>(c) * chan_len;
      const int p = b_pv ? p0 + bp : 0;  // a column past P loads nothing (and overflows nothing)
#pragma unroll
      for (int i = 0; i < NB; ++i) {
        bool ok = b_pv && r + i * kBStep < r_end;
        int pos;
        if constexpr (kPass == kForward) {
          pos = p * g.stride - g.padding + k * g.dilation;
          ok = ok && pos >= 0 && pos < g.L;
        } else {
          // Output position j reads input p through tap k when j*stride = p + padding - k*dilation.
          const int num = p + g.padding - k * g.dilation;
          if (g.stride == 1) {
            pos = num;
          } else {
            pos = num / g.stride;
            ok = ok && pos * g.stride == num;
          }
          ok = ok && num >= 0 && pos < g.L_out;
        }
        rb[i] = ok ? load_raw(b_src + coff + pos) : Raw(0);
        k += kBStep;
        while (k >= g.K) {
          k -= g.K;
          coff += chan_len;
        }
      }
    }
  };

  // Writes the registers into stage `buf`.
  auto stage = [&](const Raw (&ra)[NA], const Raw (&rb)[NB], int buf) {
    S* sa = smem + buf * kStage;
    S* sb = sa + kAElems;
#pragma unroll
    for (int i = 0; i < NA; ++i) sa[(am + i * kAStep) * kAPitch + ar] = to_shared<T>(ra[i]);
#pragma unroll
    for (int i = 0; i < NB; ++i) {
      if constexpr (kBRc) {
        sb[(bp + i * kBStep) * kBPitch + br] = to_shared<T>(rb[i]);
      } else {
        sb[(br + i * kBStep) * kBPitch + bp] = to_shared<T>(rb[i]);
      }
    }
  };

  float acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

  const int gq = lane >> 2, tq = lane & 3;  // fragment coordinates (PTX: g, t)
  auto multiply = [&](int buf) {
    if constexpr (C::kTf32) {
      const S* sa = smem + buf * kStage;
      const S* sb = sa + kAElems;
#pragma unroll
      for (int kk = 0; kk < BR; kk += 8) {
        uint32_t bf[NI][2];
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
          const int pc = warp_n * 32 + ni * 8 + gq;
          if constexpr (kBRc) {
            bf[ni][0] = sb[pc * kBPitch + kk + tq];
            bf[ni][1] = sb[pc * kBPitch + kk + tq + 4];
          } else {
            bf[ni][0] = sb[(kk + tq) * kBPitch + pc];
            bf[ni][1] = sb[(kk + tq + 4) * kBPitch + pc];
          }
        }
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
          const int mr = warp_m * WM + mi * 16 + gq;
          const uint32_t af[4] = {sa[mr * kAPitch + kk + tq], sa[(mr + 8) * kAPitch + kk + tq],
                                  sa[mr * kAPitch + kk + tq + 4], sa[(mr + 8) * kAPitch + kk + tq + 4]};
#pragma unroll
          for (int ni = 0; ni < NI; ++ni) mma::mma_1688_tf32(acc[mi][ni], af, bf[ni][0], bf[ni][1]);
        }
      }
    } else {
      // ldmatrix.x4: lanes 8j..8j+7 address the rows of matrix j; matrices in "A order"
      // (j&1: rows +8, j>>1: k +8), as in gemm_mma.cuh's tc_frag_addr.
      const uint32_t sa = mma::smem_u32(smem + buf * kStage);
      const uint32_t sb = sa + static_cast<uint32_t>(kAElems * sizeof(S));
      const int j = lane >> 3, r8 = lane & 7;
#pragma unroll
      for (int kk = 0; kk < BR; kk += 16) {
        uint32_t bf[2][4];  // {0, 2}: n8 tile 2nj, {1, 3}: n8 tile 2nj+1
#pragma unroll
        for (int nj = 0; nj < 2; ++nj) {
          const int pc = warp_n * 32 + nj * 16;
          const int off = kBRc ? (pc + (j & 1) * 8 + r8) * kBPitch + kk + (j >> 1) * 8
                               : (kk + (j >> 1) * 8 + r8) * kBPitch + pc + (j & 1) * 8;
          mma::ldmatrix_x4<!kBRc>(bf[nj], sb + static_cast<uint32_t>(off * sizeof(S)));
        }
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
          uint32_t af[4];
          const int off = (warp_m * WM + mi * 16 + (j & 1) * 8 + r8) * kAPitch + kk + (j >> 1) * 8;
          mma::ldmatrix_x4<false>(af, sa + static_cast<uint32_t>(off * sizeof(S)));
#pragma unroll
          for (int ni = 0; ni < NI; ++ni)
            mma::mma_16816<T>(acc[mi][ni], af, bf[ni >> 1][ni & 1], bf[ni >> 1][(ni & 1) + 2]);
        }
      }
    }
  };

  // Chunk c is multiplied out of stage c % 2 while chunk c+1 travels from global memory into
  // registers; it is written to the other stage, whose last readers (chunk c-1) passed the
  // barrier at the end of the previous step.
  Raw ra[NA], rb[NB];
  load(ra, rb, r_begin);
  stage(ra, rb, 0);
  __syncthreads();
  int buf = 0;
  for (int r0 = r_begin; r0 < r_end; r0 += BR) {
    const bool more = r0 + BR < r_end;
    if (more) load(ra, rb, r0 + BR);
    multiply(buf);
    if (more) stage(ra, rb, buf ^ 1);
    __syncthreads();
    buf ^= 1;
  }

  // C fragment: c0, c1 at (row g, columns 2t, 2t+1), c2, c3 at row g + 8.
#pragma unroll
  for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int m = m0 + warp_m * WM + mi * 16 + gq + half * 8;
      if (m >= M) continue;
#pragma unroll
      for (int ni = 0; ni < NI; ++ni) {
        const int p = p0 + warp_n * 32 + ni * 8 + 2 * tq;
        if (p < P) prob.store(z, m, p, acc[mi][ni][half * 2]);
        if (p + 1 < P) prob.store(z, m, p + 1, acc[mi][ni][half * 2 + 1]);
      }
    }
  }
}

}  // namespace ember::cuda::conv_mma
