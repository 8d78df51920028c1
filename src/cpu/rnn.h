// CPU recurrence of RNN/LSTM/GRU layers (src/cpu/rnn.cpp). Callers (src/ops/rnn.cpp) have
// checked the arguments, converted f16/bf16 to f32 and made every tensor contiguous; these only
// compute. Contracts and layouts are those of ember/ops/rnn.h:
//   gates_x (T, N, G*H), w_hh (G*H, H), b_hh (G*H) or undefined, lengths (N) i64 or undefined;
//   out (T, N, H) in time order; workspace (T, N, W) and h_prev (T, N, H) in step order.
// All float tensors are f32 or all f64.
#pragma once
#include <cstdint>

#include "ember/core/tensor.h"
#include "ember/ops/rnn.h"

namespace ember::cpu {

// storage: the dtype of the caller's tensors. For f16/bf16 (computed here in f32) every value
// the CUDA kernels keep in that dtype is rounded to it as it is made: forward, the per-step
// GEMM result hh, the state h (and so the output and h_prev) and the workspace; backward, the
// gate gradients and the per-step GEMM result dgates W_hh. The LSTM cell state and the carried
// dh, dc stay in f32. One semantics on both backends (docs/rnn.md, "Reduced precision").
// h_n and c_n (LSTM; else undefined) hold h0 and c0 on entry and are updated in place step by
// step, so they end as the final states. workspace and h_prev are written when defined
// (training), skipped when undefined (inference). out is fully written (zeros past lengths).
void rnn_forward(RNNMode mode, bool reverse, const Tensor& gates_x, const Tensor& w_hh, const Tensor& b_hh,
                 const Tensor& lengths, const Tensor& out, const Tensor& h_n, const Tensor& c_n,
                 const Tensor& workspace, const Tensor& h_prev, DType storage);

// dh and dc (LSTM; else undefined) hold grad_h_n and grad_c_n on entry and end as grad_h0 and
// grad_c0. grad_out (T, N, H) time order. Writes grad_gates_x (T, N, G*H, time order, zeros
// past lengths) and grad_gates_h (T, N, G*H, step order, zero rows past lengths), which may be
// the same tensor (forward direction, non-GRU modes: the two are equal).
void rnn_backward(RNNMode mode, bool reverse, const Tensor& grad_out, const Tensor& w_hh, const Tensor& workspace,
                  const Tensor& h_prev, const Tensor& lengths, const Tensor& dh, const Tensor& dc,
                  const Tensor& grad_gates_x, const Tensor& grad_gates_h, DType storage);

}  // namespace ember::cpu
