// Losses.
#pragma once
#include "ember/core/tensor.h"

namespace ember::nn {

enum class Reduction { none, mean, sum };

// logits (N, C) float, target (N) integer class indices in [0, C): log_softmax + NLL.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction r = Reduction::mean);

}  // namespace ember::nn
