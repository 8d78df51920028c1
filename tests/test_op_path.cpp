// The op path (src/ops/op_call.h): every op of the table in ember/ops/op_def.h is seen by op
// observers once, with its inputs, typed attributes and outputs; nested calls and backward
// formulas are marked as such. (The op harness checks every one of its rows the same way.)
#include <doctest/doctest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "test_util.h"

using namespace ember;

namespace {

struct Seen {
  std::string name;
  int depth;
  bool in_backward;
  std::vector<Tensor> inputs;
  Attrs attrs;
  std::vector<Tensor> outputs;
  bool finished = false;
};

struct OpRecorder final : OpObserver {
  std::vector<Seen> calls;
  std::vector<size_t> open;  // indices of calls entered and not yet left
  void before(const OpCall& c) override {
    open.push_back(calls.size());
    calls.push_back({c.def->name, c.depth, c.in_backward, c.inputs, c.attrs, {}, false});
  }
  void after(const OpCall& c) override {
    REQUIRE(!open.empty());
    Seen& s = calls[open.back()];
    open.pop_back();
    CHECK(s.name == c.def->name);  // calls close in the order they opened
    s.outputs = c.outputs;
    s.finished = true;
  }
  std::vector<std::string> top_level() const {
    std::vector<std::string> r;
    for (const Seen& s : calls)
      if (s.depth == 0) r.push_back(s.name);
    return r;
  }
};

const Attr* find_attr(const Attrs& a, const std::string& name) {
  for (const Attr& x : a)
    if (name == x.name) return &x;
  return nullptr;
}

}  // namespace

