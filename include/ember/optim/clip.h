// Gradient clipping over many parameters at once (PyTorch's torch.nn.utils.clip_grad_*).
// Parameters without a gradient are skipped; gradients are changed in place (no autograd).
#pragma once
#include <limits>
#include <vector>

#include "ember/core/tensor.h"

namespace ember::optim {

inline constexpr double kInfNorm = std::numeric_limits<double>::infinity();

// total = (sum over every element g of every gradient of |g|^p)^(1/p), or max |g| when
// norm_type is kInfNorm; then every gradient is multiplied by min(1, max_norm / (total + 1e-6)).
// Returns total as a 0-d tensor on the gradients' device (f64 when a gradient is f64, else f32;
// a CPU 0 when no parameter has a gradient). On CUDA nothing waits for the GPU: the norm is one
// multi-tensor reduction, the scaling one multi-tensor launch reading the factor from device
// memory; call .item<double>() when the value is needed on the host. All gradients must be on
// one device. norm_type > 0.
//
// Non-finite norms (PyTorch's error_if_nonfinite): with false (the default) a NaN total norm
// makes every gradient NaN and an infinite one multiplies every gradient by 0 (its infinite
// elements become NaN); the next optimizer step spreads the NaN into the parameters.
// With true, a NaN or infinite total norm throws an ember::Error("clip_grad_norm_", ...) that
// prints the norm, and no gradient is changed. The check reads the norm on the host (a
// synchronisation on CUDA) and, when it is finite, computes it a second time while clipping,
// so the result is bit for bit the one error_if_nonfinite = false gives.
Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0,
                       bool error_if_nonfinite = false);

// Clamps every gradient element into [-clip_value, clip_value]; clip_value >= 0.
void clip_grad_value_(const std::vector<Tensor>& params, double clip_value);

}  // namespace ember::optim
