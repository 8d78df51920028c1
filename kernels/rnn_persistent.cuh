// The persistent RNN/LSTM/GRU recurrence for small batches: one cooperative launch runs all T
// steps (forward) or all T steps back (backward), with each CTA's slice of W_hh in shared memory
// for the whole sequence. The per-element cell math (rnn_cell.cuh: cell_forward, cell_backward)
// is the per-step kernels' own, so the two paths compute every gate the same way and round at
// the same points. rnn.cu owns the rule for when this runs, the launch and the first-use
// self-check (docs/rnn.md, "Persistent kernel"); geometry() below is its launch sizing, shared
// with the host emulation's test (tests/emu/test_rnn_persistent.cpp), which runs these kernels
// on the CPU.
//
// Forward. CTA b owns the hidden units j0 = b*U .. j0 + U - 1 and keeps the rows g*H + j of
// W_hh for every gate g of those units in shared memory (G*U rows of H, the storage type,
// zero-padded to Kp columns). Per step s:
//   1. stage h_{s-1} (N x H, all units) from global memory into shared memory: h0 from h_n at
//      s = 0, then from a zero-padded ping-pong buffer hbuf[2][Np][Kp] that the CTAs wrote in
//      the previous step (read with ld.global.cg: the L1 of this SM may hold a stale line);
//   2. the hidden projection of its units, G*U rows x N batch rows, each a dot product of
//      length H in f32 (below), rounded to the storage type as the per-step GEMM's result is;
//   3. the cell for its (n, j) elements (one thread each), which writes h_s into hbuf[s & 1];
//   4. a grid-wide barrier (below); the writes nobody reads during the kernel (output,
//      workspace, h_prev) and the next step's gates_x loads are issued between its arrive and
//      its wait.
// After the last step each thread writes its h (and c) to h_n (c_n). Rows past a sequence's
// length pass their state through and write zeros, exactly as the per-step kernel does.
//
// Backward. CTA b owns the same units, now as columns: it keeps W_hh[:, j0 .. j0 + U - 1]
// transposed (U rows of G*H) in shared memory. Per step s from T - 1 down: stage the
// hidden-projection gradient of step s + 1 (N x G*H, from a ping-pong buffer gbuf written by all
// CTAs), compute dmm = dgates_h[s + 1] W_hh for its units (rounded to the storage type, as the
// per-step GEMM stores it), run the cell backward with the carried dh, dc kept in f32 registers,
// write the step's gate gradients to gbuf[s & 1], barrier. One more dot product after step 0
// gives grad_h0 = dh + dgates_h[0] W_hh.
//
// The dot products: warp w takes items (row r, group of 8 batch rows, k part p) in turn; each
// lane walks its 16-byte vectors of the row and of the 8 staged batch rows and keeps 8 f32 sums,
// which a transposing butterfly (9 shuffles instead of 40) leaves lane l holding the total of
// batch row (l >> 2) & 7. When there are fewer items than warps the k range is split into KP
// parts whose partial sums the cell adds.
//
// The barrier (grid_sync.cuh): a 32-bit arrival counter in global memory, zeroed
// (cudaMemsetAsync) before the launch. After its writes of step s, each CTA syncs its threads,
// thread 0 fences and adds 1, later waits (ld.acquire.gpu) until the counter reaches
// (s + 1) * gridDim.x: the counter's value is the generation, so it is never reset during the
// kernel and needs no sense flag. It is hand-written rather than cooperative groups' grid.sync()
// to split arrive from wait, so each CTA's stores of the output and workspace and its next
// gates_x loads overlap the wait for the slowest CTA. The launch is still cooperative: that is
// what guarantees every CTA is resident at once (a spin barrier over CTAs that are not would
// hang), and a cooperative kernel node and a memset node can be captured into a CUDA graph.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "grid_sync.cuh"
#include "rnn_cell.cuh"

