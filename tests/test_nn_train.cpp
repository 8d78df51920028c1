// nn training pieces: cross_entropy (values for every reduction and target dtype, the gradient
// (softmax - one_hot), gradcheck, bad input), SGD (PyTorch's momentum / weight-decay rule,
// skipped parameters, buffers that do not alias .grad, checks) and Module + cross_entropy + SGD
// fitting a small MLP. References are computed by hand in double from the tensors' values.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "test_util.h"

using namespace ember;
using ember_test::check_close;
using ember_test::check_tensor;
using ember_test::vals;

namespace {

// Per-row softmax of (N, C) values given row-major, in double.
std::vector<double> softmax_ref(const std::vector<double>& z, int64_t n, int64_t c) {
  std::vector<double> p(z.size());
  for (int64_t i = 0; i < n; ++i) {
    double mx = z[i * c];
    for (int64_t j = 1; j < c; ++j) mx = std::max(mx, z[i * c + j]);
    double s = 0;
    for (int64_t j = 0; j < c; ++j) s += std::exp(z[i * c + j] - mx);
    for (int64_t j = 0; j < c; ++j) p[i * c + j] = std::exp(z[i * c + j] - mx) / s;
  }
  return p;
}

// -log softmax(z)[i, t[i]] per row.
std::vector<double> nll_ref(const std::vector<double>& z, const std::vector<int64_t>& t, int64_t c) {
  const int64_t n = static_cast<int64_t>(t.size());
  std::vector<double> out(t.size());
  for (int64_t i = 0; i < n; ++i) {
    double mx = z[i * c];
    for (int64_t j = 1; j < c; ++j) mx = std::max(mx, z[i * c + j]);
    double s = 0;
    for (int64_t j = 0; j < c; ++j) s += std::exp(z[i * c + j] - mx);
    out[i] = -(z[i * c + t[i]] - mx - std::log(s));
  }
  return out;
}

// d loss / d z for the given reduction: (softmax - one_hot) * scale[i].
std::vector<double> ce_grad_ref(const std::vector<double>& z, const std::vector<int64_t>& t, int64_t c,
                                const std::vector<double>& row_scale) {
  const int64_t n = static_cast<int64_t>(t.size());
  std::vector<double> g = softmax_ref(z, n, c);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < c; ++j) g[i * c + j] = (g[i * c + j] - (j == t[i] ? 1.0 : 0.0)) * row_scale[i];
  return g;
}

double sum_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

Tensor targets(const std::vector<int64_t>& t, DType dt) {
  Tensor r = from_vector<int64_t>(t, {static_cast<int64_t>(t.size())});
  return dt == DType::i64 ? r : to_dtype(r, dt);
}

const char* reduction_name(nn::Reduction r) {
  switch (r) {
    case nn::Reduction::none: return "none";
    case nn::Reduction::mean: return "mean";
    case nn::Reduction::sum: return "sum";
  }
  return "?";
}

}  // namespace

