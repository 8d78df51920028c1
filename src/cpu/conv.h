// CPU conv1d: forward and both backward passes (src/cpu/conv.cpp). Callers (src/ops/conv.cpp)
// have checked the arguments, converted f16/bf16 to f32 and made every tensor contiguous;
// these only compute. Shapes: x (N, C_in, L), w (C_out, C_in/groups, K), bias (C_out) or
// undefined, grad_out / out (N, C_out, L_out). All f32 or all f64.
//
// Every output is overwritten (=), never accumulated into: the autograd engine does the
// accumulation into parameter gradients. The parameter names say so.
#pragma once
#include <cstdint>

#include "ember/core/tensor.h"

namespace ember::cpu {

enum class Conv1dAlgo {
  automatic,  // by size: direct when one group's weight slab (C_out/groups x C_in/groups x K)
              // has fewer than 256 entries — depthwise and tiny layers, where each GEMM would be
              // too small to pay for packing and the unfold — im2col otherwise
  direct,     // loops over (channel, tap); a vectorised axpy over positions
  im2col,     // per (sample, group): unfold windows into a (C_in/groups*K, L_out) buffer, one GEMM
};

// The algorithm the three primitives below use (process-wide; starts from the environment
// variable EMBER_CONV1D_CPU = auto|direct|im2col). ember::set_conv1d_cpu_path sets it.
void set_conv1d_algo(Conv1dAlgo algo);
Conv1dAlgo conv1d_algo();

// out_overwrite (N, C_out, L_out) = conv1d(x, w) + bias.
void conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out_overwrite,
                    int64_t stride, int64_t padding, int64_t dilation, int64_t groups);
// grad_input_overwrite (N, C_in, L) = d conv1d / d x applied to grad_out.
void conv1d_backward_input(const Tensor& grad_out, const Tensor& w, const Tensor& grad_input_overwrite,
                           int64_t stride, int64_t padding, int64_t dilation, int64_t groups);
// grad_weight_overwrite (C_out, C_in/groups, K) = d conv1d / d w applied to grad_out.
void conv1d_backward_weight(const Tensor& grad_out, const Tensor& x, const Tensor& grad_weight_overwrite,
                            int64_t stride, int64_t padding, int64_t dilation, int64_t groups);

}  // namespace ember::cpu
