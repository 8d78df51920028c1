// CPU cross-entropy (src/cpu/loss.cpp). Callers (src/ops/loss.cpp) have checked the
// arguments (targets lie in [0, C) or equal ignore_index), converted f16/bf16 logits to f32
// and made every tensor contiguous; these only compute.
// Shapes: logits, grad_logits (N, C); target (N) i64; weight (C) or undefined; weight_sum a
// 0-d tensor holding sum(weight) (backward with smoothing and weights), else undefined; loss,
// grad_loss, target_weight, logsumexp (N). Float tensors are all f32 or all f64.
// Outputs are overwritten (=).
#pragma once
#include <cstdint>

#include "ember/core/tensor.h"

namespace ember::cpu {

// Per row: the max, then log-sum-exp and the target logit, then (only when smoothing)
// sum_c w[c] * (logsumexp - logit[c]).
void cross_entropy_forward(const Tensor& logits, const Tensor& target, const Tensor& weight,
                           int64_t ignore_index, double label_smoothing, const Tensor& loss,
                           const Tensor& target_weight, const Tensor& logsumexp, int64_t N, int64_t C);

// grad_logits[i, c] = grad_loss[i] * (S_i * softmax[i, c] - q_i[c]); 0 for ignored rows.
void cross_entropy_backward(const Tensor& grad_loss, const Tensor& logits, const Tensor& target,
                            const Tensor& weight, const Tensor& weight_sum, const Tensor& logsumexp,
                            int64_t ignore_index, double label_smoothing, const Tensor& grad_logits, int64_t N,
                            int64_t C);

}  // namespace ember::cpu
