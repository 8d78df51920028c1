// 1-D convolution (cross-correlation, as PyTorch's conv1d) and its two backward primitives.
//
//   y[n, co, j] = bias[co] + sum_{c < C_in/groups, k < K} w[co, c, k] * x[n, g*C_in/groups + c, j*stride - padding + k*dilation]
//
// with g = co / (C_out/groups) and x read as zero outside [0, L). Shapes: x (N, C_in, L),
// w (C_out, C_in/groups, K), bias (C_out) or an undefined Tensor, y (N, C_out, L_out) with
// L_out = conv1d_output_length(L, K, stride, padding, dilation).
//
// conv1d is a fused primitive (docs/adding-an-op.md): its backward calls the two backward primitives
// below, which are ordinary ops (checked, dispatched, differentiable), so the op harness
// tests them like any other op. conv1d_reference is the same function composed from basic
// ops (pad, unfold, matmul); the tests hold the primitive against it. See docs/conv.md.
#pragma once
#include <cstdint>

#include "ember/core/tensor.h"

namespace ember {

// floor((length + 2*padding - dilation*(kernel_size-1) - 1) / stride) + 1; throws ember::Error
// (op "conv1d") when the dilated kernel is longer than the padded input or an argument is
// out of range (stride, dilation, kernel_size >= 1, padding >= 0).
int64_t conv1d_output_length(int64_t length, int64_t kernel_size, int64_t stride, int64_t padding,
                             int64_t dilation);

// x (N, C_in, L), w (C_out, C_in/groups, K), bias (C_out) or undefined -> (N, C_out, L_out).
// All float tensors of one dtype on one device; any strides. f16/bf16 compute in f32 on the
// CPU and load/store directly (f32 accumulation) on CUDA.
Tensor conv1d(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor(), int64_t stride = 1,
              int64_t padding = 0, int64_t dilation = 1, int64_t groups = 1);

// The gradient of conv1d with respect to x, written to a fresh tensor (N, C_in, input_length):
// grad_out (N, C_out, L_out), w (C_out, C_in/groups, K). input_length is needed because
// several lengths give the same L_out when stride > 1; it must give grad_out's L_out.
Tensor conv1d_backward_input(const Tensor& grad_out, const Tensor& w, int64_t input_length, int64_t stride = 1,
                             int64_t padding = 0, int64_t dilation = 1, int64_t groups = 1);

// The gradient of conv1d with respect to w, written to a fresh tensor
// (C_out, C_in/groups, kernel_size): grad_out (N, C_out, L_out), x (N, C_in, L).
// (The bias gradient is sum(grad_out, {0, 2}).)
Tensor conv1d_backward_weight(const Tensor& grad_out, const Tensor& x, int64_t kernel_size, int64_t stride = 1,
                              int64_t padding = 0, int64_t dilation = 1, int64_t groups = 1);

// conv1d composed from pad, unfold (a strided window view), reshape, matmul and add: slow,
// obviously right, differentiable through those ops' backwards. Same arguments and checks.
Tensor conv1d_reference(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor(), int64_t stride = 1,
                        int64_t padding = 0, int64_t dilation = 1, int64_t groups = 1);

// Which CPU algorithm conv1d and its backward primitives use (CUDA has one set of kernels):
//   automatic  direct when a group's weights (C_out/groups * C_in/groups * K) number fewer
//              than 256 (depthwise and tiny layers), im2col + GEMM otherwise
//   direct     one output row at a time, accumulating every (channel, tap) into register
//              tiles of positions; no scratch memory
//   im2col     unfold each sample's windows into a (C_in/groups*K, L_out) matrix, one GEMM
// Process-wide; the initial value comes from EMBER_CONV1D_CPU=auto|direct|im2col. Both paths
// give the same results up to rounding; tests force each one.
enum class Conv1dCpuPath { automatic, direct, im2col };
void set_conv1d_cpu_path(Conv1dCpuPath path);
Conv1dCpuPath conv1d_cpu_path();

}  // namespace ember
