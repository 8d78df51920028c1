// The per-element update rules of the fused optimizers, written once for both backends
// (src/cpu/optim.cpp loops over them; kernels/optim.cu runs them per thread). A is the
// accumulation type (f32 for f32/f16/bf16 parameters, f64 for f64).
#pragma once
#include <cmath>

#include "core/host_device.h"

namespace ember::optim_math {

// SGD (PyTorch's rule): g += wd * p; buf = first ? g : mom * buf + (1 - dampening) * g;
// g = nesterov ? g + mom * buf : buf; p -= lr * g. buf is null without momentum.
template <class A>
EMBER_HD A sgd_update(A p, A g, A* buf, bool first, bool nesterov, A lr, A wd, A mom, A damp) {
  if (wd != A(0)) g += wd * p;
  if (buf) {
    const A b = first ? g : mom * *buf + damp * g;
    *buf = b;
    g = nesterov ? g + mom * b : b;
  }
  return p - lr * g;
}

// Adam (decoupled = AdamW): moments m, v updated in place; vmax (amsgrad) is null when off.
template <class A>
EMBER_HD A adam_update(A p, A g, A& m, A& v, A* vmax, bool decoupled, A lr, A wd, A b1, A b2,
                       A eps, A step_size, A bc2_sqrt) {
  if (wd != A(0)) {
    if (decoupled) p -= lr * wd * p;
    else g += wd * p;
  }
  m = b1 * m + (A(1) - b1) * g;
  v = b2 * v + (A(1) - b2) * g * g;
  A vd = v;
  if (vmax) {
    vd = *vmax < v ? v : *vmax;
    *vmax = vd;
  }
  const A denom = std::sqrt(vd) / bc2_sqrt + eps;
  return p - step_size * m / denom;
}

}  // namespace ember::optim_math
