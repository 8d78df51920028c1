// The first layers: Linear, ReLU, and a Sequential of Linear/ReLU-style layers.
#pragma once
#include <memory>
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
