// Exports one small model per layer family to <dir>/<family>.onnx with its sample inputs and
// ember's outputs in <dir>/<family>.sample.safetensors; check_onnx.py runs the file in
// onnxruntime and compares. Usage: onnx_models <dir> <family>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ember/ember.h"
#include "ember/io/onnx.h"

using namespace ember;

namespace {

Generator& gen() {
  static Generator g(1234);
  return g;
}
Tensor rand_f32(const Shape& s) { return randn(s, TensorOptions(DType::f32), &gen()); }
Tensor tokens(const Shape& s, int64_t vocab) { return randint(0, vocab, s, TensorOptions(DType::i64), &gen()); }

struct Case {
  std::shared_ptr<nn::Module> module;
  std::vector<Tensor> inputs;
  io::ExportOptions options;
  io::ForwardFn forward;
};

// Linear and every activation, softmax, dropout (eval), a flatten and a residual sum.
class Mlp : public nn::Module {
 public:
  Mlp() {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(6, 16, true, &gen()));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(16, 16, true, &gen()));
    fc3 = register_module("fc3", std::make_shared<nn::Linear>(16, 5, false, &gen()));
    drop = register_module("drop", std::make_shared<nn::Dropout>(0.3, &gen()));
  }
  Tensor forward(const Tensor& x) {  // x (N, 2, 3)
    Tensor h = fc1->forward(x.flatten(1));
    Tensor a = relu(h) + gelu(h) + gelu(h, "tanh") * 0.5 + tanh(h) - sigmoid(h) + silu(h);
    a = drop->forward(a);
    Tensor b = fc2->forward(a.view({-1, 4, 4}).transpose(1, 2).reshape({-1, 16}));
    Tensor c = clamp(b, -1.5, 2.0) + mean(a, {1}, true) - amax(a, {1}, true) + exp(b * 0.1) / (sqrt(abs(b) + 1.0));
    return softmax(fc3->forward(c), -1) + log_softmax(fc3->forward(c), 1);
  }
  std::shared_ptr<nn::Linear> fc1, fc2, fc3;
  std::shared_ptr<nn::Dropout> drop;
};

// Embedding + LayerNorm + a 3-D Linear over (N, T, D), pooled.
class EmbedNorm : public nn::Module {
 public:
  EmbedNorm() {
    emb = register_module("emb", std::make_shared<nn::Embedding>(20, 8, std::nullopt, &gen()));
    norm = register_module("norm", std::make_shared<nn::LayerNorm>(8));
    fc = register_module("fc", std::make_shared<nn::Linear>(8, 3, true, &gen()));
  }
  Tensor forward(const Tensor& idx) {  // idx (N, T) i64
    Tensor h = norm->forward(emb->forward(idx));
    return sum(fc->forward(h), {1}) + mean(argmax(h, 2, false).to(DType::f32), {1}, true);
  }
  std::shared_ptr<nn::Embedding> emb;
  std::shared_ptr<nn::LayerNorm> norm;
  std::shared_ptr<nn::Linear> fc;
};

// Conv1d and the four pools.
class ConvPool : public nn::Module {
 public:
  ConvPool() {
    nn::Conv1dOptions o;
    o.padding = 1;
    conv = register_module("conv", std::make_shared<nn::Conv1d>(4, 6, 3, o, &gen()));
    nn::Conv1dOptions o2;
    o2.stride = 2, o2.dilation = 2, o2.groups = 2;
    conv2 = register_module("conv2", std::make_shared<nn::Conv1d>(6, 6, 3, o2, &gen()));
  }
  Tensor forward(const Tensor& x) {  // x (N, 4, L)
    Tensor h = relu(conv->forward(x));
    Tensor m = nn::max_pool1d(h, 3, 1, 1);
    Tensor a = nn::avg_pool1d(h, 2, 1, 1);
    Tensor c = conv2->forward(m + a.narrow(2, 0, m.size(2)));
    return cat({nn::global_max_pool1d(c, false), nn::global_avg_pool1d(c, false)}, 1);
  }
  std::shared_ptr<nn::Conv1d> conv, conv2;
};

template <class R>
class Recurrent : public nn::Module {
 public:
  explicit Recurrent(const nn::RNNOptions& o) { rnn = register_module("rnn", std::make_shared<R>(o, &gen())); }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) {
    nn::RNNResult r = rnn->forward(in[0], Tensor(), Tensor(), in.size() > 1 ? in[1] : Tensor());
    std::vector<Tensor> out{r.output, r.h_n};
    if (r.c_n.defined()) out.push_back(r.c_n);
    return out;
  }
  std::shared_ptr<R> rnn;
};

