// Losses (ember/nn/loss.h, ember/ops/loss_ops.h): cross_entropy (the fused primitive) with
// class weights, ignore_index and label smoothing; nll_loss; binary_cross_entropy_with_logits;
// mse_loss. Each against values computed by hand in double, against its composed reference,
// by gradcheck in f64, and for bad input; cross_entropy and its backward primitive also in
// f16/bf16 against f32 and on the device under test against the CPU (cuda:0, or the stand-in
// device fake:0 without a GPU).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "ember/ops/loss_ops.h"
#include "op_harness.h"
#include "test_util.h"

using namespace ember;
using ember_test::check_close;
using ember_test::check_tensor;
using ember_test::vals;
using V = std::vector<Tensor>;
using nn::Reduction;

namespace {

using ember_test::test_device;

const char* reduction_name(Reduction r) {
  switch (r) {
    case Reduction::none: return "none";
    case Reduction::mean: return "mean";
    case Reduction::sum: return "sum";
  }
  return "?";
}
const std::vector<Reduction> kReductions = {Reduction::none, Reduction::mean, Reduction::sum};

Tensor ids(const std::vector<int64_t>& v, DType dt = DType::i64) {
  return to_dtype(from_vector<int64_t>(v, {static_cast<int64_t>(v.size())}), dt);
}

// PyTorch's cross_entropy in double, straight from its definition: per-row losses and the
// mean's denominator. w empty: no class weights.
struct CeRef {
  std::vector<double> rows;
  double denom = 0;
  double reduce(Reduction r) const {
    double s = 0;
    for (double v : rows) s += v;
    return r == Reduction::mean ? s / denom : s;
  }
};
CeRef ce_ref(const std::vector<double>& z, int64_t n, int64_t c, const std::vector<int64_t>& t,
             const std::vector<double>& w, int64_t ignore_index, double eps) {
  CeRef r;
  for (int64_t i = 0; i < n; ++i) {
    if (t[i] == ignore_index) {
      r.rows.push_back(0.0);
      continue;
    }
    double mx = -INFINITY, se = 0;
    for (int64_t k = 0; k < c; ++k) mx = std::max(mx, z[i * c + k]);
    for (int64_t k = 0; k < c; ++k) se += std::exp(z[i * c + k] - mx);
    const double lse = mx + std::log(se);
    const auto wk = [&](int64_t k) { return w.empty() ? 1.0 : w[k]; };
    double smooth = 0;
    for (int64_t k = 0; k < c; ++k) smooth += wk(k) * (lse - z[i * c + k]);
    r.rows.push_back((1 - eps) * wk(t[i]) * (lse - z[i * c + t[i]]) + eps / static_cast<double>(c) * smooth);
    r.denom += wk(t[i]);
  }
  return r;
}

std::vector<int64_t> vals_i64(const Tensor& t) { return contiguous(to_dtype(t, DType::i64)).to_vector<int64_t>(); }

// Targets in [0, c) with every third row (from row 1) set to `ignore` (when asked).
std::vector<int64_t> make_targets(int64_t n, int64_t c, uint64_t seed, bool with_ignored, int64_t ignore) {
  std::vector<int64_t> t = vals_i64(ember_test::random_index(c, {n}, seed));
  if (with_ignored)
    for (int64_t i = 1; i < n; i += 3) t[i] = ignore;
  return t;
}

}  // namespace

