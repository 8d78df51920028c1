// QuantizedLinear, QuantizedRNN and quantize_dynamic (ember/nn/quantized.h).
#include <string>
#include <utility>
#include <vector>

#include "ember/autograd/grad_mode.h"
#include "ember/core/error.h"
#include "ember/nn/quantized.h"
#include "ember/ops/ops.h"
#include "ember/ops/rnn.h"
#include "ops/common.h"

namespace ember::nn {
namespace {

int64_t k4_of(int64_t K) { return (K + 3) / 4; }

// Every defined tensor on one device; that device.
Device one_device(const char* what, const std::string& name, const std::vector<Tensor>& ts) {
  Device d = ts.front().device();
  for (const Tensor& t : ts) {
    if (t.defined())
      EMBER_CHECK(t.device() == d, "quantize_dynamic", what, " \"", name, "\" has tensors on ", d, " and ", t.device(),
                  ": move the model to one device first");
  }
  return d;
}

// The int8 rows and f32 scales of a trained float weight (detached: quantising reads values).
std::pair<Tensor, Tensor> quantize_weight(const Tensor& w) {
  NoGradGuard ng;
  QuantizedRows r = quantize_rows(w.detach());
  return {r.q, r.scale};
}

Tensor f32_copy(const Tensor& t) {
  if (!t.defined()) return Tensor();
  NoGradGuard ng;
  return contiguous(to_dtype(t.detach(), DType::f32)).clone();
}

void check_inference_input(const char* op, const Tensor& x) {
  EMBER_CHECK(!(grad_enabled() && x.requires_grad()), op,
              "is inference-only (int8 weights, no backward), but its input requires a gradient: run it under "
              "NoGradGuard, or detach the input");
}

}  // namespace

// --- QuantizedLinear ----------------------------------------------------------------------------

QuantizedLinear::QuantizedLinear(int64_t in_features, int64_t out_features, bool with_bias, Device device)
    : in_(in_features), out_(out_features) {
  EMBER_CHECK(in_features > 0 && out_features > 0, "QuantizedLinear",
              "in_features and out_features must be positive, got (", in_features, ", ", out_features, ")");
  weight = register_buffer("weight",
                           zeros({out_features, k4_of(in_features)}, TensorOptions(DType::i32).with_device(device)));
  weight_scale = register_buffer("weight_scale", zeros({out_features}, TensorOptions(DType::f32).with_device(device)));
  if (with_bias) bias = register_buffer("bias", zeros({out_features}, TensorOptions(DType::f32).with_device(device)));
}

std::shared_ptr<QuantizedLinear> QuantizedLinear::from_float(const Linear& linear) {
  const Tensor& w = linear.weight;
  EMBER_CHECK(w.defined() && w.dim() == 2 && is_floating(w.dtype()), "QuantizedLinear",
              "from_float needs a Linear with a floating (out, in) weight, got ",
              w.defined() ? detail::describe(w) : "undefined");
  const Device d = one_device("Linear", "weight/bias", {w, linear.bias});
  auto q = std::make_shared<QuantizedLinear>(w.size(1), w.size(0), linear.bias.defined(), d);
  auto [wq, ws] = quantize_weight(w);
  NoGradGuard ng;
  q->weight.copy_(wq);
  q->weight_scale.copy_(ws);
  if (linear.bias.defined()) q->bias.copy_(f32_copy(linear.bias));
  q->train(linear.is_training());
  return q;
}

Tensor QuantizedLinear::forward(const Tensor& x) {
  EMBER_CHECK(x.defined(), "QuantizedLinear", "input is an undefined tensor");
  EMBER_CHECK(x.dim() >= 1 && x.size(-1) == in_, "QuantizedLinear", "input ", shape_str(x.shape()),
              " does not end in in_features = ", in_);
  check_inference_input("QuantizedLinear", x);
  return linear_int8(x, weight, weight_scale, bias);
}

// --- QuantizedConv1d ----------------------------------------------------------------------------

QuantizedConv1d::QuantizedConv1d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, Conv1dOptions options,
                                 Device device)
    : in_(in_channels), out_(out_channels), k_(kernel_size), opt_(options) {
  EMBER_CHECK(in_channels > 0 && out_channels > 0 && kernel_size > 0, "QuantizedConv1d",
              "in_channels, out_channels and kernel_size must be positive, got ", in_channels, ", ", out_channels, ", ",
              kernel_size);
  EMBER_CHECK(options.groups == 1, "QuantizedConv1d", "supports groups = 1 only, got ", options.groups);
  EMBER_CHECK(options.stride >= 1 && options.dilation >= 1 && options.padding >= 0, "QuantizedConv1d",
              "needs stride >= 1, dilation >= 1, padding >= 0, got ", options.stride, ", ", options.dilation, ", ",
              options.padding);
  weight = register_buffer(
      "weight", zeros({out_channels, k4_of(in_channels * kernel_size)}, TensorOptions(DType::i32).with_device(device)));
  weight_scale = register_buffer("weight_scale", zeros({out_channels}, TensorOptions(DType::f32).with_device(device)));
  if (options.bias)
    bias = register_buffer("bias", zeros({out_channels}, TensorOptions(DType::f32).with_device(device)));
}