namespace ember::cuda::rnn_persistent {

using rnn_cell::cell_backward;
using rnn_cell::cell_forward;
using rnn_cell::kGates;
using rnn_cell::kWorkSlots;
using rnn_cell::ld;

constexpr int kWarps = 8, kBlock = 32 * kWarps;
constexpr int kBatchGroup = 8;  // batch rows one warp item covers (8 f32 sums per lane)

// Elements per 16-byte vector of T.
template <class T>
inline constexpr int kVec = 16 / static_cast<int>(sizeof(T));

// --- shared-memory dot products -----------------------------------------------------------------

template <class T>
__device__ __forceinline__ void to_floats(const Pack<T, kVec<T>>& p, float (&f)[kVec<T>]) {
#pragma unroll
  for (int i = 0; i < kVec<T>; ++i) f[i] = static_cast<float>(to_acc(p.v[i]));
}

// Lane l ends with the sum over all 32 lanes of a[(l >> 2) & 7].
__device__ __forceinline__ float transpose_reduce8(const float (&a)[8], int lane) {
  const bool b4 = lane & 16, b3 = lane & 8, b2 = lane & 4;
  float b[4], c[2];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float send = b4 ? a[i] : a[i + 4];
    b[i] = (b4 ? a[i + 4] : a[i]) + __shfl_xor_sync(0xffffffffu, send, 16);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float send = b3 ? b[i] : b[i + 2];
    c[i] = (b3 ? b[i + 2] : b[i]) + __shfl_xor_sync(0xffffffffu, send, 8);
  }
  float d = (b2 ? c[1] : c[0]) + __shfl_xor_sync(0xffffffffu, b2 ? c[0] : c[1], 4);
  d += __shfl_xor_sync(0xffffffffu, d, 2);
  d += __shfl_xor_sync(0xffffffffu, d, 1);
  return d;
}

// pre[(p * R + r) * Np + n] = part p of sum_k rows[r][k] * vecs[n][k], for the R rows and Np
// batch rows in shared memory (pitch Kp, zero-padded, Kp a multiple of 32 vectors).
template <class T>
__device__ __forceinline__ void dot_phase(const T* rows, int R, const T* vecs, int Np, int Kp, int KP, float* pre) {
  constexpr int V = kVec<T>;
  using P = Pack<T, V>;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int groups = Kp / (32 * V), batch_groups = Np / kBatchGroup;
  const int items = R * batch_groups * KP;
  for (int it = warp; it < items; it += kWarps) {
    const int p = it % KP, rc = it / KP, r = rc % R, bg = rc / R;
    const int g0 = p * groups / KP, g1 = (p + 1) * groups / KP;
    const T* row = rows + static_cast<int64_t>(r) * Kp;
    const T* vec = vecs + static_cast<int64_t>(bg) * kBatchGroup * Kp;
    float acc[kBatchGroup] = {};
    for (int g = g0; g < g1; ++g) {
      const int k = (g * 32 + lane) * V;
      float w[V];
      to_floats<T>(*reinterpret_cast<const P*>(row + k), w);
#pragma unroll
      for (int n = 0; n < kBatchGroup; ++n) {
        float h[V];
        to_floats<T>(*reinterpret_cast<const P*>(vec + n * Kp + k), h);
#pragma unroll
        for (int i = 0; i < V; ++i) acc[n] = fmaf(w[i], h[i], acc[n]);
      }
    }
    const float sum = transpose_reduce8(acc, lane);
    if ((lane & 3) == 0) pre[(p * R + r) * Np + bg * kBatchGroup + (lane >> 2)] = sum;
  }
}

// Copies rows [0, N) of a zero-padded (Np, Kp) buffer that other CTAs wrote into shared memory,
// 16 bytes at a time through L2.
template <class T>
__device__ __forceinline__ void stage_from_l2(T* dst, const T* src, int N, int Kp) {
  const int n16 = N * Kp / kVec<T>;
  uint4* d = reinterpret_cast<uint4*>(dst);
  const uint4* s = reinterpret_cast<const uint4*>(src);
  for (int i = threadIdx.x; i < n16; i += blockDim.x) d[i] = __ldcg(s + i);
}

// --- forward ------------------------------------------------------------------------------------

template <class T>
struct ForwardArgs {
  const T* gx;          // (T, N, G*H)
  const T* w;           // (G*H, H)
  const T* b;           // (G*H) or null
  const int64_t* len;   // (N) or null
  T* h_n;               // (N, H): h0 in, h_T out
  T* c_n;               // (N, H) (LSTM): c0 in, c_T out
  T* y;                 // (T, N, H), time order
  T* ws;                // (T, N, W*H) step order, or null
  T* hp;                // (T, N, H) step order, or null
  T* hbuf;              // (2, Np, Kp), zeroed
  unsigned* barrier;    // zeroed
  int steps, N, H, U, Np, Kp, KP;
  bool reverse;
};

template <class T>
__host__ __device__ constexpr size_t shared_bytes(int R, int Np, int Kp, int KP) {
  return static_cast<size_t>(R + Np) * Kp * sizeof(T) + static_cast<size_t>(KP) * R * Np * sizeof(float);
}

