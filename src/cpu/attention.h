// CPU attention (src/cpu/attention.cpp). Callers (src/ops/attention.cpp) have checked the
// arguments, converted f16/bf16 to f32 and made q, k, v, out, grad_out contiguous; these only
// compute. Shapes: q, grad_q (B, H, Tq, D); k, grad_k (B, H, Tk, D); v, grad_v (B, H, Tk, Dv);
// out, grad_out (B, H, Tq, Dv); lse (B, H, Tq). All f32 or all f64 (lse too).
// Every output is overwritten (=), never accumulated into.
#pragma once
#include "ember/core/tensor.h"
#include "ops/attention_params.h"

namespace ember::cpu {

// out = softmax(mask(scale q k^T)) v (with dropout on the probabilities), lse = per-row
// logsumexp of the masked scores (-inf for a row with no allowed key, whose output is 0).
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& p,
                       const Tensor& out, const Tensor& lse);

// Gradients from P recomputed with lse. grad_q, grad_k, grad_v may be undefined (not needed).
void attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, const AttentionParams& p, const Tensor& grad_q,
                        const Tensor& grad_k, const Tensor& grad_v);

}  // namespace ember::cpu