std::shared_ptr<QuantizedConv1d> QuantizedConv1d::from_float(const Conv1d& conv) {
  const Tensor& w = conv.weight;
  const Device d = one_device("Conv1d", "weight/bias", {w, conv.bias});
  Conv1dOptions o = conv.options();
  o.bias = conv.bias.defined();
  auto q = std::make_shared<QuantizedConv1d>(conv.in_channels(), conv.out_channels(), conv.kernel_size(), o, d);
  // Rows in (tap, channel) order: the input windows are then gathered with channels innermost,
  // contiguous runs of C_in values (a row of (channel, tap) order would copy runs of K).
  auto [wq, ws] = quantize_weight(reshape(permute(w.detach(), {0, 2, 1}), {conv.out_channels(), -1}));
  NoGradGuard ng;
  q->weight.copy_(wq);
  q->weight_scale.copy_(ws);
  if (conv.bias.defined()) q->bias.copy_(f32_copy(conv.bias));
  q->train(conv.is_training());
  return q;
}

Tensor QuantizedConv1d::forward(const Tensor& x) {
  const char* op = "QuantizedConv1d";
  EMBER_CHECK(x.defined(), op, "input is an undefined tensor");
  EMBER_CHECK(x.dim() == 3 && x.size(1) == in_, op, "input ", shape_str(x.shape()), " is not (N, in_channels = ", in_,
              ", L)");
  check_inference_input(op, x);
  const int64_t N = x.size(0), span = opt_.dilation * (k_ - 1) + 1;
  const int64_t Lp = x.size(2) + 2 * opt_.padding;
  EMBER_CHECK(Lp >= span, op, "input length ", x.size(2), " (padded ", Lp, ") is shorter than the kernel's span ",
              span);
  const int64_t L_out = (Lp - span) / opt_.stride + 1;
  NoGradGuard ng;
  Tensor xp = opt_.padding > 0 ? pad(x, {opt_.padding, opt_.padding}) : x;
  const Tensor xt = contiguous(xp.transpose(1, 2));                              // (N, Lp, C)
  Tensor u = unfold(xt, 1, span, opt_.stride);                                   // (N, L_out, C, span)
  if (opt_.dilation > 1) u = slice(u, 3, 0, span, opt_.dilation);                // (N, L_out, C, K)
  const Tensor cols = reshape(permute(u, {0, 1, 3, 2}), {N * L_out, in_ * k_});  // rows (tap, channel)
  const Tensor y = linear_int8(cols, weight, weight_scale, bias);                // (N * L_out, C_out)
  return contiguous(permute(reshape(y, {N, L_out, out_}), {0, 2, 1}));
}

// --- QuantizedEmbedding -------------------------------------------------------------------------

QuantizedEmbedding::QuantizedEmbedding(int64_t num_embeddings, int64_t embedding_dim, Device device)
    : num_(num_embeddings), dim_(embedding_dim) {
  EMBER_CHECK(num_embeddings > 0 && embedding_dim > 0, "QuantizedEmbedding",
              "num_embeddings and embedding_dim must be positive, got ", num_embeddings, ", ", embedding_dim);
  weight = register_buffer(
      "weight", zeros({num_embeddings, k4_of(embedding_dim)}, TensorOptions(DType::i32).with_device(device)));
  weight_scale =
      register_buffer("weight_scale", zeros({num_embeddings}, TensorOptions(DType::f32).with_device(device)));
  std::vector<int8_t> eye(static_cast<size_t>(embedding_dim * embedding_dim), 0);
  for (int64_t d = 0; d < embedding_dim; ++d) eye[static_cast<size_t>(d * embedding_dim + d)] = 1;
  eye_ = pack_int8(eye, {embedding_dim, embedding_dim});
}

std::shared_ptr<QuantizedEmbedding> QuantizedEmbedding::from_float(const Embedding& embedding) {
  const Device d = one_device("Embedding", "weight", {embedding.weight});
  auto q = std::make_shared<QuantizedEmbedding>(embedding.num_embeddings(), embedding.embedding_dim(), d);
  auto [wq, ws] = quantize_weight(embedding.weight);
  NoGradGuard ng;
  q->weight.copy_(wq);
  q->weight_scale.copy_(ws);
  q->train(embedding.is_training());
  return q;
}