TEST_SUITE("nn_train") {
  // --- cross_entropy ---------------------------------------------------------------------------

  TEST_CASE("cross_entropy values for none/mean/sum with i64 and i32 targets") {
    struct Case {
      std::vector<double> logits;
      int64_t n, c;
      std::vector<int64_t> target;
    };
    Generator g(21);
    std::vector<Case> cases = {
        {{1.0, 2.0, 3.0, 0.5, -1.0, 2.0}, 2, 3, {2, 0}},
        {vals(randn({5, 4}, {}, &g)), 5, 4, {3, 0, 1, 1, 2}},
        {vals(randn({1, 10}, {}, &g)), 1, 10, {9}},
        {vals(randn({3, 1}, {}, &g)), 3, 1, {0, 0, 0}},              // one class: loss 0
        {{1000.0, 0.0, -1000.0, 1000.0, 0.0, -1000.0}, 2, 3, {0, 1}},  // no overflow
    };
    // The first case, spelled out.
    const double l0 = -std::log(std::exp(3.0) / (std::exp(1.0) + std::exp(2.0) + std::exp(3.0)));
    const double l1 = -std::log(std::exp(0.5) / (std::exp(0.5) + std::exp(-1.0) + std::exp(2.0)));
    {
      std::vector<double> ref = nll_ref(cases[0].logits, cases[0].target, 3);
      CHECK(ref[0] == doctest::Approx(l0).epsilon(1e-12));
      CHECK(ref[1] == doctest::Approx(l1).epsilon(1e-12));
    }
    for (DType ldt : {DType::f32, DType::f64}) {
      for (DType tdt : {DType::i64, DType::i32}) {
        for (size_t k = 0; k < cases.size(); ++k) {
          const Case& cs = cases[k];
          CAPTURE(k);
          const std::string ldt_name = dtype_name(ldt);
          CAPTURE(ldt_name);
          const std::string tdt_name = dtype_name(tdt);
          CAPTURE(tdt_name);
          const double tol = ldt == DType::f64 ? 1e-12 : 1e-5;
          Tensor logits = to_dtype(from_vector<double>(cs.logits, {cs.n, cs.c}), ldt);
          Tensor t = targets(cs.target, tdt);
          const std::vector<double> ref = nll_ref(cs.logits, cs.target, cs.c);
          Tensor none = nn::cross_entropy(logits, t, nn::Reduction::none);
          CHECK(none.dtype() == ldt);
          check_tensor(none, {cs.n}, ref, tol, tol);
          Tensor mean_l = nn::cross_entropy(logits, t, nn::Reduction::mean);
          check_tensor(mean_l, {}, {sum_of(ref) / static_cast<double>(cs.n)}, tol, tol);
          check_tensor(nn::cross_entropy(logits, t), {}, {sum_of(ref) / static_cast<double>(cs.n)}, tol, tol);
          check_tensor(nn::cross_entropy(logits, t, nn::Reduction::sum), {}, {sum_of(ref)}, tol, tol);
        }
      }
    }
    // A non-contiguous (transposed) logits view gives the same values.
    Tensor lt = from_vector<double>(cases[1].logits, {5, 4}).to(DType::f32).t().contiguous().t();
    REQUIRE_FALSE(lt.is_contiguous());
    check_tensor(nn::cross_entropy(lt, targets(cases[1].target, DType::i64), nn::Reduction::none), {5},
                 nll_ref(cases[1].logits, cases[1].target, 4), 1e-5, 1e-5);
  }

  TEST_CASE("cross_entropy gradient is (softmax - one_hot) / N (mean), without /N (sum), scaled (none)") {
    Generator g(22);
    const int64_t n = 4, c = 5;
    const std::vector<double> z = vals(randn({n, c}, {}, &g));
    const std::vector<int64_t> t = {0, 4, 2, 2};
    const std::vector<double> row_w = {0.5, -1.0, 2.0, 0.25};  // upstream gradient for none
    for (DType tdt : {DType::i64, DType::i32}) {
      for (nn::Reduction red : {nn::Reduction::mean, nn::Reduction::sum, nn::Reduction::none}) {
        CAPTURE(reduction_name(red));
        const std::string tdt_name = dtype_name(tdt);
        CAPTURE(tdt_name);
        Tensor logits = from_vector<double>(z, {n, c}).to(DType::f32).requires_grad_();
        Tensor loss = nn::cross_entropy(logits, targets(t, tdt), red);
        std::vector<double> scale(n, 1.0);
        if (red == nn::Reduction::mean) {
          std::fill(scale.begin(), scale.end(), 1.0 / static_cast<double>(n));
          loss.backward();
        } else if (red == nn::Reduction::sum) {
          loss.backward();
        } else {
          scale = row_w;
          loss.backward(from_vector<double>(row_w, {n}).to(DType::f32));
        }
        REQUIRE(logits.grad().defined());
        check_tensor(logits.grad(), {n, c}, ce_grad_ref(z, t, c, scale), 1e-5, 1e-6);
      }
    }
    // The same with ops, as check.cpp wrote it: (softmax - one_hot) / N.
    Tensor logits = tensor({{1.0, 2.0, 3.0}, {0.5, -1.0, 2.0}}).requires_grad_();
    Tensor tgt = from_vector<int64_t>({2, 0}, {2});
    nn::cross_entropy(logits, tgt).backward();
    Tensor expect = (softmax(logits.detach(), 1) - one_hot(tgt, 3).to(DType::f32)) / 2.0;
    check_close(logits.grad(), expect, 1e-5, 1e-6);
    // Rows of the gradient sum to zero (times the scale).
    for (double row : vals(sum(logits.grad(), {1}))) CHECK(std::fabs(row) < 1e-6);
  }

  TEST_CASE("cross_entropy gradcheck in f64") {
    using V = std::vector<Tensor>;
    Generator g(23);
    for (DType tdt : {DType::i64, DType::i32}) {
      for (nn::Reduction red : {nn::Reduction::none, nn::Reduction::mean, nn::Reduction::sum}) {
        CAPTURE(reduction_name(red));
        const std::string tdt_name = dtype_name(tdt);
        CAPTURE(tdt_name);
        Tensor logits = randn({4, 5}, DType::f64, &g).requires_grad_();
        Tensor t = targets({0, 4, 2, 1}, tdt);
        GradcheckResult r = gradcheck([&](const V& v) { return nn::cross_entropy(v[0], t, red); }, {logits});
        CHECK_MESSAGE(r.ok, r.message);
      }
    }
    // Through a Linear-like composition, with a non-contiguous logits view.
    Tensor x = randn({6, 3}, DType::f64, &g).requires_grad_();
    Tensor w = randn({4, 3}, DType::f64, &g).requires_grad_();
    Tensor t = targets({1, 3, 0, 2, 2, 3}, DType::i64);
    GradcheckResult r = gradcheck(
        [&](const V& v) { return nn::cross_entropy(matmul(v[1], v[0].t()).t(), t); }, {x, w});
    CHECK_MESSAGE(r.ok, r.message);
  }

  TEST_CASE("cross_entropy rejects bad input with ember::Error naming the op and the shapes") {
    Tensor logits = tensor({{1.0, 2.0, 3.0}, {0.5, -1.0, 2.0}});
    Tensor tgt = from_vector<int64_t>({2, 0}, {2});
    // logits not 2-D
    CHECK_EMBER_ERROR(nn::cross_entropy(randn({2, 3, 4}), tgt), "cross_entropy", "logits", "(2, 3, 4)");
    CHECK_EMBER_ERROR(nn::cross_entropy(tensor({1.0, 2.0}), tgt), "cross_entropy", "logits", "(2,)");
    // target not 1-D
    CHECK_EMBER_ERROR(nn::cross_entropy(logits, tgt.unsqueeze(1)), "cross_entropy", "target", "(2, 1)");
    CHECK_EMBER_ERROR(nn::cross_entropy(logits, from_vector<int64_t>({1}, {})), "cross_entropy", "target", "()");
    // N mismatch: both shapes
    CHECK_EMBER_ERROR(nn::cross_entropy(logits, from_vector<int64_t>({1, 2, 0}, {3})), "cross_entropy",
                      "(2, 3)", "(3,)");
    CHECK_EMBER_ERROR(nn::cross_entropy(logits, from_vector<int32_t>({1}, {1})), "cross_entropy", "(2, 3)",
                      "(1,)");
    // float (and bool) targets: the message names the dtype it got
    CHECK_EMBER_ERROR(nn::cross_entropy(logits, tensor({1.0, 2.0})), "cross_entropy", "target", "f32");
    CHECK_EMBER_ERROR(nn::cross_entropy(logits, tensor({1.0, 2.0}, DType::f64)), "cross_entropy", "target", "f64");
    CHECK_EMBER_ERROR(nn::cross_entropy(logits, from_vector<bool>({true, false}, {2}, DType::boolean)),
                      "cross_entropy", "target", "bool");
    // integer logits
    CHECK_EMBER_ERROR(nn::cross_entropy(from_vector<int64_t>({1, 2, 3, 4}, {2, 2}), tgt), "cross_entropy",
                      "logits", "i64");
    // target out of range: the logits' shape, the valid range and the offending value
    CHECK_EMBER_ERROR(nn::cross_entropy(logits, from_vector<int64_t>({1, 3}, {2})), "cross_entropy",
                      "(2, 3)", "[0, 3)", "3");
    CHECK_EMBER_ERROR(nn::cross_entropy(logits, from_vector<int64_t>({-1, 0}, {2})), "cross_entropy",
                      "(2, 3)", "[0, 3)", "-1");
    CHECK_EMBER_ERROR(nn::cross_entropy(logits, from_vector<int32_t>({0, 7}, {2})), "cross_entropy",
                      "(2, 3)", "7");
    // no classes, undefined tensors
    CHECK_EMBER_ERROR(nn::cross_entropy(zeros({2, 0}), tgt), "cross_entropy", "(2, 0)");
    CHECK_EMBER_ERROR(nn::cross_entropy(Tensor(), tgt), "cross_entropy");
    CHECK_EMBER_ERROR(nn::cross_entropy(logits, Tensor()), "cross_entropy");
  }

  // --- SGD -------------------------------------------------------------------------------------

  TEST_CASE("SGD with momentum and weight decay follows PyTorch's rule step by step") {
    // loss = sum(p^3) -> grad 3 p^2;  g = grad + wd p;  buf = g, then m buf + g;  p -= lr buf.
    // q takes part only in steps 1 and 3: in step 2 it has no gradient, is skipped and keeps its
    // momentum buffer. r never has a gradient.
    const double lr = 0.1, mom = 0.9, wd = 0.01;
    for (DType dt : {DType::f64, DType::f32}) {
      const std::string dt_name = dtype_name(dt);
      CAPTURE(dt_name);
      const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
      Tensor p = tensor({0.5, -0.75, 1.0}, dt).requires_grad_();
      Tensor q = tensor({0.5, -0.25}, dt).requires_grad_();
      Tensor r = tensor({5.0}, dt).requires_grad_();
      optim::SGD opt({p, q, r}, {.lr = lr, .momentum = mom, .weight_decay = wd});
      CHECK(opt.options().lr == lr);
      std::vector<double> pv = {0.5, -0.75, 1.0}, qv = {0.5, -0.25}, pbuf(3, 0), qbuf(2, 0);
      bool q_started = false;
      for (int it = 0; it < 4; ++it) {
        CAPTURE(it);
        const bool use_q = it != 1;
        opt.zero_grad();
        CHECK_FALSE(p.grad().defined());
        CHECK_FALSE(q.grad().defined());
        Tensor loss = sum(p * p * p);
        if (use_q) loss = loss + sum(q * q);  // grad 2 q
        loss.backward();
        opt.step();
        for (size_t i = 0; i < 3; ++i) {
          const double gi = 3 * pv[i] * pv[i] + wd * pv[i];
          pbuf[i] = it == 0 ? gi : mom * pbuf[i] + gi;
          pv[i] -= lr * pbuf[i];
        }
        if (use_q) {
          for (size_t i = 0; i < 2; ++i) {
            const double gi = 2 * qv[i] + wd * qv[i];
            qbuf[i] = q_started ? mom * qbuf[i] + gi : gi;
            qv[i] -= lr * qbuf[i];
          }
          q_started = true;
        }
        check_tensor(p, {3}, pv, tol, tol);
        check_tensor(q, {2}, qv, tol, tol);
        check_tensor(r, {1}, {5.0}, 0, 0);  // no grad: skipped, weight decay included
        CHECK_FALSE(r.grad().defined());
        CHECK(p.is_leaf());
        CHECK(p.requires_grad());
        CHECK(p.dtype() == dt);
      }
    }
  }

  TEST_CASE("SGD: plain, weight decay only, momentum only, lr changed through options()") {
    {  // plain: p -= lr g
      Tensor p = tensor({2.0, -1.0}, DType::f64).requires_grad_();
      optim::SGD opt({p}, {.lr = 0.25});
      sum(p * p).backward();  // 2p
      opt.step();
      check_tensor(p, {2}, {2.0 - 0.25 * 4.0, -1.0 + 0.25 * 2.0}, 1e-15, 1e-15);
      CHECK(p.grad().defined());  // step leaves .grad alone
    }
    {  // weight decay, no momentum: p -= lr (g + wd p)
      Tensor p = tensor({2.0}, DType::f64).requires_grad_();
      optim::SGD opt({p}, {.lr = 0.1, .weight_decay = 0.5});
      sum(p * 3.0).backward();  // 3
      opt.step();
      check_tensor(p, {1}, {2.0 - 0.1 * (3.0 + 0.5 * 2.0)}, 1e-15, 1e-15);
    }
    {  // momentum, lr decayed between steps (what the example's cosine schedule does)
      Tensor p = tensor({1.0}, DType::f64).requires_grad_();
      optim::SGD opt({p}, {.lr = 0.5, .momentum = 0.5});
      double pv = 1.0, buf = 0.0;
      const std::vector<double> lrs = {0.5, 0.25, 0.125};
      for (size_t it = 0; it < lrs.size(); ++it) {
        opt.options().lr = lrs[it];
        opt.zero_grad();
        sum(p * p).backward();
        opt.step();
        const double gi = 2 * pv;
        buf = it == 0 ? gi : 0.5 * buf + gi;
        pv -= lrs[it] * buf;
        check_tensor(p, {1}, {pv}, 1e-14, 1e-14);
      }
    }
  }

  TEST_CASE("SGD momentum buffer does not alias .grad when gradients accumulate in place") {
    // Instead of zero_grad(), zero .grad in place and let backward accumulate into it: a buffer
    // that aliased .grad would be clobbered.
    Tensor p = tensor({1.0, 2.0}, DType::f64).requires_grad_();
    optim::SGD opt({p}, {.lr = 0.1, .momentum = 0.9});
    std::vector<double> pv = {1.0, 2.0}, buf(2, 0.0);
    for (int it = 0; it < 3; ++it) {
      if (p.grad().defined()) p.grad().zero_();
      sum(p * p).backward();
      opt.step();
      for (size_t i = 0; i < 2; ++i) {
        buf[i] = it == 0 ? 2 * pv[i] : 0.9 * buf[i] + 2 * pv[i];
        pv[i] -= 0.1 * buf[i];
      }
      check_tensor(p, {2}, pv, 1e-14, 1e-14);
    }
  }

  TEST_CASE("SGD zero_grad, and constructor checks") {
    Tensor p = tensor({1.0, 2.0}).requires_grad_();
    optim::SGD opt({p}, {.lr = 0.1});
    sum(p * p).backward();
    REQUIRE(p.grad().defined());
    opt.zero_grad();
    CHECK_FALSE(p.grad().defined());
    opt.step();  // nothing to do
    check_tensor(p, {2}, {1.0, 2.0}, 0, 0);

    CHECK_EMBER_ERROR(optim::SGD({tensor({1.0})}, {}), "SGD", "leaf that requires grad");
    Tensor nonleaf = p * 2.0;
    CHECK_EMBER_ERROR(optim::SGD({nonleaf}, {}), "SGD", "leaf");
    CHECK_EMBER_ERROR(optim::SGD({Tensor()}, {}), "SGD", "undefined");
    CHECK_EMBER_ERROR(optim::SGD({p}, {.lr = -1}), "SGD", "lr", "-1");
    CHECK_EMBER_ERROR(optim::SGD({p}, {.momentum = -0.5}), "SGD", "momentum");
    CHECK_EMBER_ERROR(optim::SGD({p}, {.weight_decay = -0.5}), "SGD", "weight_decay");
  }

  TEST_CASE("Module + cross_entropy + SGD: a small MLP fits a separable problem") {
    Generator g(31);
    auto model = std::make_shared<nn::Sequential>();
    model->add(std::make_shared<nn::Linear>(2, 16, true, &g))
        .add(std::make_shared<nn::ReLU>())
        .add(std::make_shared<nn::Linear>(16, 3, true, &g));
    // Three clusters around (2, 0), (-1, 1.7), (-1, -1.7).
    const int64_t n = 96;
    Tensor y = from_vector<int64_t>([&] {
      std::vector<int64_t> v(n);
      for (int64_t i = 0; i < n; ++i) v[i] = i % 3;
      return v;
    }(), {n});
    Tensor centres = tensor({{2.0, 0.0}, {-1.0, 1.7}, {-1.0, -1.7}});
    Tensor x = index_select(centres, 0, y) + randn({n, 2}, {}, &g) * 0.3;
    optim::SGD opt(model->parameters(), {.lr = 0.1, .momentum = 0.9});
    double first = 0, last = 0;
    for (int step = 0; step < 60; ++step) {
      Tensor loss = nn::cross_entropy((*model)(x), y);
      opt.zero_grad();
      loss.backward();
      opt.step();
      if (step == 0) first = loss.item<double>();
      last = loss.item<double>();
    }
    CHECK(last < 0.1 * first);
    NoGradGuard ng;
    model->eval();
    const double acc = mean(to_dtype(eq(argmax((*model)(x), 1), y), DType::f32)).item<double>();
    CHECK(acc >= 0.98);
  }
}