// The geometry of one launch of forward_kernel or backward_kernel: U hidden units per CTA, grid
// CTAs, the padded batch Np and dot length Kp, KP parts of k per dot product, the dynamic shared
// memory. ok is false when the problem does not fit (one (n, j) element per thread, the slices
// in smem_optin bytes, the barrier's 32-bit arrival count); whether the grid can be resident at
// once is the launcher's question (occupancy), not this one's.
struct Geometry {
  bool ok = false;
  int U = 0, grid = 0, Np = 0, Kp = 0, KP = 0;
  size_t smem = 0;
};

// `units` forces U (the self-check's ragged slices); 0 spreads the H units over `sms` CTAs.
template <class T, RNNMode kMode, bool kBackward>
inline Geometry geometry(int sms, size_t smem_optin, int64_t T_, int64_t N, int64_t H, int64_t units = 0) {
  Geometry p;
  if (sms <= 0 || T_ <= 0 || N <= 0 || H <= 0) return p;
  constexpr int G = kGates<kMode>, V = kVec<T>;
  const int64_t U = units > 0 ? units : (H + sms - 1) / sms;
  if (N * U > kBlock) return p;  // one (n, j) element per thread
  const int64_t grid = (H + U - 1) / U;
  const int64_t R = kBackward ? U : G * U, K = kBackward ? G * H : H;
  const int64_t Kp = (K + 32 * V - 1) / (32 * V) * (32 * V), Np = (N + 7) / 8 * 8;
  const int64_t items = R * (Np / kBatchGroup), groups = Kp / (32 * V);
  const int64_t KP = items >= kWarps ? 1 : std::min<int64_t>(kWarps / items, groups);
  const size_t smem =
      shared_bytes<T>(static_cast<int>(R), static_cast<int>(Np), static_cast<int>(Kp), static_cast<int>(KP));
  if (Kp > (int64_t{1} << 20) || smem > smem_optin) return p;
  if ((T_ + 1) * grid >= (int64_t{1} << 31)) return p;  // the barrier's 32-bit arrival count
  p.ok = true;
  p.U = static_cast<int>(U);
  p.grid = static_cast<int>(grid);
  p.Np = static_cast<int>(Np);
  p.Kp = static_cast<int>(Kp);
  p.KP = static_cast<int>(KP);
  p.smem = smem;
  return p;
}