Tensor QuantizedEmbedding::forward(const Tensor& indices) {
  const char* op = "QuantizedEmbedding";
  EMBER_CHECK(indices.defined(), op, "input is an undefined tensor");
  EMBER_CHECK(is_integral(indices.dtype()), op, "indices must be integers, got ", detail::describe(indices));
  NoGradGuard ng;
  if (eye_.device() != weight.device()) eye_ = eye_.to(weight.device());
  const Tensor ids = reshape(to_dtype(indices, DType::i64), {-1});
  const Tensor rows = index_select(weight, 0, ids);                    // (n, D4) packed
  const Tensor codes = to_dtype(linear_int8(rows, eye_), DType::f32);  // (n, D): the int8 values
  Shape s = indices.shape();
  s.push_back(dim_);
  return reshape(codes * unsqueeze(index_select(weight_scale, 0, ids), 1), s);
}

// --- QuantizedRNN -------------------------------------------------------------------------------

namespace {
const char* mode_name(RNNMode m) {
  switch (m) {
    case RNNMode::lstm:
      return "LSTM";
    case RNNMode::gru:
      return "GRU";
    default:
      return "RNN";
  }
}
}  // namespace

std::string QuantizedRNN::type_name() const { return std::string("Quantized") + mode_name(mode_); }

QuantizedRNN::QuantizedRNN(RNNMode mode, const RNNOptions& opts, Device device) : mode_(mode), opts_(opts) {
  const char* op = "QuantizedRNN";
  EMBER_CHECK(opts.input_size > 0 && opts.hidden_size > 0 && opts.num_layers > 0, op,
              "input_size, hidden_size and num_layers must be positive, got ", opts.input_size, ", ", opts.hidden_size,
              ", ", opts.num_layers);
  const int64_t H = opts.hidden_size, D = opts.bidirectional ? 2 : 1, GH = rnn_gate_count(mode) * H;
  auto i32 = TensorOptions(DType::i32).with_device(device);
  auto f32 = TensorOptions(DType::f32).with_device(device);
  for (int64_t k = 0; k < opts.num_layers; ++k) {
    const int64_t I = k == 0 ? opts.input_size : D * H;
    for (int64_t d = 0; d < D; ++d) {
      const std::string sfx = "_l" + std::to_string(k) + (d == 1 ? "_reverse" : "");
      Weights w;
      w.w_ih = register_buffer("weight_ih" + sfx, zeros({GH, k4_of(I)}, i32));
      w.w_hh = register_buffer("weight_hh" + sfx, zeros({GH, k4_of(H)}, i32));
      if (opts.bias) {
        w.b_ih = register_buffer("bias_ih" + sfx, zeros({GH}, f32));
        w.b_hh = register_buffer("bias_hh" + sfx, zeros({GH}, f32));
      }
      w.s_ih = register_buffer("weight_ih_scale" + sfx, zeros({GH}, f32));
      w.s_hh = register_buffer("weight_hh_scale" + sfx, zeros({GH}, f32));
      weights_.push_back(w);
    }
  }
}

std::shared_ptr<QuantizedRNN> QuantizedRNN::from_float(const RNNBase& rnn) {
  const RNNOptions& o = rnn.options();
  std::vector<Tensor> all;
  for (int64_t k = 0; k < o.num_layers; ++k)
    for (int64_t d = 0; d < rnn.num_directions(); ++d) {
      const auto& w = rnn.weights(k, d);
      all.insert(all.end(), {w.w_ih, w.w_hh, w.b_ih, w.b_hh});
    }
  const Device dev = one_device(mode_name(rnn.mode()), "weights", all);
  auto q = std::make_shared<QuantizedRNN>(rnn.mode(), o, dev);
  NoGradGuard ng;
  for (int64_t k = 0; k < o.num_layers; ++k)
    for (int64_t d = 0; d < rnn.num_directions(); ++d) {
      const auto& w = rnn.weights(k, d);
      Weights& qw = q->weights_[static_cast<size_t>(k * rnn.num_directions() + d)];
      auto [ih, sih] = quantize_weight(w.w_ih);
      auto [hh, shh] = quantize_weight(w.w_hh);
      qw.w_ih.copy_(ih);
      qw.s_ih.copy_(sih);
      qw.w_hh.copy_(hh);
      qw.s_hh.copy_(shh);
      if (w.b_ih.defined()) qw.b_ih.copy_(f32_copy(w.b_ih));
      if (w.b_hh.defined()) qw.b_hh.copy_(f32_copy(w.b_hh));
    }
  q->train(rnn.is_training());
  return q;
}

