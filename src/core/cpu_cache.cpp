// The CPU caching allocator behind Storage (see allocator.h for the contract).
//
// Why: a training step frees and re-allocates the same large activations and gradients every
// step. glibc serves blocks above its mmap threshold with fresh mmap()s, so each such tensor
// costs a page fault per 4 KB page on first touch (the kernel zero-fills it), and whether a
// size is mmapped drifts with glibc's dynamic threshold. Measured on W1_mlp at 2 threads:
// 4.3 ms with the mmap threshold pinned high, 4.6-5.4 ms without, depending only on the order
// of allocations (docs/perf/cpu.md, step 5). Keeping freed large blocks for reuse makes the
// steady state allocation-free and the timing independent of that order.
//
// Design: blocks of at least kMinCached bytes are rounded up to a size class (8 classes per
// power of two, so at most 12.5% slack) and kept on a free list per class when freed, up to a
// byte limit (EMBER_CPU_CACHE_MB, default 2048; 0 turns caching off). Smaller blocks go straight
// to aligned_alloc/free: glibc serves them from its heap without page faults. Under
// AddressSanitizer caching is off, so use-after-free stays detectable.
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "ember/core/allocator.h"
#include "ember/core/error.h"

namespace ember {
namespace {

constexpr size_t kMinCached = size_t(64) << 10;  // 64 KiB

size_t size_class(size_t n) {
  if (n < kMinCached) return (std::max<size_t>(n, 1) + 63) / 64 * 64;
  int log2 = 63 - __builtin_clzll(n);
  size_t step = size_t(1) << (log2 - 3);
  return (n + step - 1) / step * step;
}

size_t limit_from_env() {
#if defined(__SANITIZE_ADDRESS__)
  return 0;
#else
  const char* v = std::getenv("EMBER_CPU_CACHE_MB");
  if (!v || !*v) return size_t(2048) << 20;
  char* end = nullptr;
  long long mb = std::strtoll(v, &end, 10);
  EMBER_CHECK(end && *end == '\0' && mb >= 0, "cpu allocator", "EMBER_CPU_CACHE_MB must be a whole number of MiB >= 0, got '",
              v, "'");
  return static_cast<size_t>(mb) << 20;
#endif
}

struct Cache {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free_lists;  // size class -> blocks
  CpuCacheStats stats;
  size_t limit = limit_from_env();

  void release_all_locked() {
    for (auto& [cls, blocks] : free_lists)
      for (void* p : blocks) std::free(p);
    free_lists.clear();
    stats.cached_bytes = 0;
  }
};

Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: tensors may outlive static destructors
  return *c;
}

}  // namespace

void* cpu_allocate(size_t nbytes) {
  const size_t cls = size_class(nbytes);
  if (cls >= kMinCached) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.limit > 0) {
      auto it = c.free_lists.find(cls);
      if (it != c.free_lists.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        c.stats.cached_bytes -= cls;
        c.stats.hits++;
        c.stats.in_use_bytes += cls;
        return p;
      }
    }
    c.stats.misses++;
    c.stats.in_use_bytes += cls;
  }
  void* p = std::aligned_alloc(64, cls);
  if (p == nullptr) {
    if (cls >= kMinCached) {  // undo the count taken above
      Cache& c = cache();
      std::lock_guard<std::mutex> lock(c.mu);
      c.stats.in_use_bytes -= cls;
    }
    EMBER_FAIL("storage", "out of memory allocating ", nbytes, " bytes on cpu");
  }
  return p;
}

void cpu_deallocate(void* ptr, size_t nbytes) noexcept {
  if (!ptr) return;
  const size_t cls = size_class(nbytes);
  if (cls >= kMinCached) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    c.stats.in_use_bytes -= cls;
    if (c.stats.cached_bytes + cls <= c.limit) {
      try {
        c.free_lists[cls].push_back(ptr);
        c.stats.cached_bytes += cls;
        return;
      } catch (...) {  // no memory for the list entry: fall through and free the block
      }
    }
  }
  std::free(ptr);
}

CpuCacheStats cpu_cache_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  CpuCacheStats s = c.stats;
  s.limit_bytes = c.limit;
  return s;
}

void cpu_empty_cache() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.release_all_locked();
}

void cpu_set_cache_limit(size_t bytes) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.limit = bytes;
  if (c.stats.cached_bytes > bytes) c.release_all_locked();
}

}  // namespace ember
