// Stochastic gradient descent with momentum and weight decay (PyTorch's update rule):
//   g = grad + wd * p;  buf = momentum * buf + g (buf = g on the first step);  p -= lr * buf
#pragma once
#include <vector>

#include "ember/core/tensor.h"

namespace ember::optim {

struct SGDOptions {
  double lr = 0.01;
  double momentum = 0.0;
  double weight_decay = 0.0;
};

class SGD {
 public:
  SGD(std::vector<Tensor> params, SGDOptions opt);
  void step();       // parameters without a gradient are skipped
  void zero_grad();  // drops every parameter's .grad
  SGDOptions& options() { return opt_; }

 private:
  std::vector<Tensor> params_;
  std::vector<Tensor> momentum_;
  SGDOptions opt_;
};

}  // namespace ember::optim
