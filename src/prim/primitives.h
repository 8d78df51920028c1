// Every primitive, declared once: its name and the signature of its kernels. A backend
// defines a function of that signature and registers it (src/cpu/kernels.cpp,
// src/cuda/kernels.cpp); the op layer finds it through backend::call (src/ops/dispatch.h).
// Nothing else declares a primitive, so adding one is one line here and one kernel per backend.
//
// Shared contract of every kernel: the op layer has checked the arguments (the error names
// the op, shapes, dtypes and devices), promoted dtypes and allocated the outputs; a kernel
// only computes. All tensors of a call live on one device (the op layer makes sure), and the
// call runs on the backend of that device: the CPU backend for `cpu` and the stand-in `fake:N`,
// the CUDA backend for `cuda:N` (launching on the current stream, checking every launch).
// Outputs are overwritten (=) unless the primitive's name says it adds (scatter_add,
// index_add). The CPU backend computes f16/bf16 in f32 (the op layer converts first,
// backend::compute_dtype_on); the CUDA kernels take f16/bf16 as they are and accumulate in f32.
#pragma once
#include <cstdint>
#include <vector>

#include "core/philox.h"  // RandomKind
#include "ember/core/tensor.h"
#include "ember/prim/rnn_mode.h"
#include "prim/attention_params.h"
#include "prim/elementwise_math.h"
#include "prim/hsoftmax_layout.h"
#include "prim/kinds.h"
#include "prim/optim_records.h"

// A primitive is a tag type: prim::NAME::name is its name in errors and traces, and
// prim::NAME::Fn the function type of its kernels (parameter names document the contract).
#define EMBER_PRIMITIVE(NAME, ...)                     \
  struct NAME {                                        \
    static constexpr const char* name = #NAME;         \
    using Fn = void(__VA_ARGS__);                      \
  }

