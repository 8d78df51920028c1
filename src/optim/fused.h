// The fused multi-tensor kernels behind the optimizers and gradient clipping: their argument
// records (shared by the CPU backend, src/cpu/optim.cpp, and the CUDA one, kernels/optim.cu)
// and the dispatcher that groups tensors by (device, dtype) and calls the right backend.
//
// Contract of every record: pointers to contiguous memory of `numel` elements. The parameter
// and gradient have the call's dtype (f32 f64 f16 bf16); state buffers are f64 for f64
// parameters and f32 otherwise. Per-tensor hyper-parameters are doubles; kernels compute in
// double for f64 parameters and in float otherwise.
#pragma once
#include <cstdint>
#include <vector>

#include "ember/core/tensor.h"

namespace ember::optim::fused {

struct SGDArgs {
  void* param;
  const void* grad;
  void* momentum_buffer;  // null when momentum == 0
  int64_t numel;
  double lr, weight_decay, momentum, dampening;
  int nesterov;  // 0 / 1
  int first;     // 1: the buffer is new; it becomes the gradient (no dampening)
};

struct AdamArgs {
  void* param;
  const void* grad;
  void* exp_avg;
  void* exp_avg_sq;
  void* max_exp_avg_sq;  // null unless amsgrad
  int64_t numel;
  double lr, weight_decay, beta1, beta2, eps;
  double step_size;              // lr / (1 - beta1^t)
  double bias_correction2_sqrt;  // sqrt(1 - beta2^t)
};

struct GradArgs {
  void* grad;
  int64_t numel;
};
// Gradients of one dtype.
struct GradBucket {
  DType dtype;
  std::vector<GradArgs> grads;
};

// One fused update: `tensors[i]` pairs a record with the parameter it updates (whose device
// and dtype pick the backend and instantiation). Records are grouped by (device, dtype).
struct SGDItem {
  Tensor param;
  SGDArgs args;
};
struct AdamItem {
  Tensor param;
  AdamArgs args;
};
void sgd_step(const std::vector<SGDItem>& items);
// decoupled: AdamW's weight decay.
void adam_step(const std::vector<AdamItem>& items, bool decoupled);

// Gradients for clipping: contiguous, all on `device`, any float dtypes (checked by callers).
// Returns the total p-norm (norm_type may be +inf) as a 0-d tensor of `out_dtype` on the
// device, after multiplying every gradient by min(1, max_norm / (norm + 1e-6)) (only the norm
// when `scale` is false). No host synchronisation on CUDA.
Tensor clip_grad_norm(Device device, const std::vector<Tensor>& grads, double norm_type, double max_norm,
                      DType out_dtype, bool scale = true);
// Clamps every element into [-clip_value, clip_value] (NaN stays NaN).
void clamp_grads(const std::vector<Tensor>& grads, double clip_value);

}  // namespace ember::optim::fused
