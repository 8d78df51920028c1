// The argument records of the fused optimizer primitives (prim/primitives.h: sgd_step,
// adam_step, clip_grad_norm, clamp_grads), shared by the optimizers that fill them
// (src/optim/fused.cpp) and the kernels that read them (src/cpu/optim.cpp, kernels/optim.cu).
//
// Contract of every record: pointers to contiguous memory of `numel` elements. The parameter
// and gradient have the call's dtype (f32 f64 f16 bf16); state buffers are f64 for f64
// parameters and f32 otherwise. Per-tensor hyper-parameters are doubles; kernels compute in
// double for f64 parameters and in float otherwise.
#pragma once
#include <cstdint>
#include <vector>

#include "ember/core/dtype.h"

namespace ember::prim {

struct SGDArgs {
  void* param;
  const void* grad;
  void* momentum_buffer;  // null when momentum == 0
  int64_t numel;
  double lr, weight_decay, momentum, dampening;
  int nesterov;  // 0 / 1
  int first;     // 1: the buffer is new; it becomes the gradient (no dampening)
  // Captured into a graph (ember/cuda_graph.h): null, or memory on the call's device holding
  // {lr}, written before every replay; the kernel reads it instead of `lr`.
  const double* hyper;
  // Null, or a flag on the call's device (the GradScaler's inf/NaN flag in a captured step):
  // when it is non-zero the kernel leaves parameter and buffers as they are.
  const float* skip;
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
  // Captured into a graph (ember/cuda_graph.h): null, or memory on the call's device holding
  // {lr, step_size, bias_correction2_sqrt} of this step, written before every replay (they change
  // with the step count and the schedule); the kernel reads them instead of the fields above.
  const double* hyper;
  const float* skip;  // as in SGDArgs
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

}  // namespace ember::prim
