// Linear, ReLU, Sequential: composed from ops, so autograd comes for free.
#include "ember/nn/layers.h"

#include <cmath>
#include <string>

#include "ember/core/error.h"
#include "ember/ops/ops.h"

namespace ember::nn {

Linear::Linear(int64_t in_features, int64_t out_features, bool with_bias, Generator* gen)
    : in_(in_features), out_(out_features) {
  EMBER_CHECK(in_features > 0 && out_features > 0, "Linear",
              "in_features and out_features must be positive, got (", in_features, ", ",
              out_features, ")");
  // PyTorch's default: kaiming_uniform(a=sqrt(5)) on W and U(-1/sqrt(in), 1/sqrt(in)) on b
  // both come down to the bound 1/sqrt(in).
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  weight = register_parameter("weight", uniform({out_features, in_features}, -bound, bound, {}, gen));
  if (with_bias) bias = register_parameter("bias", uniform({out_features}, -bound, bound, {}, gen));
}

Tensor Linear::forward(const Tensor& x) {
  EMBER_CHECK(x.defined(), "Linear", "input is an undefined tensor");
  EMBER_CHECK(x.dim() >= 1 && x.shape().back() == in_, "Linear", "input ", shape_str(x.shape()),
              " does not end in in_features = ", in_, " (weight ", shape_str(weight.shape()), ")");
  if (x.dim() == 2) {
    Tensor y = matmul(x, weight.t());  // (N, out)
    return bias.defined() ? y + bias : y;
  }
  // (..., in) -> (M, in) -> (M, out) -> (..., out)
  Shape out_shape = x.shape();
  out_shape.back() = out_;
  Tensor y = matmul(x.reshape({-1, in_}), weight.t());
  if (bias.defined()) y = y + bias;
  return y.reshape(out_shape);
}

Tensor ReLU::forward(const Tensor& x) { return relu(x); }

Sequential& Sequential::add(std::shared_ptr<Layer> layer) {
  EMBER_CHECK(layer != nullptr, "Sequential", "cannot add a null layer (position ", layers_.size(), ")");
  register_module(std::to_string(layers_.size()), layer);
  layers_.push_back(std::move(layer));
  return *this;
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& layer : layers_) h = layer->forward(h);
  return h;
}

}  // namespace ember::nn
