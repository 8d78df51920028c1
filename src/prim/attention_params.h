// The geometry and options of one attention call as both backends see it (src/cpu/attention.h,
// src/cuda/attention.h). Built by src/ops/attention.cpp after every argument is checked.
#pragma once
#include <cstdint>

#include "ember/core/tensor.h"

namespace ember {

struct AttentionParams {
  int64_t B = 0, H = 0, Tq = 0, Tk = 0, D = 0, Dv = 0;
  double scale = 1.0;
  bool causal = false;  // key j allowed for query i iff j <= i + (Tk - Tq)
  // Undefined, or a (B, H, Tq, Tk) view (broadcast dims have stride 0) of a bool mask (true =
  // may attend, mask_is_bool) or of an additive mask in the compute dtype.
  Tensor mask;
  bool mask_is_bool = false;
  Tensor key_padding;  // undefined, or bool (B, Tk) contiguous, true = ignore the key
  // Dropout on P: keep element e = ((b H + h) Tq + i) Tk + j iff the Philox uniform of
  // (seed, counter offset + e / 4, lane e % 4) is < 1 - dropout (as bernoulli(1 - p) draws it).
  double dropout = 0.0;
  uint64_t seed = 0, offset = 0;
};

}  // namespace ember
