// Recurrent layers, the modules nn::RNN / nn::LSTM / nn::GRU: fused vs reference for 2 layers,
// bidirectional, batch_first, lengths and initial states; PyTorch's names, shapes and init;
// outputs equal to libtorch 1.13's for the same weights (golden values, rnn_golden.h);
// load_state_dict (through a safetensors file) and its strict errors; dropout between layers
// only in training; and the modules on the device under test against the CPU. The fused
// recurrence itself is in test_rnn.cpp.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ember/nn/rnn.h"
#include "rnn_golden.h"
#include "rnn_util.h"
#include "test_util.h"

using namespace ember;
using ember_test::check_close;
using ember_test::check_error;
using ember_test::check_tensor;
using ember_test::grad_of;
using ember_test::leaf;
using ember_test::randn_t;
using ember_test::test_device;
using ember_test::vals;

namespace {

// Fills every parameter of m, in registration order p = 0, 1, ..., with 0.5 sin(1.3 i + 0.7 p)
// at flat index i (what the libtorch program behind rnn_golden.h did).
void fill_golden(nn::Module& m) {
  int p = 0;
  for (auto& [name, t] : m.named_parameters()) {
    std::vector<double> v(static_cast<size_t>(t.numel()));
    for (size_t i = 0; i < v.size(); ++i) v[i] = 0.5 * std::sin(1.3 * static_cast<double>(i) + 0.7 * p);
    NoGradGuard ng;
    t.copy_(from_vector(v, t.shape()));
    ++p;
  }
}
Tensor cos_seq(const Shape& s, double a) {
  std::vector<double> v(static_cast<size_t>(numel_of(s)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::cos(a * static_cast<double>(i));
  return from_vector(v, s);
}

}  // namespace

TEST_SUITE("rnn_modules") {
  TEST_CASE("nn modules: fused equals the reference for 2 layers, bidirectional, batch_first, lengths, states") {
    struct Cfg {
      const char* name;
      int kind;  // 0 RNN tanh, 1 RNN relu, 2 LSTM, 3 GRU
      bool bidir, batch_first, lengths, states, bias;
    };
    const Cfg cfgs[] = {
        {"RNN tanh, 2 layers", 0, false, false, false, true, true},
        {"RNN relu, bidirectional, batch_first, lengths", 1, true, true, true, false, true},
        {"LSTM, bidirectional, lengths, states", 2, true, false, true, true, true},
        {"LSTM, batch_first, no bias", 2, false, true, false, false, false},
        {"GRU, bidirectional, batch_first, lengths, states", 3, true, true, true, true, true},
        {"GRU, 2 layers, no bias, states", 3, false, false, false, true, false},
    };
    uint64_t seed = 700;
    for (const Cfg& c : cfgs) {
      CAPTURE(c.name);
      nn::RNNOptions o;
      o.input_size = 3;
      o.hidden_size = 5;
      o.num_layers = 2;
      o.bidirectional = c.bidir;
      o.batch_first = c.batch_first;
      o.bias = c.bias;
      o.nonlinearity = c.kind == 1 ? nn::RNNNonlinearity::relu : nn::RNNNonlinearity::tanh;
      Generator g(++seed);
      std::shared_ptr<nn::RNNBase> m;
      if (c.kind <= 1) m = std::make_shared<nn::RNN>(o, &g);
      else if (c.kind == 2) m = std::make_shared<nn::LSTM>(o, &g);
      else m = std::make_shared<nn::GRU>(o, &g);
      m->to(DType::f64);
      const int64_t T = 6, N = 4, D = c.bidir ? 2 : 1;
      const Tensor x0 = randn_t(c.batch_first ? Shape{N, T, 3} : Shape{T, N, 3}, ++seed);
      const Tensor h00 = c.states ? randn_t({2 * D, N, 5}, ++seed) : Tensor();
      const Tensor c00 = c.states && c.kind == 2 ? randn_t({2 * D, N, 5}, ++seed) : Tensor();
      const Tensor len = c.lengths ? from_vector<int64_t>({6, 2, 0, 5}, {N}) : Tensor();
      const Tensor wo = randn_t(c.batch_first ? Shape{N, T, D * 5} : Shape{T, N, D * 5}, ++seed);
      const Tensor wh = randn_t({2 * D, N, 5}, ++seed);
      struct Out {
        nn::RNNResult r;
        std::vector<Tensor> grads;
      };
      auto go = [&](bool reference) {
        m->zero_grad();
        Tensor x = leaf(x0), h0 = leaf(h00), c0 = leaf(c00);
        Out out;
        out.r = reference ? m->forward_reference(x, h0, c0, len) : m->forward(x, h0, c0, len);
        Tensor loss = sum(out.r.output * wo) + sum(out.r.h_n * wh);
        if (out.r.c_n.defined()) loss = loss + sum(out.r.c_n * wh * 0.5);
        loss.backward();
        out.grads = {x.grad(), grad_of(h0), grad_of(c0)};
        for (const Tensor& p : m->parameters()) out.grads.push_back(p.grad());
        return out;
      };
      const Out a = go(false), e = go(true);
      CHECK(a.r.output.shape() == (c.batch_first ? Shape{N, T, D * 5} : Shape{T, N, D * 5}));
      CHECK(a.r.h_n.shape() == Shape{2 * D, N, 5});
      check_close(a.r.output, e.r.output, 1e-10, 1e-12);
      check_close(a.r.h_n, e.r.h_n, 1e-10, 1e-12);
      if (c.kind == 2) check_close(a.r.c_n, e.r.c_n, 1e-10, 1e-12);
      else CHECK_FALSE(a.r.c_n.defined());
      REQUIRE(a.grads.size() == e.grads.size());
      for (size_t i = 0; i < a.grads.size(); ++i) {
        CAPTURE(i);
        CHECK(a.grads[i].defined() == e.grads[i].defined());
        if (e.grads[i].defined()) check_close(a.grads[i], e.grads[i], 1e-10, 1e-12);
      }
      if (c.lengths) {  // sequence 2 has length 0: zero output, h_n = h0 (or zeros)
        const Tensor out_tn = c.batch_first ? a.r.output.transpose(0, 1) : a.r.output;
        for (double v : vals(out_tn.narrow(1, 2, 1))) CHECK(v == 0.0);
      }
    }
  }

  TEST_CASE("nn modules: PyTorch's parameter names, shapes, registration order and init bound") {
    nn::RNNOptions o;
    o.input_size = 3;
    o.hidden_size = 4;
    o.num_layers = 2;
    o.bidirectional = true;
    Generator g(5);
    nn::GRU gru(o, &g);
    const std::vector<std::pair<std::string, Shape>> want = {
        {"weight_ih_l0", {12, 3}},         {"weight_hh_l0", {12, 4}},         {"bias_ih_l0", {12}},
        {"bias_hh_l0", {12}},              {"weight_ih_l0_reverse", {12, 3}}, {"weight_hh_l0_reverse", {12, 4}},
        {"bias_ih_l0_reverse", {12}},      {"bias_hh_l0_reverse", {12}},      {"weight_ih_l1", {12, 8}},
        {"weight_hh_l1", {12, 4}},         {"bias_ih_l1", {12}},              {"bias_hh_l1", {12}},
        {"weight_ih_l1_reverse", {12, 8}}, {"weight_hh_l1_reverse", {12, 4}}, {"bias_ih_l1_reverse", {12}},
        {"bias_hh_l1_reverse", {12}}};
    const auto named = gru.named_parameters();
    REQUIRE(named.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      CHECK(named[i].first == want[i].first);
      CHECK(named[i].second.shape() == want[i].second);
      CHECK(named[i].second.requires_grad());
    }
    // U(-1/sqrt(H), 1/sqrt(H)) = U(-0.5, 0.5), and it uses most of the range.
    double lo = 1, hi = -1;
    for (const auto& [n, t] : named)
      for (double v : vals(t)) {
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
    CHECK(lo >= -0.5);
    CHECK(hi <= 0.5);
    CHECK(lo < -0.45);
    CHECK(hi > 0.45);
    o.bias = false;
    o.num_layers = 1;
    o.bidirectional = false;
    nn::LSTM lstm(o, &g);
    REQUIRE(lstm.named_parameters().size() == 2);
    CHECK(lstm.named_parameters()[0].second.shape() == Shape{16, 3});
    nn::RNN rnn(o, &g);
    CHECK(rnn.named_parameters()[1].second.shape() == Shape{4, 4});
  }

  TEST_CASE("nn modules: outputs equal libtorch 1.13's for the same weights (packed lengths, 2 layers, bidirectional)") {
    nn::RNNOptions o;
    o.input_size = 3;
    o.hidden_size = 4;
    o.num_layers = 2;
    o.bidirectional = true;
    const Tensor x = cos_seq({5, 2, 3}, 0.9), h0 = cos_seq({4, 2, 4}, 0.5) * 0.3, c0 = cos_seq({4, 2, 4}, 0.4) * 0.2;
    const Tensor len = from_vector<int64_t>({5, 3}, {2});
    {
      nn::LSTM m(o);
      m.to(DType::f64);
      fill_golden(m);
      nn::RNNResult r = m.forward(x, h0, c0, len);
      check_tensor(r.output, {5, 2, 8}, rnn_golden::kLstm_out, 1e-9, 1e-10);
      check_tensor(r.h_n, {4, 2, 4}, rnn_golden::kLstm_hn, 1e-9, 1e-10);
      check_tensor(r.c_n, {4, 2, 4}, rnn_golden::kLstm_cn, 1e-9, 1e-10);
    }
    {
      nn::GRU m(o);
      m.to(DType::f64);
      fill_golden(m);
      nn::RNNResult r = m.forward(x, h0, Tensor(), len);
      check_tensor(r.output, {5, 2, 8}, rnn_golden::kGru_out, 1e-9, 1e-10);
      check_tensor(r.h_n, {4, 2, 4}, rnn_golden::kGru_hn, 1e-9, 1e-10);
    }
    {
      o.nonlinearity = nn::RNNNonlinearity::relu;
      nn::RNN m(o);
      m.to(DType::f64);
      fill_golden(m);
      nn::RNNResult r = m.forward(x, h0, Tensor(), len);
      check_tensor(r.output, {5, 2, 8}, rnn_golden::kRnnRelu_out, 1e-9, 1e-10);
      check_tensor(r.h_n, {4, 2, 4}, rnn_golden::kRnnRelu_hn, 1e-9, 1e-10);
    }
  }

  TEST_CASE("nn modules: load_state_dict from a PyTorch-named safetensors file; strict errors for a wrong shape") {
    nn::RNNOptions o;
    o.input_size = 3;
    o.hidden_size = 4;
    o.bidirectional = true;
    Generator g(9);
    nn::LSTM m(o, &g);
    // A state dict as PyTorch's exporter writes it: the names and shapes of torch.nn.LSTM(3, 4,
    // bidirectional=True), values 0.01 * k for the k-th tensor.
    const std::vector<std::pair<std::string, Shape>> keys = {
        {"weight_ih_l0", {16, 3}}, {"weight_hh_l0", {16, 4}}, {"bias_ih_l0", {16}}, {"bias_hh_l0", {16}},
        {"weight_ih_l0_reverse", {16, 3}}, {"weight_hh_l0_reverse", {16, 4}}, {"bias_ih_l0_reverse", {16}},
        {"bias_hh_l0_reverse", {16}}};
    StateDict sd;
    for (size_t k = 0; k < keys.size(); ++k) sd.tensors.emplace_back(keys[k].first, full(keys[k].second, 0.01 * k));
    const std::string path =
        (std::filesystem::temp_directory_path() / ("ember_rnn_sd_" + std::to_string(::getpid()) + ".safetensors")).string();
    io::save_safetensors(path, sd);
    m.load_state_dict(io::load_safetensors(path));
    std::filesystem::remove(path);
    for (size_t k = 0; k < keys.size(); ++k) {
      CAPTURE(keys[k].first);
      const Tensor t = m.state_dict().find(keys[k].first);
      REQUIRE(t.defined());
      check_tensor(t, keys[k].second, std::vector<double>(static_cast<size_t>(numel_of(keys[k].second)), 0.01 * k),
                   1e-6, 1e-7);
    }
    CHECK(equal(m.weights(0, 1).w_hh, full({16, 4}, 0.05)));  // the module's handles see the load
    // A wrongly shaped key: strict mode names it with both shapes and changes nothing.
    StateDict bad = sd;
    bad.tensors[1].second = zeros({16, 5});
    const Tensor before = m.weights(0, 0).w_ih.clone();
    check_error([&] { m.load_state_dict(bad); }, "wrong shape", {"weight_hh_l0", "(16, 5)", "(16, 4)"});
    CHECK(equal(m.weights(0, 0).w_ih, before));
    // A GRU's state dict does not fit an LSTM: every tensor is mis-shaped (3H vs 4H rows).
    nn::GRU gru(o, &g);
    check_error([&] { m.load_state_dict(gru.state_dict()); }, "GRU into LSTM", {"weight_ih_l0", "(12, 3)", "(16, 3)"});
  }

  TEST_CASE("dropout between layers: only in training, never after the last layer") {
    nn::RNNOptions o;
    o.input_size = 4;
    o.hidden_size = 6;
    o.num_layers = 2;
    o.dropout = 0.5;
    Generator g(11), gd(12);
    nn::GRU m(o, &gd);
    const Tensor x = randn_t({5, 3, 4}, 13, DType::f32);
    m.eval();
    const Tensor e1 = m.forward(x).output, e2 = m.forward(x).output;
    CHECK(equal(e1, e2));  // eval: deterministic, no dropout
    m.train();
    gd = Generator(99);
    const Tensor t1 = m.forward(x).output;
    CHECK_FALSE(allclose(t1, e1, 1e-4, 1e-5));  // training: layer 0's output was dropped
    // The same draws through the reference give the same training output.
    gd = Generator(99);
    check_close(m.forward_reference(x).output, t1, 1e-5, 1e-6);
    // One layer: dropout has nothing to act on, training equals eval.
    o.num_layers = 1;
    nn::GRU one(o, &g);
    one.train();
    const Tensor a = one.forward(x).output;
    one.eval();
    CHECK(equal(a, one.forward(x).output));
  }

  TEST_CASE("CUDA vs CPU: nn::LSTM and nn::GRU, 2 layers, bidirectional, batch_first, lengths") {
    ember::cuda::set_poison_allocations(cuda::is_available());
    const Device gpu = test_device();
    nn::RNNOptions o;
    o.input_size = 16;
    o.hidden_size = 32;
    o.num_layers = 2;
    o.bidirectional = true;
    o.batch_first = true;
    for (int kind = 0; kind < 2; ++kind) {
      Generator g(31);
      std::shared_ptr<nn::RNNBase> cpu_m, gpu_m;
      if (kind == 0) {
        cpu_m = std::make_shared<nn::LSTM>(o, &g);
        gpu_m = std::make_shared<nn::LSTM>(o, &g);
      } else {
        cpu_m = std::make_shared<nn::GRU>(o, &g);
        gpu_m = std::make_shared<nn::GRU>(o, &g);
      }
      gpu_m->load_state_dict(cpu_m->state_dict());
      gpu_m->to(gpu);
      const Tensor x = randn_t({6, 20, 16}, 32, DType::f32), len = from_vector<int64_t>({20, 3, 17, 1, 0, 11}, {6});
      Tensor xc = leaf(x), xg = leaf(x.to(gpu));
      nn::RNNResult rc = cpu_m->forward(xc, Tensor(), Tensor(), len), rg = gpu_m->forward(xg, Tensor(), Tensor(), len);
      check_close(rg.output.to(Device::cpu()), rc.output, 1e-4, 1e-5);
      check_close(rg.h_n.to(Device::cpu()), rc.h_n, 1e-4, 1e-5);
      sum(rc.output * rc.output).backward();
      sum(rg.output * rg.output).backward();
      check_close(xg.grad().to(Device::cpu()), xc.grad(), 1e-4, 1e-5);
      const auto pc = cpu_m->parameters(), pg = gpu_m->parameters();
      for (size_t i = 0; i < pc.size(); ++i) check_close(pg[i].grad().to(Device::cpu()), pc[i].grad(), 1e-4, 1e-4);
    }
    ember::cuda::set_poison_allocations(false);
  }
}
