// CUDA layer norm (kernels/norm.cu): the contracts of src/cpu/norm.h on CUDA tensors, except
// that f16 and bf16 arrive as they are (computed in f32 inside). x, weight, bias, out,
// grad_out, grad_x, grad_weight, grad_bias share x's dtype; mean and rstd are f32 (f64 for f64
// input). Everything is contiguous. Kernels launch on the current stream and check each launch.
#pragma once
#include <cstdint>

#include "ember/core/tensor.h"

namespace ember::cuda {

void layer_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, const Tensor& out,
                        const Tensor& mean, const Tensor& rstd, int64_t M, int64_t N);

void layer_norm_backward(const Tensor& grad_out, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                         const Tensor& weight, const Tensor& grad_x, const Tensor& grad_weight,
                         const Tensor& grad_bias, int64_t M, int64_t N);

}  // namespace ember::cuda
