#include "ember/core/dtype.h"

#include <Eigen/Core>
#include <cstring>

namespace ember {

float to_float(Half h) { return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(h.bits)); }
float to_float(BFloat16 h) {
  return static_cast<float>(Eigen::numext::bit_cast<Eigen::bfloat16>(h.bits));
}
Half to_half(float f) { return Half{Eigen::numext::bit_cast<uint16_t>(Eigen::half(f))}; }
BFloat16 to_bfloat16(float f) {
  return BFloat16{Eigen::numext::bit_cast<uint16_t>(Eigen::bfloat16(f))};
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::boolean: return "bool";
  }
  return "?";
}

namespace {
// Rank in the promotion lattice: bool < i32 < i64 < (f16 | bf16) < f32 < f64.
int rank(DType t) {
  switch (t) {
    case DType::boolean: return 0;
    case DType::i32: return 1;
    case DType::i64: return 2;
    case DType::f16: return 3;
    case DType::bf16: return 3;
    case DType::f32: return 4;
    case DType::f64: return 5;
  }
  return 0;
}
}  // namespace

DType promote_types(DType a, DType b) {
  if (a == b) return a;
  if ((a == DType::f16 && b == DType::bf16) || (a == DType::bf16 && b == DType::f16)) return DType::f32;
  return rank(a) >= rank(b) ? a : b;
}

}  // namespace ember
