// Helpers shared by the recurrent-layer tests (tests/test_rnn.cpp, tests/test_rnn_modules.cpp):
// seeded random tensors and fresh leaves.
#pragma once
#include <cstdint>

#include "ember/ember.h"

namespace ember_test {

using ember::DType;
using ember::Shape;
using ember::Tensor;

inline Tensor randn_t(const Shape& s, uint64_t seed, DType dt = DType::f64, double scale = 1.0) {
  ember::Generator g(seed);
  return (ember::randn(s, DType::f64, &g) * scale).to(dt);
}
inline Tensor leaf(const Tensor& t) { return t.defined() ? t.detach().clone().requires_grad_() : t; }
inline Tensor grad_of(const Tensor& t) { return t.defined() ? t.grad() : t; }

}  // namespace ember_test