template <class T, RNNMode kMode>
__global__ void __launch_bounds__(kBlock, 1) forward_kernel(const ForwardArgs<T> a) {
  using A = acc_t<T>;
  constexpr int G = kGates<kMode>, Wk = kWorkSlots<kMode>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int U = a.U, H = a.H, N = a.N, Kp = a.Kp, Np = a.Np, R = G * U;
  const int64_t GH = static_cast<int64_t>(G) * H;
  T* w_s = reinterpret_cast<T*>(smem);  // (R, Kp): row g*U + u is W_hh row g*H + j0 + u
  T* h_s = w_s + R * Kp;                // (Np, Kp): h_{s-1}
  float* pre = reinterpret_cast<float*>(h_s + Np * Kp);  // (KP, R, Np)
  const int j0 = blockIdx.x * U;
  for (int i = threadIdx.x; i < R * Kp; i += blockDim.x) {
    const int r = i / Kp, k = i - r * Kp, g = r / U, j = j0 + r % U;
    w_s[i] = j < H && k < H ? a.w[(g * static_cast<int64_t>(H) + j) * H + k] : from_acc<T>(A(0));
  }
  for (int i = threadIdx.x; i < Np * Kp; i += blockDim.x) h_s[i] = from_acc<T>(A(0));

  // This thread's element (n, j), fixed for the whole sequence.
  const int n = threadIdx.x / U, u = threadIdx.x - n * U, j = j0 + u;
  const bool mine = n < N && j < H;
  int L = a.steps;
  A bias[G] = {}, x[G] = {};
  A c = A(0);
  T h_last{};
  auto load_x = [&](int s) {
    if (s >= L) return;
    const int64_t t = a.reverse ? L - 1 - s : s;
#pragma unroll
    for (int g = 0; g < G; ++g) x[g] = ld(a.gx + (t * N + n) * GH, static_cast<int64_t>(g) * H + j);
  };
  if (mine) {
    if (a.len) L = static_cast<int>(a.len[n]);
#pragma unroll
    for (int g = 0; g < G; ++g) bias[g] = a.b ? ld(a.b, static_cast<int64_t>(g) * H + j) : A(0);
    if constexpr (kMode == RNNMode::lstm) c = ld(a.c_n, static_cast<int64_t>(n) * H + j);
    load_x(0);
  }
  for (int s = 0; s < a.steps; ++s) {
    __syncthreads();  // the previous step's cell has read h_s and pre
    if (s == 0) {
      for (int i = threadIdx.x; i < N * H; i += blockDim.x) h_s[(i / H) * Kp + i % H] = a.h_n[i];
    } else {
      stage_from_l2(h_s, a.hbuf + ((s - 1) & 1) * static_cast<int64_t>(Np) * Kp, N, Kp);
    }
    __syncthreads();
    dot_phase(w_s, R, h_s, Np, Kp, a.KP, pre);
    __syncthreads();
    const int64_t srow = (s * static_cast<int64_t>(N) + n) * H + j;
    A wk[Wk];
    T hv{}, h_old{};
    bool active = false;
    if (mine) {
      h_old = h_s[n * Kp + j];
      active = s < L;
      hv = h_old;  // a padding position passes its state through
      if (active) {
        A q[G];
#pragma unroll
        for (int g = 0; g < G; ++g) {
          float v = 0.f;
          for (int p = 0; p < a.KP; ++p) v += pre[(p * R + g * U + u) * Np + n];
          q[g] = to_acc(from_acc<T>(static_cast<A>(v)));  // the per-step GEMM's result is stored in T
        }
        hv = from_acc<T>(cell_forward<kMode>(x, q, bias, to_acc(h_old), c, [&](int k, A v) { wk[k] = v; }));
      }
      a.hbuf[(s & 1) * static_cast<int64_t>(Np) * Kp + n * Kp + j] = hv;
      h_last = hv;
    }
    // After step 0 always (h_n, read by step 0's staging, is written at the end), and before
    // every step that reads this one's h.
    const bool sync = s + 1 < a.steps || s == 0;
    if (sync) grid_sync::arrive(a.barrier);
    if (mine) {
      if (active) {
        const int64_t t = a.reverse ? L - 1 - s : s;
        a.y[(t * N + n) * H + j] = hv;
        if (a.hp) a.hp[srow] = h_old;
        if (a.ws) {
          T* w = a.ws + (s * static_cast<int64_t>(N) + n) * (Wk * static_cast<int64_t>(H));
#pragma unroll
          for (int k = 0; k < Wk; ++k) w[k * static_cast<int64_t>(H) + j] = from_acc<T>(wk[k]);
        }
        load_x(s + 1);
      } else {
        a.y[srow] = from_acc<T>(A(0));
        if (a.hp) a.hp[srow] = from_acc<T>(A(0));
      }
    }
    if (sync) grid_sync::wait(a.barrier, static_cast<unsigned>(s + 1) * gridDim.x);
  }
  if (mine) {
    a.h_n[static_cast<int64_t>(n) * H + j] = h_last;
    if constexpr (kMode == RNNMode::lstm) a.c_n[static_cast<int64_t>(n) * H + j] = from_acc<T>(c);
  }
}

// --- backward -----------------------------------------------------------------------------------

template <class T>
struct BackwardArgs {
  const T* go;          // (T, N, H), time order
  const T* w;           // (G*H, H)
  const T* ws;          // (T, N, W*H) step order
  const T* hp;          // (T, N, H) step order
  const int64_t* len;   // (N) or null
  T* dh;                // (N, H): grad_h_n in, grad_h0 out
  T* dc;                // (N, H) (LSTM): grad_c_n in, grad_c0 out
  T* gx;                // (T, N, G*H) time order; may alias gh
  T* gh;                // (T, N, G*H) step order
  T* gbuf;              // (2, Np, Kp), zeroed
  unsigned* barrier;    // zeroed
  int steps, N, H, U, Np, Kp, KP;
  bool reverse;
};

