// Layer normalisation as a fused primitive, its backward primitive, and a reference composed
// from basic ops.
//
//   mean[r] = sum_j x[r, j] / N            rstd[r] = 1 / sqrt(sum_j (x[r, j] - mean[r])^2 / N + eps)
//   y[r, j] = (x[r, j] - mean[r]) * rstd[r] * weight[j] + bias[j]
//
// where the rows r run over x's leading dims and j over the trailing `normalized_shape`
// (N = its element count). weight and bias are optional (an undefined Tensor means 1 and 0).
// The variance is the biased one (correction 0), as in PyTorch.
//
// layer_norm records its backward, which calls layer_norm_backward: one kernel pass over the
// rows for the input gradient and a column reduction for the weight and bias gradients.
// layer_norm_reference is the same function written with mean, var, rsqrt, mul and add; the
// tests hold the fused kernels against it (docs/norm-and-losses.md).
#pragma once
#include <array>

#include "ember/core/tensor.h"

namespace ember {

// x: any float dtype, any strides, x.shape() ending in normalized_shape (non-empty, every
// dim > 0). weight, bias: shape normalized_shape, x's dtype and device, or undefined.
// eps finite and > 0. Returns a fresh tensor of x's shape and dtype. f16/bf16 compute in f32.
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5);

// The forward primitive without autograd: the output plus the per-row statistics the backward
// needs. mean and rstd have x's leading shape (x.shape() without normalized_shape) and dtype
// f32 (f64 for f64 input).
struct LayerNormForward {
  Tensor output, mean, rstd;
};
LayerNormForward layer_norm_forward(const Tensor& x, const Shape& normalized_shape,
                                    const Tensor& weight = Tensor(), const Tensor& bias = Tensor(),
                                    double eps = 1e-5);

// The backward primitive (no autograd): with xhat = (x - mean) * rstd and g = grad_output * weight,
//   grad_input  = rstd * (g - mean_j(g) - xhat * mean_j(g * xhat))      (x's shape and dtype)
//   grad_weight = sum over rows of grad_output * xhat                    (normalized_shape)
//   grad_bias   = sum over rows of grad_output                           (normalized_shape)
// Each is written to a fresh tensor (overwrite, never accumulate), only where needs[i] is true
// (input, weight, bias); the others are returned undefined. mean and rstd are what
// layer_norm_forward returned for x. weight may be undefined (taken as 1).
struct LayerNormGrads {
  Tensor grad_input, grad_weight, grad_bias;
};
LayerNormGrads layer_norm_backward(const Tensor& grad_output, const Tensor& x, const Tensor& mean,
                                   const Tensor& rstd, const Tensor& weight, const Shape& normalized_shape,
                                   std::array<bool, 3> needs = {true, true, true});

// layer_norm composed from basic ops (mean, var with correction 0, rsqrt, sub, mul, add):
// slow and obviously right, differentiable through those ops. Same arguments and checks.
Tensor layer_norm_reference(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = Tensor(),
                            const Tensor& bias = Tensor(), double eps = 1e-5);

}  // namespace ember
