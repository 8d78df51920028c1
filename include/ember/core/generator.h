// Counter-based random numbers (Philox4x32-10).
//
// Element i of a draw uses the Philox block at counter (offset + i / 4), lane i % 4, keyed by
// the seed. Nothing depends on the order elements are produced in, so a CPU loop, a threaded
// loop and a CUDA kernel produce the same numbers for the same seed and offset.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>

namespace ember {

// One Philox4x32-10 block: four 32-bit outputs for a 128-bit counter and 64-bit key.
std::array<uint32_t, 4> philox4x32(uint64_t counter_lo, uint64_t counter_hi, uint64_t key);
// Maps 32 random bits to a float in [0, 1) (24 bits of mantissa).
inline float uniform01(uint32_t bits) { return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f); }

// Thread safety: reserve() is one atomic fetch_add on the offset, so any number of threads may
// draw from one Generator (the default one included) at once. Every draw gets its own blocks:
// no two draws overlap and, after them, the offset has advanced by exactly the sum of their
// reservations. Which thread gets which blocks is the order in which they reserve, which the
// scheduler decides: a run that draws from a shared generator on several threads is
// reproducible as a whole set of numbers, not per thread. For per-thread reproducibility give
// each thread its own Generator (or its own seed or offset range). manual_seed, set_offset and
// copying are not meant to race with draws: a draw that overlaps them may use the old seed with
// the new offset.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0x5eedULL) : seed_(seed) {}
  // Copies take a snapshot of seed and offset (a copy draws the same numbers as the original).
  Generator(const Generator& o) : seed_(o.seed()), offset_(o.offset()) {}
  Generator& operator=(const Generator& o) {
    seed_.store(o.seed(), std::memory_order_relaxed);
    offset_.store(o.offset(), std::memory_order_relaxed);
    return *this;
  }
  uint64_t seed() const { return seed_.load(std::memory_order_relaxed); }
  uint64_t offset() const { return offset_.load(std::memory_order_relaxed); }
  void manual_seed(uint64_t s) {
    seed_.store(s, std::memory_order_relaxed);
    offset_.store(0, std::memory_order_relaxed);
  }
  void set_offset(uint64_t o) { offset_.store(o, std::memory_order_relaxed); }
  // Reserves the blocks for n elements (ceil(n / 4)) and returns the starting block offset.
  uint64_t reserve(uint64_t n) {
    return offset_.fetch_add(n / 4 + (n % 4 != 0 ? 1 : 0), std::memory_order_relaxed);
  }

 private:
  // Relaxed is enough: the offset is the only shared state a draw reads and writes, and
  // fetch_add makes each reservation a distinct range.
  std::atomic<uint64_t> seed_;
  std::atomic<uint64_t> offset_{0};
};

// The process-wide default generator (used when an op gets none); thread-safe as above.
Generator& default_generator();
void manual_seed(uint64_t seed);

}  // namespace ember
