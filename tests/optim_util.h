// Helpers shared by the optimizer tests (tests/test_optim.cpp, tests/test_optim_fused.cpp): a loss with a
// known gradient, the textbook Adam step in double, and fresh leaf copies of parameters.
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "ember/ember.h"

namespace ember_test {

using ember::Tensor;

// loss = sum(p^3 - 0.5 p): gradient 3 p^2 - 0.5 (both signs).
inline Tensor cubic_loss(const Tensor& p) { return sum(p * p * p - p * 0.5); }
inline double cubic_grad(double p) { return 3 * p * p - 0.5; }

// The textbook Adam step in double for one element (bias-corrected moments).
struct AdamRef {
  double m = 0, v = 0, vmax = 0;
  int t = 0;
  void step(double& p, double g, double lr, double b1, double b2, double eps, double wd, bool decoupled, bool amsgrad) {
    ++t;
    if (decoupled) p -= lr * wd * p;
    else g += wd * p;
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    vmax = std::max(vmax, v);
    const double mhat = m / (1 - std::pow(b1, t));
    const double vhat = (amsgrad ? vmax : v) / (1 - std::pow(b2, t));
    p -= lr * mhat / (std::sqrt(vhat) + eps);
  }
};

inline std::vector<Tensor> clone_params(const std::vector<Tensor>& ps) {
  std::vector<Tensor> out;
  for (const Tensor& p : ps) out.push_back(clone(p.detach()).requires_grad_());
  return out;
}

}  // namespace ember_test
