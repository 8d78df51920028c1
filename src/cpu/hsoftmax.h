// CPU hierarchical softmax (src/cpu/hsoftmax.cpp). Callers (src/ops/hsoftmax.cpp) have checked
// the arguments (class indices in [0, C), shapes, devices), converted f16/bf16 to f32 and made
// every tensor contiguous; these only compute.
// Shapes: h, grad_h (N, D); W, grad_W (S, D); b, grad_b (S) or undefined; targets (N) i64;
// loss, grad_loss (N); logits, grad_logits (N, S); out, grad_out (N, C); values (N, k) and
// classes (N, k) i64; table: the packed i32 tree (src/ops/hsoftmax_layout.h) with sizes dims.
// Float tensors are all f32 or all f64. Every output is overwritten (=), undefined outputs are
// skipped.
#pragma once
#include <cstdint>

#include "ember/core/tensor.h"
#include "ops/hsoftmax_layout.h"

namespace ember::cpu {

// loss[i] = -log P(targets[i] | h[i]).
void hsoftmax_nll_forward(const Tensor& h, const Tensor& W, const Tensor& b, const Tensor& targets,
                          const Tensor& table, const hs::Dims& dims, const Tensor& loss, int64_t N, int64_t D);

// The gradients of sum_i grad_loss[i] * loss[i] (include/ember/ops/hsoftmax.h).
void hsoftmax_nll_backward(const Tensor& grad_loss, const Tensor& h, const Tensor& W, const Tensor& b,
                           const Tensor& targets, const Tensor& table, const hs::Dims& dims, const Tensor& grad_h,
                           const Tensor& grad_W, const Tensor& grad_b, int64_t N, int64_t D);

// out[i, c] = sum over c's path of log_softmax(node logits)[child taken].
void hsoftmax_tree_forward(const Tensor& logits, const Tensor& table, const hs::Dims& dims, const Tensor& out,
                           int64_t N);
void hsoftmax_tree_backward(const Tensor& grad_out, const Tensor& logits, const Tensor& table, const hs::Dims& dims,
                            const Tensor& grad_logits, int64_t N);

// Beam search for the k best classes per example (include/ember/ops/hsoftmax.h).
void hsoftmax_topk(const Tensor& h, const Tensor& W, const Tensor& b, const Tensor& table, const hs::Dims& dims,
                   int64_t k, int64_t beam, const Tensor& values, const Tensor& classes, int64_t N, int64_t D);

}  // namespace ember::cpu
