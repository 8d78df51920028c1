// Scaled dot-product attention as a fused primitive, its backward primitive, and a reference
// composed from basic ops (docs/attention.md).
//
//   S[b, h, i, j] = scale * q[b, h, i, :] . k[b, h, j, :]  + (float attn_mask)   (B, H, Tq, Tk)
//   S[b, h, i, j] = -inf where a mask forbids key j for query i
//   P = softmax(S, over j);  P = dropout(P) when opts.dropout > 0
//   out[b, h, i, :] = sum_j P[b, h, i, j] v[b, h, j, :]                              (B, H, Tq, Dv)
//
// Masks (all optional, combined with "and"):
//   attn_mask         bool (true = may attend) or float (added to S); broadcastable to
//                     (B, H, Tq, Tk). A float mask gets no gradient.
//   key_padding_mask  bool (B, Tk), true = padding: key j of batch b is ignored.
//   causal            query i sees keys j <= i + (Tk - Tq): aligned to the end, which for
//                     Tq == Tk is the usual lower triangle and for Tq < Tk lets the last query
//                     see every key (decoding with a cache). For Tq > Tk the first Tq - Tk
//                     queries see no key.
// A query that may attend to no key at all (a fully masked row) gets an output of zeros, not
// NaN, and passes no gradient. Its logsumexp is -inf.
//
// Dropout (opts.dropout = p in [0, 1]) zeroes probabilities with probability p and scales the
// rest by 1 / (1 - p). The caller decides whether it is training: pass p = 0 in eval. Masks
// come from opts.generator (the default one when null) exactly as ember::dropout(P, p) would
// draw them for a (B, H, Tq, Tk) tensor, so the fused path and sdpa_reference agree for the
// same generator state.
#pragma once
#include <array>
#include <cstdint>
#include <optional>

#include "ember/core/generator.h"
#include "ember/core/tensor.h"

namespace ember {

struct AttentionOptions {
  Tensor attn_mask;         // bool or float, broadcastable to (B, H, Tq, Tk); or undefined
  Tensor key_padding_mask;  // bool (B, Tk), true = ignore that key; or undefined
  bool causal = false;
  double dropout = 0.0;
  Generator* generator = nullptr;  // dropout masks; default_generator() when null
  std::optional<double> scale;     // default 1 / sqrt(D)
};

// q (B, H, Tq, D), k (B, H, Tk, D), v (B, H, Tk, Dv): one float dtype, one device, any
// strides. Returns out (B, H, Tq, Dv) in q's dtype. Runs the fused kernels where they apply
// (sdpa_fused_supported) and sdpa_reference otherwise; both are differentiable in q, k, v.
// f16/bf16 compute in f32 on the CPU.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& opts = {});

// Whether scaled_dot_product_attention takes the fused path for these arguments. CPU: always,
// except dropout == 1. CUDA: f16/bf16, D == Dv in {64, 128}, no float attn_mask, dropout < 1
// (the kernels draw the same Philox mask as the CPU; EMBER_ATTENTION_DROPOUT=composed sends
// dropout > 0 to the composed path instead); everything else runs the composed reference on the
// GPU.
bool sdpa_fused_supported(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opts = {});

// The forward primitive without autograd: the output plus what the backward needs. logsumexp
// (B, H, Tq) is log(sum_j exp(S[b, h, i, j])) before dropout, f32 (f64 for f64 input), -inf for
// a fully masked row. dropout_seed/offset name the Philox stream of the dropout mask (unused
// when dropout == 0). Throws when !sdpa_fused_supported.
struct AttentionForward {
  Tensor output, logsumexp;
  uint64_t dropout_seed = 0, dropout_offset = 0;
};
AttentionForward sdpa_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opts = {});

// The backward primitive (no autograd), recomputing P from fwd.logsumexp:
//   dP = dO V^T (then the dropout mask and 1 / (1 - p)),  D_i = sum_d dO[i, d] O[i, d]
//   dS = P * (dP - D_i),  dQ = scale dS K,  dK = scale dS^T Q,  dV = P_dropped^T dO
// Each gradient is a fresh tensor in its input's dtype (overwrite), computed only where
// needs[i] (q, k, v) is true; the others are returned undefined. opts must be the options of
// the forward call (its generator is not read: fwd carries the dropout stream).
struct AttentionGrads {
  Tensor grad_q, grad_k, grad_v;
};
AttentionGrads sdpa_backward(const Tensor& grad_output, const Tensor& q, const Tensor& k, const Tensor& v,
                             const AttentionForward& fwd, const AttentionOptions& opts = {},
                             std::array<bool, 3> needs = {true, true, true});

// The same function composed from matmul, masked_fill, softmax, dropout and matmul: slow,
// materialises (B, H, Tq, Tk), obviously right, differentiable through those ops (a float
// attn_mask that requires grad gets one here). Same arguments and checks.
Tensor sdpa_reference(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opts = {});

}  // namespace ember
