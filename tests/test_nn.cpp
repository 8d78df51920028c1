// nn: Module bookkeeping (dotted parameter names, counts, train/eval, zero_grad, registration
// checks) and Linear (init bound, forward on 1-D/2-D/3-D and non-contiguous input, bad sizes,
// gradients). References are computed by hand in double from the tensors' values, not with the
// ops under test. cross_entropy, SGD and a small training run are in test_nn_train.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "test_util.h"

using namespace ember;
using ember_test::check_close;
using ember_test::check_tensor;
using ember_test::to_string;
using ember_test::vals;

namespace {

// scale * inner(body(fc1(x))) with
//   fc1  = Linear(3, 4)
//   body = Sequential{ReLU, Linear(4, 2, no bias), Sequential{Linear(2, 5), ReLU}}
// so parameter names are nested three deep and one module owns a parameter of its own.
struct Net : nn::Layer {
  Tensor scale;
  std::shared_ptr<nn::Linear> fc1;
  std::shared_ptr<nn::Sequential> body;
  // Not registered here: reachable through body, kept to look at their state.
  std::shared_ptr<nn::ReLU> relu1, relu2;
  std::shared_ptr<nn::Linear> mid, last;
  std::shared_ptr<nn::Sequential> inner;

  explicit Net(Generator* g) {
    scale = register_parameter("scale", full({1}, 1.5));
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(3, 4, true, g));
    body = register_module("body", std::make_shared<nn::Sequential>());
    relu1 = std::make_shared<nn::ReLU>();
    relu2 = std::make_shared<nn::ReLU>();
    mid = std::make_shared<nn::Linear>(4, 2, false, g);
    last = std::make_shared<nn::Linear>(2, 5, true, g);
    inner = std::make_shared<nn::Sequential>();
    inner->add(last).add(relu2);
    body->add(relu1).add(mid).add(inner);
  }
  Tensor forward(const Tensor& x) override { return (*body)((*fc1)(x)) * scale; }

  std::vector<const nn::Module*> all_modules() const {
    return {this, fc1.get(), body.get(), relu1.get(), mid.get(), inner.get(), last.get(), relu2.get()};
  }
};

// Exposes the protected registration to test its checks.
struct Bare : nn::Module {
  Tensor add_param(const std::string& name, Tensor t) { return register_parameter(name, std::move(t)); }
};

// y[m, o] = sum_i x[m, i] * w[o, i] + b[o], x as M rows of `in` values (row-major).
std::vector<double> linear_ref(const std::vector<double>& x, const std::vector<double>& w,
                               const std::vector<double>& b, int64_t in, int64_t out) {
  const int64_t m = static_cast<int64_t>(x.size()) / in;
  std::vector<double> y(static_cast<size_t>(m * out));
  for (int64_t r = 0; r < m; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = b.empty() ? 0.0 : b[o];
      for (int64_t i = 0; i < in; ++i) acc += x[r * in + i] * w[o * in + i];
      y[r * out + o] = acc;
    }
  return y;
}

}  // namespace