TEST_SUITE("op_path") {
  TEST_CASE("the op table: one row per op, found by name, with its precision category") {
    std::set<std::string> names;
    for (const OpDef& d : op_defs()) {
      CAPTURE(d.name);
      CHECK(names.insert(d.name).second);
      CHECK(&op_def(d.id) == &d);
      REQUIRE(find_op(d.name).has_value());
      CHECK(*find_op(d.name) == d.id);
    }
    CHECK(!find_op("no_such_op").has_value());
    CHECK(op_def(OpId::matmul).precision == Precision::lower);
    CHECK(op_def(OpId::linear).precision == Precision::lower);
    CHECK(op_def(OpId::conv1d).precision == Precision::lower);
    CHECK(op_def(OpId::exp).precision == Precision::f32);
    CHECK(op_def(OpId::softmax).precision == Precision::f32);
    CHECK(op_def(OpId::cross_entropy).precision == Precision::f32);
    CHECK(op_def(OpId::add).precision == Precision::widest);
    CHECK(op_def(OpId::cat).precision == Precision::widest);
    CHECK(op_def(OpId::view).precision == Precision::keep);
    CHECK(std::string(precision_name(Precision::lower)) == "lower");
  }

  TEST_CASE("an observer sees an op once, before and after, with inputs, typed attributes and outputs") {
    const Device dev = ember_test::test_device();
    const Tensor a = randn({2, 3}).to(dev), b = randn({2, 3}).to(dev);
    OpRecorder r;
    Tensor out;
    {
      ObserveOps watch(r);
      out = add(a, b, 2.0);
    }
    REQUIRE(r.calls.size() >= 1);
    const Seen& s = r.calls[0];
    CHECK(s.name == "add");
    CHECK(s.depth == 0);
    CHECK(!s.in_backward);
    REQUIRE(s.inputs.size() == 2);
    CHECK(&s.inputs[0].impl() == &a.impl());
    CHECK(&s.inputs[1].impl() == &b.impl());
    const Attr* alpha = find_attr(s.attrs, "alpha");
    REQUIRE(alpha != nullptr);
    REQUIRE(std::holds_alternative<double>(alpha->value));
    CHECK(std::get<double>(alpha->value) == 2.0);
    CHECK(s.finished);
    REQUIRE(s.outputs.size() == 1);
    CHECK(&s.outputs[0].impl() == &out.impl());
    CHECK(r.top_level() == std::vector<std::string>{"add"});
    CHECK(r.open.empty());

    // Off once the guard is gone.
    const size_t seen = r.calls.size();
    (void)mul(a, b);
    CHECK(r.calls.size() == seen);
  }

  TEST_CASE("attributes keep their types: integers, integer lists, dtypes, absent optionals") {
    const Tensor x = randn({4, 6});
    OpRecorder r;
    {
      ObserveOps watch(r);
      (void)slice(x, 1, 1, 5, 2);
      (void)to_dtype(x, DType::f64);
      (void)squeeze(x);
      (void)sum(x, {0, 1}, true);
    }
    const auto top = r.top_level();
    REQUIRE(top == std::vector<std::string>{"slice", "to_dtype", "squeeze", "sum"});
    std::vector<const Seen*> t;
    for (const Seen& s : r.calls)
      if (s.depth == 0) t.push_back(&s);
    const Attr* step = find_attr(t[0]->attrs, "step");
    REQUIRE(step != nullptr);
    CHECK(std::get<int64_t>(step->value) == 2);
    CHECK(std::get<DType>(find_attr(t[1]->attrs, "dtype")->value) == DType::f64);
    CHECK(std::holds_alternative<std::monostate>(find_attr(t[2]->attrs, "dim")->value));
    CHECK(std::get<std::vector<int64_t>>(find_attr(t[3]->attrs, "dims")->value) == std::vector<int64_t>{0, 1});
    CHECK(std::get<bool>(find_attr(t[3]->attrs, "keepdim")->value) == true);
  }

  TEST_CASE("ops an op calls are nested; backward formulas run as nested calls marked in_backward") {
    const Device dev = ember_test::test_device();
    Generator g(3);
    const Tensor x = randn({5, 4}, DType::f32, &g).to(dev).requires_grad_();
    const Tensor w = randn({3, 4}, DType::f32, &g).to(dev).requires_grad_();
    const Tensor b = randn({3}, DType::f32, &g).to(dev).requires_grad_();
    OpRecorder r;
    {
      ObserveOps watch(r);
      Tensor y = linear(x, w, b);
      Tensor loss = sum(y);
      const size_t forward_calls = r.calls.size();
      loss.backward();
      // backward() itself makes the seed gradient (ones: a `full` the caller asked for);
      // everything after it runs inside the backward pass.
      CHECK(r.top_level() == std::vector<std::string>{"linear", "sum", "full"});
      REQUIRE(r.calls.size() > forward_calls + 1);
      CHECK(r.calls[forward_calls].name == "full");
      bool backward_seen = false;
      for (size_t i = forward_calls + 1; i < r.calls.size(); ++i) {
        CAPTURE(r.calls[i].name);
        CHECK(r.calls[i].depth >= 1);
        CHECK(r.calls[i].in_backward);
        backward_seen = true;
      }
      CHECK(backward_seen);
      for (size_t i = 0; i < forward_calls; ++i) CHECK(!r.calls[i].in_backward);
    }
    for (const Seen& s : r.calls) CHECK(s.finished);
    CHECK(r.open.empty());
  }

  TEST_CASE("an op that throws reports an after with no outputs, and the nesting recovers") {
    const Tensor a = randn({2, 3}), b = randn({4, 5});
    OpRecorder r;
    {
      ObserveOps watch(r);
      CHECK_THROWS_AS((void)add(a, b), Error);
      (void)neg(a);
    }
    REQUIRE(r.calls.size() >= 2);
    CHECK(r.calls[0].name == "add");
    CHECK(r.calls[0].finished);
    CHECK(r.calls[0].outputs.empty());
    CHECK(r.top_level() == std::vector<std::string>{"add", "neg"});
    CHECK(r.open.empty());
  }

  TEST_CASE("op observers nest: the inner one sees the calls while it lives") {
    const Tensor a = randn({3});
    OpRecorder outer, inner;
    {
      ObserveOps o(outer);
      (void)exp(a);
      {
        ObserveOps i(inner);
        (void)log1p(abs(a));
      }
      (void)tanh(a);
    }
    CHECK(outer.top_level() == std::vector<std::string>{"exp", "tanh"});
    CHECK(inner.top_level() == std::vector<std::string>{"abs", "log1p"});
  }

  TEST_CASE("functional losses, pools and struct-returning primitives are on the path too") {
    const Device dev = ember_test::test_device();
    Generator g(9);
    const Tensor logits = randn({4, 5}, DType::f32, &g).to(dev);
    const Tensor target = from_vector(std::vector<int64_t>{0, 4, 2, 1}, {4}).to(dev);
    const Tensor seq = randn({2, 3, 8}, DType::f32, &g).to(dev);
    OpRecorder r;
    {
      ObserveOps watch(r);
      (void)nn::cross_entropy(logits, target);
      (void)nn::max_pool1d(seq, 2);
      (void)layer_norm_forward(seq, {8});
      (void)max(logits, 1);
    }
    CHECK(r.top_level() == std::vector<std::string>{"cross_entropy", "max_pool1d", "layer_norm_forward", "max"});
    for (const Seen& s : r.calls)
      if (s.depth == 0) {
        CAPTURE(s.name);
        CHECK(!s.outputs.empty());
        for (const Tensor& t : s.outputs)
          if (t.defined()) CHECK(t.device() == dev);
      }
    // layer_norm_forward reports output, mean and rstd; max reports values and indices.
    for (const Seen& s : r.calls) {
      if (s.depth == 0 && s.name == "layer_norm_forward") CHECK(s.outputs.size() == 3);
      if (s.depth == 0 && s.name == "max") CHECK(s.outputs.size() == 2);
    }
  }
}