RNNResult QuantizedRNN::forward(const Tensor& x_in, const Tensor& h0, const Tensor& c0, const Tensor& lengths) {
  const std::string name = type_name();
  const char* op = name.c_str();
  const int64_t L = opts_.num_layers, D = opts_.bidirectional ? 2 : 1, H = opts_.hidden_size;
  const Device dev = weights_[0].w_ih.device();
  EMBER_CHECK(x_in.defined(), op, "input is an undefined tensor");
  EMBER_CHECK(x_in.dim() == 3 && x_in.size(2) == opts_.input_size, op, "input must be ",
              opts_.batch_first ? "(N, T, input_size)" : "(T, N, input_size)", " with input_size = ", opts_.input_size,
              ", got ", shape_str(x_in.shape()));
  EMBER_CHECK(is_floating(x_in.dtype()) && x_in.device() == dev, op, "input ", detail::describe(x_in),
              " must be floating and on the weights' device ", dev);
  check_inference_input(op, x_in);
  const int64_t T = opts_.batch_first ? x_in.size(1) : x_in.size(0),
                N = opts_.batch_first ? x_in.size(0) : x_in.size(1);
  const Shape state_shape{L * D, N, H};
  for (const auto& [what, s] : {std::pair<const char*, Tensor>{"h0", h0}, {"c0", c0}}) {
    if (!s.defined()) continue;
    EMBER_CHECK(s.shape() == state_shape && s.device() == dev && is_floating(s.dtype()), op, what,
                " must be floating (num_layers * num_directions, N, H) = ", shape_str(state_shape), " on ", dev,
                ", got ", detail::describe(s));
  }
  EMBER_CHECK(!c0.defined() || mode_ == RNNMode::lstm, op, "c0 given, but only LSTM has a cell state");
  std::vector<int64_t> lens;
  if (lengths.defined()) {
    EMBER_CHECK(
        lengths.dtype() == DType::i64 && lengths.dim() == 1 && lengths.size(0) == N && lengths.device().is_cpu(), op,
        "lengths must be an i64 CPU tensor of shape (N) = (", N, "), got ", detail::describe(lengths));
    lens = lengths.to_vector<int64_t>();
    for (int64_t n = 0; n < N; ++n)
      EMBER_CHECK(lens[n] >= 0 && lens[n] <= T, op, "lengths[", n, "] = ", lens[n], " is outside [0, T] = [0, ", T,
                  "]");
  }
  NoGradGuard ng;
  // mask[t] (N, 1): 1 while step t is inside the sequence.
  std::vector<Tensor> mask;
  if (!lens.empty()) {
    for (int64_t t = 0; t < T; ++t) {
      std::vector<float> m(static_cast<size_t>(N));
      for (int64_t n = 0; n < N; ++n) m[n] = t < lens[n] ? 1.f : 0.f;
      mask.push_back(to_device(from_vector(m, {N, 1}), dev));
    }
  }
  Tensor inp = to_dtype(opts_.batch_first ? x_in.transpose(0, 1) : x_in, DType::f32);  // (T, N, C)
  std::vector<Tensor> hs, cs;
  const int64_t G = rnn_gate_count(mode_);
  for (int64_t k = 0; k < L; ++k) {
    std::vector<Tensor> outs;
    for (int64_t d = 0; d < D; ++d) {
      const Weights& w = weights_[static_cast<size_t>(k * D + d)];
      // RNN and LSTM add both biases to one pre-activation: fold them into the projection.
      Tensor bx = w.b_ih, bh = w.b_hh;
      if (mode_ != RNNMode::gru && w.b_ih.defined()) {
        bx = w.b_ih + w.b_hh;
        bh = Tensor();
      }
      const Tensor gx = linear_int8(inp, w.w_ih, w.s_ih, bx);  // (T, N, G*H)
      Tensor h = h0.defined() ? to_dtype(h0.select(0, k * D + d), DType::f32)
                              : zeros({N, H}, TensorOptions(DType::f32).with_device(dev));
      Tensor c = mode_ == RNNMode::lstm ? (c0.defined() ? to_dtype(c0.select(0, k * D + d), DType::f32)
                                                        : zeros({N, H}, TensorOptions(DType::f32).with_device(dev)))
                                        : Tensor();
      std::vector<Tensor> out(static_cast<size_t>(T));
      for (int64_t s = 0; s < T; ++s) {
        const int64_t t = d == 1 ? T - 1 - s : s;
        const Tensor g = gx.select(0, t);
        const Tensor gh = linear_int8(h, w.w_hh, w.s_hh, bh);
        Tensor hn, cn;
        if (mode_ == RNNMode::lstm) {
          const Tensor a = g + gh;
          const Tensor i = sigmoid(a.narrow(1, 0, H)), f = sigmoid(a.narrow(1, H, H));
          const Tensor gg = tanh(a.narrow(1, 2 * H, H)), o = sigmoid(a.narrow(1, 3 * H, H));
          cn = f * c + i * gg;
          hn = o * tanh(cn);
        } else if (mode_ == RNNMode::gru) {
          const Tensor r = sigmoid(g.narrow(1, 0, H) + gh.narrow(1, 0, H));
          const Tensor z = sigmoid(g.narrow(1, H, H) + gh.narrow(1, H, H));
          const Tensor n = tanh(g.narrow(1, 2 * H, H) + r * gh.narrow(1, 2 * H, H));
          hn = n + z * (h - n);
        } else {
          const Tensor a = g + gh;
          hn = mode_ == RNNMode::rnn_relu ? relu(a) : tanh(a);
        }
        (void)G;
        if (!mask.empty()) {
          const Tensor& m = mask[static_cast<size_t>(t)];
          out[static_cast<size_t>(t)] = hn * m;
          hn = h + m * (hn - h);
          if (cn.defined()) cn = c + m * (cn - c);
        } else {
          out[static_cast<size_t>(t)] = hn;
        }
        h = hn;
        if (cn.defined()) c = cn;
      }
      outs.push_back(T > 0 ? stack(out, 0) : zeros({0, N, H}, TensorOptions(DType::f32).with_device(dev)));
      hs.push_back(h);
      if (mode_ == RNNMode::lstm) cs.push_back(c);
    }
    inp = D == 2 ? cat(outs, 2) : outs[0];
  }
  RNNResult res;
  res.output = opts_.batch_first ? contiguous(inp.transpose(0, 1)) : inp;
  res.h_n = stack(hs, 0);
  if (mode_ == RNNMode::lstm) res.c_n = stack(cs, 0);
  return res;
}

