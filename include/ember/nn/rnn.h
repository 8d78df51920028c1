// Recurrent layers: nn::RNN (tanh or ReLU), nn::LSTM and nn::GRU, multi-layer and optionally
// bidirectional, with PyTorch's parameter names, shapes, gate order and initialisation, so a
// PyTorch state dict (e.g. a .safetensors file) loads unchanged.
//
// Each layer k and direction runs as: gates_x = x @ weight_ih_l{k}^T (one GEMM over all steps),
// then the fused recurrence rnn_recurrence (ember/ops/rnn.h). Parameters, for k = 0..L-1 and
// the suffix "" (forward) or "_reverse" (bidirectional only), G = 1 (RNN), 4 (LSTM), 3 (GRU):
//   weight_ih_l{k}{sfx} (G*H, I_k)   I_0 = input_size, I_k = D*H for k > 0
//   weight_hh_l{k}{sfx} (G*H, H)
//   bias_ih_l{k}{sfx}   (G*H)        only with bias
//   bias_hh_l{k}{sfx}   (G*H)
// all drawn from U(-1/sqrt(H), 1/sqrt(H)). Registration order is PyTorch's (per layer: forward
// direction's four, then the reverse direction's four).
#pragma once
#include <cstdint>

#include "ember/core/generator.h"
#include "ember/nn/module.h"
#include "ember/ops/rnn.h"

namespace ember::nn {

enum class RNNNonlinearity { tanh, relu };

struct RNNOptions {
  int64_t input_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 1;
  bool bias = true;
  bool batch_first = false;  // x and output are (N, T, C) instead of (T, N, C)
  double dropout = 0.0;      // on the outputs of every layer but the last, in training mode only
  bool bidirectional = false;
  RNNNonlinearity nonlinearity = RNNNonlinearity::tanh;  // nn::RNN only
};

// output: (T, N, D*H) ((N, T, D*H) with batch_first), the last layer's states at every step,
// both directions concatenated (forward first), zeros past each sequence's length.
// h_n, c_n: (L*D, N, H), the final states of every layer and direction (index k*D + d); c_n
// only for LSTM.
struct RNNResult {
  Tensor output, h_n, c_n;
};

// What RNN, LSTM and GRU share. Not constructed directly.
class RNNBase : public Module {
 public:
  // x: (T, N, input_size) or (N, T, input_size) with batch_first, in the parameters' dtype and
  // on their device. h0 (and c0, LSTM only): (L*D, N, H) or undefined (zeros). lengths: (N)
  // i64 CPU tensor, each in [0, T], or undefined (every sequence has T steps).
  RNNResult forward(const Tensor& x, const Tensor& h0 = Tensor(), const Tensor& c0 = Tensor(),
                    const Tensor& lengths = Tensor());
  // The same computation with each recurrence run by rnn_recurrence_reference (composed from
  // basic ops, one cell at a time): slow; for tests.
  RNNResult forward_reference(const Tensor& x, const Tensor& h0 = Tensor(), const Tensor& c0 = Tensor(),
                              const Tensor& lengths = Tensor());

  const RNNOptions& options() const { return opts_; }
  RNNMode mode() const { return mode_; }
  int64_t num_directions() const { return opts_.bidirectional ? 2 : 1; }
  // The parameters of layer k, direction d (0 forward, 1 reverse); biases undefined without bias.
  struct Weights {
    Tensor w_ih, w_hh, b_ih, b_hh;
  };
  const Weights& weights(int64_t layer, int64_t direction) const;

 protected:
  RNNBase(const char* name, RNNMode mode, const RNNOptions& opts, Generator* gen);

 private:
  RNNResult run(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& lengths, bool reference);

  const char* name_;
  RNNMode mode_;
  RNNOptions opts_;
  Generator* gen_;
  std::vector<Weights> weights_;  // index k * D + d
};

// Elman RNN: h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), act = tanh or ReLU
// (options.nonlinearity).
class RNN : public RNNBase {
 public:
  explicit RNN(const RNNOptions& opts, Generator* gen = nullptr);
};

// LSTM, gates i, f, g, o (PyTorch's order in the weight rows).
class LSTM : public RNNBase {
 public:
  explicit LSTM(const RNNOptions& opts, Generator* gen = nullptr);
};

// GRU, gates r, z, n (PyTorch's order and formulation: b_hn inside r ⊙ (W_hn h + b_hn)).
class GRU : public RNNBase {
 public:
  explicit GRU(const RNNOptions& opts, Generator* gen = nullptr);
};

}  // namespace ember::nn
