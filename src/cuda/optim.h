// The CUDA side of the fused optimizer kernels (records and contracts: src/optim/fused.h;
// device code: kernels/optim.cu). Launches go on the current stream of `device`; nothing here
// waits for the GPU.
#pragma once
#include <vector>

#include "ember/core/tensor.h"
#include "optim/fused.h"

namespace ember::cuda {

// dtype: the parameters' and gradients' dtype (f32 f64 f16 bf16).
void sgd_step(int device, DType dtype, const std::vector<optim::fused::SGDArgs>& tensors);
void adam_step(int device, DType dtype, bool decoupled, const std::vector<optim::fused::AdamArgs>& tensors);

// The total p-norm of all gradients into `total_norm` (0-d f32 or f64 on `device`), then every
// gradient *= min(1, max_norm / (norm + 1e-6)), the factor read from device memory (skipped
// when `scale` is false).
void clip_grad_norm(int device, const std::vector<optim::fused::GradBucket>& buckets, double p,
                    double max_norm, const Tensor& total_norm, bool scale);
void clamp_grads(int device, DType dtype, const std::vector<optim::fused::GradArgs>& grads, double clip_value);

}  // namespace ember::cuda
