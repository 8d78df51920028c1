// LayerNorm: parameters around the fused layer_norm primitive (src/ops/norm.cpp).
#include "ember/nn/norm.h"

#include <cmath>

#include "ember/core/error.h"
#include "ember/ops/ops.h"

namespace ember::nn {

LayerNorm::LayerNorm(Shape normalized_shape, double eps, bool elementwise_affine, bool with_bias)
    : normalized_shape_(std::move(normalized_shape)), eps_(eps) {
  bool positive = !normalized_shape_.empty();
  for (int64_t d : normalized_shape_) positive = positive && d > 0;
  EMBER_CHECK(positive, "LayerNorm", "normalized_shape must be non-empty with positive dims, got ",
              shape_str(normalized_shape_));
  checked_numel(normalized_shape_, "LayerNorm");
  EMBER_CHECK(std::isfinite(eps) && eps > 0, "LayerNorm", "eps must be finite and > 0, got ", eps, " (normalized_shape ",
              shape_str(normalized_shape_), ")");
  if (elementwise_affine) {
    weight = register_parameter("weight", ones(normalized_shape_));
    if (with_bias) bias = register_parameter("bias", zeros(normalized_shape_));
  }
}

Tensor LayerNorm::forward(const Tensor& x) { return layer_norm(x, normalized_shape_, weight, bias, eps_); }

}  // namespace ember::nn
