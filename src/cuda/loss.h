// CUDA cross-entropy (kernels/loss.cu): the contracts of src/cpu/loss.h on CUDA tensors,
// except that f16 and bf16 logits (and grad_loss, loss, grad_logits) arrive as they are and
// are computed in f32 inside. weight, weight_sum, target_weight and logsumexp are f32 (f64 for
// f64 logits); weight_sum is a 0-d tensor on the device. Kernels launch on the current stream.
#pragma once
#include <cstdint>

#include "ember/core/tensor.h"

namespace ember::cuda {

void cross_entropy_forward(const Tensor& logits, const Tensor& target, const Tensor& weight,
                           int64_t ignore_index, double label_smoothing, const Tensor& loss,
                           const Tensor& target_weight, const Tensor& logsumexp, int64_t N, int64_t C);

void cross_entropy_backward(const Tensor& grad_loss, const Tensor& logits, const Tensor& target,
                            const Tensor& weight, const Tensor& weight_sum, const Tensor& logsumexp,
                            int64_t ignore_index, double label_smoothing, const Tensor& grad_logits, int64_t N,
                            int64_t C);

}  // namespace ember::cuda