// --- quantize_dynamic ---------------------------------------------------------------------------

namespace {
struct Swap {
  Module* parent;
  std::string name;
  std::shared_ptr<Module> replacement;
};

void collect(Module& m, const QuantizeOptions& o, std::vector<Swap>& swaps) {
  for (const auto& [name, child] : m.named_children()) {
    if (o.linear) {
      if (auto* lin = dynamic_cast<Linear*>(child.get())) {
        swaps.push_back({&m, name, QuantizedLinear::from_float(*lin)});
        continue;
      }
    }
    if (o.embedding) {
      if (auto* emb = dynamic_cast<Embedding*>(child.get())) {
        swaps.push_back({&m, name, QuantizedEmbedding::from_float(*emb)});
        continue;
      }
    }
    if (o.conv) {
      if (auto* conv = dynamic_cast<Conv1d*>(child.get()); conv && conv->options().groups == 1) {
        swaps.push_back({&m, name, QuantizedConv1d::from_float(*conv)});
        continue;
      }
    }
    if (o.rnn) {
      if (auto* rnn = dynamic_cast<RNNBase*>(child.get())) {
        swaps.push_back({&m, name, QuantizedRNN::from_float(*rnn)});
        continue;
      }
    }
    collect(*child, o, swaps);
  }
}
}  // namespace

int64_t quantize_dynamic(Module& root, const QuantizeOptions& options) {
  std::vector<Swap> swaps;
  collect(root, options, swaps);  // every conversion first: an error leaves the model as it was
  for (Swap& s : swaps) s.parent->replace_module(s.name, s.replacement);
  for (Tensor p : root.parameters()) p.requires_grad_(false);
  return static_cast<int64_t>(swaps.size());
}

std::shared_ptr<Module> child_module(const Module& m, const std::string& name) {
  for (const auto& [n, c] : m.named_children())
    if (n == name) return c;
  EMBER_FAIL("child", "module ", m.type_name(), " has no submodule \"", name, "\"");
}

void throw_child_type(const Module& m, const std::string& name) {
  EMBER_FAIL("child", "submodule \"", name, "\" of ", m.type_name(), " is a ", child_module(m, name)->type_name(),
             ", not the requested type");
}

int64_t state_dict_bytes(const Module& m) {
  int64_t bytes = 0;
  for (const auto& [name, t] : m.state_dict().tensors)
    if (t.defined()) bytes += t.numel() * static_cast<int64_t>(dtype_size(t.dtype()));
  return bytes;
}

}  // namespace ember::nn
