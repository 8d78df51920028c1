// A yes/no decided once per key and then read without a lock: used by the CUDA kernels that
// check a new code path against an established one the first time it would run on a device
// (the sm_90a GEMM, the tensor-core attention forward). Host code.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <mutex>

#include "ember/core/error.h"

namespace ember::cuda {

template <int N>
class OnceVerdict {
 public:
  // The verdict for `index` in [0, N): check() runs the first time (once, even with several
  // threads asking), and its answer is kept. An ember::Error from check() counts as "no" and is
  // reported on stderr as "ember: <what> could not run: <message>; <fallback>". An index out of
  // range is "no" (the established path runs). With `capturing` (a CUDA graph is being captured
  // on the stream: a check, which copies and synchronises, cannot run) an undecided index is "no"
  // for this call only, and stays undecided.
  template <class Check>
  bool get(int index, const char* what, const char* fallback, Check&& check, bool capturing = false) {
    if (index < 0 || index >= N) return false;
    const int8_t known = verdict_[index].load(std::memory_order_acquire);
    if (known != 0) return known > 0;
    if (capturing) return false;
    std::lock_guard<std::mutex> lock(mu_);
    const int8_t again = verdict_[index].load(std::memory_order_relaxed);
    if (again != 0) return again > 0;
    bool ok = false;
    try {
      ok = check();
    } catch (const Error& e) {
      std::fprintf(stderr, "ember: %s could not run: %s; %s\n", what, e.what(), fallback);
    }
    verdict_[index].store(ok ? 1 : -1, std::memory_order_release);
    return ok;
  }

 private:
  std::array<std::atomic<int8_t>, N> verdict_{};  // 0 unknown, 1 yes, -1 no
  std::mutex mu_;
};

}  // namespace ember::cuda
