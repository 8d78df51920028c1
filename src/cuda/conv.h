// CUDA conv1d: forward and both backward passes (kernels/conv.cu), the same contracts as
// src/cpu/conv.h: callers have checked the arguments and made every tensor contiguous; all
// tensors share one float dtype (f32 f64 f16 bf16 — f16/bf16 load and store as they are and
// accumulate in f32). Shapes: x (N, C_in, L), w (C_out, C_in/groups, K), bias (C_out) or
// undefined, grad_out / out (N, C_out, L_out). Launches go on the current stream.
//
// Every output is overwritten (=), never accumulated into; the parameter names say so.
#pragma once
#include <cstdint>

#include "ember/core/tensor.h"

namespace ember::cuda {

void conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out_overwrite,
                    int64_t stride, int64_t padding, int64_t dilation, int64_t groups);
void conv1d_backward_input(const Tensor& grad_out, const Tensor& w, const Tensor& grad_input_overwrite,
                           int64_t stride, int64_t padding, int64_t dilation, int64_t groups);
void conv1d_backward_weight(const Tensor& grad_out, const Tensor& x, const Tensor& grad_weight_overwrite,
                            int64_t stride, int64_t padding, int64_t dilation, int64_t groups);

}  // namespace ember::cuda
