// CUDA attention (kernels/attention.cu): the contracts of src/cpu/attention.h on CUDA tensors
// for the fused cases only (src/ops/attention.cpp routes the rest to the composed reference):
// q, k, v, out, grad_out, grad_q, grad_k, grad_v are f16 or bf16 as they are (computed in f32
// inside), D == Dv in {64, 128}, no additive mask (a bool mask is fine), no dropout. lse is f32.
// Everything but the expanded mask view is contiguous. Kernels launch on the current stream
// and check each launch.
#pragma once
#include "ember/core/tensor.h"
#include "ops/attention_params.h"

namespace ember::cuda {

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& p,
                       const Tensor& out, const Tensor& lse);

void attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, const AttentionParams& p, const Tensor& grad_q,
                        const Tensor& grad_k, const Tensor& grad_v);

}  // namespace ember::cuda