TEST_SUITE("loss") {
  // --- cross_entropy ---------------------------------------------------------------------------

  TEST_CASE("cross_entropy by hand: class weights, ignore_index, label smoothing, every reduction") {
    // Two rows of three classes, targets 2 and 0, spelled out.
    const std::vector<double> z = {1.0, 2.0, 3.0, 0.5, -1.0, 2.0};
    const double lse0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
    const double lse1 = std::log(std::exp(0.5) + std::exp(-1.0) + std::exp(2.0));
    const double nll0 = lse0 - 3.0, nll1 = lse1 - 0.5;
    Tensor logits = from_vector<double>(z, {2, 3});
    Tensor t = ids({2, 0});
    // plain
    check_tensor(nn::cross_entropy(logits, t, Reduction::none), {2}, {nll0, nll1}, 1e-12, 1e-12);
    check_tensor(nn::cross_entropy(logits, t), {}, {(nll0 + nll1) / 2}, 1e-12, 1e-12);
    // class weights (0.2, 0.3, 0.5): the mean divides by w[2] + w[0] = 0.7, not by 2
    Tensor w = tensor({0.2, 0.3, 0.5}, DType::f64);
    check_tensor(nn::cross_entropy(logits, t, {.reduction = Reduction::none, .weight = w}), {2},
                 {0.5 * nll0, 0.2 * nll1}, 1e-12, 1e-12);
    check_tensor(nn::cross_entropy(logits, t, {.weight = w}), {}, {(0.5 * nll0 + 0.2 * nll1) / 0.7}, 1e-12, 1e-12);
    check_tensor(nn::cross_entropy(logits, t, {.reduction = Reduction::sum, .weight = w}), {},
                 {0.5 * nll0 + 0.2 * nll1}, 1e-12, 1e-12);
    // ignore_index: row 1 ignored, the mean is row 0's loss alone
    Tensor ti = ids({2, -100});
    check_tensor(nn::cross_entropy(logits, ti, Reduction::none), {2}, {nll0, 0.0}, 1e-12, 1e-12);
    check_tensor(nn::cross_entropy(logits, ti), {}, {nll0}, 1e-12, 1e-12);
    check_tensor(nn::cross_entropy(logits, ti, {.weight = w}), {}, {nll0}, 1e-12, 1e-12);  // 0.5 * nll0 / 0.5
    // an ignore_index that is a real class
    check_tensor(nn::cross_entropy(logits, t, {.ignore_index = 0}), {}, {nll0}, 1e-12, 1e-12);
    // label smoothing 0.1: (1 - 0.1) * nll + 0.1 / 3 * sum_c (lse - z_c)
    const double s0 = 3 * lse0 - (1.0 + 2.0 + 3.0), s1 = 3 * lse1 - (0.5 - 1.0 + 2.0);
    const double l0 = 0.9 * nll0 + 0.1 / 3 * s0, l1 = 0.9 * nll1 + 0.1 / 3 * s1;
    check_tensor(nn::cross_entropy(logits, t, {.reduction = Reduction::none, .label_smoothing = 0.1}), {2}, {l0, l1},
                 1e-12, 1e-12);
    check_tensor(nn::cross_entropy(logits, t, {.label_smoothing = 0.1}), {}, {(l0 + l1) / 2}, 1e-12, 1e-12);
    // smoothing with weights: the smoothing term weights each class, the mean divides by 0.7
    const double ws0 = 0.2 * (lse0 - 1.0) + 0.3 * (lse0 - 2.0) + 0.5 * (lse0 - 3.0);
    const double ws1 = 0.2 * (lse1 - 0.5) + 0.3 * (lse1 + 1.0) + 0.5 * (lse1 - 2.0);
    const double wl0 = 0.9 * 0.5 * nll0 + 0.1 / 3 * ws0, wl1 = 0.9 * 0.2 * nll1 + 0.1 / 3 * ws1;
    check_tensor(nn::cross_entropy(logits, t, {.weight = w, .label_smoothing = 0.1}), {}, {(wl0 + wl1) / 0.7}, 1e-12,
                 1e-12);
    // smoothing 1: the target is uniform
    check_tensor(nn::cross_entropy(logits, t, {.reduction = Reduction::none, .label_smoothing = 1.0}), {2},
                 {s0 / 3, s1 / 3}, 1e-12, 1e-12);
    // The statistics of the primitive.
    CrossEntropyRows rows = cross_entropy_rows(logits, ti, w);
    check_tensor(rows.target_weight, {2}, {0.5, 0.0});
    check_tensor(rows.logsumexp, {2}, {lse0, 0.0}, 1e-12, 1e-12);
  }

  TEST_CASE("cross_entropy against PyTorch's definition and the composed reference (random, f32/f64)") {
    struct Shape2 {
      int64_t n, c;
    };
    Generator g(201);
    for (Shape2 s : {Shape2{7, 13}, Shape2{1, 1}, Shape2{5, 1}, Shape2{16, 1500}, Shape2{33, 2}}) {
      const std::vector<double> z = vals(randn({s.n, s.c}, DType::f64, &g) * 3.0);
      const std::vector<double> wv = vals(uniform({s.c}, 0.2, 2.0, DType::f64, &g));
      for (DType dt : {DType::f32, DType::f64})
        for (int with_w = 0; with_w < 2; ++with_w)
          for (int64_t ignore : {int64_t{-100}, int64_t{0}})
            for (double eps : {0.0, 0.1, 1.0})
              for (Reduction red : kReductions) {
                CAPTURE(s.n);
                CAPTURE(s.c);
                const std::string dt_name = dtype_name(dt);
                CAPTURE(dt_name);
                CAPTURE(with_w);
                CAPTURE(ignore);
                CAPTURE(eps);
                CAPTURE(reduction_name(red));
                const std::vector<int64_t> tv = make_targets(s.n, s.c, 17 + s.c, ignore == -100, ignore);
                Tensor logits = from_vector<double>(z, {s.n, s.c}).to(dt);
                nn::CrossEntropyOptions o;
                o.reduction = red;
                if (with_w) o.weight = from_vector<double>(wv, {s.c}).to(dt);
                o.ignore_index = ignore;
                o.label_smoothing = eps;
                const CeRef ref = ce_ref(z, s.n, s.c, tv, with_w ? wv : std::vector<double>{}, ignore, eps);
                const double tol = dt == DType::f64 ? 1e-10 : 2e-5;
                Tensor got = nn::cross_entropy(logits, ids(tv), o);
                CHECK(got.dtype() == dt);
                if (ref.denom == 0 && red == Reduction::mean) {  // every row ignored: 0 / 0
                  CHECK(std::isnan(got.item<double>()));
                  continue;
                }
                if (red == Reduction::none) check_tensor(got, {s.n}, ref.rows, tol, tol);
                else check_tensor(got, {}, {ref.reduce(red)}, tol, tol);
                check_close(got, nn::cross_entropy_reference(logits, ids(tv), o), tol, tol);
              }
    }
    // i32 targets and a transposed logits view give the same values.
    Tensor lt = randn({4, 6}, DType::f32, &g).t();  // (6, 4)
    REQUIRE_FALSE(lt.is_contiguous());
    Tensor t = ids({3, 0, 1, 1, 2, 3});
    check_close(nn::cross_entropy(lt, to_dtype(t, DType::i32), {.label_smoothing = 0.2}),
                nn::cross_entropy(lt.contiguous(), t, {.label_smoothing = 0.2}), 0, 0);
  }

  TEST_CASE("cross_entropy gradients: gradcheck in f64 with every option, and against the reference") {
    Generator g(202);
    const int64_t n = 6, c = 5;
    Tensor w = uniform({c}, 0.2, 2.0, DType::f64, &g);
    for (int with_w = 0; with_w < 2; ++with_w)
      for (double eps : {0.0, 0.15})
        for (bool with_ignored : {false, true})
          for (Reduction red : kReductions) {
            CAPTURE(with_w);
            CAPTURE(eps);
            CAPTURE(with_ignored);
            CAPTURE(reduction_name(red));
            Tensor t = ids(make_targets(n, c, 31, with_ignored, -100));
            nn::CrossEntropyOptions o;
            o.reduction = red;
            if (with_w) o.weight = w;
            o.label_smoothing = eps;
            Tensor logits = randn({n, c}, DType::f64, &g).requires_grad_();
            GradcheckResult r = gradcheck([&](const V& v) { return nn::cross_entropy(v[0], t, o); }, {logits});
            CHECK_MESSAGE(r.ok, r.message);
            // The fused backward kernel against autograd through the composed reference.
            Tensor a = logits.detach().clone().requires_grad_(), b = logits.detach().clone().requires_grad_();
            Tensor up = red == Reduction::none ? randn({n}, DType::f64, &g) : scalar_tensor(1.7, DType::f64);
            (nn::cross_entropy(a, t, o) * up).sum().backward();
            (nn::cross_entropy_reference(b, t, o) * up).sum().backward();
            check_close(a.grad(), b.grad(), 1e-10, 1e-12);
            if (with_ignored)  // ignored rows get no gradient
              for (double v : vals(select(a.grad(), 0, 1))) CHECK(v == 0.0);
          }
    // Through a matmul, with a transposed logits view: the gradient reaches both inputs.
    Tensor x = randn({6, 3}, DType::f64, &g).requires_grad_();
    Tensor wm = randn({4, 3}, DType::f64, &g).requires_grad_();
    Tensor t = ids({1, 3, 0, 2, -100, 3});
    GradcheckResult r = gradcheck(
        [&](const V& v) { return nn::cross_entropy(matmul(v[1], v[0].t()).t(), t, {.label_smoothing = 0.05}); },
        {x, wm});
    CHECK_MESSAGE(r.ok, r.message);
    // Without options the gradient is (softmax - one_hot) / N.
    Tensor logits = tensor({{1.0, 2.0, 3.0}, {0.5, -1.0, 2.0}}).requires_grad_();
    Tensor tgt = ids({2, 0});
    nn::cross_entropy(logits, tgt).backward();
    check_close(logits.grad(), (softmax(logits.detach(), 1) - one_hot(tgt, 3).to(DType::f32)) / 2.0, 1e-6, 1e-7);
  }

  TEST_CASE("cross_entropy_backward: the primitive, called directly, against the reference's gradient") {
    Generator g(203);
    const int64_t n = 9, c = 1100;  // a long row
    Tensor logits = randn({n, c}, DType::f64, &g) * 2.0;
    Tensor w = uniform({c}, 0.5, 1.5, DType::f64, &g);
    Tensor t = ids(make_targets(n, c, 41, true, 7));
    Tensor up = randn({n}, DType::f64, &g);
    CrossEntropyRows rows = cross_entropy_rows(logits, t, w, 7, 0.3);
    Tensor grad = cross_entropy_backward(up, logits, t, w, rows.logsumexp, 7, 0.3);
    Tensor b = logits.clone().requires_grad_();
    (nn::cross_entropy_reference(b, t, {.reduction = Reduction::none, .weight = w, .ignore_index = 7,
                                        .label_smoothing = 0.3}) *
     up)
        .sum()
        .backward();
    check_close(grad, b.grad(), 1e-10, 1e-12);
    CHECK_EMBER_ERROR(cross_entropy_backward(randn({n + 1}, DType::f64), logits, t, w, rows.logsumexp, 7, 0.3),
                      "cross_entropy_backward", "grad_loss", "(10,)");
    CHECK_EMBER_ERROR(cross_entropy_backward(up, logits, t, w, rows.logsumexp.to(DType::f32), 7, 0.3),
                      "cross_entropy_backward", "logsumexp", "f32");
    CHECK_EMBER_ERROR(cross_entropy_backward(up, logits, ids(std::vector<int64_t>(n, c)), w, rows.logsumexp, 7, 0.3),
                      "cross_entropy_backward", "[0, 1100)");
  }

  TEST_CASE("cross_entropy: large logits do not overflow; all rows ignored gives NaN mean and 0 sum") {
    Tensor logits = tensor({{1000.0, 0.0, -1000.0}, {-5000.0, 5000.0, 0.0}});
    Tensor t = ids({0, 1});
    check_tensor(nn::cross_entropy(logits, t, {.reduction = Reduction::none, .label_smoothing = 0.1}), {2},
                 {0.1 / 3 * (0.0 + 1000.0 + 2000.0), 0.1 / 3 * (10000.0 + 0.0 + 5000.0)}, 1e-5, 1e-3);
    Tensor all_ignored = ids({-100, -100});
    CHECK(std::isnan(nn::cross_entropy(logits, all_ignored).item<double>()));
    check_tensor(nn::cross_entropy(logits, all_ignored, Reduction::sum), {}, {0.0});
    Tensor l = logits.clone().requires_grad_();
    nn::cross_entropy(l, all_ignored, Reduction::sum).backward();
    check_tensor(l.grad(), {2, 3}, std::vector<double>(6, 0.0));
    // An empty batch.
    check_tensor(nn::cross_entropy(zeros({0, 4}), ids({}), Reduction::sum), {}, {0.0});
  }

  TEST_CASE("cross_entropy in f16 and bf16 against f32 on the same rounded inputs") {
    Generator g(204);
    Tensor z = randn({11, 37}, DType::f32, &g) * 2.0;
    Tensor t = ids(make_targets(11, 37, 51, true, -100));
    Tensor w = uniform({37}, 0.5, 1.5, DType::f32, &g);
    for (DType dt : {DType::f16, DType::bf16}) {
      const std::string dt_name = dtype_name(dt);
      CAPTURE(dt_name);
      const double tol = dt == DType::f16 ? 3e-3 : 2e-2;
      Tensor lo = z.to(dt).requires_grad_(), hi = z.to(dt).to(DType::f32).requires_grad_();
      nn::CrossEntropyOptions o{Reduction::none, w, -100, 0.1};
      Tensor a = nn::cross_entropy(lo, t, o), b = nn::cross_entropy(hi, t, o);
      CHECK(a.dtype() == dt);
      check_close(a, b, tol, tol);
      o.reduction = Reduction::mean;
      Tensor am = nn::cross_entropy(lo, t, o), bm = nn::cross_entropy(hi, t, o);
      CHECK(am.dtype() == dt);
      check_close(am, bm, tol, tol);
      am.backward();
      bm.backward();
      CHECK(lo.grad().dtype() == dt);
      check_close(lo.grad(), hi.grad(), tol, tol * 0.1);
    }
  }

  TEST_CASE("cross_entropy rejects bad options with ember::Error naming the loss") {
    Tensor logits = tensor({{1.0, 2.0, 3.0}, {0.5, -1.0, 2.0}});
    Tensor t = ids({2, 0});
    CHECK_EMBER_ERROR(nn::cross_entropy(logits, t, {.weight = tensor({1.0, 2.0})}), "cross_entropy", "weight", "(3,)",
                      "(2,)");
    CHECK_EMBER_ERROR(nn::cross_entropy(logits, t, {.weight = ones({3}, DType::i64)}), "cross_entropy", "weight", "i64");
    CHECK_EMBER_ERROR(nn::cross_entropy(logits, t, {.label_smoothing = 1.5}), "cross_entropy", "label_smoothing", "1.5");
    CHECK_EMBER_ERROR(nn::cross_entropy(logits, t, {.label_smoothing = -0.1}), "cross_entropy", "label_smoothing");
    // out of range (ignore_index does not excuse other values), and the message says so
    CHECK_EMBER_ERROR(nn::cross_entropy(logits, ids({2, -1})), "cross_entropy", "[0, 3)", "ignore_index = -100", "-1");
    CHECK_EMBER_ERROR(nn::cross_entropy(logits, ids({2, 4}), {.ignore_index = 3}), "cross_entropy", "[0, 3)",
                      "ignore_index = 3", "found 4");
    CHECK_NOTHROW(nn::cross_entropy(logits, ids({2, 5}), {.ignore_index = 5}));  // out of range but ignored
  }

  // --- nll_loss --------------------------------------------------------------------------------

  TEST_CASE("nll_loss by hand, against its reference, cross_entropy == nll_loss(log_softmax), gradcheck") {
    Tensor lp = tensor({{-0.5, -1.5, -2.0}, {-3.0, -0.1, -4.0}, {-1.0, -1.0, -1.2}}, DType::f64);
    Tensor t = ids({0, 1, 2});
    check_tensor(nn::nll_loss(lp, t, Reduction::none), {3}, {0.5, 0.1, 1.2}, 1e-12, 1e-12);
    check_tensor(nn::nll_loss(lp, t), {}, {(0.5 + 0.1 + 1.2) / 3}, 1e-12, 1e-12);
    check_tensor(nn::nll_loss(lp, t, Reduction::sum), {}, {1.8}, 1e-12, 1e-12);
    Tensor w = tensor({2.0, 0.5, 1.0}, DType::f64);
    check_tensor(nn::nll_loss(lp, t, {.weight = w}), {}, {(2.0 * 0.5 + 0.5 * 0.1 + 1.0 * 1.2) / 3.5}, 1e-12, 1e-12);
    check_tensor(nn::nll_loss(lp, ids({0, -100, 2}), {.weight = w}), {}, {(1.0 + 1.2) / 3.0}, 1e-12, 1e-12);
    check_tensor(nn::nll_loss(lp, ids({0, 1, 2}), {.reduction = Reduction::none, .ignore_index = 1}), {3},
                 {0.5, 0.0, 1.2}, 1e-12, 1e-12);

    Generator g(205);
    for (int with_w = 0; with_w < 2; ++with_w)
      for (Reduction red : kReductions) {
        CAPTURE(with_w);
        CAPTURE(reduction_name(red));
        Tensor logits = randn({8, 6}, DType::f64, &g);
        Tensor tt = ids(make_targets(8, 6, 61, true, -100));
        nn::NLLLossOptions o{red, with_w ? uniform({6}, 0.2, 2.0, DType::f64, &g) : Tensor(), -100};
        Tensor logp = log_softmax(logits, 1);
        check_close(nn::nll_loss(logp, tt, o), nn::nll_loss_reference(logp, tt, o), 1e-12, 1e-12);
        check_close(nn::cross_entropy(logits, tt, {red, o.weight, -100, 0.0}), nn::nll_loss(logp, tt, o), 1e-12, 1e-12);
        Tensor x = logp.detach().requires_grad_();
        GradcheckResult r = gradcheck([&](const V& v) { return nn::nll_loss(v[0], tt, o); }, {x});
        CHECK_MESSAGE(r.ok, r.message);
      }
  }

  TEST_CASE("nll_loss rejects bad input with ember::Error naming the loss, shapes and dtypes") {
    Tensor lp = randn({2, 3});
    CHECK_EMBER_ERROR(nn::nll_loss(randn({2, 3, 4}), ids({0, 1})), "nll_loss", "log_probs", "(2, 3, 4)");
    CHECK_EMBER_ERROR(nn::nll_loss(lp, ids({0, 1, 2})), "nll_loss", "(2, 3)", "(3,)");
    CHECK_EMBER_ERROR(nn::nll_loss(lp, tensor({0.0, 1.0})), "nll_loss", "target", "f32");
    CHECK_EMBER_ERROR(nn::nll_loss(ones({2, 3}, DType::i64), ids({0, 1})), "nll_loss", "log_probs", "i64");
    CHECK_EMBER_ERROR(nn::nll_loss(lp, ids({0, 3})), "nll_loss", "[0, 3)", "3");
    CHECK_EMBER_ERROR(nn::nll_loss(lp, ids({0, 1}), {.weight = ones({4})}), "nll_loss", "weight", "(4,)");
    CHECK_EMBER_ERROR(nn::nll_loss(lp, Tensor()), "nll_loss");
  }

  // --- binary_cross_entropy_with_logits -------------------------------------------------------

  TEST_CASE("binary_cross_entropy_with_logits by hand, with pos_weight and weight, every reduction") {
    const auto sp = [](double v) { return std::log1p(std::exp(-std::fabs(v))) + std::max(v, 0.0); };  // softplus
    const std::vector<double> xv = {0.5, -1.0, 2.0, 0.0}, yv = {1.0, 0.0, 0.25, 1.0};
    Tensor x = from_vector<double>(xv, {2, 2}), y = from_vector<double>(yv, {2, 2});
    std::vector<double> plain, pw_ref;
    const std::vector<double> pw = {3.0, 0.5};  // per column
    for (size_t i = 0; i < 4; ++i) {
      plain.push_back(sp(xv[i]) - xv[i] * yv[i]);  // -y log s(x) - (1 - y) log(1 - s(x))
      const double p = pw[i % 2];
      pw_ref.push_back(p * yv[i] * sp(-xv[i]) + (1 - yv[i]) * sp(xv[i]));
    }
    check_tensor(nn::binary_cross_entropy_with_logits(x, y, Reduction::none), {2, 2}, plain, 1e-12, 1e-12);
    CHECK(plain[3] == doctest::Approx(std::log(2.0)).epsilon(1e-12));
    const double sum_plain = plain[0] + plain[1] + plain[2] + plain[3];
    check_tensor(nn::binary_cross_entropy_with_logits(x, y), {}, {sum_plain / 4}, 1e-12, 1e-12);
    check_tensor(nn::binary_cross_entropy_with_logits(x, y, Reduction::sum), {}, {sum_plain}, 1e-12, 1e-12);
    Tensor pwt = tensor({3.0, 0.5}, DType::f64);
    check_tensor(nn::binary_cross_entropy_with_logits(x, y, {.reduction = Reduction::none, .pos_weight = pwt}), {2, 2},
                 pw_ref, 1e-12, 1e-12);
    Tensor wt = from_vector<double>({2.0, -1.0}, {2, 1});  // per row
    check_tensor(nn::binary_cross_entropy_with_logits(x, y, {.reduction = Reduction::none, .weight = wt}), {2, 2},
                 {2 * plain[0], 2 * plain[1], -plain[2], -plain[3]}, 1e-12, 1e-12);
  }

  TEST_CASE("binary_cross_entropy_with_logits is stable for large |x| and exact in gradient at x = 0") {
    Tensor x = tensor({100.0, -100.0, 1000.0, -1000.0, 0.0});
    Tensor y = tensor({0.0, 1.0, 1.0, 0.0, 0.3});
    // Exact: softplus(x) - x * y.
    check_tensor(nn::binary_cross_entropy_with_logits(x, y, Reduction::none), {5},
                 {100.0, 100.0, 0.0, 0.0, std::log(2.0)}, 1e-6, 1e-6);
    // The textbook reference gives inf where the loss is large (sigmoid(-1000) rounds to 0).
    Tensor xl = tensor({-1000.0}), yl = tensor({1.0});
    CHECK_FALSE(std::isfinite(nn::binary_cross_entropy_with_logits_reference(xl, yl).item<double>()));
    check_tensor(nn::binary_cross_entropy_with_logits(xl, yl), {}, {1000.0});
    // At x = 0 the gradient is sigmoid(0) - y = 0.5 - y (max and |x| have kinks there).
    Tensor xz = zeros({3}).requires_grad_();
    Tensor yz = tensor({0.0, 1.0, 0.3});
    nn::binary_cross_entropy_with_logits(xz, yz, Reduction::sum).backward();
    check_tensor(xz.grad(), {3}, {0.5, -0.5, 0.2}, 1e-6, 1e-7);
    Tensor xp = zeros({2}).requires_grad_();
    nn::binary_cross_entropy_with_logits(xp, tensor({1.0, 0.0}), {.reduction = Reduction::sum,
                                                                 .pos_weight = tensor({3.0})})
        .backward();
    check_tensor(xp.grad(), {2}, {0.5 * 3.0 - 3.0, 0.5}, 1e-6, 1e-7);  // sigmoid(x) (1 + (p - 1) y) - p y
  }

  TEST_CASE("binary_cross_entropy_with_logits: reference, gradcheck in logits, targets, weight, pos_weight") {
    Generator g(206);
    for (int variant = 0; variant < 4; ++variant)  // bit 0: weight (1, 5), bit 1: pos_weight (5)
      for (Reduction red : kReductions) {
        CAPTURE(variant);
        CAPTURE(reduction_name(red));
        Tensor x = randn({4, 5}, DType::f64, &g).requires_grad_();
        Tensor y = uniform({4, 5}, 0.0, 1.0, DType::f64, &g).requires_grad_();
        Tensor w = uniform({1, 5}, 0.5, 2.0, DType::f64, &g).requires_grad_();
        Tensor p = uniform({5}, 0.5, 3.0, DType::f64, &g).requires_grad_();
        const auto opts = [&](const V& v) {
          nn::BCEWithLogitsOptions o;
          o.reduction = red;
          if (variant & 1) o.weight = v[2];
          if (variant & 2) o.pos_weight = v[3];
          return o;
        };
        const V in = {x, y, w, p};
        check_close(nn::binary_cross_entropy_with_logits(x, y, opts(in)),
                    nn::binary_cross_entropy_with_logits_reference(x, y, opts(in)), 1e-12, 1e-12);
        GradcheckResult r = gradcheck(
            [&](const V& v) { return nn::binary_cross_entropy_with_logits(v[0], v[1], opts(v)); }, in);
        CHECK_MESSAGE(r.ok, r.message);
      }
    // f32 logits with f64 targets: the targets' gradient comes back in f64.
    Tensor x = randn({3}, DType::f32, &g).requires_grad_();
    Tensor y = tensor({0.0, 1.0, 0.5}, DType::f64).requires_grad_();
    Tensor l = nn::binary_cross_entropy_with_logits(x, y);
    CHECK(l.dtype() == DType::f32);
    l.backward();
    CHECK(y.grad().dtype() == DType::f64);
  }

  TEST_CASE("binary_cross_entropy_with_logits rejects bad input naming the loss and shapes") {
    const char* op = "binary_cross_entropy_with_logits";
    CHECK_EMBER_ERROR(nn::binary_cross_entropy_with_logits(randn({2, 3}), randn({3, 2})), op, "(2, 3)", "(3, 2)");
    CHECK_EMBER_ERROR(nn::binary_cross_entropy_with_logits(randn({2, 3}), ones({2, 3}, DType::i64)), op, "i64");
    CHECK_EMBER_ERROR(nn::binary_cross_entropy_with_logits(randn({2, 3}), rand({2, 3}), {.pos_weight = ones({2})}), op,
                      "pos_weight", "(2,)", "(2, 3)");
    CHECK_EMBER_ERROR(nn::binary_cross_entropy_with_logits(randn({2, 3}), rand({2, 3}), {.weight = ones({4, 2, 3})}),
                      op, "weight", "(4, 2, 3)");
    CHECK_EMBER_ERROR(nn::binary_cross_entropy_with_logits(Tensor(), rand({2, 3})), op);
  }

  // --- mse_loss --------------------------------------------------------------------------------

  TEST_CASE("mse_loss by hand, against its reference, gradcheck, bad input") {
    Tensor a = tensor({{1.0, 2.0}, {3.0, -1.0}}, DType::f64), b = tensor({{0.5, 2.0}, {1.0, 1.0}}, DType::f64);
    check_tensor(nn::mse_loss(a, b, Reduction::none), {2, 2}, {0.25, 0.0, 4.0, 4.0}, 1e-12, 1e-12);
    check_tensor(nn::mse_loss(a, b), {}, {8.25 / 4}, 1e-12, 1e-12);
    check_tensor(nn::mse_loss(a, b, Reduction::sum), {}, {8.25}, 1e-12, 1e-12);
    Generator g(207);
    for (Reduction red : kReductions) {
      CAPTURE(reduction_name(red));
      Tensor x = randn({3, 7}, DType::f64, &g).requires_grad_(), y = randn({3, 7}, DType::f64, &g).requires_grad_();
      check_close(nn::mse_loss(x, y, red), nn::mse_loss_reference(x, y, red), 1e-12, 1e-12);
      GradcheckResult r = gradcheck([&](const V& v) { return nn::mse_loss(v[0], v[1], red); }, {x, y});
      CHECK_MESSAGE(r.ok, r.message);
    }
    CHECK_EMBER_ERROR(nn::mse_loss(randn({2, 3}), randn({3})), "mse_loss", "(2, 3)", "(3,)");
    CHECK_EMBER_ERROR(nn::mse_loss(randn({3}), ones({3}, DType::i64)), "mse_loss", "i64");
    CHECK_EMBER_ERROR(nn::mse_loss(randn({3}), Tensor()), "mse_loss");
  }

  // --- CUDA --------------------------------------------------------------------------------------

  TEST_CASE("CUDA cross_entropy matches the CPU: forward, statistics and gradient, every float dtype and option") {
    cuda::set_poison_allocations(cuda::is_available());
    const Device dev = test_device();
    struct Case {
      int64_t n, c;
    };
    // Warp-per-row (C <= 1024) and block-per-row (C > 1024) layouts.
    const std::vector<Case> cases = {{7, 13}, {5, 1}, {3, 1024}, {4, 1025}, {2, 5003}, {300, 10}};
    Generator g(208);
    for (const Case& s : cases)
      for (DType dt : {DType::f32, DType::f64, DType::f16, DType::bf16})
        for (int variant = 0; variant < 4; ++variant) {  // bit 0: weights + ignored rows, bit 1: smoothing
          const std::string ctx = std::to_string(s.n) + "x" + std::to_string(s.c) + " " + dtype_name(dt) + " v" +
                                  std::to_string(variant);
          CAPTURE(ctx);
          Tensor z = (randn({s.n, s.c}, DType::f64, &g) * 2.0).to(dt);
          Tensor t = ids(make_targets(s.n, s.c, 71 + s.c, variant & 1, -100));
          Tensor w = uniform({s.c}, 0.5, 1.5, DType::f64, &g).to(dt);
          nn::CrossEntropyOptions oc{Reduction::none, variant & 1 ? w : Tensor(), -100, variant & 2 ? 0.1 : 0.0};
          nn::CrossEntropyOptions od = oc;
          if (od.weight.defined()) od.weight = od.weight.to(dev);
          Tensor up = randn({s.n}, DType::f64, &g).to(dt);
          Tensor zc = z.clone().requires_grad_(), zd = z.to(dev).requires_grad_();
          Tensor lc = nn::cross_entropy(zc, t, oc), ld = nn::cross_entropy(zd, t.to(dev), od);
          CHECK(ld.device() == dev);
          CHECK(ld.dtype() == dt);
          (lc * up).sum().backward();
          (ld * up.to(dev)).sum().backward();
          double tol = 2e-5;
          if (dt == DType::f64) tol = 1e-10;
          if (dt == DType::f16) tol = 1e-2;
          if (dt == DType::bf16) tol = 4e-2;
          check_close(ld.to(Device::cpu()), lc, tol, tol);
          check_close(zd.grad().to(Device::cpu()), zc.grad(), tol, tol * 0.1);
          // the mean, whose denominator is the sum of the target weights
          od.reduction = oc.reduction = Reduction::mean;
          check_close(nn::cross_entropy(z.to(dev), t.to(dev), od).to(Device::cpu()), nn::cross_entropy(z, t, oc), tol,
                      tol);
          CrossEntropyRows rd = cross_entropy_rows(z.to(dev), t.to(dev), od.weight, -100, od.label_smoothing);
          CrossEntropyRows rc = cross_entropy_rows(z, t, oc.weight, -100, oc.label_smoothing);
          check_close(rd.logsumexp.to(Device::cpu()), rc.logsumexp, dt == DType::f64 ? 1e-10 : 1e-5, 1e-5);
          check_close(rd.target_weight.to(Device::cpu()), rc.target_weight, 0, 0);
        }
    // Out-of-range targets on the device raise the same error, deferred: the op queues the check
    // (no host synchronisation in the step) and the next host read or check_deferred_errors()
    // throws it, naming the op, the range and the bad value.
    check_deferred_errors();
    REQUIRE(pending_deferred_checks() == 0);
    Tensor bad_loss = nn::cross_entropy(randn({2, 3}).to(dev), ids({0, 3}).to(dev));
    CHECK(pending_deferred_checks() == 1);
    // (check_error runs its expression once: a deferred check is reported once.)
    ember_test::check_error([] { check_deferred_errors(); }, "check_deferred_errors", {"cross_entropy", "[0, 3)", "found 3"});
    CHECK(pending_deferred_checks() == 0);
    check_deferred_errors();  // reported once
    (void)cross_entropy_rows(randn({2, 3}).to(dev), ids({-1, 2}).to(dev));  // ops/loss_ops.h, a negative class
    ember_test::check_error([&] { (void)bad_loss.item<float>(); }, "item", {"cross_entropy", "found -1"});
    // Good targets queue a check that passes.
    (void)nn::cross_entropy(randn({2, 3}).to(dev), ids({0, 2}).to(dev));
    check_deferred_errors();
    CHECK(pending_deferred_checks() == 0);
    cuda::set_poison_allocations(false);
  }

  TEST_CASE("CUDA nll_loss, binary_cross_entropy_with_logits and mse_loss match the CPU") {
    cuda::set_poison_allocations(cuda::is_available());
    const Device dev = test_device();
    Generator g(209);
    for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
      const std::string dt_name = dtype_name(dt);
      CAPTURE(dt_name);
      const double tol = dt == DType::f32 ? 2e-5 : dt == DType::f16 ? 1e-2 : 4e-2;
      Tensor lp = log_softmax(randn({9, 6}, DType::f32, &g), 1).to(dt);
      Tensor t = ids(make_targets(9, 6, 81, true, -100));
      Tensor w = uniform({6}, 0.5, 1.5, DType::f32, &g).to(dt);
      check_close(nn::nll_loss(lp.to(dev), t.to(dev), {Reduction::mean, w.to(dev), -100}).to(Device::cpu()),
                  nn::nll_loss(lp, t, {Reduction::mean, w, -100}), tol, tol);
      Tensor x = (randn({7, 5}, DType::f32, &g) * 4.0).to(dt), y = rand({7, 5}, DType::f32, &g).to(dt);
      Tensor pw = uniform({5}, 0.5, 3.0, DType::f32, &g).to(dt);
      Tensor xc = x.clone().requires_grad_(), xd = x.to(dev).requires_grad_();
      Tensor bc = nn::binary_cross_entropy_with_logits(xc, y, {.reduction = Reduction::sum, .pos_weight = pw});
      Tensor bd = nn::binary_cross_entropy_with_logits(xd, y.to(dev), {.reduction = Reduction::sum,
                                                                       .pos_weight = pw.to(dev)});
      check_close(bd.to(Device::cpu()), bc, 4 * tol, 4 * tol);
      bc.backward();
      bd.backward();
      check_close(xd.grad().to(Device::cpu()), xc.grad(), tol, tol);
      check_close(nn::mse_loss(x.to(dev), y.to(dev), Reduction::none).to(Device::cpu()),
                  nn::mse_loss(x, y, Reduction::none), tol, tol);
    }
    cuda::set_poison_allocations(false);
  }
}
