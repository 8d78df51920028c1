// Normalisation layers.
#pragma once
#include "ember/nn/layers.h"
#include "ember/ops/norm.h"

namespace ember::nn {

// y = layer_norm(x, normalized_shape, weight, bias, eps) over the trailing normalized_shape
// dims of x (ember/ops/norm.h), like torch.nn.LayerNorm. With elementwise_affine, `weight`
// (ones) and `bias` (zeros, unless bias = false) have shape normalized_shape and are registered
// as parameters "weight" and "bias"; without it both stay undefined. Parameters are f32; cast
// or move the module (Module::to) to match the input's dtype and device.
class LayerNorm : public Layer {
 public:
  explicit LayerNorm(Shape normalized_shape, double eps = 1e-5, bool elementwise_affine = true, bool bias = true);
  // LayerNorm(64) is LayerNorm({64}). (One argument only: with more, LayerNorm({3, 4}) would
  // also read as LayerNorm(3, eps = 4).)
  explicit LayerNorm(int64_t normalized_size) : LayerNorm(Shape{normalized_size}) {}
  Tensor forward(const Tensor& x) override;

  const Shape& normalized_shape() const { return normalized_shape_; }
  double eps() const { return eps_; }

  Tensor weight, bias;

 private:
  Shape normalized_shape_;
  double eps_;
};

}  // namespace ember::nn
