// Layer norm: the fused primitive (ember/ops/norm.h) against values computed by hand in double
// and against layer_norm_reference (composed from mean, var, rsqrt, ...); its gradients by
// gradcheck in f64 (through the op harness: contiguous, transposed and sliced inputs) and the
// layer_norm_backward primitive against the reference's autograd gradients; f16/bf16 against
// f32; bad input; nn::LayerNorm; and the device under test against the CPU (cuda:0, or the
// stand-in device fake:0 without a GPU: ember_test::test_device()).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "ember/nn/norm.h"
#include "ember/ops/norm.h"
#include "op_harness.h"
#include "test_util.h"

using namespace ember;
using ember_test::check_close;
using ember_test::check_tensor;
using ember_test::close_ratio;
using ember_test::list_str;
using ember_test::vals;
using V = std::vector<Tensor>;

namespace {

using ember_test::test_device;

// Hand reference in double: rows of n values, optional weight/bias (empty = none).
struct LnRef {
  std::vector<double> y, mean, rstd;
};
LnRef ln_ref(const std::vector<double>& x, int64_t n, const std::vector<double>& w, const std::vector<double>& b,
             double eps) {
  LnRef r;
  const int64_t m = static_cast<int64_t>(x.size()) / n;
  for (int64_t i = 0; i < m; ++i) {
    double s = 0, ss = 0;
    for (int64_t j = 0; j < n; ++j) s += x[i * n + j];
    const double mu = s / static_cast<double>(n);
    for (int64_t j = 0; j < n; ++j) ss += (x[i * n + j] - mu) * (x[i * n + j] - mu);
    const double rs = 1.0 / std::sqrt(ss / static_cast<double>(n) + eps);
    r.mean.push_back(mu);
    r.rstd.push_back(rs);
    for (int64_t j = 0; j < n; ++j) {
      double v = (x[i * n + j] - mu) * rs;
      if (!w.empty()) v *= w[j];
      if (!b.empty()) v += b[j];
      r.y.push_back(v);
    }
  }
  return r;
}

ember_test::ShapeSet set(const std::string& label, std::vector<Shape> shapes) { return {label, std::move(shapes)}; }

}  // namespace