// A pre-norm causal encoder with a key padding mask, and a post-norm one without.
class Encoder : public nn::Module {
 public:
  Encoder() {
    nn::TransformerLayerOptions o;
    o.d_model = 16, o.nhead = 2, o.dim_feedforward = 24, o.dropout = 0.1, o.batch_first = true;
    o.norm_first = true, o.activation = nn::Activation::gelu;
    pos = register_module("pos", std::make_shared<nn::LearnedPositionalEmbedding>(32, 16, true, &gen()));
    enc = register_module("enc", std::make_shared<nn::TransformerEncoder>(o, 2, true));
    o.norm_first = false, o.activation = nn::Activation::relu;
    enc2 = register_module("enc2", std::make_shared<nn::TransformerEncoder>(o, 1, false));
  }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) {  // x (N, T, 16), lengths (N)
    const Tensor& x = in[0];
    const Tensor pad = ge(unsqueeze(arange(0.0, static_cast<double>(x.size(1)), 1.0, TensorOptions(DType::i64)), 0),
                          unsqueeze(in[1], 1));  // (N, T): true past each length
    Tensor h = enc->forward(pos->forward(x), Tensor(), Tensor(), /*is_causal=*/true);
    return {enc2->forward(h, Tensor(), pad)};
  }
  std::shared_ptr<nn::LearnedPositionalEmbedding> pos;
  std::shared_ptr<nn::TransformerEncoder> enc, enc2;
};

// Attention masks given as graph inputs: a bool one (true = may not attend, PyTorch's
// convention) and a float one added to the scores.
class Masks : public nn::Module {
 public:
  Masks() { mha = register_module("mha", std::make_shared<nn::MultiheadAttention>(8, 2, 0.0, true, true, &gen())); }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) {  // x (N, T, 8), bool (T, T), float (T, T)
    const Tensor y = mha->forward(in[0], in[0], in[0], Tensor(), in[1]);
    return {mha->forward(y, in[0], in[0], Tensor(), in[2])};
  }
  std::shared_ptr<nn::MultiheadAttention> mha;
};

class HSoftmax : public nn::Module {
 public:
  HSoftmax() {
    proj = register_module("proj", std::make_shared<nn::Linear>(5, 6, true, &gen()));
    const nn::ClassTree tree = nn::ClassTree::from_paths(
        {{"a", "b", "c"}, {"a", "b", "d"}, {"a", "e"}, {"f", "g", "h"}, {"f", "g", "i"}, {"f", "g", "j"}, {"k"}});
    hsm = register_module("hsm", std::make_shared<nn::HierarchicalSoftmax>(6, tree, true, &gen()));
  }
  std::vector<Tensor> forward(const std::vector<Tensor>& in) {  // h (N, 5), classes (N)
    const Tensor h = tanh(proj->forward(in[0]));
    HSoftmaxTopK top = hsm->predict_topk(h, 3, 7);
    return {hsm->full_log_prob(h), hsm->log_prob(h, in[1]), top.values, top.classes};
  }
  std::shared_ptr<nn::Linear> proj;
  std::shared_ptr<nn::HierarchicalSoftmax> hsm;
};

io::ExportOptions names(std::vector<std::string> in, std::vector<std::string> out,
                        std::map<std::string, std::map<int64_t, std::string>> dyn) {
  io::ExportOptions o;
  o.input_names = std::move(in);
  o.output_names = std::move(out);
  o.dynamic_axes = std::move(dyn);
  return o;
}

template <class R>
Case recurrent(bool bidirectional, int layers, bool batch_first, bool relu) {
  nn::RNNOptions o;
  o.input_size = 3, o.hidden_size = 4, o.num_layers = layers, o.bidirectional = bidirectional;
  o.batch_first = batch_first, o.dropout = layers > 1 ? 0.2 : 0.0;
  if (relu) o.nonlinearity = nn::RNNNonlinearity::relu;
  auto m = std::make_shared<Recurrent<R>>(o);
  const Tensor x = batch_first ? rand_f32({3, 5, 3}) : rand_f32({5, 3, 3});
  const Tensor lengths = from_vector<int64_t>({5, 2, 4}, {3});
  const int64_t b = batch_first ? 0 : 1, t = batch_first ? 1 : 0;
  std::vector<std::string> outs{"output", "h_n"};
  if (std::is_same_v<R, nn::LSTM>) outs.push_back("c_n");
  Case c{m,
         {x, lengths},
         names({"x", "lengths"}, outs, {{"x", {{b, "batch"}, {t, "seq"}}}, {"lengths", {{0, "batch"}}}}),
         [m](const std::vector<Tensor>& in) { return m->forward(in); }};
  return c;
}

