// Hierarchical softmax: the tree builders, the fused ops against the composed reference,
// gradcheck in f64, the full distribution, beam-search top-k, bad input, the module, and CUDA
// against the CPU (on cuda:0, or on the stand-in device fake:0 without a GPU).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

#include "ember/autograd/gradcheck.h"
#include "ember/nn/hsoftmax.h"
#include "ember/ops/hsoftmax.h"
#include "test_util.h"

using namespace ember;
using ember_test::check_close;
using ember_test::vals;
using nn::ClassTree;

namespace {

using ember_test::test_device;

// Three levels, mixed depths, a 4-way node, binary nodes, a class straight under the root,
// and a single-child chain (mineral -> rock) that is collapsed.
const std::vector<std::vector<std::string>> kTaxonomy = {
    {"animal", "mammal", "dog"},  {"animal", "mammal", "cat"},   {"animal", "mammal", "horse"},
    {"animal", "mammal", "cow"},  {"animal", "bird", "eagle"},   {"animal", "bird", "owl"},
    {"animal", "fish"},           {"plant", "tree", "oak"},      {"plant", "tree", "pine"},
    {"plant", "flower"},          {"fungus"},                    {"mineral", "rock", "granite"},
    {"mineral", "rock", "basalt"},
};

std::vector<int64_t> depths(const ClassTree& t) {
  std::vector<int64_t> d;
  for (int64_t c = 0; c < t.num_classes(); ++c) d.push_back(t.depth(c));
  return d;
}

double expected_length(const ClassTree& t, const std::vector<double>& f) {
  double s = 0, tot = 0;
  for (int64_t c = 0; c < t.num_classes(); ++c) {
    s += f[static_cast<size_t>(c)] * static_cast<double>(t.depth(c));
    tot += f[static_cast<size_t>(c)];
  }
  return s / tot;
}

struct Named {
  std::string label;
  ClassTree tree;
};
std::vector<Named> test_trees() {
  return {{"taxonomy", ClassTree::from_paths(kTaxonomy)},
          {"huffman", ClassTree::huffman({5, 1, 1, 2, 30, 7, 3, 3, 11})},
          {"balanced arity 3", ClassTree::balanced(11, 3)},
          {"balanced binary", ClassTree::balanced(6)}};
}

Tensor randn64(const Shape& s, Generator& g) { return randn(s, DType::f64, &g); }

// (N, C) of log P(c | h) for every c through hsoftmax_log_prob with (N, C) classes.
Tensor every_class(const Tensor& h, const Tensor& W, const Tensor& b, const HSoftmaxTree& t) {
  const int64_t N = h.size(0), C = t.num_classes;
  Tensor cls = expand(unsqueeze(arange(0, static_cast<double>(C)), 0), {N, C});
  return hsoftmax_log_prob(h, W, b, cls, t);
}

}  // namespace

