// Philox4x32-10 and the mapping from its bits to random values, shared by the CPU loop and
// the CUDA kernel so one seed and offset give the same stream on both devices (bernoulli
// masks and uniforms bit-identical; normals equal up to the last ulp of log/sin/cos).
#pragma once
#include <cmath>
#include <cstdint>

#include "core/host_device.h"

namespace ember {

// What random_fill draws from the stream.
enum class RandomKind : uint8_t { uniform, normal, bernoulli, randint };

struct PhiloxBlock {
  uint32_t v[4];
};

// Salmon et al., SC'11: 10 rounds of two 32x32->64 multiplies with a Weyl key schedule.
EMBER_HD PhiloxBlock philox_block(uint64_t counter_lo, uint64_t counter_hi, uint64_t key) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  uint32_t c0 = static_cast<uint32_t>(counter_lo), c1 = static_cast<uint32_t>(counter_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(counter_hi), c3 = static_cast<uint32_t>(counter_hi >> 32);
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(M0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(M1) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n1 = static_cast<uint32_t>(p1);
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    const uint32_t n3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += W0;
    k1 += W1;
  }
  return PhiloxBlock{{c0, c1, c2, c3}};
}

EMBER_HD float philox_uniform01(uint32_t bits) {
  return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f);
}

// The value of element i (lane = i % 4) of a draw, from its block r.
EMBER_HD double random_value(RandomKind kind, const PhiloxBlock& r, int lane, double a, double b) {
  switch (kind) {
    case RandomKind::uniform:
      // An explicit fma, not a + (b - a) * u: compilers contract that expression differently
      // per target (nvcc always, GCC with -march=native on FMA hardware), fma is one rounding
      // everywhere, so both devices give the same bits.
      return std::fma(b - a, static_cast<double>(philox_uniform01(r.v[lane])), a);
    case RandomKind::bernoulli: return philox_uniform01(r.v[lane]) < a ? 1.0 : 0.0;
    case RandomKind::randint: {
      const uint64_t span = static_cast<uint64_t>(b - a);
      const uint64_t wide = (static_cast<uint64_t>(r.v[lane]) << 32) | r.v[lane ^ 1];
      return a + static_cast<double>(wide % span);
    }
    case RandomKind::normal: {
      // Box-Muller on lane pairs (0,1) and (2,3): the even lane takes cos, the odd one sin.
      const int base = lane & ~1;
      const double u1 = (static_cast<double>(r.v[base]) + 1.0) / 4294967296.0;  // (0, 1]
      const double u2 = static_cast<double>(r.v[base + 1]) / 4294967296.0;
      const double rad = std::sqrt(-2.0 * std::log(u1));
      const double th = 6.283185307179586 * u2;
      return a + b * rad * ((lane & 1) ? std::sin(th) : std::cos(th));
    }
  }
  return 0.0;
}

}  // namespace ember
