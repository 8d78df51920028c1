// nn::RNN, nn::LSTM, nn::GRU: per layer and direction, the input projection of all steps as
// one GEMM (matmul, ordinary autograd), then the fused recurrence (ember/ops/rnn.h).
#include "ember/nn/rnn.h"

#include <cmath>
#include <string>
#include <vector>

#include "ember/core/error.h"
#include "ember/ops/autocast.h"
#include "ember/ops/ops.h"

namespace ember::nn {
namespace {

std::string describe(const Tensor& t) { return shape_str(t.shape()) + " " + dtype_name(t.dtype()) + " " + t.device().str(); }

}  // namespace

RNNBase::RNNBase(const char* name, RNNMode mode, const RNNOptions& opts, Generator* gen)
    : name_(name), mode_(mode), opts_(opts), gen_(gen) {
  EMBER_CHECK(opts.input_size > 0 && opts.hidden_size > 0, name, "input_size and hidden_size must be positive, got (",
              opts.input_size, ", ", opts.hidden_size, ")");
  EMBER_CHECK(opts.num_layers >= 1, name, "num_layers must be >= 1, got ", opts.num_layers);
  EMBER_CHECK(opts.dropout >= 0.0 && opts.dropout <= 1.0, name, "dropout probability ", opts.dropout,
              " outside [0, 1]");
  const int64_t H = opts.hidden_size, GH = checked_mul(rnn_gate_count(mode), H, name), D = num_directions();
  // PyTorch's init: every weight and bias from U(-1/sqrt(H), 1/sqrt(H)).
  const double bound = 1.0 / std::sqrt(static_cast<double>(H));
  auto draw = [&](const Shape& s) {
    checked_numel(s, name);  // the error names the layer, not uniform
    return uniform(s, -bound, bound, {}, gen);
  };
  for (int64_t k = 0; k < opts.num_layers; ++k) {
    const int64_t in = k == 0 ? opts.input_size : checked_mul(D, H, name);
    for (int64_t d = 0; d < D; ++d) {
      const std::string sfx = "_l" + std::to_string(k) + (d == 1 ? "_reverse" : "");
      Weights w;
      w.w_ih = register_parameter("weight_ih" + sfx, draw({GH, in}));
      w.w_hh = register_parameter("weight_hh" + sfx, draw({GH, H}));
      if (opts.bias) {
        w.b_ih = register_parameter("bias_ih" + sfx, draw({GH}));
        w.b_hh = register_parameter("bias_hh" + sfx, draw({GH}));
      }
      weights_.push_back(w);
    }
  }
}

const RNNBase::Weights& RNNBase::weights(int64_t layer, int64_t direction) const {
  EMBER_CHECK(layer >= 0 && layer < opts_.num_layers && direction >= 0 && direction < num_directions(), name_,
              "no layer ", layer, " direction ", direction, " (", opts_.num_layers, " layers, ", num_directions(),
              " directions)");
  return weights_[static_cast<size_t>(layer * num_directions() + direction)];
}

RNNResult RNNBase::forward(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& lengths) {
  return run(x, h0, c0, lengths, false);
}

RNNResult RNNBase::forward_reference(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& lengths) {
  return run(x, h0, c0, lengths, true);
}

RNNResult RNNBase::run(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& lengths, bool reference) {
  const char* op = name_;
  const int64_t L = opts_.num_layers, D = num_directions(), H = opts_.hidden_size;
  const int64_t GH = rnn_gate_count(mode_) * H;
  const Tensor& w0 = weights_[0].w_ih;
  EMBER_CHECK(x.defined(), op, "input is an undefined tensor");
  EMBER_CHECK(x.dim() == 3 && x.size(2) == opts_.input_size, op, "input must be ",
              opts_.batch_first ? "(N, T, input_size)" : "(T, N, input_size)", " with input_size = ",
              opts_.input_size, ", got ", shape_str(x.shape()));
  // Under autocast the ops cast their operands to the region's low dtype themselves, so an input
  // or a state already in that dtype (the output of another autocast op) is as good as one in
  // the parameters' dtype.
  const bool autocast = amp::is_autocast_enabled(x.device());
  auto dtype_ok = [&](DType dt, DType want) {
    return dt == want || (autocast && dt == amp::autocast_dtype(x.device()));
  };
  EMBER_CHECK(dtype_ok(x.dtype(), w0.dtype()) && x.device() == w0.device(), op, "input ", describe(x),
              " must have the parameters' dtype and device (weight_ih_l0 ", describe(w0), ")",
              autocast ? " or the autocast dtype" : "");
  const int64_t T = opts_.batch_first ? x.size(1) : x.size(0), N = opts_.batch_first ? x.size(0) : x.size(1);
  const Shape state_shape{L * D, N, H};
  auto check_state = [&](const char* what, const Tensor& s) {
    if (!s.defined()) return;
    EMBER_CHECK(s.shape() == state_shape, op, what, " must be (num_layers * num_directions, N, H) = ",
                shape_str(state_shape), ", got ", shape_str(s.shape()), " (input ", shape_str(x.shape()), ")");
    EMBER_CHECK((dtype_ok(s.dtype(), x.dtype()) || dtype_ok(s.dtype(), w0.dtype())) && s.device() == x.device(), op,
                what, " ", describe(s), " must match the input ", describe(x), " in dtype and device",
                autocast ? " (or have the autocast dtype)" : "");
  };
  check_state("h0", h0);
  EMBER_CHECK(!c0.defined() || mode_ == RNNMode::lstm, op, "c0 ", describe(c0), " given, but only LSTM has a cell state");
  check_state("c0", c0);
  if (lengths.defined()) {
    EMBER_CHECK(lengths.dtype() == DType::i64 && lengths.dim() == 1 && lengths.size(0) == N && lengths.device().is_cpu(),
                op, "lengths must be an i64 CPU tensor of shape (N) = (", N, "), got ", describe(lengths));
    const std::vector<int64_t> v = lengths.to_vector<int64_t>();
    for (int64_t n = 0; n < N; ++n)
      EMBER_CHECK(v[n] >= 0 && v[n] <= T, op, "lengths[", n, "] = ", v[n], " is outside [0, T] = [0, ", T,
                  "] for input ", shape_str(x.shape()));
  }

  Tensor inp = opts_.batch_first ? x.transpose(0, 1) : x;  // (T, N, C)
  std::vector<Tensor> hs, cs;
  for (int64_t k = 0; k < L; ++k) {
    std::vector<Tensor> outs;
    const int64_t C = inp.size(2);
    const Tensor flat = inp.reshape({T * N, C});
    for (int64_t d = 0; d < D; ++d) {
      const Weights& w = weights_[static_cast<size_t>(k * D + d)];
      Tensor gx = matmul(flat, w.w_ih.t());  // (T*N, G*H)
      // RNN and LSTM add both biases to the same pre-activation: fold b_ih into the
      // recurrence's bias (a (G*H) add) instead of a pass over all T*N rows. GRU's b_hn sits
      // inside r * (...), so there b_ih goes onto gates_x.
      Tensor b = w.b_hh;
      if (w.b_ih.defined()) {
        if (mode_ == RNNMode::gru) gx = gx + w.b_ih;
        else b = w.b_ih + w.b_hh;
      }
      gx = gx.view({T, N, GH});
      const Tensor h0k = h0.defined() ? h0.select(0, k * D + d) : Tensor();
      const Tensor c0k = c0.defined() ? c0.select(0, k * D + d) : Tensor();
      const RNNRecurrenceOptions ro{mode_, d == 1};
      RNNRecurrenceResult r = reference ? rnn_recurrence_reference(gx, w.w_hh, b, h0k, c0k, lengths, ro)
                                        : rnn_recurrence(gx, w.w_hh, b, h0k, c0k, lengths, ro);
      outs.push_back(r.output);
      hs.push_back(r.h_n);
      if (mode_ == RNNMode::lstm) cs.push_back(r.c_n);
    }
    inp = D == 2 ? cat(outs, 2) : outs[0];  // (T, N, D*H)
    if (k + 1 < L && opts_.dropout > 0.0 && is_training()) inp = dropout(inp, opts_.dropout, true, gen_);
  }
  RNNResult res;
  res.output = opts_.batch_first ? inp.transpose(0, 1) : inp;
  res.h_n = stack(hs, 0);
  if (mode_ == RNNMode::lstm) res.c_n = stack(cs, 0);
  return res;
}

RNN::RNN(const RNNOptions& opts, Generator* gen)
    : RNNBase("RNN", opts.nonlinearity == RNNNonlinearity::relu ? RNNMode::rnn_relu : RNNMode::rnn_tanh, opts, gen) {}

LSTM::LSTM(const RNNOptions& opts, Generator* gen) : RNNBase("LSTM", RNNMode::lstm, opts, gen) {}

GRU::GRU(const RNNOptions& opts, Generator* gen) : RNNBase("GRU", RNNMode::gru, opts, gen) {}

}  // namespace ember::nn