Case make(const std::string& family) {
  if (family == "mlp") {
    auto m = std::make_shared<Mlp>();
    return {m,
            {rand_f32({4, 2, 3})},
            names({"x"}, {"y"}, {{"x", {{0, "batch"}}}, {"y", {{0, "batch"}}}}),
            [m](const std::vector<Tensor>& in) { return std::vector<Tensor>{m->forward(in[0])}; }};
  }
  if (family == "embed_norm") {
    auto m = std::make_shared<EmbedNorm>();
    return {m,
            {tokens({3, 7}, 20)},
            names({"tokens"}, {"y"}, {{"tokens", {{0, "batch"}, {1, "seq"}}}}),
            [m](const std::vector<Tensor>& in) { return std::vector<Tensor>{m->forward(in[0])}; }};
  }
  if (family == "conv_pool") {
    auto m = std::make_shared<ConvPool>();
    return {
        m, {rand_f32({2, 4, 11})}, names({"x"}, {"y"}, {{"x", {{0, "batch"}}}}), [m](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{m->forward(in[0])};
        }};
  }
  if (family == "lstm") return recurrent<nn::LSTM>(true, 2, true, false);
  if (family == "gru") return recurrent<nn::GRU>(true, 2, false, false);
  if (family == "rnn") return recurrent<nn::RNN>(false, 1, true, true);
  if (family == "transformer") {
    auto m = std::make_shared<Encoder>();
    return {m,
            {rand_f32({3, 6, 16}), from_vector<int64_t>({6, 3, 5}, {3})},
            names({"x", "lengths"}, {"y"}, {{"x", {{0, "batch"}, {1, "seq"}}}, {"lengths", {{0, "batch"}}}}),
            [m](const std::vector<Tensor>& in) { return m->forward(in); }};
  }
  if (family == "masks") {
    auto m = std::make_shared<Masks>();
    std::vector<bool> upper;
    for (int64_t i = 0; i < 5; ++i)
      for (int64_t j = 0; j < 5; ++j) upper.push_back(j > i);
    return {m,
            {rand_f32({2, 5, 8}), from_vector<bool>(upper, {5, 5}, TensorOptions(DType::boolean)), rand_f32({5, 5})},
            names({"x", "bool_mask", "float_mask"}, {"y"}, {{"x", {{0, "batch"}}}}),
            [m](const std::vector<Tensor>& in) { return m->forward(in); }};
  }
  if (family == "recurrence") {
    // The op on its own (gates_x given, not computed from a layer input): X is gates_x and W the
    // gate permutation. A GRU with lengths and an initial state.
    auto m = std::make_shared<nn::Linear>(4, 12, true, &gen());  // holds W_hh (12, 4) and b_hh
    return {m,
            {rand_f32({5, 3, 12}), rand_f32({3, 4}), from_vector<int64_t>({5, 1, 3}, {3})},
            names({"gates_x", "h0", "lengths"}, {"output", "h_n"}, {{"gates_x", {{0, "seq"}}}}),
            [m](const std::vector<Tensor>& in) {
              const RNNRecurrenceResult r = rnn_recurrence(in[0], m->weight, m->bias, in[1], Tensor(), in[2],
                                                           RNNRecurrenceOptions{RNNMode::gru, true});
              return std::vector<Tensor>{r.output, r.h_n};
            }};
  }
  if (family == "hsoftmax") {
    auto m = std::make_shared<HSoftmax>();
    return {m,
            {rand_f32({4, 5}), from_vector<int64_t>({0, 3, 6, 2}, {4})},
            names({"h", "classes"}, {"log_prob_all", "log_prob", "topk_values", "topk_classes"},
                  {{"h", {{0, "batch"}}}, {"classes", {{0, "batch"}}}}),
            [m](const std::vector<Tensor>& in) { return m->forward(in); }};
  }
  throw Error("onnx_models", "unknown family '" + family + "'");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s DIR FAMILY\n", argv[0]);
    return 2;
  }
  try {
    const std::string dir = argv[1], family = argv[2];
    Case c = make(family);
    c.module->train();  // export switches to eval and back
    c.options.sample_path = dir + "/" + family + ".sample.safetensors";
    io::export_onnx(*c.module, c.inputs, dir + "/" + family + ".onnx", c.options, c.forward);
    std::printf("wrote %s/%s.onnx\n", dir.c_str(), family.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
