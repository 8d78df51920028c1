// Element types. f16 and bf16 are storage types on the CPU: arithmetic happens in f32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <ostream>

namespace ember {

enum class DType : uint8_t { f32, f64, f16, bf16, i32, i64, boolean };

// 16-bit floats as raw bits; conversions live in the library (Eigen does the rounding).
struct Half {
  uint16_t bits = 0;
};
struct BFloat16 {
  uint16_t bits = 0;
};
float to_float(Half h);
float to_float(BFloat16 h);
Half to_half(float f);
BFloat16 to_bfloat16(float f);

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::boolean: return 1;
  }
  return 0;
}
const char* dtype_name(DType t);
constexpr bool is_floating(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::f16 || t == DType::bf16;
}
constexpr bool is_integral(DType t) { return t == DType::i32 || t == DType::i64; }
// The type arithmetic on the CPU happens in: f16/bf16 compute in f32.
constexpr DType compute_dtype(DType t) {
  return (t == DType::f16 || t == DType::bf16) ? DType::f32 : t;
}
// Result type of a binary op: floats beat integers, wider beats narrower,
// f16 with bf16 gives f32, bool with bool stays bool.
DType promote_types(DType a, DType b);

inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

// Maps C++ types to DType.
template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<Half> { static constexpr DType value = DType::f16; };
template <> struct dtype_of<BFloat16> { static constexpr DType value = DType::bf16; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::boolean; };

}  // namespace ember
