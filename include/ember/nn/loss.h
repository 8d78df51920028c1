// Losses, with PyTorch's semantics. Each takes a Reduction: none (per-sample or per-element
// losses), mean or sum (a scalar in the input's dtype). Bad input throws ember::Error naming
// the loss, the shapes and the dtypes. See docs/norm-and-losses.md.
//
// cross_entropy is one fused primitive (ember/ops/loss_ops.h: log-softmax and NLL in one pass
// per row on the CPU and CUDA, its backward a kernel of its own). nll_loss, mse_loss and
// binary_cross_entropy_with_logits are composed from ops (the last with a hand-written backward).
// The *_reference functions compute the same losses the obvious way from basic ops; the tests
// hold the losses against them.
#pragma once
#include <cstdint>

#include "ember/core/tensor.h"

namespace ember::nn {

enum class Reduction { none, mean, sum };

// Fields in this order, so designated initialisers work:
//   nn::cross_entropy(logits, y, {.weight = w, .label_smoothing = 0.1})
struct CrossEntropyOptions {
  Reduction reduction = Reduction::mean;
  Tensor weight{};                // (C) class weights, float; undefined = all 1 (no gradient flows to it)
  int64_t ignore_index = -100;    // rows with this target add nothing, not even to the mean's denominator
  double label_smoothing = 0.0;   // in [0, 1]: the target becomes (1 - eps) * one_hot + eps / C
};

// logits (N, C) float, target (N) i64 or i32 class indices in [0, C) (or ignore_index).
//   loss[i] = -(1 - eps) * w[t_i] * log_softmax(logits)[i, t_i] - (eps / C) * sum_c w[c] * log_softmax(logits)[i, c]
// none: (N), 0 for ignored rows; sum: sum_i loss[i]; mean: sum_i loss[i] / sum_{i not ignored} w[t_i]
// (the count of rows that are not ignored when there are no class weights; NaN when every row is
// ignored, as in PyTorch).
Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& options);
Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction r = Reduction::mean);

struct NLLLossOptions {
  Reduction reduction = Reduction::mean;
  Tensor weight{};                // (C) class weights, float; undefined = all 1
  int64_t ignore_index = -100;
};
// log_probs (N, C) float (e.g. log_softmax output), target (N) as for cross_entropy:
// loss[i] = -w[t_i] * log_probs[i, t_i], 0 for ignored rows; mean divides by sum of w[t_i] over
// the rows that are not ignored.
Tensor nll_loss(const Tensor& log_probs, const Tensor& target, const NLLLossOptions& options = {});
Tensor nll_loss(const Tensor& log_probs, const Tensor& target, Reduction r);

struct BCEWithLogitsOptions {
  Reduction reduction = Reduction::mean;
  Tensor weight{};      // broadcastable to the logits' shape: rescales each element's loss
  Tensor pos_weight{};  // broadcastable to the logits' shape (usually (C)): weight of the positive term
};
// logits and targets (probabilities in [0, 1]) float, the same shape; computed stably as
// max(x, 0) - x * y + log1p(exp(-|x|)) (see ember/ops/loss_ops.h for pos_weight). mean divides
// by the element count.
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& targets,
                                        const BCEWithLogitsOptions& options = {});
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& targets, Reduction r);

// (input - target)^2 per element; input and target float, the same shape.
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction r = Reduction::mean);

// --- references (for tests): the same values composed the obvious way ----------------------------
// cross_entropy as PyTorch writes it: log_softmax, then nll_loss, plus the smoothing term.
Tensor cross_entropy_reference(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& options = {});
// -sum over classes of log_probs * one_hot(target) * weight, masked for ignored rows.
Tensor nll_loss_reference(const Tensor& log_probs, const Tensor& target, const NLLLossOptions& options = {});
// The textbook form -(pos_weight * y * log(sigmoid(x)) + (1 - y) * log(1 - sigmoid(x))) * weight:
// overflows to inf for large |x|, so only for moderate logits.
Tensor binary_cross_entropy_with_logits_reference(const Tensor& logits, const Tensor& targets,
                                                  const BCEWithLogitsOptions& options = {});
// mean/sum of pow(input - target, 2).
Tensor mse_loss_reference(const Tensor& input, const Tensor& target, Reduction r = Reduction::mean);

}  // namespace ember::nn
