// Loss primitives: the fused cross-entropy (log-softmax + NLL in one pass over each row) with
// its backward primitive, and binary cross-entropy with logits per element. The user-facing
// losses with reductions and options are in ember/nn/loss.h; they call these.
//
// Cross-entropy of row i with target t = target[i], class weights w (1 when undefined),
// smoothing eps and C classes, logp = log_softmax(logits[i]):
//
//   loss[i] = -(1 - eps) * w[t] * logp[t] - (eps / C) * sum_c w[c] * logp[c]
//
// (PyTorch's label smoothing), and 0 for rows whose target equals ignore_index. Its gradient
// is grad_loss[i] * (S * softmax - q) with q[c] = (1 - eps) * w[t] * [c == t] + (eps / C) * w[c]
// (the weighted, smoothed target distribution) and S = sum_c q[c]; without weights and
// smoothing that is softmax - one_hot(t).
#pragma once
#include <cstdint>

#include "ember/core/tensor.h"

namespace ember {

struct CrossEntropyRows {
  Tensor loss;            // (N), logits' dtype: per-row loss, 0 for ignored rows; differentiable
  Tensor target_weight;   // (N), f32 (f64 for f64 logits): w[target[i]], 0 for ignored rows
  Tensor logsumexp;       // (N), f32 (f64 for f64 logits): log sum_c exp(logits[i, c]), 0 for ignored rows
};

// logits (N, C) float (C > 0, any strides); target (N) i64 or i32 holding class indices in
// [0, C) or ignore_index; weight (C) float or undefined; 0 <= label_smoothing <= 1. All on one
// device. Errors name op "cross_entropy". The mean reduction of PyTorch is
// sum(loss) / sum(target_weight). The target range check reads the targets' min and max (one
// small device-to-host copy on CUDA). Class weights get no gradient.
CrossEntropyRows cross_entropy_rows(const Tensor& logits, const Tensor& target, const Tensor& weight = Tensor(),
                                    int64_t ignore_index = -100, double label_smoothing = 0.0);

// The backward primitive (no autograd): grad_logits (N, C), a fresh tensor in logits' dtype
// (overwritten, never accumulated), = grad_loss[i] * (S * softmax - q) as above, 0 for ignored
// rows. grad_loss (N) in logits' dtype; logsumexp from cross_entropy_rows for these logits.
Tensor cross_entropy_backward(const Tensor& grad_loss, const Tensor& logits, const Tensor& target,
                              const Tensor& weight, const Tensor& logsumexp, int64_t ignore_index = -100,
                              double label_smoothing = 0.0);

// Binary cross-entropy with logits, per element, computed stably (no log of a rounded sigmoid):
//   l = (1 - y) * x + (1 + (pos_weight - 1) * y) * (log1p(exp(-|x|)) + max(-x, 0)),  times weight
// which is max(x, 0) - x * y + log1p(exp(-|x|)) when pos_weight is undefined. logits and
// targets: float, the same shape; weight and pos_weight: float, undefined or broadcastable to
// that shape (pos_weight is usually (C) for the last dim). Result: logits' shape and dtype.
// Differentiable in all four inputs; its backward is written by hand (sigmoid(x) * (1 + (p - 1)
// y) - p * y for the logits), so it is exact at x = 0 where max and |x| have kinks.
// Errors name op "binary_cross_entropy_with_logits".
Tensor bce_with_logits_elements(const Tensor& logits, const Tensor& targets, const Tensor& weight = Tensor(),
                                const Tensor& pos_weight = Tensor());

}  // namespace ember
