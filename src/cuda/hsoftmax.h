// CUDA hierarchical softmax (kernels/hsoftmax.cu): the contracts of src/cpu/hsoftmax.h on CUDA
// tensors, except that f16 and bf16 inputs arrive as they are (computed in f32 inside) and
// grad_h, grad_W and grad_b are in the accumulation dtype (f32, or f64 for f64 input): the
// weight gradients are summed with atomicAdd, which needs a float or double target. Everything
// is contiguous; kernels launch on the current stream and check each launch.
#pragma once
#include <cstdint>

#include "ember/core/tensor.h"
#include "ops/hsoftmax_layout.h"

namespace ember::cuda {

void hsoftmax_nll_forward(const Tensor& h, const Tensor& W, const Tensor& b, const Tensor& targets,
                          const Tensor& table, const hs::Dims& dims, const Tensor& loss, int64_t N, int64_t D);

void hsoftmax_nll_backward(const Tensor& grad_loss, const Tensor& h, const Tensor& W, const Tensor& b,
                           const Tensor& targets, const Tensor& table, const hs::Dims& dims, const Tensor& grad_h,
                           const Tensor& grad_W, const Tensor& grad_b, int64_t N, int64_t D);

void hsoftmax_tree_forward(const Tensor& logits, const Tensor& table, const hs::Dims& dims, const Tensor& out,
                           int64_t N);
void hsoftmax_tree_backward(const Tensor& grad_out, const Tensor& logits, const Tensor& table, const hs::Dims& dims,
                            const Tensor& grad_logits, int64_t N);

void hsoftmax_topk(const Tensor& h, const Tensor& W, const Tensor& b, const Tensor& table, const hs::Dims& dims,
                   int64_t k, int64_t beam, const Tensor& values, const Tensor& classes, int64_t N, int64_t D);

}  // namespace ember::cuda
