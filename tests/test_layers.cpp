// Layers (Embedding, Dropout, activations, Flatten), 1-D pooling and the initialisers of
// nn/init.h: values against hand-computed results, gradcheck in f64 at odd sizes, init
// statistics, Embedding's padding row through an SGD step, bad input, and a CUDA-vs-CPU case
// (on cuda:0, or the stand-in device fake:0 without a GPU).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "ember/nn/init.h"
#include "ember/nn/layers.h"
#include "ember/nn/pool.h"
#include "test_util.h"

using namespace ember;
using ember_test::check_close;
using ember_test::check_tensor;
using ember_test::vals;

namespace {

using ember_test::test_device;

Tensor rand64(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return randn(s, DType::f64, &g).requires_grad_();
}

void expect_gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                      const std::vector<Tensor>& inputs, const std::string& what) {
  GradcheckResult r = gradcheck(fn, inputs);
  CHECK_MESSAGE(r.ok, what << ": " << r.message);
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}
double std_of(const std::vector<double>& v) {
  const double m = mean_of(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size()));
}
double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// Reference pooling in double: x (N, C, L) row-major.
std::vector<double> pool_ref(bool is_max, const std::vector<double>& x, int64_t n, int64_t c,
                             int64_t l, int64_t k, int64_t s, int64_t p) {
  const int64_t lo = (l + 2 * p - k) / s + 1;
  std::vector<double> y;
  for (int64_t b = 0; b < n * c; ++b)
    for (int64_t o = 0; o < lo; ++o) {
      double acc = is_max ? -INFINITY : 0.0;
      for (int64_t j = 0; j < k; ++j) {
        const int64_t i = o * s + j - p;
        const double v = (i < 0 || i >= l) ? (is_max ? -INFINITY : 0.0) : x[b * l + i];
        acc = is_max ? std::max(acc, v) : acc + v;
      }
      y.push_back(is_max ? acc : acc / static_cast<double>(k));
    }
  return y;
}

}  // namespace

