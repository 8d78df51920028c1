#include "ember/core/generator.h"

#include "core/philox.h"

namespace ember {

std::array<uint32_t, 4> philox4x32(uint64_t counter_lo, uint64_t counter_hi, uint64_t key) {
  const PhiloxBlock b = philox_block(counter_lo, counter_hi, key);
  return {b.v[0], b.v[1], b.v[2], b.v[3]};
}

Generator& default_generator() {
  static Generator g;
  return g;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

}  // namespace ember
