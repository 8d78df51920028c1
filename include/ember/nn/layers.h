// Layers with one input and one output: Linear, Embedding, Dropout, Flatten, the activations
// (ReLU, GELU, SiLU, Tanh, Sigmoid) and Sequential. Pooling is in ember/nn/pool.h, Conv1d in
// ember/nn/conv.h, initialisers in ember/nn/init.h.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ember/core/generator.h"
#include "ember/nn/module.h"

namespace ember::nn {

// A module with one input and one output.
class Layer : public Module {
 public:
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }
};

// y = x W^T + b, W (out, in), b (out). Kaiming-uniform init (bound 1/sqrt(in)) like PyTorch.
class Linear : public Layer {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;

 private:
  int64_t in_, out_;
};

class ReLU : public Layer {
 public:
  Tensor forward(const Tensor& x) override;
};

// GELU: the exact (erf) form by default, GPT-2's tanh approximation with approximate = "tanh"
// (ember::gelu).
class GELU : public Layer {
 public:
  explicit GELU(std::string approximate = "none");
  Tensor forward(const Tensor& x) override;
  const std::string& approximate() const { return approximate_; }

 private:
  std::string approximate_;
};

// x * sigmoid(x).
class SiLU : public Layer {
 public:
  Tensor forward(const Tensor& x) override;
};

class Tanh : public Layer {
 public:
  Tensor forward(const Tensor& x) override;
};

class Sigmoid : public Layer {
 public:
  Tensor forward(const Tensor& x) override;
};

// Zeroes each element with probability p and scales the rest by 1 / (1 - p) in training mode;
// the identity in eval mode. Masks are drawn from gen (the default generator when null).
class Dropout : public Layer {
 public:
  explicit Dropout(double p = 0.5, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;
  double p() const { return p_; }

 private:
  double p_;
  Generator* gen_;
};

// Flattens dims start..end into one (the default keeps the batch dim: (N, C, L) -> (N, C * L)).
class Flatten : public Layer {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1) : start_(start_dim), end_(end_dim) {}
  Tensor forward(const Tensor& x) override;

 private:
  int64_t start_, end_;
};

// A lookup table: i64/i32 indices of any shape -> indices.shape + (dim). weight (num, dim),
// initialised N(0, 1) like PyTorch. With padding_idx (negative counts from the end) that row
// starts at zero and a gradient hook on the weight zeroes its gradient, so it never trains
// (weight decay leaves a zero row at zero too).
class Embedding : public Layer {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim, std::optional<int64_t> padding_idx = std::nullopt,
            Generator* gen = nullptr);
  Tensor forward(const Tensor& indices) override;
  int64_t num_embeddings() const { return num_; }
  int64_t embedding_dim() const { return dim_; }
  std::optional<int64_t> padding_idx() const { return padding_idx_; }

  Tensor weight;  // (num_embeddings, embedding_dim)

 private:
  int64_t num_, dim_;
  std::optional<int64_t> padding_idx_;  // wrapped to [0, num)
};

class Sequential : public Layer {
 public:
  Sequential() = default;
  Sequential& add(std::shared_ptr<Layer> layer);  // registered as "0", "1", ...
  Tensor forward(const Tensor& x) override;
  size_t size() const { return layers_.size(); }

 private:
  std::vector<std::shared_ptr<Layer>> layers_;
};

}  // namespace ember::nn
