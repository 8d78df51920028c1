// What the two emulated GEMM tests share (test_gemm_mma.cpp: the mma.sync kernel;
// sm90/test_gemm_wgmma.cpp: the Hopper kernel): an operand in any layout with NaN padding, and
// the double-precision reference of out (B, M, N) = A (B, M, K) @ Bt (B, N, K)^T (+ bias).
#pragma once
#include <cstdint>
#include <limits>
#include <vector>

#include "emu_test_util.h"

namespace ember::emu::test {

inline int64_t round8(int64_t v) { return (v + 7) / 8 * 8; }

// One operand as a (rows, K) matrix, K-contiguous ("K-major") or not, with a leading dimension
// rounded up to a multiple of 8 (the kernels' requirement) and batches more than one matrix
// apart; the padding holds NaN, so a kernel reading it shows.
template <class T>
struct GemmOperand {
  std::vector<T> data;
  int64_t ld, bs, rows, K;
  bool k_contig;
  GemmOperand(int64_t rows_, int64_t K_, int64_t batches, bool k_contig_, uint32_t seed)
      : ld(round8(k_contig_ ? K_ : rows_)), rows(rows_), K(K_), k_contig(k_contig_) {
    const int64_t outer = k_contig ? rows : K;
    bs = round8(outer * ld + 3);
    data.assign(static_cast<size_t>(bs * batches), from_float<T>(std::numeric_limits<float>::quiet_NaN()));
    const std::vector<T> values = random_values<T>(static_cast<size_t>(rows * K * batches), seed);
    size_t next = 0;
    for (int64_t b = 0; b < batches; ++b)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < K; ++k) data[static_cast<size_t>(at(b, r, k))] = values[next++];
  }
  int64_t at(int64_t b, int64_t r, int64_t k) const { return b * bs + (k_contig ? r * ld + k : k * ld + r); }
  double get(int64_t b, int64_t r, int64_t k) const { return to_double(data[static_cast<size_t>(at(b, r, k))]); }
};

// out[b, m, n] = sum_k a[b, m, k] bt[b, n, k] (+ bias[n]), in double.
template <class T>
Reference gemm_reference(const GemmOperand<T>& a, const GemmOperand<T>& bt, const std::vector<T>* bias,
                         int64_t batches) {
  const int64_t M = a.rows, N = bt.rows, K = a.K;
  Reference ref(static_cast<size_t>(batches * M * N));
  for (int64_t b = 0; b < batches; ++b)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        const size_t i = static_cast<size_t>((b * M + m) * N + n);
        if (bias != nullptr) ref.add(i, to_double((*bias)[static_cast<size_t>(n)]));
        for (int64_t k = 0; k < K; ++k) ref.add(i, a.get(b, m, k) * bt.get(b, n, k));
      }
  return ref;
}

}  // namespace ember::emu::test
