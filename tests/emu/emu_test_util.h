// Helpers shared by the emulated-kernel tests: seeded inputs, element conversions, and the
// error measure (difference over the magnitude of the terms that were summed).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace ember::emu::test {

// Under AddressSanitizer the emulated kernels run several times slower; the tests then take a
// subset of their shapes (still every kernel, dtype, layout and tile height) to stay near a
// minute on two cores.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

template <class T>
double to_double(T v) {
  if constexpr (std::is_same_v<T, __half>) return static_cast<double>(__half2float(v));
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return static_cast<double>(__bfloat162float(v));
  else return static_cast<double>(v);
}
template <class T>
T from_float(float v) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(v);
  else return v;
}

// n values uniform in [-1, 1) rounded to T (f32 keeps its full mantissa, so TF32 rounding shows).
template <class T>
std::vector<T> random_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<T> v(n);
  for (auto& e : v) e = from_float<T>(dist(rng));
  return v;
}

template <class T>
const char* type_name() {
  if constexpr (std::is_same_v<T, __half>) return "f16";
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return "bf16";
  else return "f32 (tf32)";
}

// Per output: the reference, and the sum of the absolute values of what was summed into it
// (the scale its rounding errors grow with).
struct Reference {
  std::vector<double> value, magnitude;
  explicit Reference(size_t n = 0) : value(n, 0.0), magnitude(n, 0.0) {}
  void add(size_t i, double term) {
    value[i] += term;
    magnitude[i] += std::fabs(term);
  }
};

// The largest |got - ref| / (magnitude + floor) over all outputs, and where it is. The floor
// covers outputs whose terms nearly vanish, where f16's subnormal spacing is the error.
struct Worst {
  double error = 0;
  size_t at = 0;
  double got = 0, want = 0;
  std::string str() const {
    return "error " + std::to_string(error) + " at " + std::to_string(at) + " (got " + std::to_string(got) +
           ", want " + std::to_string(want) + ")";
  }
};
template <class T>
Worst worst_error(const std::vector<T>& got, const Reference& ref, double floor = 1e-3) {
  Worst w;
  for (size_t i = 0; i < ref.value.size(); ++i) {
    const double g = to_double(got[i]);
    const double e = std::fabs(g - ref.value[i]) / (ref.magnitude[i] + floor);
    if (!(e <= w.error)) {  // NaN counts as the worst
      w.error = std::isnan(e) ? INFINITY : e;
      w.at = i;
      w.got = g;
      w.want = ref.value[i];
    }
  }
  return w;
}

// Tolerance relative to the magnitude: exact products and f32 sums, then the output rounded to
// T (f16: 2^-11, bf16: 2^-8), or for TF32 operands rounded to 10 mantissa bits.
template <class T>
double tolerance() {
  if constexpr (std::is_same_v<T, __half>) return 1.0 / 1024;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return 1.0 / 128;
  else return 1.0 / 512;
}

}  // namespace ember::emu::test
