// rnn_recurrence: argument checks, dtype handling, dispatch to src/cpu/rnn.cpp or
// kernels/rnn.cu, the recorded backward (which calls rnn_recurrence_backward), and the composed
// reference. The backends see contiguous tensors in the compute dtype; lengths arrive as a
// contiguous i64 tensor on the backend's device.
#include "ember/ops/rnn.h"

#include <string>
#include <vector>

#include "ops/common.h"
#include "ops/op_call.h"
#include "ops/dispatch.h"

namespace ember {
namespace {
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;
using detail::prepared;
using detail::describe;
using detail::make_tensor;

struct Dims {
  int64_t T, N, H, G;
};

int64_t workspace_width(RNNMode mode, int64_t H) {
  switch (mode) {
    case RNNMode::lstm: return checked_mul(6, H, "rnn");
    case RNNMode::gru: return checked_mul(4, H, "rnn");
    default: return H;
  }
}

// What the other arguments are checked against: the gates' (or grad_output's) geometry.
struct Ref {
  const char* name;  // "gates_x" or "grad_output"
  Shape shape;
  DType dtype;
  Device device;
  std::string str() const { return std::string(name) + " " + shape_str(shape) + " " + dtype_name(dtype) + " " + device.str(); }
};

// A (rows) state argument: (N, H), the layer's dtype and device, or undefined.
void check_state(const char* op, const char* what, const Tensor& s, const Ref& ref, int64_t N, int64_t H) {
  if (!s.defined()) return;
  EMBER_CHECK(s.dim() == 2 && s.size(0) == N && s.size(1) == H, op, what, " must have shape (N, H) = (", N, ", ",
              H, "), got ", shape_str(s.shape()));
  EMBER_CHECK(s.dtype() == ref.dtype, op, what, " ", describe(s), " has a different dtype than ", ref.str());
  EMBER_CHECK(s.device() == ref.device, op, what, " ", describe(s), " lives on another device than ", ref.str());
}

void check_lengths(const char* op, const Tensor& lengths, int64_t T, int64_t N) {
  if (!lengths.defined()) return;
  EMBER_CHECK(lengths.dtype() == DType::i64 && lengths.dim() == 1 && lengths.size(0) == N && lengths.device().is_cpu(),
              op, "lengths must be an i64 CPU tensor of shape (N) = (", N, "), got ", describe(lengths));
  const std::vector<int64_t> v = lengths.to_vector<int64_t>();
  for (int64_t n = 0; n < N; ++n)
    EMBER_CHECK(v[n] >= 0 && v[n] <= T, op, "lengths[", n, "] = ", v[n], " is outside [0, T] = [0, ", T,
                "] (gates_x has T = ", T, " steps)");
}

// Everything but the gates tensor itself, against its geometry ref (T, N, G*H).
Dims check_rest(const char* op, const Ref& ref, const Tensor& w_hh, const Tensor& b_hh, const Tensor& h0,
                const Tensor& c0, const Tensor& lengths, RNNMode mode) {
  EMBER_CHECK(w_hh.defined(), op, "w_hh must be a defined tensor");
  EMBER_CHECK(w_hh.dim() == 2 && w_hh.size(1) > 0, op, "w_hh must be (G*H, H) with H > 0, got ",
              shape_str(w_hh.shape()));
  const int64_t G = rnn_gate_count(mode), H = w_hh.size(1), T = ref.shape[0], N = ref.shape[1];
  checked_mul(checked_mul(G, H, op), 6, op);  // every G * H and workspace width below fits
  EMBER_CHECK(w_hh.size(0) == G * H, op, rnn_mode_name(mode), " has ", G, " gates: w_hh must be (", G, "*H, H) = (",
              G * H, ", ", H, "), got ", shape_str(w_hh.shape()));
  EMBER_CHECK(ref.shape[2] == G * H, op, ref.name, " ", shape_str(ref.shape), " must end in G*H = ", G * H,
              " to match w_hh ", shape_str(w_hh.shape()), " (", rnn_mode_name(mode), ")");
  EMBER_CHECK(w_hh.dtype() == ref.dtype, op, "w_hh ", describe(w_hh), " and ", ref.str(), " have different dtypes");
  EMBER_CHECK(w_hh.device() == ref.device, op, "w_hh ", describe(w_hh), " and ", ref.str(),
              " live on different devices");
  if (b_hh.defined()) {
    EMBER_CHECK(b_hh.dim() == 1 && b_hh.size(0) == G * H, op, "b_hh must be (G*H) = (", G * H, "), got ",
                shape_str(b_hh.shape()));
    EMBER_CHECK(b_hh.dtype() == ref.dtype && b_hh.device() == ref.device, op, "b_hh ", describe(b_hh),
                " must match ", ref.str(), " in dtype and device");
  }
  check_state(op, "h0", h0, ref, N, H);
  EMBER_CHECK(!c0.defined() || mode == RNNMode::lstm, op, "c0 ", describe(c0), " given to a ", rnn_mode_name(mode),
              " recurrence (only LSTM has a cell state)");
  check_state(op, "c0", c0, ref, N, H);
  check_lengths(op, lengths, T, N);
  return {T, N, H, G};
}

Dims check_recurrence(const char* op, const Tensor& gx, const Tensor& w_hh, const Tensor& b_hh, const Tensor& h0,
                      const Tensor& c0, const Tensor& lengths, RNNMode mode) {
  EMBER_CHECK(gx.defined(), op, "gates_x must be a defined tensor");
  EMBER_CHECK(is_floating(gx.dtype()), op, "gates_x must be a float tensor, got ", describe(gx));
  EMBER_CHECK(gx.dim() == 3, op, "gates_x must be (T, N, G*H), got ", shape_str(gx.shape()));
  return check_rest(op, {"gates_x", gx.shape(), gx.dtype(), gx.device()}, w_hh, b_hh, h0, c0, lengths, mode);
}


// A fresh (N, H) state in dtype dt on dev: a copy of s, or zeros when s is undefined. The
// backends update it in place.
Tensor fresh_state(const Tensor& s, int64_t N, int64_t H, DType dt, Device dev) {
  Tensor out = make_tensor({N, H}, dt, dev);
  if (s.defined()) backend::copy(s.detach(), out);
  else backend::call<prim::fill>(out.device(), out, 0.0);
  return out;
}

Tensor lengths_on(const Tensor& lengths, Device dev) {
  return lengths.defined() ? contiguous(lengths.detach()).to(dev) : Tensor();
}

Tensor back_to(const Tensor& t, DType dt) { return t.defined() && t.dtype() != dt ? to_dtype(t, dt) : t; }

}  // namespace

int64_t rnn_gate_count(RNNMode mode) {
  switch (mode) {
    case RNNMode::lstm: return 4;
    case RNNMode::gru: return 3;
    default: return 1;
  }
}

const char* rnn_mode_name(RNNMode mode) {
  switch (mode) {
    case RNNMode::rnn_tanh: return "RNN_TANH";
    case RNNMode::rnn_relu: return "RNN_RELU";
    case RNNMode::lstm: return "LSTM";
    case RNNMode::gru: return "GRU";
  }
  return "?";
}

// What observers see: the options as attributes, and the results of the struct-returning ops
// (OpScope::done).
Attrs rnn_attrs(const RNNRecurrenceOptions& o) {
  return Attrs{{"mode", rnn_mode_name(o.mode)}, {"reverse", o.reverse}};
}
std::vector<Tensor> op_outputs(const RNNRecurrenceForward& r) {
  return {r.output, r.h_n, r.c_n, r.workspace, r.h_prev};
}
std::vector<Tensor> op_outputs(const RNNRecurrenceGrads& r) {
  return {r.grad_gates_x, r.grad_w_hh, r.grad_b_hh, r.grad_h0, r.grad_c0};
}
std::vector<Tensor> op_outputs(const RNNRecurrenceResult& r) { return {r.output, r.h_n, r.c_n}; }

RNNRecurrenceForward rnn_recurrence_forward(const Tensor& gates_x_in, const Tensor& w_hh_in, const Tensor& b_hh_in,
                                            const Tensor& h0_in, const Tensor& c0_in, const Tensor& lengths_in,
                                            RNNRecurrenceOptions opts, bool save_for_backward) {
  detail::OpScope scope(OpId::rnn_recurrence_forward,
                        [&] { return rnn_attrs(opts); },
                        gates_x_in, w_hh_in, b_hh_in, h0_in, c0_in, lengths_in);
  const Tensor& gates_x = scope.in(0, gates_x_in);
  const Tensor& w_hh = scope.in(1, w_hh_in);
  const Tensor& b_hh = scope.in(2, b_hh_in);
  const Tensor& h0 = scope.in(3, h0_in);
  const Tensor& c0 = scope.in(4, c0_in);
  const Tensor& lengths = scope.in(5, lengths_in);
  const Dims d = check_recurrence("rnn_recurrence", gates_x, w_hh, b_hh, h0, c0, lengths, opts.mode);
  const Device dev = gates_x.device();
  const DType dt = gates_x.dtype(), cd = backend::compute_dtype_on(dt, dev);
  const bool lstm = opts.mode == RNNMode::lstm;
  const Tensor gx = prepared(gates_x, cd), w = prepared(w_hh, cd), b = prepared(b_hh, cd);
  RNNRecurrenceForward f;
  f.output = make_tensor({d.T, d.N, d.H}, cd, dev);
  f.h_n = fresh_state(h0, d.N, d.H, cd, dev);
  if (lstm) f.c_n = fresh_state(c0, d.N, d.H, cd, dev);
  if (save_for_backward) {
    f.workspace = make_tensor({d.T, d.N, workspace_width(opts.mode, d.H)}, cd, dev);
    f.h_prev = make_tensor({d.T, d.N, d.H}, cd, dev);
  }
  const Tensor len = lengths_on(lengths, dev);
  backend::call<prim::rnn_forward>(gx.device(), opts.mode, opts.reverse, gx, w, b, len, f.output, f.h_n, f.c_n, f.workspace,
                                     f.h_prev, dt);
  f.output = back_to(f.output, dt);
  f.h_n = back_to(f.h_n, dt);
  f.c_n = back_to(f.c_n, dt);
  return scope.done(f);
}

RNNRecurrenceGrads rnn_recurrence_backward(const Tensor& grad_output, const Tensor& grad_h_n,
                                           const Tensor& grad_c_n, const Tensor& w_hh, const Tensor& workspace,
                                           const Tensor& h_prev, const Tensor& lengths, RNNRecurrenceOptions opts,
                                           std::array<bool, 5> needs) {
  detail::OpScope scope(OpId::rnn_recurrence_backward,
                        [&] { return rnn_attrs(opts); },
                        grad_output, grad_h_n, grad_c_n, w_hh, workspace, h_prev, lengths);
  const char* op = "rnn_recurrence_backward";
  EMBER_CHECK(grad_output.defined() && w_hh.defined() && workspace.defined() && h_prev.defined(), op,
              "grad_output, w_hh, workspace and h_prev must be defined tensors");
  EMBER_CHECK(grad_output.dim() == 3, op, "grad_output must be (T, N, H), got ", shape_str(grad_output.shape()));
  const int64_t T = grad_output.size(0), N = grad_output.size(1), H = grad_output.size(2);
  const int64_t G = rnn_gate_count(opts.mode);
  EMBER_CHECK(is_floating(grad_output.dtype()), op, "grad_output must be a float tensor, got ", describe(grad_output));
  EMBER_CHECK(w_hh.dim() == 2 && w_hh.size(1) == H, op, "grad_output ", shape_str(grad_output.shape()),
              " does not end in H of w_hh ", shape_str(w_hh.shape()));
  EMBER_CHECK(opts.mode == RNNMode::lstm || !grad_c_n.defined(), op, "grad_c_n given to a ", rnn_mode_name(opts.mode),
              " recurrence");
  // The forward's checks, against the geometry the gates had: (T, N, G*H).
  check_rest(op, {"grad_output", {T, N, G * H}, grad_output.dtype(), grad_output.device()}, w_hh, Tensor(), grad_h_n,
             grad_c_n, lengths, opts.mode);
  const Device dev = grad_output.device();
  const DType dt = grad_output.dtype(), cd = backend::compute_dtype_on(dt, dev);
  const Shape ws_shape{T, N, workspace_width(opts.mode, H)}, hp_shape{T, N, H};
  EMBER_CHECK(workspace.shape() == ws_shape && workspace.dtype() == cd && workspace.device() == dev, op,
              "workspace must be ", shape_str(ws_shape), " ", cd, " on ", dev, " (from rnn_recurrence_forward), got ",
              describe(workspace));
  EMBER_CHECK(h_prev.shape() == hp_shape && h_prev.dtype() == cd && h_prev.device() == dev, op, "h_prev must be ",
              shape_str(hp_shape), " ", cd, " on ", dev, " (from rnn_recurrence_forward), got ", describe(h_prev));

  RNNRecurrenceGrads r;
  if (!(needs[0] || needs[1] || needs[2] || needs[3] || needs[4])) return scope.done(r);
  const bool lstm = opts.mode == RNNMode::lstm;
  const Tensor go = prepared(grad_output, cd), w = prepared(w_hh, cd);
  const Tensor ws = contiguous(workspace.detach()), hp = contiguous(h_prev.detach());
  Tensor dh = fresh_state(grad_h_n, N, H, cd, dev);
  Tensor dc = lstm ? fresh_state(grad_c_n, N, H, cd, dev) : Tensor();
  Tensor dgx = make_tensor({T, N, G * H}, cd, dev);
  // Forward direction, RNN and LSTM: time order is step order and the hidden projection's
  // gradient is the gates' gradient, so one buffer serves both.
  Tensor dgh = (opts.mode != RNNMode::gru && !opts.reverse) ? dgx : make_tensor({T, N, G * H}, cd, dev);
  const Tensor len = lengths_on(lengths, dev);
  backend::call<prim::rnn_backward>(go.device(), opts.mode, opts.reverse, go, w, ws, hp, len, dh, dc, dgx, dgh, dt);
  if (needs[1]) r.grad_w_hh = back_to(matmul(dgh.view({T * N, G * H}).t(), hp.view({T * N, H})), dt);
  if (needs[2]) r.grad_b_hh = back_to(sum(dgh, {0, 1}), dt);
  if (needs[0]) r.grad_gates_x = back_to(dgx, dt);
  if (needs[3]) r.grad_h0 = back_to(dh, dt);
  if (needs[4] && lstm) r.grad_c0 = back_to(dc, dt);
  return scope.done(r);
}

RNNRecurrenceResult rnn_recurrence(const Tensor& gates_x_in, const Tensor& w_hh_in, const Tensor& b_hh_in,
                                   const Tensor& h0_in,
                                   const Tensor& c0_in, const Tensor& lengths_in, RNNRecurrenceOptions opts) {
  detail::OpScope scope(OpId::rnn_recurrence,
                        [&] { return rnn_attrs(opts); },
                        gates_x_in, w_hh_in, b_hh_in, h0_in, c0_in, lengths_in);
  const Tensor& gates_x = scope.in(0, gates_x_in);
  const Tensor& w_hh = scope.in(1, w_hh_in);
  const Tensor& b_hh = scope.in(2, b_hh_in);
  const Tensor& h0 = scope.in(3, h0_in);
  const Tensor& c0 = scope.in(4, c0_in);
  const Tensor& lengths = scope.in(5, lengths_in);
  const bool train = grad_enabled() && any_requires_grad({gates_x, w_hh, b_hh, h0, c0});
  RNNRecurrenceForward f = rnn_recurrence_forward(gates_x, w_hh, b_hh, h0, c0, lengths, opts, train);
  if (!train) return scope.done(RNNRecurrenceResult{f.output, f.h_n, f.c_n});
  const bool lstm = opts.mode == RNNMode::lstm;
  std::vector<Tensor> outs{f.output, f.h_n};
  if (lstm) outs.push_back(f.c_n);
  // lengths is copied so a later in-place change cannot alter the backward.
  const Tensor len = lengths.defined() ? clone(lengths.detach()) : Tensor();
  record(
      "rnn_recurrence", {gates_x, w_hh, b_hh, h0, c0}, outs,
      [opts, len, lstm](const Grads& g, const Grads& s, const Needs& n) {
        RNNRecurrenceGrads r = rnn_recurrence_backward(g[0], g[1], lstm ? g[2] : Tensor(), s[2], s[0], s[1], len,
                                                       opts, {n[0], n[1], n[2], n[3], n[4]});
        return Grads{r.grad_gates_x, r.grad_w_hh, r.grad_b_hh, r.grad_h0, r.grad_c0};
      },
      {f.workspace, f.h_prev, w_hh});
  return scope.done(RNNRecurrenceResult{f.output, f.h_n, f.c_n});
}

RNNRecurrenceResult rnn_recurrence_reference(const Tensor& gates_x, const Tensor& w_hh, const Tensor& b_hh,
                                             const Tensor& h0, const Tensor& c0, const Tensor& lengths,
                                             RNNRecurrenceOptions opts) {
  const Dims d = check_recurrence("rnn_recurrence_reference", gates_x, w_hh, b_hh, h0, c0, lengths, opts.mode);
  const int64_t T = d.T, N = d.N, H = d.H, GH = d.G * d.H;
  const Device dev = gates_x.device();
  const DType dt = gates_x.dtype(), sd = compute_dtype(dt);  // f16/bf16 in f32, like the kernels
  const TensorOptions o = TensorOptions(sd).with_device(dev);
  auto f = [&](const Tensor& t) { return t.defined() ? to_dtype(t, sd) : t; };
  const Tensor x = f(gates_x), w = f(w_hh), b = f(b_hh);
  Tensor h = h0.defined() ? f(h0) : zeros({N, H}, o);
  Tensor c = opts.mode == RNNMode::lstm ? (c0.defined() ? f(c0) : zeros({N, H}, o)) : Tensor();
  // Step s of sequence n reads and writes time index idx[s, n]: s forward, length-1-s in
  // reverse within the sequence's length, s past it. This permutes each column and undoes
  // itself, so one gather maps time order to step order and back.
  std::vector<int64_t> len(static_cast<size_t>(N), T), idx(static_cast<size_t>(T * N));
  if (lengths.defined()) len = lengths.to_vector<int64_t>();
  std::vector<bool> active(static_cast<size_t>(T * N));
  for (int64_t s = 0; s < T; ++s)
    for (int64_t n = 0; n < N; ++n) {
      active[s * N + n] = s < len[n];
      idx[s * N + n] = (opts.reverse && s < len[n]) ? len[n] - 1 - s : s;
    }
  const Tensor index = from_vector(idx, {T, N, 1}).to(dev);
  const Tensor mask = from_vector(active, {T, N, 1}, DType::boolean).to(dev);
  const Tensor zero = scalar_tensor(0.0, o);
  auto permuted = [&](const Tensor& t, int64_t width) {
    return opts.reverse ? gather(t, 0, contiguous(expand(index, {T, N, width}))) : t;
  };
  const Tensor xs = permuted(x, GH);  // (T, N, G*H) in step order
  auto block = [&](const Tensor& t, int64_t k) { return narrow(t, 1, k * H, H); };
  std::vector<Tensor> outs;
  for (int64_t s = 0; s < T; ++s) {
    const Tensor xt = select(xs, 0, s);  // (N, G*H)
    Tensor hh = matmul(h, w.t());        // (N, G*H)
    if (b.defined()) hh = hh + b;
    Tensor hn, cn;
    switch (opts.mode) {
      case RNNMode::rnn_tanh: hn = tanh(xt + hh); break;
      case RNNMode::rnn_relu: hn = relu(xt + hh); break;
      case RNNMode::lstm: {
        const Tensor gates = xt + hh;
        const Tensor i = sigmoid(block(gates, 0)), fg = sigmoid(block(gates, 1));
        const Tensor g = tanh(block(gates, 2)), og = sigmoid(block(gates, 3));
        cn = fg * c + i * g;
        hn = og * tanh(cn);
        break;
      }
      case RNNMode::gru: {
        const Tensor r = sigmoid(block(xt, 0) + block(hh, 0)), z = sigmoid(block(xt, 1) + block(hh, 1));
        const Tensor n = tanh(block(xt, 2) + r * block(hh, 2));
        hn = (1.0 - z) * n + z * h;
        break;
      }
    }
    if (lengths.defined()) {
      const Tensor m = select(mask, 0, s);  // (N, 1)
      h = where(m, hn, h);
      if (cn.defined()) c = where(m, cn, c);
      outs.push_back(where(m, hn, zero));
    } else {
      h = hn;
      c = cn;
      outs.push_back(hn);
    }
  }
  Tensor out = T > 0 ? permuted(stack(outs, 0), H) : zeros({0, N, H}, o);
  return {back_to(out, dt), back_to(h, dt), back_to(c, dt)};
}

}  // namespace ember
