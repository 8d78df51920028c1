// CUDA recurrence of RNN/LSTM/GRU layers (kernels/rnn.cu): the contracts of src/cpu/rnn.h on
// CUDA tensors, except that f16 and bf16 arrive as they are (gate math in f32 inside, states
// and workspace stored in the input dtype). lengths, when defined, is a contiguous i64 tensor on
// the same GPU. Everything is contiguous. Kernels and GEMMs run on the current stream.
#pragma once
#include <cstdint>

#include "ember/core/tensor.h"
#include "ember/ops/rnn.h"

namespace ember::cuda {

// storage: the caller's dtype, which these tensors already have (the CPU backend, which
// computes f16/bf16 in f32, rounds to it at the same points).
void rnn_forward(RNNMode mode, bool reverse, const Tensor& gates_x, const Tensor& w_hh, const Tensor& b_hh,
                 const Tensor& lengths, const Tensor& out, const Tensor& h_n, const Tensor& c_n,
                 const Tensor& workspace, const Tensor& h_prev, DType storage);

void rnn_backward(RNNMode mode, bool reverse, const Tensor& grad_out, const Tensor& w_hh, const Tensor& workspace,
                  const Tensor& h_prev, const Tensor& lengths, const Tensor& dh, const Tensor& dc,
                  const Tensor& grad_gates_x, const Tensor& grad_gates_h, DType storage);

}  // namespace ember::cuda
