// Choosing the GEMM back end per class of product (cuda::GemmBackend::fastest, docs/gemm.md).
// Host code only, so the decision logic is tested without a GPU; kernels/gemm.cu supplies the
// timing function.
#pragma once
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <tuple>

#include "ember/core/dtype.h"
#include "ember/cuda.h"

namespace ember::cuda {

// A class of products that share a decision: sizes are rounded up to powers of two (a product
// of 3000 x 768 and one of 4096 x 1024 share one), everything that changes which kernel runs is
// kept whole.
struct GemmKey {
  int device = 0;
  DType dtype = DType::f32;
  bool a_row_major = true, b_row_major = true, batched = false, bias = false, tf32 = false;
  int log2_m = 0, log2_n = 0, log2_k = 0;
  auto operator<=>(const GemmKey&) const = default;
};

// ceil(log2(max(x, 1))).
int ceil_log2(int64_t x);
GemmKey gemm_key(int device, DType dtype, bool a_row_major, bool b_row_major, int64_t batches, int64_t m, int64_t n,
                 int64_t k, bool bias, bool tf32);

// The decisions: the first product of a class times both back ends (time_ms(backend) returns
// milliseconds per call) and keeps the faster; ties go to cuBLAS. Thread-safe; the timing runs
// outside the lock (two threads may both time a new class; the first answer is kept).
class GemmChooser {
 public:
  GemmBackend choose(const GemmKey& key, const std::function<double(GemmBackend)>& time_ms);
  // The cached decision, if any (no timing).
  bool lookup(const GemmKey& key, GemmBackend* out) const;
  std::size_t size() const;
  void clear();

 private:
  mutable std::mutex mu_;
  std::map<GemmKey, GemmBackend> decided_;
};

// The process-wide chooser behind GemmBackend::fastest.
GemmChooser& gemm_chooser();

// Records which kernel computed this thread's last GEMM (cuda::last_gemm_kernel()).
void note_gemm_kernel(const char* name);

}  // namespace ember::cuda
