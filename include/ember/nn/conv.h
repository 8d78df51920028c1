// nn::Conv1d: a 1-D convolution layer over (N, C_in, L) inputs (see ember/ops/conv.h and
// docs/conv.md).
#pragma once
#include <cstdint>

#include "ember/core/generator.h"
#include "ember/nn/layers.h"

namespace ember::nn {

struct Conv1dOptions {
  int64_t stride = 1;
  int64_t padding = 0;
  int64_t dilation = 1;
  int64_t groups = 1;
  bool bias = true;
};

// y = conv1d(x, weight, bias, stride, padding, dilation, groups): x (N, C_in, L) ->
// (N, C_out, L_out). weight (C_out, C_in/groups, K), bias (C_out).
// Initialised like PyTorch: weight and bias uniform in [-b, b] with b = 1/sqrt(C_in/groups * K)
// (kaiming_uniform(a=sqrt(5)) on the weight comes down to that bound), drawn from gen (the
// default generator when null).
class Conv1d : public Layer {
 public:
  Conv1d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, Conv1dOptions options = {},
         Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;
  const Conv1dOptions& options() const { return opt_; }
  int64_t in_channels() const { return in_; }
  int64_t out_channels() const { return out_; }
  int64_t kernel_size() const { return k_; }

  Tensor weight, bias;  // bias undefined when options.bias is false

 private:
  int64_t in_, out_, k_;
  Conv1dOptions opt_;
};

}  // namespace ember::nn