TEST_SUITE("layers") {
  // --- activations, Flatten, Dropout ----------------------------------------------------------

  TEST_CASE("activations: values and gradcheck at odd sizes") {
    Tensor x = tensor({-1.5, -0.25, 0.0, 0.75, 2.0}, DType::f64);
    std::vector<double> xs = vals(x), gelu_e, silu_e, tanh_e, sig_e;
    for (double v : xs) {
      gelu_e.push_back(0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))));
      sig_e.push_back(1.0 / (1.0 + std::exp(-v)));
      silu_e.push_back(v / (1.0 + std::exp(-v)));
      tanh_e.push_back(std::tanh(v));
    }
    check_tensor(nn::GELU()(x), {5}, gelu_e, 1e-10, 1e-12);
    // The tanh form (GPT-2; PyTorch's approximate="tanh") from its definition, and within 1e-3
    // of the exact form on these points.
    std::vector<double> gelu_t;
    for (double v : xs)
      gelu_t.push_back(0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v))));
    check_tensor(nn::GELU("tanh")(x), {5}, gelu_t, 1e-10, 1e-12);
    // PyTorch: F.gelu(torch.tensor(1.0), approximate="tanh") = 0.8411920070648193 in f32.
    CHECK(vals(gelu(tensor({1.0}, DType::f64), "tanh"))[0] == doctest::Approx(0.8411919906).epsilon(1e-9));
    CHECK(vals(gelu(tensor({1.0}, DType::f32), "tanh"))[0] == doctest::Approx(0.8411920071).epsilon(1e-7));
    for (size_t i = 0; i < xs.size(); ++i) CHECK(std::abs(gelu_t[i] - gelu_e[i]) < 1e-3);
    CHECK_THROWS_WITH_AS(gelu(x, "fast"), doctest::Contains("approximate must be \"none\" or \"tanh\""), Error);
    CHECK_THROWS_WITH_AS(nn::GELU("erf"), doctest::Contains("GELU"), Error);
    check_tensor(nn::SiLU()(x), {5}, silu_e, 1e-10, 1e-12);
    check_tensor(nn::Tanh()(x), {5}, tanh_e, 1e-10, 1e-12);
    check_tensor(nn::Sigmoid()(x), {5}, sig_e, 1e-10, 1e-12);

    std::vector<std::pair<std::string, std::shared_ptr<nn::Layer>>> layers = {
        {"GELU", std::make_shared<nn::GELU>()},
        {"GELU_tanh", std::make_shared<nn::GELU>("tanh")},
        {"SiLU", std::make_shared<nn::SiLU>()},
        {"Tanh", std::make_shared<nn::Tanh>()},
        {"Sigmoid", std::make_shared<nn::Sigmoid>()},
        {"Flatten", std::make_shared<nn::Flatten>()}};
    for (auto& [name, layer] : layers)
      expect_gradcheck([l = layer](const std::vector<Tensor>& in) { return (*l)(in[0]); },
                       {rand64({3, 5, 7}, 11)}, name);
  }

  TEST_CASE("Flatten: default keeps the batch dim; explicit range") {
    Tensor x = rand64({2, 3, 5, 7}, 3);
    CHECK(nn::Flatten()(x).shape() == Shape{2, 105});
    CHECK(nn::Flatten(1, 2)(x).shape() == Shape{2, 15, 7});
    CHECK(nn::Flatten(0)(x).shape() == Shape{210});
    CHECK(vals(nn::Flatten()(x)) == vals(x));
  }

  TEST_CASE("Dropout: train zeroes and rescales, eval is the identity") {
    Generator g(7);
    nn::Dropout drop(0.3, &g);
    Tensor x = uniform({4001}, 0.5, 1.5, DType::f64, &g);
    Tensor y = drop(x);
    std::vector<double> xv = vals(x), yv = vals(y);
    int64_t zeros = 0;
    bool scaled = true;
    for (size_t i = 0; i < xv.size(); ++i) {
      if (yv[i] == 0.0) ++zeros;
      else scaled = scaled && std::fabs(yv[i] - xv[i] / 0.7) < 1e-12;
    }
    CHECK(scaled);
    const double frac = static_cast<double>(zeros) / static_cast<double>(xv.size());
    CHECK(frac == doctest::Approx(0.3).epsilon(0.15));
    drop.eval();
    CHECK(!drop.is_training());
    CHECK(vals(drop(x)) == xv);
    drop.train();
    CHECK(vals(drop(x)) != xv);
    // Gradient flows through the kept elements with the same mask: y = x * m / 0.7.
    Tensor xr = rand64({3, 7}, 5);
    Generator g2(9);
    nn::Dropout d2(0.4, &g2);
    Tensor out = d2(xr);
    out.sum().backward();
    std::vector<double> ov = vals(out), xrv = vals(xr), gv = vals(xr.grad());
    for (size_t i = 0; i < ov.size(); ++i)
      CHECK(gv[i] == doctest::Approx(ov[i] == 0.0 ? 0.0 : 1.0 / 0.6));
    // gradcheck with the same mask on every call (a fresh generator with a fixed seed each time).
    expect_gradcheck(
        [](const std::vector<Tensor>& in) {
          Generator gd(13);
          nn::Dropout d(0.35, &gd);
          return d(in[0]);
        },
        {rand64({3, 5, 7}, 6)}, "Dropout");
    CHECK_EMBER_ERROR(nn::Dropout(1.5), "Dropout", "1.5");
    CHECK_EMBER_ERROR(nn::Dropout(-0.1), "Dropout");
  }

  // --- Embedding ------------------------------------------------------------------------------

  TEST_CASE("Embedding: lookup, gradcheck, N(0,1) init, bad indices") {
    Generator g(21);
    nn::Embedding emb(11, 5, std::nullopt, &g);
    CHECK(emb.weight.shape() == Shape{11, 5});
    CHECK(emb.named_parameters().size() == 1);
    CHECK(emb.named_parameters()[0].first == "weight");
    Tensor idx = from_vector<int64_t>({3, 0, 10, 3, 7, 1}, {2, 3});
    Tensor y = emb(idx);
    CHECK(y.shape() == Shape{2, 3, 5});
    std::vector<double> w = vals(emb.weight), yv = vals(y);
    const std::vector<int64_t> iv = {3, 0, 10, 3, 7, 1};
    for (size_t r = 0; r < iv.size(); ++r)
      for (int64_t d = 0; d < 5; ++d) CHECK(yv[r * 5 + d] == w[iv[r] * 5 + d]);
    // Gradient: rows hit twice get two contributions.
    Tensor w64 = rand64({11, 5}, 4);
    expect_gradcheck([idx](const std::vector<Tensor>& in) { return embedding(in[0], idx); }, {w64},
                     "embedding");
    // Init statistics on a large table.
    Generator g3(5);
    nn::Embedding big(400, 100, std::nullopt, &g3);
    std::vector<double> bw = vals(big.weight);
    CHECK(std::fabs(mean_of(bw)) < 0.02);
    CHECK(std_of(bw) == doctest::Approx(1.0).epsilon(0.02));
    CHECK_EMBER_ERROR(emb(from_vector<int64_t>({11}, {1})), "embedding");
    CHECK_EMBER_ERROR(emb(tensor({1.0})), "embedding", "i64");
    CHECK_EMBER_ERROR(nn::Embedding(0, 3), "Embedding");
    CHECK_EMBER_ERROR(nn::Embedding(4, 3, 4), "Embedding", "padding_idx 4");
  }

  TEST_CASE("Embedding: padding row starts at zero and stays zero after SGD steps") {
    Generator g(8);
    nn::Embedding emb(7, 4, -2, &g);  // row 5
    REQUIRE(emb.padding_idx().has_value());
    CHECK(*emb.padding_idx() == 5);
    check_tensor(emb.weight.select(0, 5), {4}, {0, 0, 0, 0}, 0, 0);
    const std::vector<double> before = vals(emb.weight);
    optim::SGD opt(emb.parameters(), {.lr = 0.5, .momentum = 0.9});
    Tensor idx = from_vector<int64_t>({5, 1, 5, 2, 5}, {5});
    for (int step = 0; step < 3; ++step) {
      opt.zero_grad();
      Tensor loss = (emb(idx) * emb(idx)).sum() + emb(idx).sum();
      loss.backward();
      check_tensor(emb.weight.grad().select(0, 5), {4}, {0, 0, 0, 0}, 0, 0);
      opt.step();
    }
    check_tensor(emb.weight.select(0, 5), {4}, {0, 0, 0, 0}, 0, 0);
    const std::vector<double> after = vals(emb.weight);
    CHECK(after[1 * 4] != before[1 * 4]);  // other rows did train
    CHECK(after[0] == before[0]);          // rows never looked up did not
  }

  // --- pooling --------------------------------------------------------------------------------

  TEST_CASE("max_pool1d / avg_pool1d: a small known tensor") {
    // (1, 2, 7)
    Tensor x = tensor({{3, -1, 4, 1, -5, 9, 2}, {-6, 5, 3, -5, 8, 9, -7}}, DType::f64).unsqueeze(0);
    // kernel 2, stride 2: windows [0,1] [2,3] [4,5]; the last element is dropped (floor).
    check_tensor(nn::max_pool1d(x, 2), {1, 2, 3}, {3, 4, 9, 5, 3, 9});
    check_tensor(nn::avg_pool1d(x, 2), {1, 2, 3}, {1, 2.5, 2, -0.5, -1, 8.5});
    // kernel 3, stride 2, padding 1: padded with -inf (max) or 0 (avg, counted in the divisor).
    check_tensor(nn::max_pool1d(x, 3, 2, 1), {1, 2, 4}, {3, 4, 9, 9, 5, 5, 9, 9});
    check_tensor(nn::avg_pool1d(x, 3, 2, 1), {1, 2, 4},
                 {2.0 / 3, 4.0 / 3, 5.0 / 3, 11.0 / 3, -1.0 / 3, 1.0, 4.0, 2.0 / 3});
    // kernel 3, stride 1 (overlapping windows).
    check_tensor(nn::max_pool1d(x, 3, 1), {1, 2, 5}, {4, 4, 4, 9, 9, 5, 5, 8, 9, 9});
    // (C, L) input works as N = 1.
    check_tensor(nn::max_pool1d(x.squeeze(0), 2), {2, 3}, {3, 4, 9, 5, 3, 9});
    check_tensor(nn::global_max_pool1d(x), {1, 2}, {9, 9});
    check_tensor(nn::global_avg_pool1d(x), {1, 2}, {13.0 / 7, 7.0 / 7});
    CHECK(nn::global_avg_pool1d(x, true).shape() == Shape{1, 2, 1});
    // The modules agree with the functions.
    check_close(nn::MaxPool1d(3, 2, 1)(x), nn::max_pool1d(x, 3, 2, 1));
    check_close(nn::AvgPool1d(3, 2, 1)(x), nn::avg_pool1d(x, 3, 2, 1));
    check_close(nn::MaxPool1d(2)(x), nn::max_pool1d(x, 2));
    check_close(nn::GlobalMaxPool1d()(x), nn::global_max_pool1d(x));
    check_close(nn::GlobalAvgPool1d(true)(x), nn::global_avg_pool1d(x, true));
  }

  TEST_CASE("pooling: random inputs against a double reference at odd sizes") {
    struct Cfg {
      int64_t k, s, p;
    };
    const int64_t n = 3, c = 5, l = 13;
    Tensor x = rand64({n, c, l}, 17);
    std::vector<double> xv = vals(x);
    for (Cfg cfg : {Cfg{3, 2, 1}, Cfg{5, 3, 2}, Cfg{4, 1, 0}, Cfg{1, 1, 0}, Cfg{13, 13, 0}, Cfg{7, 4, 3}}) {
      const int64_t lo = (l + 2 * cfg.p - cfg.k) / cfg.s + 1;
      CAPTURE(cfg.k);
      CAPTURE(cfg.s);
      CAPTURE(cfg.p);
      check_tensor(nn::max_pool1d(x, cfg.k, cfg.s, cfg.p), {n, c, lo},
                   pool_ref(true, xv, n, c, l, cfg.k, cfg.s, cfg.p), 1e-12, 1e-12);
      check_tensor(nn::avg_pool1d(x, cfg.k, cfg.s, cfg.p), {n, c, lo},
                   pool_ref(false, xv, n, c, l, cfg.k, cfg.s, cfg.p), 1e-12, 1e-12);
    }
  }

  TEST_CASE("pooling: gradcheck in f64 (odd sizes, overlap, padding, non-contiguous input)") {
    struct Cfg {
      int64_t k, s, p;
    };
    for (Cfg cfg : {Cfg{3, 2, 1}, Cfg{5, 3, 2}, Cfg{2, 2, 0}, Cfg{3, 1, 1}}) {
      CAPTURE(cfg.k);
      CAPTURE(cfg.s);
      CAPTURE(cfg.p);
      expect_gradcheck([cfg](const std::vector<Tensor>& in) { return nn::max_pool1d(in[0], cfg.k, cfg.s, cfg.p); },
                       {rand64({3, 5, 11}, 31)}, "max_pool1d");
      expect_gradcheck([cfg](const std::vector<Tensor>& in) { return nn::avg_pool1d(in[0], cfg.k, cfg.s, cfg.p); },
                       {rand64({3, 5, 11}, 32)}, "avg_pool1d");
    }
    // A transposed view: (N, L, C) storage seen as (N, C, L).
    expect_gradcheck([](const std::vector<Tensor>& in) { return nn::max_pool1d(in[0].transpose(1, 2), 3, 2, 1); },
                     {rand64({2, 9, 3}, 33)}, "max_pool1d on a transposed view");
    expect_gradcheck([](const std::vector<Tensor>& in) { return nn::global_max_pool1d(in[0]); },
                     {rand64({3, 5, 7}, 34)}, "global_max_pool1d");
    expect_gradcheck([](const std::vector<Tensor>& in) { return nn::global_avg_pool1d(in[0], true); },
                     {rand64({3, 5, 7}, 35)}, "global_avg_pool1d");
  }

  TEST_CASE("max_pool1d: tied maxima share the window's gradient (amax's rule)") {
    Tensor x = tensor({2.0, 2.0, -1.0, 3.0, 0.5, 3.0}, DType::f64).reshape({1, 1, 6}).detach();
    x.requires_grad_();
    Tensor y = nn::max_pool1d(x, 3);  // windows {2, 2, -1} and {3, 0.5, 3}
    check_tensor(y, {1, 1, 2}, {2, 3});
    y.sum().backward();
    check_tensor(x.grad(), {1, 1, 6}, {0.5, 0.5, 0, 0.5, 0, 0.5});
  }

  TEST_CASE("pooling: bad arguments raise ember::Error with the op name and shapes") {
    Tensor x = rand64({2, 3, 9}, 1).detach();
    CHECK_EMBER_ERROR(nn::max_pool1d(x, 0), "max_pool1d", "kernel", "(2, 3, 9)");
    CHECK_EMBER_ERROR(nn::avg_pool1d(x, 3, 0), "avg_pool1d", "stride", "(2, 3, 9)");
    CHECK_EMBER_ERROR(nn::max_pool1d(x, 5, 1, 3), "max_pool1d", "padding 3", "kernel 5", "(2, 3, 9)");
    CHECK_EMBER_ERROR(nn::avg_pool1d(x, 3, 1, -1), "avg_pool1d", "padding -1");
    CHECK_EMBER_ERROR(nn::max_pool1d(x, 10), "max_pool1d", "shorter than the kernel", "(2, 3, 9)");
    CHECK_EMBER_ERROR(nn::max_pool1d(x.reshape({54}), 2), "max_pool1d", "(54,)");
    CHECK_EMBER_ERROR(nn::avg_pool1d(from_vector<int64_t>({1, 2, 3, 4}, {1, 1, 4}), 2), "avg_pool1d", "float");
    CHECK_EMBER_ERROR(nn::global_max_pool1d(x.reshape({2, 3, 3, 3})), "global_max_pool1d", "(2, 3, 3, 3)");
    CHECK_EMBER_ERROR(nn::global_avg_pool1d(zeros({2, 3, 0})), "global_avg_pool1d", "(2, 3, 0)");
    CHECK_EMBER_ERROR(nn::MaxPool1d(4, 2, 3), "MaxPool1d", "padding 3");
    CHECK_EMBER_ERROR(nn::AvgPool1d(3, -1), "AvgPool1d", "stride");
  }

  // --- initialisers ---------------------------------------------------------------------------

  TEST_CASE("init: fans and gains as PyTorch") {
    nn::init::Fans f = nn::init::calculate_fans(zeros({7, 3, 5}));
    CHECK(f.fan_in == 15);
    CHECK(f.fan_out == 35);
    f = nn::init::calculate_fans(zeros({4, 9}));
    CHECK(f.fan_in == 9);
    CHECK(f.fan_out == 4);
    using NL = nn::init::Nonlinearity;
    CHECK(nn::init::calculate_gain(NL::linear) == 1.0);
    CHECK(nn::init::calculate_gain(NL::tanh) == doctest::Approx(5.0 / 3.0));
    CHECK(nn::init::calculate_gain(NL::relu) == doctest::Approx(std::sqrt(2.0)));
    CHECK(nn::init::calculate_gain(NL::leaky_relu, 0.2) == doctest::Approx(std::sqrt(2.0 / 1.04)));
    CHECK_EMBER_ERROR(nn::init::calculate_fans(zeros({5})), "calculate_fans", "(5,)");
    CHECK_EMBER_ERROR(nn::init::kaiming_uniform_(zeros({5})), "kaiming_uniform_", "(5,)");
    CHECK_EMBER_ERROR(nn::init::kaiming_normal_(zeros({})), "kaiming_normal_", "at least 2 dims");
    CHECK_EMBER_ERROR(nn::init::xavier_uniform_(zeros({6})), "xavier_uniform_", "(6,)");
    CHECK_EMBER_ERROR(nn::init::xavier_normal_(zeros({6})), "xavier_normal_");
    CHECK_EMBER_ERROR(nn::init::orthogonal_(zeros({6})), "orthogonal_", "(6,)");
    CHECK_EMBER_ERROR(nn::init::normal_(zeros({3}, DType::i64)), "normal_", "float");
    CHECK_EMBER_ERROR(nn::init::uniform_(zeros({3}), 1.0, 0.0), "uniform_");
  }

  TEST_CASE("init: uniform bounds and normal std on large tensors") {
    using NL = nn::init::Nonlinearity;
    using FM = nn::init::FanMode;
    Generator g(99);
    Tensor w = zeros({256, 100, 3});  // fan_in 300, fan_out 768
    const double fan_in = 300, fan_out = 768;
    auto check_uniform = [&](double bound, const char* what) {
      std::vector<double> v = vals(w);
      CAPTURE(what);
      CHECK(max_abs(v) <= bound);
      CHECK(max_abs(v) > 0.99 * bound);  // 76800 draws reach the edges
      CHECK(std_of(v) == doctest::Approx(bound / std::sqrt(3.0)).epsilon(0.02));
    };
    auto check_normal = [&](double std, const char* what) {
      std::vector<double> v = vals(w);
      CAPTURE(what);
      CHECK(std::fabs(mean_of(v)) < 0.02 * std);
      CHECK(std_of(v) == doctest::Approx(std).epsilon(0.02));
    };
    nn::init::uniform_(w, -0.3, 0.3, &g);
    check_uniform(0.3, "uniform_");
    nn::init::normal_(w, 0.0, 0.7, &g);
    check_normal(0.7, "normal_");
    nn::init::kaiming_uniform_(w, 0.0, FM::fan_in, NL::relu, &g);
    check_uniform(std::sqrt(2.0) * std::sqrt(3.0 / fan_in), "kaiming_uniform_ relu fan_in");
    nn::init::kaiming_uniform_(w, 0.1, FM::fan_out, NL::leaky_relu, &g);
    check_uniform(std::sqrt(2.0 / 1.01) * std::sqrt(3.0 / fan_out), "kaiming_uniform_ leaky fan_out");
    nn::init::kaiming_normal_(w, 0.0, FM::fan_in, NL::tanh, &g);
    check_normal(5.0 / 3.0 / std::sqrt(fan_in), "kaiming_normal_ tanh");
    nn::init::kaiming_normal_(w, 0.0, FM::fan_out, NL::linear, &g);
    check_normal(1.0 / std::sqrt(fan_out), "kaiming_normal_ linear fan_out");
    nn::init::xavier_uniform_(w, 2.0, &g);
    check_uniform(2.0 * std::sqrt(6.0 / (fan_in + fan_out)), "xavier_uniform_");
    nn::init::xavier_normal_(w, 1.5, &g);
    check_normal(1.5 * std::sqrt(2.0 / (fan_in + fan_out)), "xavier_normal_");
    // A parameter that requires grad can be filled; it stays a leaf that requires grad.
    nn::Linear lin(7, 5, true, &g);
    nn::init::zeros_(lin.bias);
    nn::init::ones_(lin.weight);
    CHECK(lin.bias.requires_grad());
    CHECK(lin.weight.is_leaf());
    check_tensor(lin.bias, {5}, {0, 0, 0, 0, 0});
    nn::init::constant_(lin.bias, 0.25);
    check_tensor(lin.bias, {5}, {0.25, 0.25, 0.25, 0.25, 0.25});
    CHECK(vals(lin.weight) == std::vector<double>(35, 1.0));
    // Same generator state, same values; f64 tensors are filled in their own dtype.
    Generator a(3), b(3);
    Tensor t1 = zeros({5, 7}, DType::f64), t2 = zeros({5, 7}, DType::f64);
    nn::init::xavier_uniform_(t1, 1.0, &a);
    nn::init::xavier_uniform_(t2, 1.0, &b);
    CHECK(vals(t1) == vals(t2));
  }

  TEST_CASE("init: orthogonal_ gives orthonormal rows or columns") {
    Generator g(12);
    struct Case {
      Shape shape;
      double gain;
    };
    for (const Case& c : {Case{{5, 9}, 1.0}, Case{{9, 5}, 1.0}, Case{{7, 7}, 2.0}, Case{{4, 3, 5}, 0.5},
                          Case{{31, 3}, 1.0}}) {
      CAPTURE(ember_test::to_string(c.shape));
      Tensor w = zeros(c.shape, DType::f64);
      nn::init::orthogonal_(w, c.gain, &g);
      const int64_t rows = c.shape[0], cols = w.numel() / rows;
      Tensor m = w.reshape({rows, cols});
      Tensor gram = rows <= cols ? matmul(m, m.t()) : matmul(m.t(), m);
      const int64_t k = std::min(rows, cols);
      std::vector<double> eye(static_cast<size_t>(k * k), 0.0);
      for (int64_t i = 0; i < k; ++i) eye[static_cast<size_t>(i * k + i)] = c.gain * c.gain;
      check_tensor(gram, {k, k}, eye, 1e-10, 1e-10);
    }
    // f32 parameter: orthonormal to f32 precision.
    nn::Linear lin(64, 32, false, &g);
    nn::init::orthogonal_(lin.weight, 1.0, &g);
    Tensor gram = matmul(lin.weight, lin.weight.t()).detach();
    std::vector<double> eye(32 * 32, 0.0);
    for (int i = 0; i < 32; ++i) eye[i * 32 + i] = 1.0;
    check_tensor(gram, {32, 32}, eye, 1e-5, 1e-5);
  }

  // --- CUDA -----------------------------------------------------------------------------------

  TEST_CASE("CUDA vs CPU: pooling, Embedding's padding row, initialisers") {
    const Device gpu = test_device();
    Tensor x = rand64({3, 5, 11}, 41).detach().to(DType::f32);
    Tensor xc = x.to(gpu);
    check_close(nn::max_pool1d(xc, 3, 2, 1).to(Device::cpu()), nn::max_pool1d(x, 3, 2, 1));
    check_close(nn::avg_pool1d(xc, 3, 2, 1).to(Device::cpu()), nn::avg_pool1d(x, 3, 2, 1), 1e-5, 1e-6);
    check_close(nn::global_max_pool1d(xc).to(Device::cpu()), nn::global_max_pool1d(x));
    check_close(nn::global_avg_pool1d(xc).to(Device::cpu()), nn::global_avg_pool1d(x), 1e-5, 1e-6);
    Tensor xg = x.clone();
    xg.requires_grad_();
    Tensor xcg = xc.clone();
    xcg.requires_grad_();
    (nn::max_pool1d(xg, 3, 2, 1).sum() + nn::avg_pool1d(xg, 4, 3, 2).sum()).backward();
    (nn::max_pool1d(xcg, 3, 2, 1).sum() + nn::avg_pool1d(xcg, 4, 3, 2).sum()).backward();
    check_close(xcg.grad().to(Device::cpu()), xg.grad(), 1e-5, 1e-6);

    // The padding hook keeps working after the module moves to the GPU.
    Generator g(3);
    nn::Embedding emb(9, 4, 2, &g);
    emb.to(gpu);
    optim::SGD opt(emb.parameters(), {.lr = 0.1, .momentum = 0.9});
    Tensor idx = from_vector<int64_t>({2, 1, 2, 0}, {4}).to(gpu);
    for (int step = 0; step < 2; ++step) {
      opt.zero_grad();
      (emb(idx) * emb(idx)).sum().backward();
      opt.step();
    }
    check_tensor(emb.weight.select(0, 2).to(Device::cpu()), {4}, {0, 0, 0, 0}, 0, 0);

    // Initialisers fill CUDA tensors; Philox draws the same numbers on both devices.
    Generator a(5), b(5);
    Tensor wc = zeros({16, 24}, TensorOptions(DType::f32).with_device(gpu));
    Tensor w = zeros({16, 24});
    nn::init::kaiming_uniform_(wc, 0.0, nn::init::FanMode::fan_in, nn::init::Nonlinearity::relu, &a);
    nn::init::kaiming_uniform_(w, 0.0, nn::init::FanMode::fan_in, nn::init::Nonlinearity::relu, &b);
    check_close(wc.to(Device::cpu()), w);
    nn::init::orthogonal_(wc, 1.0, &a);
    Tensor m = wc.to(Device::cpu());
    std::vector<double> eye(16 * 16, 0.0);
    for (int i = 0; i < 16; ++i) eye[i * 16 + i] = 1.0;
    check_tensor(matmul(m, m.t()), {16, 16}, eye, 1e-5, 1e-5);
  }
}
