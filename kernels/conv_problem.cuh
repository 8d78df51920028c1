// conv1d's geometry and the three implicit-GEMM problems (forward, backward-input,
// backward-weight) that the SIMT kernel of conv.cu and the tensor-core kernel of conv_mma.cuh
// both compute. Each problem says how to read A[m, r] and B[r, p] straight from the tensors and
// where C[m, p] goes (conv.cu's header comment has the table). In a header of their own so that
// the host emulation of the tensor-core kernel (tests/emu) runs the same structs.
#pragma once
#include <cstdint>

#include "common.cuh"

namespace ember::cuda {

struct ConvGeom {
  int N, C_in, L, C_out, K, L_out, stride, padding, dilation, groups;
  int cg, og;  // channels per group: input, output
};

// --- the three problems -------------------------------------------------------------------------
// Each says: rows(), cols(), the reduction range of batch item z, a(z, m, r), b(z, r, p),
// store(z, m, p, value), and which index the loaders should walk across consecutive threads
// (kAFastR: r, else m; kBFastR: r, else p) so that global reads coalesce.

template <class T>
struct ForwardProblem {
  using Acc = acc_t<T>;
  using Elem = T;
  static constexpr bool kAFastR = true;   // a weight row is contiguous along (c, k)
  static constexpr bool kBFastR = false;  // x is contiguous along positions
  const T* x;     // (N, C_in, L)
  const T* w;     // (C_out, cg, K)
  const T* bias;  // (C_out) or null
  T* y;           // (N, C_out, L_out)
  ConvGeom g;

  __device__ int rows() const { return g.og; }
  __device__ int cols() const { return g.L_out; }
  __device__ void reduction(int, int& r0, int& r1) const { r0 = 0; r1 = g.cg * g.K; }
  __device__ Acc a(int z, int m, int r) const {
    const int grp = z % g.groups;
    return to_acc(w[static_cast<int64_t>(grp * g.og + m) * (g.cg * g.K) + r]);
  }
  __device__ Acc b(int z, int r, int p) const {
    const int n = z / g.groups, grp = z % g.groups;
    const int c = r / g.K, k = r - c * g.K;
    const int64_t pos = static_cast<int64_t>(p) * g.stride - g.padding + static_cast<int64_t>(k) * g.dilation;
    if (pos < 0 || pos >= g.L) return Acc(0);
    return to_acc(x[(static_cast<int64_t>(n) * g.C_in + grp * g.cg + c) * g.L + pos]);
  }
  __device__ void store(int z, int m, int p, Acc v) const {
    const int n = z / g.groups, co = (z % g.groups) * g.og + m;
    if (bias) v += to_acc(bias[co]);
    y[(static_cast<int64_t>(n) * g.C_out + co) * g.L_out + p] = from_acc<T>(v);
  }
};

template <class T>
struct BackwardInputProblem {
  using Acc = acc_t<T>;
  using Elem = T;
  static constexpr bool kAFastR = true;   // (o, k) with k contiguous in w
  static constexpr bool kBFastR = false;  // dy is contiguous along positions
  const T* dy;  // (N, C_out, L_out)
  const T* w;   // (C_out, cg, K)
  T* dx;        // (N, C_in, L)
  ConvGeom g;

  __device__ int rows() const { return g.cg; }
  __device__ int cols() const { return g.L; }
  __device__ void reduction(int, int& r0, int& r1) const { r0 = 0; r1 = g.og * g.K; }
  __device__ Acc a(int z, int m, int r) const {
    const int grp = z % g.groups;
    const int o = r / g.K, k = r - o * g.K;
    return to_acc(w[(static_cast<int64_t>(grp * g.og + o) * g.cg + m) * g.K + k]);
  }
  __device__ Acc b(int z, int r, int p) const {
    const int n = z / g.groups, grp = z % g.groups;
    const int o = r / g.K, k = r - o * g.K;
    // Output position j reads input p through tap k when j*stride = p + padding - k*dilation.
    const int64_t num = static_cast<int64_t>(p) + g.padding - static_cast<int64_t>(k) * g.dilation;
    if (num < 0 || num % g.stride != 0) return Acc(0);
    const int64_t j = num / g.stride;
    if (j >= g.L_out) return Acc(0);
    return to_acc(dy[(static_cast<int64_t>(n) * g.C_out + grp * g.og + o) * g.L_out + j]);
  }
  __device__ void store(int z, int m, int p, Acc v) const {
    const int n = z / g.groups, ci = (z % g.groups) * g.cg + m;
    dx[(static_cast<int64_t>(n) * g.C_in + ci) * g.L + p] = from_acc<T>(v);
  }
};

template <class T>
struct BackwardWeightProblem {
  using Acc = acc_t<T>;
  using Elem = T;
  static constexpr bool kAFastR = true;  // dy is contiguous along (n, j)'s j
  static constexpr bool kBFastR = true;  // so is x along j
  const T* dy;     // (N, C_out, L_out)
  const T* x;      // (N, C_in, L)
  T* dw;           // (C_out, cg, K): written directly when splits == 1
  Acc* partial;    // (splits, C_out, cg*K): written when splits > 1
  int splits;
  int split_len;   // reduction positions per split (a multiple of the kernel's reduction chunk)
  ConvGeom g;

  __device__ int rows() const { return g.og; }
  __device__ int cols() const { return g.cg * g.K; }
  __device__ void reduction(int z, int& r0, int& r1) const {
    const int64_t total = static_cast<int64_t>(g.N) * g.L_out;
    const int64_t begin = static_cast<int64_t>(z / g.groups) * split_len;
    r0 = static_cast<int>(begin < total ? begin : total);
    r1 = static_cast<int>(begin + split_len < total ? begin + split_len : total);
  }
  __device__ Acc a(int z, int m, int r) const {
    const int grp = z % g.groups;
    const int n = r / g.L_out, j = r - n * g.L_out;
    return to_acc(dy[(static_cast<int64_t>(n) * g.C_out + grp * g.og + m) * g.L_out + j]);
  }
  __device__ Acc b(int z, int r, int p) const {
    const int grp = z % g.groups;
    const int n = r / g.L_out, j = r - n * g.L_out;
    const int c = p / g.K, k = p - c * g.K;
    const int64_t pos = static_cast<int64_t>(j) * g.stride - g.padding + static_cast<int64_t>(k) * g.dilation;
    if (pos < 0 || pos >= g.L) return Acc(0);
    return to_acc(x[(static_cast<int64_t>(n) * g.C_in + grp * g.cg + c) * g.L + pos]);
  }
  __device__ void store(int z, int m, int p, Acc v) const {
    const int split = z / g.groups, co = (z % g.groups) * g.og + m;
    const int64_t at = static_cast<int64_t>(co) * (g.cg * g.K) + p;
    if (splits == 1) dw[at] = from_acc<T>(v);
    else partial[static_cast<int64_t>(split) * g.C_out * (g.cg * g.K) + at] = v;
  }
};

}  // namespace ember::cuda
