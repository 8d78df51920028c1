// The recurrence of an RNN, LSTM or GRU layer as one fused primitive per layer and direction,
// its backward primitive (backpropagation through time), and a reference composed from basic
// ops. nn::RNN / nn::LSTM / nn::GRU (ember/nn/rnn.h) build whole layers from these.
//
// A layer splits into two parts:
//   1. the input projection of every time step at once, one GEMM done with ordinary ops:
//        gates_x (T, N, G*H) = x (T*N, I) @ W_ih^T (+ b_ih)
//   2. the recurrence, this file: for each step, gates = gates_x[t] + h_{t-1} W_hh^T + b_hh,
//      then the cell update, with G gate blocks of H in PyTorch's order:
//        RNN_TANH / RNN_RELU (G = 1): h = act(gates)
//        LSTM (G = 4; i, f, g, o):    i = σ, f = σ, g = tanh, o = σ of their blocks,
//                                     c = f ⊙ c_{t-1} + i ⊙ g,  h = o ⊙ tanh(c)
//        GRU (G = 3; r, z, n):        r = σ(x_r + hh_r), z = σ(x_z + hh_z),
//                                     n = tanh(x_n + r ⊙ hh_n),  h = (1 − z) ⊙ n + z ⊙ h_{t-1}
//      where x_* are the blocks of gates_x[t] and hh_* those of h_{t-1} W_hh^T + b_hh (so b_hn
//      sits inside r ⊙ (...), as in PyTorch).
//
// Variable lengths: `lengths` (N) i64 on the CPU, 0 <= lengths[n] <= T. Steps t >= lengths[n]
// leave sequence n's state unchanged and write zeros to its output; h_n (c_n) is each
// sequence's state after its own last valid step. The reverse direction runs t = lengths[n]-1
// down to 0 for each sequence (PyTorch's packed sequences). Undefined lengths: all T.
#pragma once
#include <array>
#include <cstdint>

#include "ember/core/tensor.h"
#include "ember/prim/rnn_mode.h"

namespace ember {

// Gate blocks per mode: 1, 1, 4, 3.
int64_t rnn_gate_count(RNNMode mode);
const char* rnn_mode_name(RNNMode mode);  // "RNN_TANH", "RNN_RELU", "LSTM", "GRU"

struct RNNRecurrenceOptions {
  RNNMode mode = RNNMode::lstm;
  bool reverse = false;  // run from the last valid step to the first
};

// Shapes: gates_x (T, N, G*H), w_hh (G*H, H), b_hh (G*H) or undefined (no bias), h0 (N, H) or
// undefined (zeros), c0 (N, H) or undefined (zeros; LSTM only: an error for other modes),
// lengths (N) i64 CPU or undefined. All float tensors share one dtype and device; H > 0.
// Returns output (T, N, H), h_n (N, H) and, for LSTM, c_n (N, H) (undefined otherwise), in
// gates_x's dtype; f16/bf16 compute in f32 (accumulate in f32 on CUDA). Records its backward,
// which calls rnn_recurrence_backward.
struct RNNRecurrenceResult {
  Tensor output, h_n, c_n;
};
RNNRecurrenceResult rnn_recurrence(const Tensor& gates_x, const Tensor& w_hh, const Tensor& b_hh, const Tensor& h0,
                                   const Tensor& c0, const Tensor& lengths, RNNRecurrenceOptions opts);

// The forward primitive without autograd. With save_for_backward it also returns what the
// backward needs, both in step order (row s holds processing step s, whose time index is s
// forward and lengths[n]-1-s in reverse; rows past a sequence's length are zeros):
//   workspace (T, N, W): per step the cell's activations; W = H (RNN: h), 6H (LSTM: i, f, g,
//                        o, c_{t-1}, tanh(c_t)), 4H (GRU: r, z, n, h_{t-1} W_hn^T + b_hn)
//   h_prev (T, N, H):    the state entering each step
// They are in the compute dtype (f32 for f16/bf16 on the CPU, the input dtype on CUDA).
struct RNNRecurrenceForward {
  Tensor output, h_n, c_n, workspace, h_prev;
};
RNNRecurrenceForward rnn_recurrence_forward(const Tensor& gates_x, const Tensor& w_hh, const Tensor& b_hh,
                                            const Tensor& h0, const Tensor& c0, const Tensor& lengths,
                                            RNNRecurrenceOptions opts, bool save_for_backward = true);

// The backward primitive (no autograd). grad_output (T, N, H) in the layer's dtype (w_hh's);
// grad_h_n (N, H) and grad_c_n (N, H; LSTM) the same, or undefined for zero; workspace and h_prev as
// rnn_recurrence_forward returned them for the same w_hh, lengths and opts. Per step (last to
// first) one fused cell-backward pass and one GEMM dh_{t-1} += dgates_h W_hh; after the loop
// one GEMM for the weight gradient over all steps:
//   grad_w_hh = sum_{t, n} dgates_h[t, n]^T h_{t-1}[t, n],  grad_b_hh = sum_{t, n} dgates_h[t, n]
// (dgates_h = dgates_x except for GRU's n block, which is scaled by r). needs = {gates_x,
// w_hh, b_hh, h0, c0}; gradients not needed come back undefined (grad_gates_x is computed
// whenever anything is needed, as the recurrence runs through it).
struct RNNRecurrenceGrads {
  Tensor grad_gates_x, grad_w_hh, grad_b_hh, grad_h0, grad_c0;
};
RNNRecurrenceGrads rnn_recurrence_backward(const Tensor& grad_output, const Tensor& grad_h_n,
                                           const Tensor& grad_c_n, const Tensor& w_hh,
                                           const Tensor& workspace, const Tensor& h_prev, const Tensor& lengths,
                                           RNNRecurrenceOptions opts,
                                           std::array<bool, 5> needs = {true, true, true, true, true});

// rnn_recurrence composed from basic ops, one cell at a time (matmul, sigmoid, tanh, relu,
// mul, add, narrow, where, gather, stack): slow and obviously right, differentiable through
// those ops. Same arguments, checks and results.
RNNRecurrenceResult rnn_recurrence_reference(const Tensor& gates_x, const Tensor& w_hh, const Tensor& b_hh,
                                             const Tensor& h0, const Tensor& c0, const Tensor& lengths,
                                             RNNRecurrenceOptions opts);

}  // namespace ember
