// Numerical gradient checking by central differences (use f64 inputs).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "ember/core/tensor.h"

namespace ember {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-5;
  double rtol = 1e-3;
};

struct GradcheckResult {
  bool ok = true;
  std::string message;  // where and by how much analytical and numerical gradients differ
};

// fn maps the inputs to one tensor. Analytical gradients of sum(fn(x) * w) for a fixed random
// w are compared, element by element, with central differences for every input that
// requires grad. Inputs may be non-contiguous views; they are perturbed in place.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, GradcheckOptions opt = {});

}  // namespace ember