TEST_SUITE("nn") {
  // --- Module ----------------------------------------------------------------------------------

  TEST_CASE("named_parameters: registration order, dotted names through nested Sequentials") {
    Generator g(1);
    Net net(&g);
    auto np = net.named_parameters();
    const std::vector<std::string> names = {"scale", "fc1.weight", "fc1.bias", "body.1.weight",
                                            "body.2.0.weight", "body.2.0.bias"};
    REQUIRE(np.size() == names.size());
    for (size_t i = 0; i < names.size(); ++i) CHECK_MESSAGE(np[i].first == names[i], "parameter " << i);
    // The handles are the modules' own tensors (an optimizer updates the real weights).
    CHECK(np[0].second.is_same(net.scale));
    CHECK(np[1].second.is_same(net.fc1->weight));
    CHECK(np[2].second.is_same(net.fc1->bias));
    CHECK(np[3].second.is_same(net.mid->weight));
    CHECK(np[4].second.is_same(net.last->weight));
    CHECK(np[5].second.is_same(net.last->bias));
    CHECK(np[1].second.shape() == Shape{4, 3});
    CHECK(np[3].second.shape() == Shape{2, 4});
    CHECK(np[4].second.shape() == Shape{5, 2});
    for (auto& [name, p] : np) {
      CHECK_MESSAGE(p.requires_grad(), name);
      CHECK_MESSAGE(p.is_leaf(), name);
    }
    // parameters() is the same list without names; submodules name relative to themselves.
    auto ps = net.parameters();
    REQUIRE(ps.size() == np.size());
    for (size_t i = 0; i < ps.size(); ++i) CHECK(ps[i].is_same(np[i].second));
    auto body_np = net.body->named_parameters();
    REQUIRE(body_np.size() == 3);
    CHECK(body_np[0].first == "1.weight");
    CHECK(body_np[1].first == "2.0.weight");
    CHECK(body_np[2].first == "2.0.bias");
    CHECK(net.relu1->named_parameters().empty());
    CHECK(net.relu1->parameter_count() == 0);
    // Deterministic: a second call gives the same order.
    auto again = net.named_parameters();
    for (size_t i = 0; i < np.size(); ++i) CHECK(again[i].first == np[i].first);
  }

  TEST_CASE("parameter_count sums numel over the whole tree") {
    Generator g(2);
    Net net(&g);
    CHECK(net.parameter_count() == 1 + (12 + 4) + 8 + (10 + 5));
    CHECK(net.fc1->parameter_count() == 16);
    CHECK(net.body->parameter_count() == 8 + 15);
    CHECK(net.inner->parameter_count() == 15);
    nn::Sequential mlp;
    mlp.add(std::make_shared<nn::Linear>(784, 256)).add(std::make_shared<nn::ReLU>())
        .add(std::make_shared<nn::Linear>(256, 10));
    CHECK(mlp.size() == 3);
    CHECK(mlp.parameter_count() == 784 * 256 + 256 + 256 * 10 + 10);
    nn::Sequential empty_seq;
    CHECK(empty_seq.parameter_count() == 0);
    CHECK(empty_seq.named_parameters().empty());
  }

  TEST_CASE("train/eval recurse into every submodule; on a child they stay in its subtree") {
    Generator g(3);
    Net net(&g);
    for (const nn::Module* m : net.all_modules()) CHECK(m->is_training());  // default
    net.eval();
    for (const nn::Module* m : net.all_modules()) CHECK_FALSE(m->is_training());
    net.train();
    for (const nn::Module* m : net.all_modules()) CHECK(m->is_training());
    net.train(false);
    for (const nn::Module* m : net.all_modules()) CHECK_FALSE(m->is_training());
    net.train(true);
    net.body->eval();
    CHECK(net.is_training());
    CHECK(net.fc1->is_training());
    CHECK_FALSE(net.body->is_training());
    CHECK_FALSE(net.relu1->is_training());
    CHECK_FALSE(net.mid->is_training());
    CHECK_FALSE(net.inner->is_training());
    CHECK_FALSE(net.last->is_training());
    CHECK_FALSE(net.relu2->is_training());
  }

  TEST_CASE("zero_grad drops every gradient in the (sub)tree and nothing else") {
    Generator g(4);
    Net net(&g);
    Tensor x = randn({6, 3}, {}, &g);
    sum(net(x)).backward();
    for (auto& [name, p] : net.named_parameters()) {
      REQUIRE_MESSAGE(p.grad().defined(), name);
      CHECK_MESSAGE(p.grad().shape() == p.shape(), name);
    }
    net.body->zero_grad();  // only body.*
    CHECK(net.scale.grad().defined());
    CHECK(net.fc1->weight.grad().defined());
    CHECK(net.fc1->bias.grad().defined());
    CHECK_FALSE(net.mid->weight.grad().defined());
    CHECK_FALSE(net.last->weight.grad().defined());
    CHECK_FALSE(net.last->bias.grad().defined());
    Tensor w_before = net.fc1->weight.detach().clone();
    net.zero_grad();
    for (auto& [name, p] : net.named_parameters()) {
      CHECK_MESSAGE(!p.grad().defined(), name);
      CHECK_MESSAGE(p.requires_grad(), name);
    }
    CHECK(equal(net.fc1->weight, w_before));  // values untouched
    // A fresh backward after zero_grad gives the gradient of that pass only (no stale sum).
    sum(net(x)).backward();
    Tensor g1 = net.fc1->weight.grad().clone();
    net.zero_grad();
    sum(net(x)).backward();
    check_close(net.fc1->weight.grad(), g1, 1e-6, 1e-7);
  }

  TEST_CASE("register_parameter and Sequential::add check their arguments") {
    Bare m;
    Tensor w = m.add_param("w", zeros({2}));
    CHECK(w.requires_grad());  // marked by registration
    CHECK(m.named_parameters().size() == 1);
    CHECK_EMBER_ERROR(m.add_param("w", zeros({1})), "register_parameter", "\"w\"", "twice");
    CHECK_EMBER_ERROR(m.add_param("a.b", zeros({1})), "register_parameter", "a.b");
    CHECK_EMBER_ERROR(m.add_param("", zeros({1})), "register_parameter");
    CHECK_EMBER_ERROR(m.add_param("u", Tensor()), "register_parameter", "\"u\"");
    CHECK(m.named_parameters().size() == 1);
    nn::Sequential s;
    CHECK_EMBER_ERROR(s.add(nullptr), "Sequential", "null");
    CHECK(s.size() == 0);
  }

  // --- Linear ----------------------------------------------------------------------------------

  TEST_CASE("Linear: shapes, init within +-1/sqrt(in), reproducible from the generator") {
    for (auto [in, out] : std::vector<std::pair<int64_t, int64_t>>{{100, 300}, {5, 1}, {1, 7}, {784, 64}}) {
      CAPTURE(in);
      CAPTURE(out);
      Generator g(7);
      nn::Linear lin(in, out, true, &g);
      REQUIRE(lin.weight.shape() == Shape{out, in});
      REQUIRE(lin.bias.shape() == Shape{out});
      CHECK(lin.weight.dtype() == DType::f32);
      CHECK(lin.bias.dtype() == DType::f32);
      CHECK(lin.weight.requires_grad());
      CHECK(lin.bias.requires_grad());
      const double bound = 1.0 / std::sqrt(static_cast<double>(in));
      // f32 rounding of the bound itself may land a hair above the double bound.
      const double slack = bound * 1e-6;
      std::vector<double> w = vals(lin.weight), b = vals(lin.bias);
      double wmax = 0, wmin = 0, wsum = 0;
      for (double v : w) {
        wmax = std::max(wmax, v);
        wmin = std::min(wmin, v);
        wsum += v;
      }
      CHECK(wmax <= bound + slack);
      CHECK(wmin >= -bound - slack);
      for (double v : b) CHECK(std::fabs(v) <= bound + slack);
      if (w.size() >= 1000) {  // the draws fill the interval, centred on 0
        CHECK(wmax > 0.95 * bound);
        CHECK(wmin < -0.95 * bound);
        const double sd_of_mean = bound / std::sqrt(3.0 * static_cast<double>(w.size()));
        CHECK(std::fabs(wsum / static_cast<double>(w.size())) < 6 * sd_of_mean);
      }
      Generator g2(7);
      nn::Linear same(in, out, true, &g2);
      CHECK(equal(same.weight, lin.weight));
      CHECK(equal(same.bias, lin.bias));
    }
    Generator g(8);
    nn::Linear nobias(4, 3, false, &g);
    CHECK_FALSE(nobias.bias.defined());
    auto np = nobias.named_parameters();
    REQUIRE(np.size() == 1);
    CHECK(np[0].first == "weight");
    CHECK(nobias.parameter_count() == 12);
  }

  TEST_CASE("Linear forward on 1-D, 2-D, 3-D and non-contiguous input against a hand matmul + bias") {
    Generator g(11);
    const int64_t in = 7, out = 5;
    nn::Linear lin(in, out, true, &g);
    nn::Linear nobias(in, out, false, &g);
    const std::vector<double> w = vals(lin.weight), b = vals(lin.bias), w2 = vals(nobias.weight);
    std::vector<Tensor> inputs = {
        randn({in}, {}, &g),                                // 1-D: (in) -> (out)
        randn({4, in}, {}, &g),                             // 2-D
        randn({2, 3, in}, {}, &g),                          // 3-D
        randn({3, 2, in}, {}, &g).transpose(0, 1),          // 3-D, non-contiguous
        randn({in, 4}, {}, &g).t(),                         // 2-D, transposed
        randn({2, 1, 3, in}, {}, &g),                       // 4-D
    };
    for (const Tensor& x : inputs) {
      CAPTURE(to_string(x.shape()));
      Shape expect_shape = x.shape();
      expect_shape.back() = out;
      const std::vector<double> xv = vals(x);
      Tensor y = lin(x);
      CHECK(y.dtype() == DType::f32);
      check_tensor(y, expect_shape, linear_ref(xv, w, b, in, out), 1e-5, 1e-5);
      check_tensor(nobias(x), expect_shape, linear_ref(xv, w2, {}, in, out), 1e-5, 1e-5);
      check_tensor(lin.forward(x), expect_shape, linear_ref(xv, w, b, in, out), 1e-5, 1e-5);
    }
    // Stacking 1-D inputs gives the rows of the 2-D result.
    Tensor x2 = inputs[1];
    Tensor y2 = lin(x2);
    for (int64_t r = 0; r < 4; ++r) check_close(lin(x2.select(0, r)), y2.select(0, r), 1e-5, 1e-6);
    // Linear records no graph under NoGradGuard.
    {
      NoGradGuard ng;
      Tensor y = lin(x2);
      CHECK_FALSE(y.requires_grad());
    }
    CHECK(lin(x2).requires_grad());
  }

  TEST_CASE("Linear rejects bad sizes and input that does not end in in_features") {
    CHECK_EMBER_ERROR(nn::Linear(0, 3), "Linear", "(0, 3)");
    CHECK_EMBER_ERROR(nn::Linear(3, -1), "Linear", "(3, -1)");
    Generator g(12);
    nn::Linear lin(100, 300, true, &g);
    CHECK_EMBER_ERROR(lin(randn({3, 99})), "Linear", "(3, 99)", "100", "(300, 100)");
    CHECK_EMBER_ERROR(lin(randn({100, 3})), "Linear", "(100, 3)");
    CHECK_EMBER_ERROR(lin(scalar_tensor(1.0)), "Linear", "()");
    CHECK_EMBER_ERROR(lin(Tensor()), "Linear");
  }

  TEST_CASE("Linear gradients: gradcheck in f64, and Linear's f32 gradients against the f64 ones") {
    using V = std::vector<Tensor>;
    Generator g(13);
    const int64_t in = 4, out = 3;
    // Linear's parameters are f32: gradcheck the composition it computes, in f64.
    auto compose = [](const V& v) { return matmul(v[0], v[1].t()) + v[2]; };
    {
      Tensor x = randn({5, in}, DType::f64, &g).requires_grad_();
      Tensor w = randn({out, in}, DType::f64, &g).requires_grad_();
      Tensor b = randn({out}, DType::f64, &g).requires_grad_();
      GradcheckResult r = gradcheck(compose, {x, w, b});
      CHECK_MESSAGE(r.ok, r.message);
    }
    // Linear::forward itself in f64: weight and bias are public members, so point them at f64
    // leaves for the check (covers the reshape path of 1-D and 3-D inputs too).
    for (Shape xs : {Shape{in}, Shape{5, in}, Shape{2, 3, in}}) {
      CAPTURE(to_string(xs));
      nn::Linear lin(in, out, true, &g);
      Tensor x = randn(xs, DType::f64, &g).requires_grad_();
      Tensor w = to_dtype(lin.weight.detach(), DType::f64).requires_grad_();
      Tensor b = to_dtype(lin.bias.detach(), DType::f64).requires_grad_();
      auto fn = [&lin](const V& v) {
        lin.weight = v[1];
        lin.bias = v[2];
        return lin(v[0]);
      };
      GradcheckResult r = gradcheck(fn, {x, w, b});
      CHECK_MESSAGE(r.ok, r.message);
    }
    // The real f32 Linear: its gradients for an upstream gradient G match the f64 composition's.
    for (Shape xs : {Shape{in}, Shape{6, in}, Shape{2, 3, in}}) {
      CAPTURE(to_string(xs));
      nn::Linear lin(in, out, true, &g);
      Tensor x = randn(xs, {}, &g).requires_grad_();
      Shape ys = xs;
      ys.back() = out;
      Tensor up = randn(ys, {}, &g);
      sum(lin(x) * up).backward();

      Tensor x64 = to_dtype(x.detach(), DType::f64).requires_grad_();
      Tensor w64 = to_dtype(lin.weight.detach(), DType::f64).requires_grad_();
      Tensor b64 = to_dtype(lin.bias.detach(), DType::f64).requires_grad_();
      Tensor y64 = compose({x64.reshape({-1, in}), w64, b64}).reshape(ys);
      sum(y64 * to_dtype(up, DType::f64)).backward();

      REQUIRE(lin.weight.grad().defined());
      REQUIRE(lin.bias.grad().defined());
      REQUIRE(x.grad().defined());
      CHECK(lin.weight.grad().dtype() == DType::f32);
      check_close(lin.weight.grad(), w64.grad(), 1e-5, 1e-5);
      check_close(lin.bias.grad(), b64.grad(), 1e-5, 1e-5);
      check_close(x.grad(), x64.grad(), 1e-5, 1e-5);
      // and by hand: db = sum of G over rows, dW = G^T X
      const std::vector<double> gv = vals(up), xv = vals(x);
      const int64_t m = static_cast<int64_t>(gv.size()) / out;
      std::vector<double> db(out, 0.0), dw(static_cast<size_t>(out * in), 0.0);
      for (int64_t r = 0; r < m; ++r)
        for (int64_t o = 0; o < out; ++o) {
          db[o] += gv[r * out + o];
          for (int64_t i = 0; i < in; ++i) dw[o * in + i] += gv[r * out + o] * xv[r * in + i];
        }
      check_tensor(lin.bias.grad(), {out}, db, 1e-5, 1e-5);
      check_tensor(lin.weight.grad(), {out, in}, dw, 1e-5, 1e-5);
    }
  }
}
