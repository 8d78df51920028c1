// The CPU side of the fused optimizer kernels (records and contracts: src/optim/fused.h).
// Each call updates every tensor it is given in one OpenMP loop over fixed-size chunks of all
// the tensors' elements, so many small tensors and one large one spread over the threads alike.
#pragma once
#include <vector>

#include "ember/core/dtype.h"
#include "optim/fused.h"

namespace ember::cpu {

// dtype: the parameters' and gradients' dtype (f32 f64 f16 bf16).
void sgd_step(DType dtype, const std::vector<optim::fused::SGDArgs>& tensors);
void adam_step(DType dtype, bool decoupled, const std::vector<optim::fused::AdamArgs>& tensors);

// Sum over every element of |g|^p (finite p) or max |g| (p = +inf), in double; NaN propagates.
double grad_norm_accumulate(DType dtype, const std::vector<optim::fused::GradArgs>& grads, double p);
void scale_grads(DType dtype, const std::vector<optim::fused::GradArgs>& grads, double factor);
void clamp_grads(DType dtype, const std::vector<optim::fused::GradArgs>& grads, double clip_value);

}  // namespace ember::cpu