TEST_SUITE("hsoftmax") {
  TEST_CASE("from_paths: a three-level taxonomy of mixed depths, single-child chains collapsed") {
    const ClassTree t = ClassTree::from_paths(kTaxonomy);
    CHECK(t.num_classes() == 13);
    // root(animal, plant, fungus, rock) ; animal(mammal, bird, fish) ; mammal(4) ; bird(2) ;
    // plant(tree, flower) ; tree(2) ; rock(2): 7 internal nodes.
    CHECK(t.num_nodes() == 7);
    CHECK(t.arity(0) == 4);
    CHECK(t.max_arity() == 4);
    CHECK(t.max_depth() == 3);
    CHECK(depths(t) == std::vector<int64_t>{3, 3, 3, 3, 3, 3, 2, 3, 3, 2, 1, 2, 2});
    // Rows: 4 (root) + 3 (animal) + 1 (plant) + 4 (mammal) + 1 (bird) + 1 (tree) + 1 (rock).
    CHECK(t.num_rows() == 15);
    // dog: root child 0 (animal), animal child 0 (mammal), mammal child 0.
    const auto& dog = t.path(0);
    REQUIRE(dog.size() == 3);
    CHECK(dog[0].node == 0);
    CHECK(dog[0].child == 0);
    CHECK(dog[2].child == 0);
    CHECK(t.arity(dog[2].node) == 4);
    // granite skips the collapsed "mineral": root -> rock -> granite.
    const auto& granite = t.path(11);
    REQUIRE(granite.size() == 2);
    CHECK(granite[0].child == 3);
    CHECK(t.children(granite[1].node) == std::vector<int64_t>{~int64_t{11}, ~int64_t{12}});
    CHECK(t.name(2) == "animal/mammal/horse");
    // Breadth-first numbering: a parent's id is below its children's, rows follow node order.
    for (int64_t n = 0; n < t.num_nodes(); ++n)
      for (int64_t c : t.children(n))
        if (c >= 0) CHECK(c > n);
    CHECK(t.row_offset(1) == 4);
    // A root chain collapses too: everything under one label.
    const ClassTree one = ClassTree::from_paths({{"x", "y", "a"}, {"x", "y", "b"}, {"x", "y", "c"}});
    CHECK(one.num_nodes() == 1);
    CHECK(depths(one) == std::vector<int64_t>{1, 1, 1});
  }

  TEST_CASE("huffman: code lengths of a known frequency set, shorter on average than a balanced tree") {
    // The textbook set: a:45 b:13 c:12 d:16 e:9 f:5 -> lengths 1, 3, 3, 3, 4, 4 (average 2.24).
    const std::vector<double> f = {45, 13, 12, 16, 9, 5};
    const ClassTree t = ClassTree::huffman(f);
    CHECK(depths(t) == std::vector<int64_t>{1, 3, 3, 3, 4, 4});
    CHECK(t.num_nodes() == 5);
    CHECK(t.num_rows() == 5);  // binary: one row per node
    CHECK(expected_length(t, f) == doctest::Approx(2.24));
    CHECK(expected_length(t, f) <= expected_length(ClassTree::balanced(6), f));
    // Zipf-like counts over 1000 classes: strictly shorter than the balanced tree's 10 bits.
    std::vector<double> zipf;
    for (int c = 0; c < 1000; ++c) zipf.push_back(1.0 / (c + 1));
    const ClassTree z = ClassTree::huffman(zipf);
    const double hz = expected_length(z, zipf), hb = expected_length(ClassTree::balanced(1000), zipf);
    CHECK(hz < hb);
    CHECK(z.depth(0) < z.depth(999));  // frequent classes get short paths
    // Kraft equality of a full binary code: sum 2^-len == 1.
    double kraft = 0;
    for (int64_t c = 0; c < z.num_classes(); ++c) kraft += std::ldexp(1.0, -static_cast<int>(z.depth(c)));
    CHECK(kraft == doctest::Approx(1.0).epsilon(1e-12));
  }

  TEST_CASE("balanced: depth ceil(log_arity C), contiguous classes, every node full") {
    const ClassTree b2 = ClassTree::balanced(10);
    CHECK(b2.num_nodes() == 9);
    CHECK(b2.num_rows() == 9);
    CHECK(b2.max_depth() == 4);
    for (int64_t d : depths(b2)) CHECK((d == 3 || d == 4));
    const ClassTree b3 = ClassTree::balanced(10, 3);
    CHECK(b3.max_depth() == 3);
    CHECK(b3.arity(0) == 3);
    int64_t rows = 0;
    for (int64_t n = 0; n < b3.num_nodes(); ++n) {
      CHECK(b3.arity(n) >= 2);
      CHECK(b3.arity(n) <= 3);
      rows += b3.arity(n) == 2 ? 1 : b3.arity(n);
    }
    CHECK(rows == b3.num_rows());
    const ClassTree big = ClassTree::balanced(100000);
    CHECK(big.max_depth() == 17);
    CHECK(big.num_rows() == 99999);
    // Classes in order: class 0 always takes child 0.
    for (const auto& s : big.path(0)) CHECK(s.child == 0);
  }

  TEST_CASE("bad taxonomies and builder arguments raise ember::Error") {
    CHECK_EMBER_ERROR(ClassTree::from_paths({{"a", "b"}, {"a", "b"}}), "from_paths", "same path", "a/b");
    CHECK_EMBER_ERROR(ClassTree::from_paths({{"a"}, {"a", "b"}, {"c"}}), "from_paths", "prefix", "a/b");
    CHECK_EMBER_ERROR(ClassTree::from_paths({{"a", "b"}, {"a"}, {"c"}}), "from_paths", "prefix");
    CHECK_EMBER_ERROR(ClassTree::from_paths({{"a"}, {}}), "from_paths", "empty path");
    CHECK_EMBER_ERROR(ClassTree::from_paths({{"a"}, {"b", ""}}), "from_paths", "empty label");
    CHECK_EMBER_ERROR(ClassTree::from_paths({{"a"}}), "from_paths", "at least 2");
    CHECK_EMBER_ERROR(ClassTree::huffman({1.0, -2.0}), "huffman", "class 1");
    CHECK_EMBER_ERROR(ClassTree::balanced(1), "balanced", "at least 2");
    CHECK_EMBER_ERROR(ClassTree::balanced(5, 1), "balanced", "arity");
  }

  TEST_CASE("fused hsoftmax_nll matches the composed reference: loss and every gradient") {
    Generator g(11);
    for (const Named& nt : test_trees())
      for (DType dt : {DType::f64, DType::f32}) {
        CAPTURE(nt.label);
        const std::string dt_name = dtype_name(dt);
        CAPTURE(dt_name);
        const HSoftmaxTree t = nt.tree.tables();
        const int64_t C = t.num_classes, N = 2 * C + 3, D = 7;
        // Every class appears, some twice (shared rows accumulate).
        std::vector<int64_t> tv;
        for (int64_t i = 0; i < N; ++i) tv.push_back((i * 7) % C);
        const Tensor tg = from_vector(tv, {N});
        const Tensor h0 = randn64({N, D}, g).to(dt), W0 = randn64({t.num_rows, D}, g).to(dt),
                     b0 = randn64({t.num_rows}, g).to(dt), up = randn64({N}, g).to(dt);
        for (bool with_bias : {true, false}) {
          CAPTURE(with_bias);
          Tensor h1 = h0.clone().requires_grad_(), W1 = W0.clone().requires_grad_(), b1 = b0.clone().requires_grad_();
          Tensor h2 = h0.clone().requires_grad_(), W2 = W0.clone().requires_grad_(), b2 = b0.clone().requires_grad_();
          const Tensor l1 = hsoftmax_nll(h1, W1, with_bias ? b1 : Tensor(), tg, t);
          const Tensor l2 = hsoftmax_nll_reference(h2, W2, with_bias ? b2 : Tensor(), tg, t);
          const double tol = dt == DType::f64 ? 1e-11 : 1e-5;
          check_close(l1, l2, tol, tol);
          for (double v : vals(l1)) CHECK(v > 0);
          (l1 * up).sum().backward();
          (l2 * up).sum().backward();
          check_close(h1.grad(), h2.grad(), tol, tol);
          check_close(W1.grad(), W2.grad(), tol, tol);
          if (with_bias) check_close(b1.grad(), b2.grad(), tol, tol);
          else CHECK(!b1.grad().defined());
        }
      }
  }

  TEST_CASE("gradcheck in f64: hsoftmax_nll, log_prob (N, K) and full_log_prob") {
    Generator g(12);
    for (const Named& nt : test_trees()) {
      CAPTURE(nt.label);
      const HSoftmaxTree t = nt.tree.tables();
      const int64_t C = t.num_classes, N = 5, D = 4;
      std::vector<int64_t> tv, kv;
      for (int64_t i = 0; i < N; ++i) tv.push_back((i * 5 + 2) % C);
      for (int64_t i = 0; i < N * 2; ++i) kv.push_back((i * 3 + 1) % C);
      const Tensor tg = from_vector(tv, {N}), kc = from_vector(kv, {N, 2});
      Tensor h = randn64({N, D}, g).requires_grad_(), W = randn64({t.num_rows, D}, g).requires_grad_(),
             b = randn64({t.num_rows}, g).requires_grad_();
      auto r1 = gradcheck([&](const std::vector<Tensor>& v) { return hsoftmax_nll(v[0], v[1], v[2], tg, t); }, {h, W, b});
      CHECK_MESSAGE(r1.ok, r1.message);
      auto r2 = gradcheck([&](const std::vector<Tensor>& v) { return hsoftmax_log_prob(v[0], v[1], v[2], kc, t); },
                          {h, W, b});
      CHECK_MESSAGE(r2.ok, r2.message);
      auto r3 = gradcheck([&](const std::vector<Tensor>& v) { return hsoftmax_full_log_prob(v[0], v[1], v[2], t); },
                          {h, W, b});
      CHECK_MESSAGE(r3.ok, r3.message);
    }
  }

  TEST_CASE("full_log_prob: every row is a distribution and matches log_prob class by class") {
    Generator g(13);
    for (const Named& nt : test_trees()) {
      CAPTURE(nt.label);
      const HSoftmaxTree t = nt.tree.tables();
      const int64_t N = 6, D = 5;
      const Tensor h = randn64({N, D}, g) * 2.0, W = randn64({t.num_rows, D}, g), b = randn64({t.num_rows}, g);
      const Tensor full = hsoftmax_full_log_prob(h, W, b, t);
      REQUIRE(full.shape() == Shape{N, t.num_classes});
      check_close(sum(exp(full), {1}), ones({N}, DType::f64), 1e-12, 1e-12);
      check_close(full, every_class(h, W, b, t), 1e-11, 1e-11);
      // f32 agrees with f64.
      check_close(hsoftmax_full_log_prob(h.to(DType::f32), W.to(DType::f32), b.to(DType::f32), t), full, 1e-4, 1e-4);
    }
  }

  TEST_CASE("topk: a wide beam gives the full distribution's top k; a narrow one valid log-probs") {
    Generator g(14);
    for (const Named& nt : test_trees()) {
      CAPTURE(nt.label);
      const HSoftmaxTree t = nt.tree.tables();
      const int64_t N = 7, D = 6, C = t.num_classes, k = std::min<int64_t>(5, C);
      const Tensor h = randn64({N, D}, g) * 2.0, W = randn64({t.num_rows, D}, g), b = randn64({t.num_rows}, g);
      const std::vector<double> full = vals(hsoftmax_full_log_prob(h, W, b, t));
      const HSoftmaxTopK wide = hsoftmax_topk(h, W, b, k, C, t);
      REQUIRE(wide.values.shape() == Shape{N, k});
      REQUIRE(wide.classes.dtype() == DType::i64);
      const std::vector<double> wv = vals(wide.values);
      const std::vector<int64_t> wc = wide.classes.to_vector<int64_t>();
      for (int64_t i = 0; i < N; ++i) {
        std::vector<int64_t> order(static_cast<size_t>(C));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t c) {
          return full[static_cast<size_t>(i * C + a)] > full[static_cast<size_t>(i * C + c)];
        });
        for (int64_t j = 0; j < k; ++j) {
          CHECK(wc[static_cast<size_t>(i * k + j)] == order[static_cast<size_t>(j)]);
          CHECK(wv[static_cast<size_t>(i * k + j)] ==
                doctest::Approx(full[static_cast<size_t>(i * C + order[static_cast<size_t>(j)])]).epsilon(1e-10));
        }
      }
      // Beam = k: still k distinct classes, descending, each value its class's log-prob.
      const HSoftmaxTopK narrow = hsoftmax_topk(h, W, b, k, k, t);
      const std::vector<double> nv = vals(narrow.values);
      const std::vector<int64_t> nc = narrow.classes.to_vector<int64_t>();
      for (int64_t i = 0; i < N; ++i)
        for (int64_t j = 0; j < k; ++j) {
          const int64_t c = nc[static_cast<size_t>(i * k + j)];
          REQUIRE(c >= 0);
          REQUIRE(c < C);
          CHECK(nv[static_cast<size_t>(i * k + j)] == doctest::Approx(full[static_cast<size_t>(i * C + c)]).epsilon(1e-10));
          if (j > 0) CHECK(nv[static_cast<size_t>(i * k + j)] <= nv[static_cast<size_t>(i * k + j - 1)]);
          if (j == 0) CHECK(nv[static_cast<size_t>(i * k)] <= wv[static_cast<size_t>(i * k)] + 1e-12);
        }
    }
  }

  TEST_CASE("f16 and bf16 inputs compute in f32 and agree with f32") {
    Generator g(15);
    const HSoftmaxTree t = ClassTree::from_paths(kTaxonomy).tables();
    const int64_t N = 9, D = 8;
    const Tensor tg = from_vector(std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 12}, {N});
    const Tensor h = randn({N, D}, DType::f32, &g), W = randn({t.num_rows, D}, DType::f32, &g),
                 b = randn({t.num_rows}, DType::f32, &g);
    for (DType dt : {DType::f16, DType::bf16}) {
      const std::string dt_name = dtype_name(dt);
      CAPTURE(dt_name);
      const Tensor hl = h.to(dt), Wl = W.to(dt), bl = b.to(dt);
      const Tensor l = hsoftmax_nll(hl, Wl, bl, tg, t);
      CHECK(l.dtype() == dt);
      check_close(l, hsoftmax_nll(hl.to(DType::f32), Wl.to(DType::f32), bl.to(DType::f32), tg, t), 2e-2, 2e-2);
      const HSoftmaxGrads gr = hsoftmax_nll_backward(ones({N}, dt), hl, Wl, bl, tg, t);
      CHECK(gr.grad_weight.dtype() == dt);
      const HSoftmaxGrads g32 =
          hsoftmax_nll_backward(ones({N}), hl.to(DType::f32), Wl.to(DType::f32), bl.to(DType::f32), tg, t);
      check_close(gr.grad_h, g32.grad_h, 2e-2, 2e-2);
      check_close(gr.grad_weight, g32.grad_weight, 2e-2, 2e-2);
    }
  }

  TEST_CASE("bad inputs raise ember::Error naming the op and the shapes") {
    const HSoftmaxTree t = ClassTree::balanced(5).tables();  // 4 rows
    const Tensor h = randn({3, 6}), W = randn({4, 6}), b = randn({4});
    const Tensor tg = from_vector(std::vector<int64_t>{0, 1, 4}, {3});
    CHECK_EMBER_ERROR(hsoftmax_nll(h, W, b, from_vector(std::vector<int64_t>{0, 5, 1}, {3}), t), "hsoftmax_nll",
                      "[0, 5)", "found 5");
    CHECK_EMBER_ERROR(hsoftmax_nll(h, W, b, from_vector(std::vector<int64_t>{0, -1, 1}, {3}), t), "hsoftmax_nll",
                      "found -1");
    {  // on a device the range check is deferred to the next host read (no sync in the op)
      const Device dev = ember_test::test_device();
      const HSoftmaxTree td = ClassTree::balanced(5).tables(dev);
      check_deferred_errors();
      Tensor loss = hsoftmax_nll(h.to(dev), W.to(dev), b.to(dev), from_vector(std::vector<int64_t>{0, 7, 1}, {3}).to(dev), td);
      CHECK(pending_deferred_checks() == 1);
      ember_test::check_error([&] { (void)loss.to_vector<float>(); }, "to_vector", {"hsoftmax_nll", "[0, 5)", "found 7"});
      CHECK(pending_deferred_checks() == 0);
    }
    CHECK_EMBER_ERROR(hsoftmax_nll(randn({3, 5}), W, b, tg, t), "hsoftmax_nll", "(4, 5)", "(4, 6)");
    CHECK_EMBER_ERROR(hsoftmax_nll(h, randn({5, 6}), b, tg, t), "hsoftmax_nll", "(4, 6)", "(5, 6)");
    CHECK_EMBER_ERROR(hsoftmax_nll(h, W, randn({3}), tg, t), "hsoftmax_nll", "(4,)", "(3,)");
    CHECK_EMBER_ERROR(hsoftmax_nll(h, W.to(DType::f64), b, tg, t), "hsoftmax_nll", "f64", "f32");
    CHECK_EMBER_ERROR(hsoftmax_nll(h, W, b, from_vector(std::vector<int64_t>{0, 1}, {2}), t), "hsoftmax_nll",
                      "(3, 6)", "(2,)");
    CHECK_EMBER_ERROR(hsoftmax_nll(h, W, b, tg.to(DType::f32), t), "hsoftmax_nll", "i64 or i32");
    CHECK_EMBER_ERROR(hsoftmax_nll(randn({3}), W, b, tg, t), "hsoftmax_nll", "2-D");
    HSoftmaxTree broken = t;
    broken.table = t.table.to(DType::i64);
    CHECK_EMBER_ERROR(hsoftmax_nll(h, W, b, tg, broken), "hsoftmax_nll", "i32");
    CHECK_EMBER_ERROR(hsoftmax_topk(h, W, b, 6, 8, t), "hsoftmax_topk", "k must lie in [1, 5]");
    CHECK_EMBER_ERROR(hsoftmax_topk(h, W, b, 3, 2, t), "hsoftmax_topk", "beam (2)");
    CHECK_EMBER_ERROR(hsoftmax_log_prob(h, W, b, zeros({3, 2, 2}, DType::i64), t), "hsoftmax_log_prob", "(3, 2, 2)");
    CHECK_EMBER_ERROR(hsoftmax_tree_log_prob(randn({3, 5}), t), "hsoftmax_tree_log_prob", "(3, 5)");
    CHECK_EMBER_ERROR(hsoftmax_nll_backward(ones({2}), h, W, b, tg, t), "hsoftmax_nll_backward", "grad_loss");
    CHECK_EMBER_ERROR(hsoftmax_nll(h.to(test_device()), W, b, tg, t), "hsoftmax_nll", test_device().str());
  }

  TEST_CASE("HierarchicalSoftmax: parameters, buffer, reductions, to(dtype), and it trains") {
    Generator g(16);
    const ClassTree tree = ClassTree::from_paths(kTaxonomy);
    nn::HierarchicalSoftmax hsm(8, tree, true, &g);
    CHECK(hsm.weight.shape() == Shape{15, 8});
    CHECK(hsm.bias.shape() == Shape{15});
    CHECK(hsm.tree.dtype() == DType::i32);
    CHECK(hsm.parameter_count() == 15 * 8 + 15);
    const auto sd = hsm.state_dict();
    const Tensor h = randn({13, 8}, DType::f32, &g);
    const Tensor y = arange(0, 13);
    const Tensor none = hsm(h, y, nn::Reduction::none);
    CHECK(none.shape() == Shape{13});
    CHECK(hsm(h, y).item<float>() == doctest::Approx(mean(none).item<float>()).epsilon(1e-6));
    CHECK(hsm(h, y, nn::Reduction::sum).item<float>() == doctest::Approx(sum(none).item<float>()).epsilon(1e-6));
    check_close(hsm.log_prob(h, y), neg(none), 1e-6, 1e-6);
    CHECK(hsm.full_log_prob(h).shape() == Shape{13, 13});
    CHECK(hsm.predict_topk(h, 3, 13).classes.shape() == Shape{13, 3});
    nn::HierarchicalSoftmax nobias(8, tree, false, &g);
    CHECK(!nobias.bias.defined());
    CHECK(nobias.parameter_count() == 15 * 8);
    // Plain SGD on a fixed batch lowers the loss.
    const float before = hsm(h, y).item<float>();
    for (int step = 0; step < 30; ++step) {
      Tensor loss = hsm(h, y);
      loss.backward();
      NoGradGuard no_grad;
      for (Tensor& p : hsm.parameters()) {
        p.add_(p.grad(), -0.5);
      }
      hsm.zero_grad();
    }
    CHECK(hsm(h, y).item<float>() < 0.5f * before);
    hsm.to(DType::f64);
    CHECK(hsm.weight.dtype() == DType::f64);
    CHECK(hsm.tree.dtype() == DType::i32);  // integer buffers keep their dtype
    CHECK(hsm(h.to(DType::f64), y).dtype() == DType::f64);
    CHECK_EMBER_ERROR(nn::HierarchicalSoftmax(0, tree), "HierarchicalSoftmax", "in_features");
  }

  TEST_CASE("CUDA hierarchical softmax matches the CPU: nll and gradients, full, top-k, every float dtype") {
    cuda::set_poison_allocations(cuda::is_available());
    const Device dev = test_device();
    Generator g(17);
    std::vector<Named> trees = test_trees();
    trees.push_back({"balanced 3000 binary", ClassTree::balanced(3000)});
    for (const Named& nt : trees)
      for (DType dt : {DType::f32, DType::f64, DType::f16, DType::bf16}) {
        CAPTURE(nt.label);
        const std::string dt_name = dtype_name(dt);
        CAPTURE(dt_name);
        const HSoftmaxTree tc = nt.tree.tables(), td = nt.tree.tables(dev);
        const int64_t C = tc.num_classes, N = 67, D = dt == DType::f32 ? 300 : 40;  // D not a multiple of 32
        std::vector<int64_t> tv;
        for (int64_t i = 0; i < N; ++i) tv.push_back((i * 13 + 5) % C);
        const Tensor tg = from_vector(tv, {N});
        // Rounded to dt on the CPU so both devices see the same values.
        const Tensor h = (randn64({N, D}, g) * 0.3).to(dt), W = (randn64({tc.num_rows, D}, g) * 0.3).to(dt),
                     b = randn64({tc.num_rows}, g).to(dt), up = randn64({N}, g).to(dt);
        double tol = 1e-4;
        if (dt == DType::f64) tol = 1e-10;
        if (dt == DType::f16) tol = 2e-2;
        if (dt == DType::bf16) tol = 5e-2;
        Tensor hc = h.clone().requires_grad_(), Wc = W.clone().requires_grad_(), bc = b.clone().requires_grad_();
        Tensor hd = h.to(dev).requires_grad_(), Wd = W.to(dev).requires_grad_(), bd = b.to(dev).requires_grad_();
        const Tensor lc = hsoftmax_nll(hc, Wc, bc, tg, tc), ld = hsoftmax_nll(hd, Wd, bd, tg.to(dev), td);
        CHECK(ld.device() == dev);
        CHECK(ld.dtype() == dt);
        check_close(ld.to(Device::cpu()), lc, tol, tol);
        (lc * up).sum().backward();
        (ld * up.to(dev)).sum().backward();
        check_close(hd.grad().to(Device::cpu()), hc.grad(), tol, tol);
        check_close(Wd.grad().to(Device::cpu()), Wc.grad(), 4 * tol, 4 * tol);
        check_close(bd.grad().to(Device::cpu()), bc.grad(), 4 * tol, 4 * tol);
        if (C > 100) continue;  // the rest is (N, C)
        const Tensor fc = hsoftmax_full_log_prob(h, W, b, tc), fd = hsoftmax_full_log_prob(h.to(dev), W.to(dev), b.to(dev), td);
        check_close(fd.to(Device::cpu()), fc, 4 * tol, 4 * tol);
        if (dt == DType::f64) {
          const HSoftmaxTopK kc = hsoftmax_topk(h, W, b, 2, 3, tc), kd = hsoftmax_topk(h.to(dev), W.to(dev), b.to(dev), 2, 3, td);
          CHECK(kd.classes.to(Device::cpu()).to_vector<int64_t>() == kc.classes.to_vector<int64_t>());
          check_close(kd.values.to(Device::cpu()), kc.values, 1e-10, 1e-10);
          Tensor zd = randn64({N, tc.num_rows}, g).to(dt);
          Tensor z1 = zd.clone().requires_grad_(), z2 = zd.to(dev).requires_grad_();
          (hsoftmax_tree_log_prob(z1, tc) * 0.5).sum().backward();
          (hsoftmax_tree_log_prob(z2, td) * 0.5).sum().backward();
          check_close(z2.grad().to(Device::cpu()), z1.grad(), 1e-10, 1e-10);
        }
      }
    // Module::to moves the tree buffer with the parameters.
    nn::HierarchicalSoftmax hsm(16, ClassTree::balanced(37), true, &g);
    const Tensor h = randn({5, 16}, DType::f32, &g), y = from_vector(std::vector<int64_t>{0, 36, 5, 17, 20}, {5});
    const Tensor lc = hsm(h, y, nn::Reduction::none);
    hsm.to(dev);
    CHECK(hsm.tree.device() == dev);
    check_close(hsm(h.to(dev), y.to(dev), nn::Reduction::none).to(Device::cpu()), lc, 1e-5, 1e-5);
    cuda::set_poison_allocations(false);
  }
}
