// Autograd engine: accumulation, explicit gradients, retain_graph, detach, NoGradGuard, hooks,
// grad-ready hooks, retain_grad, version counters.
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>

#include "test_util.h"

using namespace ember;
using ember_test::check_tensor;
using ember_test::contains;
using ember_test::vals;

namespace {
Tensor leaf(std::initializer_list<double> v) {
  return tensor(v, DType::f64).requires_grad_(true);
}
std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}
bool mentions_in_place(const std::string& msg) {
  std::string m = lower(msg);
  return contains(m, "in-place") || contains(m, "in place") || contains(m, "inplace");
}
}  // namespace

TEST_SUITE("autograd") {
  TEST_CASE("simple gradients and graph structure") {
    Tensor x = leaf({1, 2, 3});
    Tensor y = x * x;
    CHECK(y.requires_grad());
    CHECK_FALSE(y.is_leaf());
    REQUIRE(y.grad_fn() != nullptr);
    CHECK(x.grad_fn() == nullptr);
    CHECK_FALSE(x.grad().defined());  // nothing yet
    sum(y).backward();
    check_tensor(x.grad(), {3}, {2, 4, 6});
    CHECK(x.grad().dtype() == DType::f64);
    CHECK_FALSE(x.grad().requires_grad());
    // an op on tensors that need no grad records nothing
    Tensor p = tensor({1, 2});
    Tensor q = p * p;
    CHECK_FALSE(q.requires_grad());
    CHECK(q.grad_fn() == nullptr);
  }

  TEST_CASE("gradients accumulate into leaves across backward calls") {
    Tensor x = leaf({1, 2, 3});
    sum(x * x).backward();
    sum(x * 3.0).backward();
    check_tensor(x.grad(), {3}, {5, 7, 9});
    x.set_grad(Tensor());  // clear
    CHECK_FALSE(x.grad().defined());
    sum(x * 3.0).backward();
    check_tensor(x.grad(), {3}, {3, 3, 3});
    x.grad().zero_();
    sum(x).backward();
    check_tensor(x.grad(), {3}, {1, 1, 1});
  }

  TEST_CASE("backward of a non-scalar takes the given gradient") {
    Tensor x = leaf({1, 2, 3});
    Tensor y = x * 2.0;
    y.backward(tensor({1, -1, 0.5}, DType::f64));
    check_tensor(x.grad(), {3}, {2, -2, 1});
    Tensor z = x * x;
    CHECK_THROWS_AS(z.backward(), Error);  // non-scalar needs a gradient
    Tensor w = x * 1.0;
    CHECK_THROWS_AS(w.backward(tensor({1, 2}, DType::f64)), Error);  // wrong gradient shape
  }

  TEST_CASE("retain_graph allows a second backward; without it a second backward raises") {
    Tensor x = leaf({1, 2});
    Tensor y = sum(x * x);
    y.backward(Tensor(), true);
    y.backward();
    check_tensor(x.grad(), {2}, {4, 8});
    CHECK_THROWS_AS(y.backward(), Error);
    Tensor x2 = leaf({3});
    Tensor y2 = sum(exp(x2) * x2);
    y2.backward();
    CHECK_THROWS_AS(y2.backward(), Error);
  }

  TEST_CASE("shared subgraph and diamond") {
    Tensor x = leaf({0.5, -1.5});
    Tensor h = tanh(x);
    Tensor y = sum(h * h + h * 3.0 + exp(h));
    y.backward();
    std::vector<double> g;
    for (double v : {0.5, -1.5}) {
      double t = std::tanh(v);
      g.push_back((2 * t + 3 + std::exp(t)) * (1 - t * t));
    }
    check_tensor(x.grad(), {2}, g, 1e-12, 1e-12);
  }

  TEST_CASE("gradients reach leaves through views and broadcasts") {
    Tensor x = tensor({{1, 2, 3}, {4, 5, 6}}, DType::f64).requires_grad_(true);
    Tensor b = tensor({10, 20, 30}, DType::f64).requires_grad_(true);
    Tensor y = sum((x.t().select(0, 1) * 2.0)) + sum(x + b);
    y.backward();
    check_tensor(x.grad(), {2, 3}, {1, 3, 1, 1, 3, 1});
    check_tensor(b.grad(), {3}, {2, 2, 2});  // broadcast over two rows sums back
  }

  TEST_CASE("gradients have the leaf's dtype and shape") {
    Tensor a = tensor({1, 2, 3}).requires_grad_(true);  // f32
    Tensor b = tensor({0.5, 0.25, 2}, DType::f64);
    Tensor y = sum(a * b);  // promoted to f64
    CHECK(y.dtype() == DType::f64);
    y.backward();
    REQUIRE(a.grad().defined());
    CHECK(a.grad().dtype() == DType::f32);
    check_tensor(a.grad(), {3}, {0.5, 0.25, 2});
    Tensor c = tensor({1, 2}).requires_grad_(true);
    sum(to_dtype(c, DType::f64) * 3.0).backward();
    CHECK(c.grad().dtype() == DType::f32);
    check_tensor(c.grad(), {2}, {3, 3});
    Tensor h = tensor({1, 2}, DType::bf16).requires_grad_(true);
    sum(h * h).backward();
    CHECK(h.grad().dtype() == DType::bf16);
    check_tensor(h.grad(), {2}, {2, 4});
    Tensor s = scalar_tensor(2.0, DType::f64).requires_grad_(true);  // 0-D leaf broadcast
    sum(s * tensor({1, 2, 3}, DType::f64)).backward();
    check_tensor(s.grad(), {}, {6});
  }

  TEST_CASE("detach") {
    Tensor x = leaf({1, 2});
    Tensor y = x * 3.0;
    Tensor d = y.detach();
    CHECK_FALSE(d.requires_grad());
    CHECK(d.grad_fn() == nullptr);
    CHECK(d.impl().storage == y.impl().storage);  // shares memory
    Tensor z = sum(d * x);
    z.backward();
    check_tensor(x.grad(), {2}, {3, 6});  // d is a constant
  }

  TEST_CASE("NoGradGuard") {
    Tensor x = leaf({1, 2});
    CHECK(grad_enabled());
    {
      NoGradGuard ng;
      CHECK_FALSE(grad_enabled());
      Tensor y = x * 2.0;
      CHECK_FALSE(y.requires_grad());
      CHECK(y.grad_fn() == nullptr);
      {
        NoGradGuard nested;
        CHECK_FALSE(grad_enabled());
      }
      CHECK_FALSE(grad_enabled());
      x.add_(tensor({1, 1}, DType::f64));  // in-place on a leaf is fine without grad mode
    }
    CHECK(grad_enabled());
    check_tensor(x, {2}, {2, 3});
    CHECK(x.requires_grad());
    Tensor y = x * 2.0;
    CHECK(y.requires_grad());
    set_grad_enabled(false);
    CHECK_FALSE((x * 2.0).requires_grad());
    set_grad_enabled(true);
  }

  TEST_CASE("tensor hooks can replace the gradient") {
    Tensor x = leaf({1, 2});
    int calls = 0;
    x.register_hook([&](const Tensor& g) {
      ++calls;
      return g * 2.0;
    });
    sum(x * 3.0).backward();
    CHECK(calls == 1);
    check_tensor(x.grad(), {2}, {6, 6});
    // a hook on a non-leaf changes what flows further back
    Tensor a = leaf({1, 2});
    Tensor h = a * 3.0;
    Tensor seen;
    h.register_hook([&](const Tensor& g) {
      seen = g.clone();
      return g * 10.0;
    });
    sum(h * h).backward();
    check_tensor(seen, {2}, {6, 12});
    check_tensor(a.grad(), {2}, {180, 360});
    // a hook returning an undefined tensor keeps the gradient
    Tensor c = leaf({5});
    c.register_hook([](const Tensor&) { return Tensor(); });
    sum(c * 4.0).backward();
    check_tensor(c.grad(), {1}, {4});
  }

  TEST_CASE("grad-ready hook fires once per backward with the summed gradient") {
    Tensor x = leaf({1, 2, 3});
    Tensor w = leaf({0.5});
    int calls = 0;
    std::vector<std::vector<double>> grads;
    x.register_grad_ready_hook([&](Tensor& l) {
      ++calls;
      CHECK(l.is_same(x));
      grads.push_back(vals(l.grad()));
    });
    // x used twice (and once more through a view): one call with the total
    Tensor y = sum(x * 2.0) + sum(x * x) + sum(x.narrow(0, 1, 2));
    y.backward();
    CHECK(calls == 1);
    REQUIRE(grads.size() == 1);
    CHECK(grads[0] == std::vector<double>{4, 7, 9});
    Tensor y2 = sum(x * w);
    y2.backward();
    CHECK(calls == 2);
    REQUIRE(grads.size() == 2);
    CHECK(grads[1] == std::vector<double>{4.5, 7.5, 9.5});  // accumulated .grad
    // a leaf that gets no gradient in a pass does not fire
    sum(w * 2.0).backward();
    CHECK(calls == 2);
  }

  TEST_CASE("retain_grad on a non-leaf") {
    Tensor x = leaf({1, 2});
    Tensor y = x * 3.0;
    Tensor z = y * 2.0;  // no retain_grad: no .grad kept
    y.retain_grad();
    sum(y * y + z).backward();
    check_tensor(y.grad(), {2}, {8, 14});
    check_tensor(x.grad(), {2}, {24, 42});
    CHECK_FALSE(z.grad().defined());
  }

  TEST_CASE("requires_grad_ rules") {
    CHECK_THROWS_AS(tensor({1, 2}, DType::i64).requires_grad_(true), Error);  // only floats
    Tensor x = leaf({1, 2});
    Tensor y = x * 2.0;
    CHECK_THROWS_AS(y.requires_grad_(false), Error);  // non-leaf
    Tensor z = tensor({1.0});
    z.requires_grad_(true);
    CHECK(z.requires_grad());
    z.requires_grad_(false);
    CHECK_FALSE(z.requires_grad());
  }

  TEST_CASE("in-place change of a saved tensor is caught at backward") {
    Tensor a = leaf({1, 2, 3});
    Tensor b = tensor({4, 5, 6}, DType::f64);
    Tensor c = a * b;  // mul saves b for a's gradient
    b.add_(ones({3}, DType::f64));
    std::string msg = ember_test::check_error([&] { sum(c).backward(); }, "backward after b.add_", {});
    CHECK_MESSAGE(mentions_in_place(msg), "message \"" << msg << "\" does not mention in-place modification");
    // a view of the saved tensor modified in place is caught too (shared storage)
    Tensor a2 = leaf({1, 2});
    Tensor b2 = tensor({3, 4, 5}, DType::f64);
    Tensor c2 = a2 * b2.narrow(0, 0, 2);
    b2.select(0, 2).fill_(0);
    CHECK_THROWS_AS(sum(c2).backward(), Error);
    // without the in-place edit all is well
    Tensor a3 = leaf({1, 2});
    Tensor b3 = tensor({3, 4}, DType::f64);
    Tensor c3 = a3 * b3;
    Tensor unrelated = tensor({1, 1}, DType::f64);
    unrelated.add_(b3);
    sum(c3).backward();
    check_tensor(a3.grad(), {2}, {3, 4});
  }

  TEST_CASE("in-place on a leaf that requires grad raises") {
    Tensor a = leaf({1, 2});
    CHECK_THROWS_AS(a.add_(tensor({1, 1}, DType::f64)), Error);
    CHECK_THROWS_AS(a.mul_(2.0), Error);
    CHECK_THROWS_AS(a.fill_(0), Error);
    CHECK_THROWS_AS(a.zero_(), Error);
    check_tensor(a, {2}, {1, 2});  // unchanged
  }

  TEST_CASE("a custom op recorded with record() takes part in backward") {
    Tensor x = leaf({1, 2, 3});
    Tensor out;
    {
      NoGradGuard ng;
      out = x * x * x;
    }
    out = out.detach();
    record("cube", {x}, {out},
           [](const std::vector<Tensor>& g, const std::vector<Tensor>& saved, const std::vector<bool>& needs) {
             REQUIRE(needs.size() == 1);
             CHECK(needs[0]);
             return std::vector<Tensor>{g[0] * saved[0] * saved[0] * 3.0};
           },
           {x});
    CHECK(out.requires_grad());
    REQUIRE(out.grad_fn() != nullptr);
    CHECK(out.grad_fn()->name() == "cube");
    sum(out).backward();
    check_tensor(x.grad(), {3}, {3, 12, 27});
  }
}