template <class T, RNNMode kMode>
__global__ void __launch_bounds__(kBlock, 1) backward_kernel(const BackwardArgs<T> a) {
  using A = acc_t<T>;
  constexpr int G = kGates<kMode>, Wk = kWorkSlots<kMode>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int U = a.U, H = a.H, N = a.N, Kp = a.Kp, Np = a.Np;
  const int64_t GH = static_cast<int64_t>(G) * H;
  T* w_s = reinterpret_cast<T*>(smem);  // (U, Kp): row u is column j0 + u of W_hh
  T* g_s = w_s + U * Kp;                // (Np, Kp): the staged hidden-projection gradient
  float* pre = reinterpret_cast<float*>(g_s + Np * Kp);  // (KP, U, Np)
  const int j0 = blockIdx.x * U;
  for (int i = threadIdx.x; i < U * Kp; i += blockDim.x) {
    const int u = i / Kp, r = i - u * Kp, j = j0 + u;
    w_s[i] = j < H && r < GH ? a.w[static_cast<int64_t>(r) * H + j] : from_acc<T>(A(0));
  }
  for (int i = threadIdx.x; i < Np * Kp; i += blockDim.x) g_s[i] = from_acc<T>(A(0));

  const int n = threadIdx.x / U, u = threadIdx.x - n * U, j = j0 + u;
  const bool mine = n < N && j < H;
  int L = a.steps;
  A dh = A(0), dc = A(0);
  if (mine) {
    if (a.len) L = static_cast<int>(a.len[n]);
    dh = ld(a.dh, static_cast<int64_t>(n) * H + j);
    if constexpr (kMode == RNNMode::lstm) dc = ld(a.dc, static_cast<int64_t>(n) * H + j);
  }
  // dmm = (the gradient staged from gbuf[src]) W_hh for this thread's element, in T as the
  // per-step GEMM stores it.
  auto project = [&](int src) -> A {
    __syncthreads();  // the previous readers of g_s and pre are done
    stage_from_l2(g_s, a.gbuf + src * static_cast<int64_t>(Np) * Kp, N, Kp);
    __syncthreads();
    dot_phase(w_s, U, g_s, Np, Kp, a.KP, pre);
    __syncthreads();
    if (!mine) return A(0);
    float v = 0.f;
    for (int p = 0; p < a.KP; ++p) v += pre[(p * U + u) * Np + n];
    return to_acc(from_acc<T>(static_cast<A>(v)));
  };
  for (int s = a.steps - 1; s >= 0; --s) {
    const A dmm = s + 1 < a.steps ? project((s + 1) & 1) : A(0);
    A dg[G], dgh_n = A(0);
    bool active = false;
    int64_t t = 0;
    if (mine) {
      const A d_in = dh + dmm;
      active = s < L;
      T* grow = a.gbuf + (s & 1) * static_cast<int64_t>(Np) * Kp + static_cast<int64_t>(n) * Kp;
      if (!active) {  // pass the state gradient through; zero gate gradients at (s, n)
        dh = d_in;
#pragma unroll
        for (int g = 0; g < G; ++g) grow[g * H + j] = from_acc<T>(A(0));
      } else {
        t = a.reverse ? L - 1 - s : s;
        const T* w = a.ws + (s * static_cast<int64_t>(N) + n) * (Wk * static_cast<int64_t>(H));
        const A d = d_in + ld(a.go, (t * N + n) * H + j);
        A dh_direct;
        cell_backward<kMode>(
            d, [&](int k) { return ld(w, static_cast<int64_t>(k) * H + j); },
            [&] { return ld(a.hp, (s * static_cast<int64_t>(N) + n) * H + j); }, dc, dg, dgh_n, dh_direct);
        dh = dh_direct;
#pragma unroll
        for (int g = 0; g < G; ++g)
          grow[g * H + j] = from_acc<T>(kMode == RNNMode::gru && g == 2 ? dgh_n : dg[g]);
      }
    }
    grid_sync::arrive(a.barrier);
    if (mine) {
      T* ghr = a.gh + (s * static_cast<int64_t>(N) + n) * GH;
      if (!active) {
        T* gxr = a.gx + (s * static_cast<int64_t>(N) + n) * GH;
#pragma unroll
        for (int g = 0; g < G; ++g) {
          ghr[g * H + j] = from_acc<T>(A(0));
          if (a.gx != a.gh) gxr[g * H + j] = from_acc<T>(A(0));
        }
      } else {
        T* gxr = a.gx + (t * N + n) * GH;
        if constexpr (kMode == RNNMode::gru) ghr[2 * H + j] = from_acc<T>(dgh_n);
#pragma unroll
        for (int g = 0; g < G; ++g) {
          gxr[g * H + j] = from_acc<T>(dg[g]);
          if (a.gx != a.gh && !(kMode == RNNMode::gru && g == 2)) ghr[g * H + j] = from_acc<T>(dg[g]);
        }
      }
    }
    grid_sync::wait(a.barrier, static_cast<unsigned>(a.steps - s) * gridDim.x);
  }
  // grad_h0 = dh + dgates_h[0] W_hh; grad_c0 = dc.
  const A dmm = project(0);
  if (mine) {
    a.dh[static_cast<int64_t>(n) * H + j] = from_acc<T>(dh + dmm);
    if constexpr (kMode == RNNMode::lstm) a.dc[static_cast<int64_t>(n) * H + j] = from_acc<T>(dc);
  }
}

}  // namespace ember::cuda::rnn_persistent