namespace ember::prim {

// --- elementwise, copies, reductions, GEMM, indexing, random (src/cpu/{elementwise,reduce,gemm,
//     index}.cpp; kernels/{elementwise,reduce,gemm,index,random}.cu) ----------------------------

// dst[i] = convert(src[i]); same shape (src may be broadcast with zero strides), any dtypes and
// strides, one device (backend::copy stages copies across devices).
EMBER_PRIMITIVE(copy, const Tensor& src, const Tensor& dst);
EMBER_PRIMITIVE(fill, const Tensor& dst, double value);
// out = op(x); x and out share a compute dtype (bool for logical_not).
EMBER_PRIMITIVE(unary, UnaryOp op, const Tensor& x, const Tensor& out, UnaryArgs args);
// out = op(a, b); a and b share a compute dtype and have out's shape (broadcast by strides);
// out has that dtype, or bool for comparisons. out may alias a (in place).
EMBER_PRIMITIVE(binary, BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, double alpha);
// out = cond ? a : b; all of out's shape (broadcast by strides); a, b, out share a dtype.
EMBER_PRIMITIVE(where, const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out);

// x contiguous (M, R) -> out contiguous (M): reduce each row.
EMBER_PRIMITIVE(reduce_rows, ReduceOp op, const Tensor& x, const Tensor& out, int64_t M, int64_t R);
// x contiguous (R, M) -> out (M): the sum of each column.
EMBER_PRIMITIVE(sum_cols, const Tensor& x, const Tensor& out, int64_t R, int64_t M);
// x contiguous (M, R): values (M) and i64 indices (M) of each row's max (is_max) or min; the
// first index wins ties.
EMBER_PRIMITIVE(arg_reduce_rows, bool is_max, const Tensor& x, const Tensor& values, const Tensor& indices,
                int64_t M, int64_t R);
// x, out contiguous (M, R): softmax or log-softmax of each row.
EMBER_PRIMITIVE(softmax_rows, bool log, const Tensor& x, const Tensor& out, int64_t M, int64_t R);

// out (B, n, m) contiguous = a (B, n, k) @ b (B, k, m) [+ bias]. a and b may be strided; each
// matrix has unit stride in one of its two dims. bias, when defined, is contiguous (m) of out's
// dtype and is added to every row (Linear's fused bias).
EMBER_PRIMITIVE(bmm, const Tensor& a, const Tensor& b, const Tensor& out, const Tensor& bias);

// Dynamic int8 (src/cpu/int8_gemm.cpp, kernels/int8_gemm.cu). int8 matrices are stored four
// values to an i32 element (little-endian bytes: the layout dp4a reads), a row of K values in
// K4 = ceil(K / 4) elements, the padding bytes zero.
// quantize_rows: x contiguous f32 (M, K) -> q contiguous i32 (M, K4), scale f32 (M):
// scale[m] = max|x[m, :]| / 127, q = round(x / scale) in [-127, 127] (0 for an all-zero row).
EMBER_PRIMITIVE(quantize_rows, const Tensor& x, const Tensor& q, const Tensor& scale, int64_t M, int64_t K);
// out (M, N) contiguous = a (M, K4) . b (N, K4)^T over the int8 values, accumulated in int32.
// out i32: the sums themselves (a_scale, b_scale, bias undefined); out f32: sum * a_scale[m] *
// b_scale[n] + bias[n] (bias f32 (N) or undefined). a, b, scales contiguous.
EMBER_PRIMITIVE(int8_gemm, const Tensor& a, const Tensor& b, const Tensor& a_scale, const Tensor& b_scale,
                const Tensor& bias, const Tensor& out, int64_t M, int64_t N, int64_t K4);

// Index tensors are contiguous i64; x, src, out are contiguous.
EMBER_PRIMITIVE(gather, const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
EMBER_PRIMITIVE(scatter_add, const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);
EMBER_PRIMITIVE(index_select, const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
EMBER_PRIMITIVE(index_add, const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, double alpha);
EMBER_PRIMITIVE(one_hot, const Tensor& index, const Tensor& out, int64_t classes);
// Fills contiguous out from the Philox stream (seed, block offset): core/generator.h.
EMBER_PRIMITIVE(random_fill, RandomKind kind, const Tensor& out, uint64_t seed, uint64_t offset, double a,
                double b);

// --- fused layers with their backward primitives. Unless noted, every tensor is contiguous;
//     on the CPU all float tensors are f32 or all f64. ------------------------------------------

// Scaled dot-product attention (src/cpu/attention.cpp, kernels/attention.cu). q, grad_q
// (B, H, Tq, D); k, grad_k (B, H, Tk, D); v, grad_v (B, H, Tk, Dv); out, grad_out (B, H, Tq, Dv);
// lse (B, H, Tq) in f32 (f64 for f64). out = softmax(mask(scale q k^T)) v with dropout on the
// probabilities; lse the per-row logsumexp (-inf for a row with no allowed key, whose output is
// 0). Backward recomputes P with lse; grad_q, grad_k, grad_v may be undefined (not needed).
EMBER_PRIMITIVE(attention_forward, const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& p,
                const Tensor& out, const Tensor& lse);
EMBER_PRIMITIVE(attention_backward, const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                const Tensor& out, const Tensor& lse, const AttentionParams& p, const Tensor& grad_q,
                const Tensor& grad_k, const Tensor& grad_v);

// conv1d (src/cpu/conv.cpp, kernels/conv.cu): x (N, C_in, L), w (C_out, C_in/groups, K), bias
// (C_out) or undefined, out / grad_out (N, C_out, L_out).
EMBER_PRIMITIVE(conv1d_forward, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out_overwrite,
                int64_t stride, int64_t padding, int64_t dilation, int64_t groups);
EMBER_PRIMITIVE(conv1d_backward_input, const Tensor& grad_out, const Tensor& w, const Tensor& grad_input_overwrite,
                int64_t stride, int64_t padding, int64_t dilation, int64_t groups);
EMBER_PRIMITIVE(conv1d_backward_weight, const Tensor& grad_out, const Tensor& x,
                const Tensor& grad_weight_overwrite, int64_t stride, int64_t padding, int64_t dilation,
                int64_t groups);

// Cross-entropy (src/cpu/loss.cpp, kernels/loss.cu): logits, grad_logits (N, C); target (N)
// i64 in [0, C) or ignore_index; weight (C) or undefined; weight_sum a 0-d tensor holding
// sum(weight) (backward with smoothing and weights) or undefined; loss, grad_loss,
// target_weight, logsumexp (N). weight, weight_sum, target_weight, logsumexp are f32 (f64 for
// f64 logits). grad_logits[i, c] = grad_loss[i] * (S_i softmax[i, c] - q_i[c]), 0 when ignored.
EMBER_PRIMITIVE(cross_entropy_forward, const Tensor& logits, const Tensor& target, const Tensor& weight,
                int64_t ignore_index, double label_smoothing, const Tensor& loss, const Tensor& target_weight,
                const Tensor& logsumexp, int64_t N, int64_t C);
EMBER_PRIMITIVE(cross_entropy_backward, const Tensor& grad_loss, const Tensor& logits, const Tensor& target,
                const Tensor& weight, const Tensor& weight_sum, const Tensor& logsumexp, int64_t ignore_index,
                double label_smoothing, const Tensor& grad_logits, int64_t N, int64_t C);

// Layer norm (src/cpu/norm.cpp, kernels/norm.cu): x, out, grad_out, grad_x (M, N); weight,
// bias, grad_weight, grad_bias (N) or undefined; mean, rstd (M). Statistics in f32 or more.
// Backward writes only the gradients that are defined.
EMBER_PRIMITIVE(layer_norm_forward, const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                const Tensor& out, const Tensor& mean, const Tensor& rstd, int64_t M, int64_t N);
EMBER_PRIMITIVE(layer_norm_backward, const Tensor& grad_out, const Tensor& x, const Tensor& mean,
                const Tensor& rstd, const Tensor& weight, const Tensor& grad_x, const Tensor& grad_weight,
                const Tensor& grad_bias, int64_t M, int64_t N);

// Hierarchical softmax (src/cpu/hsoftmax.cpp, kernels/hsoftmax.cu): h, grad_h (N, D); W,
// grad_W (S, D); b, grad_b (S) or undefined; targets (N) i64 in [0, C); loss, grad_loss (N);
// logits, grad_logits (N, S); out, grad_out (N, C); values, classes (N, k); table the packed
// i32 tree (prim/hsoftmax_layout.h) with sizes dims. Undefined outputs are skipped.
EMBER_PRIMITIVE(hsoftmax_nll_forward, const Tensor& h, const Tensor& W, const Tensor& b, const Tensor& targets,
                const Tensor& table, const hs::Dims& dims, const Tensor& loss, int64_t N, int64_t D);
EMBER_PRIMITIVE(hsoftmax_nll_backward, const Tensor& grad_loss, const Tensor& h, const Tensor& W, const Tensor& b,
                const Tensor& targets, const Tensor& table, const hs::Dims& dims, const Tensor& grad_h,
                const Tensor& grad_W, const Tensor& grad_b, int64_t N, int64_t D);
EMBER_PRIMITIVE(hsoftmax_tree_forward, const Tensor& logits, const Tensor& table, const hs::Dims& dims,
                const Tensor& out, int64_t N);
EMBER_PRIMITIVE(hsoftmax_tree_backward, const Tensor& grad_out, const Tensor& logits, const Tensor& table,
                const hs::Dims& dims, const Tensor& grad_logits, int64_t N);
EMBER_PRIMITIVE(hsoftmax_topk, const Tensor& h, const Tensor& W, const Tensor& b, const Tensor& table,
                const hs::Dims& dims, int64_t k, int64_t beam, const Tensor& values, const Tensor& classes,
                int64_t N, int64_t D);

// The RNN/LSTM/GRU recurrence (src/cpu/rnn.cpp, kernels/rnn.cu; layouts in ember/ops/rnn.h and
// docs/rnn.md): gates_x (T, N, G*H), w_hh (G*H, H), b_hh (G*H) or undefined, lengths (N) i64 or
// undefined; out (T, N, H) in time order; workspace (T, N, W) and h_prev (T, N, H) in step order
// (written when defined: training). h_n, c_n hold h0, c0 on entry and end as the final states;
// in backward dh, dc hold grad_h_n, grad_c_n and end as grad_h0, grad_c0. storage: the dtype of
// the caller's tensors (values the CUDA kernels keep in it are rounded to it on the CPU too).
EMBER_PRIMITIVE(rnn_forward, RNNMode mode, bool reverse, const Tensor& gates_x, const Tensor& w_hh,
                const Tensor& b_hh, const Tensor& lengths, const Tensor& out, const Tensor& h_n, const Tensor& c_n,
                const Tensor& workspace, const Tensor& h_prev, DType storage);
EMBER_PRIMITIVE(rnn_backward, RNNMode mode, bool reverse, const Tensor& grad_out, const Tensor& w_hh,
                const Tensor& workspace, const Tensor& h_prev, const Tensor& lengths, const Tensor& dh,
                const Tensor& dc, const Tensor& grad_gates_x, const Tensor& grad_gates_h, DType storage);

// --- fused multi-tensor optimizer updates (src/cpu/optim.cpp, kernels/optim.cu; records in
//     prim/optim_records.h). One call updates every record; dtype is the parameters'. --------
EMBER_PRIMITIVE(sgd_step, Device device, DType dtype, const std::vector<SGDArgs>& tensors);
EMBER_PRIMITIVE(adam_step, Device device, DType dtype, bool decoupled, const std::vector<AdamArgs>& tensors);
// The total p-norm (p may be +inf) of every gradient into total_norm (a 0-d f32 or f64 tensor
// on device), then, when scale, every gradient *= min(1, max_norm / (norm + 1e-6)); NaN
// propagates. The CUDA kernel reads the factor from device memory: no host synchronisation.
EMBER_PRIMITIVE(clip_grad_norm, Device device, const std::vector<GradBucket>& buckets, double norm_type,
                double max_norm, const Tensor& total_norm, bool scale);
// Clamps every element into [-clip_value, clip_value] (NaN stays NaN).
EMBER_PRIMITIVE(clamp_grads, Device device, DType dtype, const std::vector<GradArgs>& grads, double clip_value);
// Loss-scale removal: every gradient *= inv_scale, and found_inf (a 1-element f32 tensor on
// device) becomes 1 if any element, before or after the multiply, is inf or NaN; it is never
// reset to 0 here (one flag collects every bucket of a step). One pass over the gradients.
EMBER_PRIMITIVE(unscale_grads, Device device, DType dtype, const std::vector<GradArgs>& grads, double inv_scale,
                const Tensor& found_inf);

}  // namespace ember::prim
