// Counter-based random numbers (Philox4x32-10).
//
// Element i of a draw uses the Philox block at counter (offset + i / 4), lane i % 4, keyed by
// the seed. Nothing depends on the order elements are produced in, so a CPU loop, a threaded
// loop and a CUDA kernel produce the same numbers for the same seed and offset.
#pragma once
#include <array>
#include <cstdint>

namespace ember {

// One Philox4x32-10 block: four 32-bit outputs for a 128-bit counter and 64-bit key.
std::array<uint32_t, 4> philox4x32(uint64_t counter_lo, uint64_t counter_hi, uint64_t key);
// Maps 32 random bits to a float in [0, 1) (24 bits of mantissa).
inline float uniform01(uint32_t bits) { return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f); }

class Generator {
 public:
  explicit Generator(uint64_t seed = 0x5eedULL) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void manual_seed(uint64_t s) { seed_ = s; offset_ = 0; }
  void set_offset(uint64_t o) { offset_ = o; }
  // Reserves the blocks for n elements and returns the starting block offset.
  uint64_t reserve(uint64_t n) {
    uint64_t start = offset_;
    offset_ += (n + 3) / 4;
    return start;
  }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

// The process-wide default generator (used when an op gets none).
Generator& default_generator();
void manual_seed(uint64_t seed);

}  // namespace ember