TEST_SUITE("norm") {
  TEST_CASE("layer_norm forward against values computed by hand") {
    // Two rows of three, spelled out: row 0 = (1, 2, 3): mean 2, var 2/3.
    Tensor x = tensor({{1.0, 2.0, 3.0}, {4.0, 0.0, -2.0}});
    Tensor w = tensor({0.5, -1.0, 2.0}), b = tensor({0.25, 0.0, -1.0});
    const double r0 = 1.0 / std::sqrt(2.0 / 3.0 + 1e-5);
    const std::vector<double> plain = vals(layer_norm(x, {3}));
    CHECK(plain[0] == doctest::Approx(-r0).epsilon(1e-6));
    CHECK(std::fabs(plain[1]) < 1e-7);
    CHECK(plain[2] == doctest::Approx(r0).epsilon(1e-6));
    check_tensor(layer_norm(x, {3}), {2, 3}, ln_ref(vals(x), 3, {}, {}, 1e-5).y, 1e-6, 1e-6);
    const LnRef ref = ln_ref(vals(x), 3, vals(w), vals(b), 1e-5);
    CHECK(ref.y[0] == doctest::Approx(-r0 * 0.5 + 0.25).epsilon(1e-12));
    check_tensor(layer_norm(x, {3}, w, b), {2, 3}, ref.y, 1e-6, 1e-6);
    // The statistics: mean and rstd per row, leading shape, f32.
    LayerNormForward f = layer_norm_forward(x, {3}, w, b);
    CHECK(f.mean.dtype() == DType::f32);
    check_tensor(f.mean, {2}, ref.mean, 1e-6, 1e-6);
    check_tensor(f.rstd, {2}, ref.rstd, 1e-6, 1e-6);

    // Over the last two dims of a 3-D input, f64, with eps 0.1.
    Generator g(101);
    Tensor x3 = randn({4, 3, 5}, DType::f64, &g), w3 = randn({3, 5}, DType::f64, &g), b3 = randn({3, 5}, DType::f64, &g);
    const LnRef r3 = ln_ref(vals(x3), 15, vals(w3), vals(b3), 0.1);
    check_tensor(layer_norm(x3, {3, 5}, w3, b3, 0.1), {4, 3, 5}, r3.y, 1e-12, 1e-12);
    LayerNormForward f3 = layer_norm_forward(x3, {3, 5}, w3, b3, 0.1);
    CHECK(f3.rstd.dtype() == DType::f64);
    check_tensor(f3.rstd, {4}, r3.rstd, 1e-12, 1e-12);
    // A single normalised element: the output is the bias.
    check_tensor(layer_norm(from_vector<double>({3.0, -7.0}, {2, 1}), {1}, tensor({2.0}, DType::f64),
                            tensor({0.5}, DType::f64)),
                 {2, 1}, {0.5, 0.5});
  }

  TEST_CASE("layer_norm matches the composed reference: shapes, affine variants, strided input, long rows") {
    struct Case {
      Shape x, ns;
    };
    const std::vector<Case> cases = {{{7, 13}, {13}},       {{2, 3, 5}, {3, 5}}, {{1, 1}, {1}},  {{13}, {13}},
                                     {{3, 2, 1031}, {1031}}, {{5, 4099}, {4099}}, {{0, 6}, {6}}};
    Generator g(102);
    for (const Case& c : cases)
      for (DType dt : {DType::f32, DType::f64})
        for (int affine = 0; affine < 4; ++affine) {  // bit 0: weight, bit 1: bias
          CAPTURE(ember_test::to_string(c.x));
          const std::string dt_name = dtype_name(dt);
          CAPTURE(dt_name);
          CAPTURE(affine);
          Tensor x = randn(c.x, dt, &g) * 3.0 + 1.5;
          Tensor w = affine & 1 ? randn(c.ns, dt, &g) : Tensor();
          Tensor b = affine & 2 ? randn(c.ns, dt, &g) : Tensor();
          const double tol = dt == DType::f64 ? 1e-12 : 2e-5;
          Tensor got = layer_norm(x, c.ns, w, b);
          CHECK(got.dtype() == dt);
          check_close(got, layer_norm_reference(x, c.ns, w, b), tol, tol);
        }
    // A transposed input view: the same values as its contiguous copy.
    Tensor xt = randn({9, 6}, DType::f32, &g).t();  // (6, 9), not contiguous
    REQUIRE_FALSE(xt.is_contiguous());
    Tensor w = randn({9}, DType::f32, &g);
    check_close(layer_norm(xt, {9}, w), layer_norm(xt.contiguous(), {9}, w), 0, 0);
    check_close(layer_norm(xt, {9}, w), layer_norm_reference(xt, {9}, w), 2e-5, 2e-5);
  }

  TEST_CASE("layer_norm keeps its digits when |mean| >> std (two-pass variance)") {
    Generator g(103);
    Tensor x64 = randn({6, 257}, DType::f64, &g) * 0.01 + 1.0e4;
    Tensor x32 = x64.to(DType::f32);
    // f32 against the f64 result on the same (rounded) inputs: a one-pass E[x^2] - E[x]^2 in
    // f32 would lose every digit of the variance here.
    check_close(layer_norm(x32, {257}), layer_norm(x32.to(DType::f64), {257}), 1e-3, 1e-3);
  }

  TEST_CASE("gradcheck in f64 through the op harness (contiguous, transposed, sliced inputs)") {
    using ember_test::kLowPrecision;
    using ember_test::OpCase;
    const std::vector<ember_test::ShapeSet> affine_sets = {
        set("(3, 4) (4) (4)", {{3, 4}, {4}, {4}}),
        set("prime (7, 13) (13) (13)", {{7, 13}, {13}, {13}}),
        set("3-D over 2 dims (2, 3, 5) (3, 5) (3, 5)", {{2, 3, 5}, {3, 5}, {3, 5}}),
        set("1-D (11) (11) (11)", {{11}, {11}, {11}}),
        set("size-1 rows (5, 1) (1) (1)", {{5, 1}, {1}, {1}}),
        set("one row (1, 9) (9) (9)", {{1, 9}, {9}, {9}})};
    std::vector<ember_test::ShapeSet> x_sets, xw_sets;
    for (const auto& s : affine_sets) {
      x_sets.push_back({s.label, {s.shapes[0]}});
      xw_sets.push_back({s.label, {s.shapes[0], s.shapes[1]}});
    }
    // normalized_shape: the weight's shape, or the last dim when there is none.
    const auto ns_of = [](const V& x) { return x.size() > 1 ? x[1].shape() : Shape{x[0].size(-1)}; };
    const std::vector<OpCase> cases = {
        {"layer_norm", affine_sets, [=](const V& x) { return layer_norm(x[0], ns_of(x), x[1], x[2]); }, kLowPrecision},
        {"layer_norm_no_affine", x_sets, [=](const V& x) { return layer_norm(x[0], ns_of(x)); }, kLowPrecision},
        {"layer_norm_weight_only", xw_sets, [=](const V& x) { return layer_norm(x[0], ns_of(x), x[1]); }},
        {"layer_norm_bias_only", xw_sets, [=](const V& x) { return layer_norm(x[0], ns_of(x), Tensor(), x[1]); }},
        {"layer_norm_eps", affine_sets, [=](const V& x) { return layer_norm(x[0], ns_of(x), x[1], x[2], 0.3); }},
        {"layer_norm_reference", affine_sets,
         [=](const V& x) { return layer_norm_reference(x[0], ns_of(x), x[1], x[2]); }},
    };
    ember_test::run_cases(cases);
  }

  TEST_CASE("layer_norm_backward: the primitive against the reference's autograd gradients") {
    Generator g(104);
    struct Case {
      Shape x, ns;
    };
    for (const Case& c : {Case{{7, 13}, {13}}, Case{{2, 3, 5}, {3, 5}}, Case{{37, 1500}, {1500}}, Case{{1, 4}, {4}}}) {
      CAPTURE(ember_test::to_string(c.x));
      Tensor x = randn(c.x, DType::f64, &g).requires_grad_();
      Tensor w = randn(c.ns, DType::f64, &g).requires_grad_();
      Tensor b = randn(c.ns, DType::f64, &g).requires_grad_();
      Tensor up = randn(c.x, DType::f64, &g);
      (layer_norm_reference(x, c.ns, w, b) * up).sum().backward();
      LayerNormForward f = layer_norm_forward(x.detach(), c.ns, w.detach(), b.detach());
      LayerNormGrads gr = layer_norm_backward(up, x.detach(), f.mean, f.rstd, w.detach(), c.ns);
      check_close(gr.grad_input, x.grad(), 1e-10, 1e-10);
      check_close(gr.grad_weight, w.grad(), 1e-10, 1e-10);
      check_close(gr.grad_bias, b.grad(), 1e-10, 1e-10);
      // needs: only what is asked for is computed.
      LayerNormGrads only_w = layer_norm_backward(up, x.detach(), f.mean, f.rstd, w.detach(), c.ns, {false, true, false});
      CHECK_FALSE(only_w.grad_input.defined());
      CHECK_FALSE(only_w.grad_bias.defined());
      check_close(only_w.grad_weight, w.grad(), 1e-10, 1e-10);
      LayerNormGrads only_x = layer_norm_backward(up, x.detach(), f.mean, f.rstd, w.detach(), c.ns, {true, false, false});
      CHECK_FALSE(only_x.grad_weight.defined());
      check_close(only_x.grad_input, x.grad(), 1e-10, 1e-10);
    }
    // Through autograd: the fused op's gradients equal the reference's, f32, with a weight
    // that is used twice (gradients accumulate).
    Tensor x = randn({5, 8}, DType::f32, &g).requires_grad_();
    Tensor w = randn({8}, DType::f32, &g).requires_grad_();
    Tensor b = randn({8}, DType::f32, &g).requires_grad_();
    (layer_norm(x, {8}, w, b) * w).sum().backward();
    Tensor gx = x.grad(), gw = w.grad(), gb = b.grad();
    x.set_grad(Tensor());
    w.set_grad(Tensor());
    b.set_grad(Tensor());
    (layer_norm_reference(x, {8}, w, b) * w).sum().backward();
    check_close(gx, x.grad(), 1e-5, 1e-5);
    check_close(gw, w.grad(), 1e-5, 1e-5);
    check_close(gb, b.grad(), 1e-5, 1e-5);
  }

  TEST_CASE("an empty batch: (0, N) input gives (0, N), zero weight and bias gradients") {
    Tensor x = zeros({0, 6}).requires_grad_();
    Tensor w = ones({6}).requires_grad_(), b = zeros({6}).requires_grad_();
    Tensor y = layer_norm(x, {6}, w, b);
    CHECK(y.shape() == Shape{0, 6});
    y.sum().backward();
    check_tensor(w.grad(), {6}, std::vector<double>(6, 0.0));
    check_tensor(b.grad(), {6}, std::vector<double>(6, 0.0));
    CHECK(x.grad().shape() == Shape{0, 6});
  }

  TEST_CASE("f16 and bf16 against f32 on the same rounded inputs, forward and backward") {
    Generator g(105);
    Tensor x0 = randn({9, 70}, DType::f32, &g), w0 = randn({70}, DType::f32, &g), b0 = randn({70}, DType::f32, &g);
    Tensor up0 = randn({9, 70}, DType::f32, &g);
    for (DType dt : {DType::f16, DType::bf16}) {
      const std::string dt_name = dtype_name(dt);
      CAPTURE(dt_name);
      const double tol = dt == DType::f16 ? 4e-3 : 3e-2;
      Tensor x = x0.to(dt).requires_grad_(), w = w0.to(dt).requires_grad_(), b = b0.to(dt).requires_grad_();
      Tensor xf = x.detach().to(DType::f32).requires_grad_(), wf = w.detach().to(DType::f32).requires_grad_(),
             bf = b.detach().to(DType::f32).requires_grad_();
      Tensor y = layer_norm(x, {70}, w, b);
      CHECK(y.dtype() == dt);
      Tensor yf = layer_norm(xf, {70}, wf, bf);
      check_close(y, yf, tol, tol);
      (y * up0.to(dt)).sum().backward();
      (yf * up0.to(dt).to(DType::f32)).sum().backward();
      CHECK(x.grad().dtype() == dt);
      CHECK(w.grad().dtype() == dt);
      check_close(x.grad(), xf.grad(), tol, tol);
      check_close(w.grad(), wf.grad(), tol, 3 * tol);  // a sum over 9 rows
      check_close(b.grad(), bf.grad(), tol, 3 * tol);
    }
  }

  TEST_CASE("layer_norm rejects bad input with ember::Error naming the op, shapes and dtypes") {
    Tensor x = randn({4, 5});
    CHECK_EMBER_ERROR(layer_norm(x, {4}), "layer_norm", "(4,)", "(4, 5)");
    CHECK_EMBER_ERROR(layer_norm(x, {4, 5, 1}), "layer_norm", "(4, 5, 1)");
    CHECK_EMBER_ERROR(layer_norm(x, {}), "layer_norm", "normalized_shape");
    CHECK_EMBER_ERROR(layer_norm(zeros({4, 0}), {0}), "layer_norm", "(0,)");
    CHECK_EMBER_ERROR(layer_norm(x, {5}, randn({4})), "layer_norm", "weight", "(4,)", "(5,)");
    CHECK_EMBER_ERROR(layer_norm(x, {5}, Tensor(), randn({1, 5})), "layer_norm", "bias", "(1, 5)");
    CHECK_EMBER_ERROR(layer_norm(x, {5}, randn({5}, DType::f64)), "layer_norm", "weight", "f64", "f32");
    CHECK_EMBER_ERROR(layer_norm(from_vector<int64_t>({1, 2, 3}, {3}), {3}), "layer_norm", "i64", "(3,)");
    CHECK_EMBER_ERROR(layer_norm(x, {5}, Tensor(), Tensor(), -1.0), "layer_norm", "eps", "-1");
    CHECK_EMBER_ERROR(layer_norm(Tensor(), {5}), "layer_norm", "undefined");
    // The backward primitive checks its statistics and upstream gradient too.
    LayerNormForward f = layer_norm_forward(x, {5});
    CHECK_EMBER_ERROR(layer_norm_backward(randn({4, 4}), x, f.mean, f.rstd, Tensor(), {5}), "layer_norm_backward",
                      "grad_output", "(4, 4)", "(4, 5)");
    CHECK_EMBER_ERROR(layer_norm_backward(randn({4, 5}), x, randn({3}), f.rstd, Tensor(), {5}), "layer_norm_backward",
                      "mean", "(3,)");
    CHECK_EMBER_ERROR(layer_norm_backward(randn({4, 5}), x, f.mean, f.rstd.to(DType::f64), Tensor(), {5}),
                      "layer_norm_backward", "f64");
  }

  TEST_CASE("nn::LayerNorm: parameters, forward, gradients, no affine") {
    nn::LayerNorm ln({3, 4});
    auto named = ln.named_parameters();
    REQUIRE(named.size() == 2);
    CHECK(named[0].first == "weight");
    CHECK(named[1].first == "bias");
    check_tensor(ln.weight, {3, 4}, std::vector<double>(12, 1.0));
    check_tensor(ln.bias, {3, 4}, std::vector<double>(12, 0.0));
    CHECK(ln.weight.requires_grad());
    CHECK(ln.normalized_shape() == Shape{3, 4});
    CHECK(ln.eps() == 1e-5);
    Generator g(106);
    Tensor x = randn({2, 3, 4}, DType::f32, &g);
    ln.weight.detach().copy_(randn({3, 4}, DType::f32, &g));  // not ones: the weight must matter
    check_close(ln(x), layer_norm_reference(x, {3, 4}, ln.weight, ln.bias), 2e-5, 2e-5);
    (ln(x) * x).sum().backward();
    REQUIRE(ln.weight.grad().defined());
    REQUIRE(ln.bias.grad().defined());
    check_close(ln.bias.grad(), sum(x, {0}), 1e-5, 1e-5);

    nn::LayerNorm plain({7}, 1e-3, /*elementwise_affine=*/false);
    CHECK(plain.parameters().empty());
    CHECK_FALSE(plain.weight.defined());
    Tensor x7 = randn({5, 7}, DType::f32, &g);
    check_close(plain(x7), layer_norm_reference(x7, {7}, Tensor(), Tensor(), 1e-3), 2e-5, 2e-5);

    nn::LayerNorm no_bias({7}, 1e-5, true, /*bias=*/false);
    CHECK(no_bias.parameters().size() == 1);
    CHECK_FALSE(no_bias.bias.defined());
    CHECK(no_bias.parameter_count() == 7);

    CHECK_EMBER_ERROR(nn::LayerNorm(Shape{}), "LayerNorm", "normalized_shape");
    CHECK_EMBER_ERROR(nn::LayerNorm(Shape{3, 0}), "LayerNorm", "(3, 0)");
    CHECK_EMBER_ERROR(nn::LayerNorm({4}, -1.0), "LayerNorm", "eps");
    CHECK(nn::LayerNorm(5).normalized_shape() == Shape{5});
    CHECK_EMBER_ERROR(ln(randn({2, 4, 3})), "layer_norm", "(3, 4)", "(2, 4, 3)");
  }

  TEST_CASE("CUDA layer_norm matches the CPU: forward and all gradients, every float dtype") {
    cuda::set_poison_allocations(cuda::is_available());
    const Device dev = test_device();
    struct Case {
      Shape x, ns;
    };
    // Warp-per-row (N <= 1024) and block-per-row (N > 1024) layouts; many rows for the
    // chunked weight/bias gradient sums; a row of one element.
    const std::vector<Case> cases = {{{7, 13}, {13}},     {{3, 4, 32}, {4, 32}}, {{2, 1024}, {1024}},
                                     {{5, 1025}, {1025}}, {{3, 4099}, {4099}},   {{2050, 33}, {33}},
                                     {{6, 1}, {1}}};
    Generator g(107);
    for (const Case& c : cases)
      for (DType dt : {DType::f32, DType::f64, DType::f16, DType::bf16}) {
        const std::string ctx = ember_test::to_string(c.x) + " " + dtype_name(dt);
        CAPTURE(ctx);
        // Inputs rounded to dt on the CPU, so both devices see the same values.
        Tensor x = (randn(c.x, DType::f64, &g) * 2.0 + 0.5).to(dt), w = randn(c.ns, DType::f64, &g).to(dt),
               b = randn(c.ns, DType::f64, &g).to(dt), up = randn(c.x, DType::f64, &g).to(dt);
        Tensor xc = x.clone().requires_grad_(), wc = w.clone().requires_grad_(), bc = b.clone().requires_grad_();
        Tensor xd = x.to(dev).requires_grad_(), wd = w.to(dev).requires_grad_(), bd = b.to(dev).requires_grad_();
        Tensor yc = layer_norm(xc, c.ns, wc, bc), yd = layer_norm(xd, c.ns, wd, bd);
        (yc * up).sum().backward();
        (yd * up.to(dev)).sum().backward();
        CHECK(yd.device() == dev);
        CHECK(yd.dtype() == dt);
        const int64_t rows = x.numel() / numel_of(c.ns);
        double rtol = 1e-5, atol = 1e-5;
        if (dt == DType::f64) rtol = atol = 1e-10;
        if (dt == DType::f16) rtol = atol = 1e-2;
        if (dt == DType::bf16) rtol = atol = 4e-2;
        const double sum_slack = std::sqrt(static_cast<double>(rows));  // w and b gradients sum `rows` terms
        check_close(yd.to(Device::cpu()), yc, rtol, atol);
        check_close(xd.grad().to(Device::cpu()), xc.grad(), rtol, atol);
        check_close(wd.grad().to(Device::cpu()), wc.grad(), 4 * rtol, atol * sum_slack);
        check_close(bd.grad().to(Device::cpu()), bc.grad(), 4 * rtol, atol * sum_slack);
        // The statistics are f32 (f64) on both devices.
        LayerNormForward fd = layer_norm_forward(x.to(dev), c.ns), fc = layer_norm_forward(x, c.ns);
        CHECK(fd.mean.dtype() == fc.mean.dtype());
        check_close(fd.mean.to(Device::cpu()), fc.mean, dt == DType::f64 ? 1e-10 : 1e-5, 1e-5);
        check_close(fd.rstd.to(Device::cpu()), fc.rstd, dt == DType::f64 ? 1e-10 : 1e-5, 1e-5);
      }
    // No affine parameters, and gradients for the input only.
    Tensor x = randn({9, 300}, DType::f32, &g);
    Tensor xc = x.clone().requires_grad_(), xd = x.to(dev).requires_grad_();
    pow(layer_norm(xc, {300}), 2.0).sum().backward();
    pow(layer_norm(xd, {300}), 2.0).sum().backward();
    check_close(xd.grad().to(Device::cpu()), xc.grad(), 1e-4, 1e-4);
    cuda::set_poison_allocations(false);
  }
}
