// The layers of layers.h: composed from ops, so autograd and every device come for free.
#include "ember/nn/layers.h"

#include <cmath>
#include <string>
#include <utility>

#include "ember/autograd/grad_mode.h"
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
  checked_numel({out_features, in_features}, "Linear");
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  weight = register_parameter("weight", uniform({out_features, in_features}, -bound, bound, {}, gen));
  if (with_bias) bias = register_parameter("bias", uniform({out_features}, -bound, bound, {}, gen));
}

Tensor Linear::forward(const Tensor& x) {
  EMBER_CHECK(x.defined(), "Linear", "input is an undefined tensor");
  EMBER_CHECK(x.dim() >= 1 && x.shape().back() == in_, "Linear", "input ", shape_str(x.shape()),
              " does not end in in_features = ", in_, " (weight ", shape_str(weight.shape()), ")");
  return linear(x, weight, bias);  // (..., in) -> (..., out), bias fused into the GEMM
}

Tensor ReLU::forward(const Tensor& x) { return relu(x); }
GELU::GELU(std::string approximate) : approximate_(std::move(approximate)) {
  EMBER_CHECK(approximate_ == "none" || approximate_ == "tanh", "GELU", "approximate must be \"none\" or \"tanh\", got \"",
              approximate_, "\"");
}
Tensor GELU::forward(const Tensor& x) { return gelu(x, approximate_); }
Tensor SiLU::forward(const Tensor& x) { return silu(x); }
Tensor Tanh::forward(const Tensor& x) { return tanh(x); }
Tensor Sigmoid::forward(const Tensor& x) { return sigmoid(x); }

Dropout::Dropout(double p, Generator* gen) : p_(p), gen_(gen) {
  EMBER_CHECK(p >= 0.0 && p <= 1.0, "Dropout", "probability ", p, " outside [0, 1]");
}

Tensor Dropout::forward(const Tensor& x) { return dropout(x, p_, is_training(), gen_); }

Tensor Flatten::forward(const Tensor& x) {
  EMBER_CHECK(x.defined(), "Flatten", "input is an undefined tensor");
  return flatten(x, start_, end_);
}

Embedding::Embedding(int64_t num_embeddings, int64_t embedding_dim, std::optional<int64_t> padding_idx,
                     Generator* gen)
    : num_(num_embeddings), dim_(embedding_dim) {
  EMBER_CHECK(num_embeddings > 0 && embedding_dim > 0, "Embedding",
              "num_embeddings and embedding_dim must be positive, got (", num_embeddings, ", ",
              embedding_dim, ")");
  if (padding_idx) {
    EMBER_CHECK(*padding_idx >= -num_embeddings && *padding_idx < num_embeddings, "Embedding",
                "padding_idx ", *padding_idx, " outside [", -num_embeddings, ", ", num_embeddings,
                ") for a table of shape (", num_embeddings, ", ", embedding_dim, ")");
    padding_idx_ = *padding_idx < 0 ? *padding_idx + num_embeddings : *padding_idx;
  }
  checked_numel({num_embeddings, embedding_dim}, "Embedding");
  Tensor w = randn({num_embeddings, embedding_dim}, {}, gen);
  if (padding_idx_) w.narrow(0, *padding_idx_, 1).zero_();
  weight = register_parameter("weight", w);
  if (padding_idx_) {
    // The hook sees the weight's incoming gradient (on whatever device the weight is by then)
    // and returns a copy with the padding row zeroed.
    const int64_t row = *padding_idx_;
    weight.register_hook([row](const Tensor& g) {
      NoGradGuard no_grad;
      Tensor r = g.clone();
      r.narrow(0, row, 1).zero_();
      return r;
    });
  }
}

Tensor Embedding::forward(const Tensor& indices) {
  EMBER_CHECK(indices.defined(), "Embedding", "input is an undefined tensor");
  return embedding(weight, indices);
}

Sequential& Sequential::add(std::shared_ptr<Layer> layer) {
  EMBER_CHECK(layer != nullptr, "Sequential", "cannot add a null layer (position ", layers_.size(), ")");
  register_module(std::to_string(layers_.size()), layer);
  layers_.push_back(std::move(layer));
  return *this;
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  // Through the registered children, so that a layer put in place by replace_module runs.
  for (size_t i = 0; i < layers_.size(); ++i) {
    auto* layer = dynamic_cast<Layer*>(named_children()[i].second.get());
    EMBER_CHECK(layer != nullptr, "Sequential", "child ", i, " is not a Layer (replaced by another module type)");
    h = layer->forward(h);
  }
  return h;
}

}  // namespace ember::nn
