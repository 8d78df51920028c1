// CPU layer norm (src/cpu/norm.cpp). Callers (src/ops/norm.cpp) have checked the arguments,
// converted f16/bf16 to f32 and made every tensor contiguous; these only compute.
// Shapes: x, out, grad_out, grad_x (M, N); weight, bias, grad_weight, grad_bias (N) or
// undefined; mean, rstd (M). All f32 or all f64. Row statistics and the column sums of the
// parameter gradients accumulate in double.
//
// Every output is overwritten (=), never accumulated into.
#pragma once
#include <cstdint>

#include "ember/core/tensor.h"

namespace ember::cpu {

// out = (x - mean) * rstd * weight + bias, row by row; also writes mean and rstd.
void layer_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, const Tensor& out,
                        const Tensor& mean, const Tensor& rstd, int64_t M, int64_t N);

// grad_x (when defined) = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = grad_out * weight;
// grad_weight (when defined) = column sums of grad_out * xhat; grad_bias = column sums of grad_out.
void layer_norm_backward(const Tensor& grad_out, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                         const Tensor& weight, const Tensor& grad_x, const Tensor& grad_weight,
                         const Tensor& grad_bias, int64_t M, int64_t N);

}  // namespace ember::cpu
