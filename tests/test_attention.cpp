// Scaled dot-product attention: the fused CPU primitive (ember/ops/attention.h) and the
// composed sdpa_reference against a naive loop in double written here; the fused gradients
// against the reference's autograd gradients for every mask kind; gradcheck in f64; dropout
// streams; f16/bf16; bad input; and CUDA against the CPU (skipped without a GPU).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "ember/ops/attention.h"
#include "test_util.h"

using namespace ember;
using ember_test::ScopedEnv;
using ember_test::check_close;
using ember_test::vals;

namespace {

// The masks of one case, in the conventions of AttentionOptions.
struct MaskSpec {
  std::string name;
  Shape bool_mask;   // empty = none
  Shape float_mask;  // empty = none
  bool padding = false;
  bool causal = false;
};

// Naive attention in double: out (B, H, Tq, Dv) from q, k, v and the options, with a fully
// masked row giving zeros. Masks are read as broadcast (B, H, Tq, Tk) through vals().
std::vector<double> naive(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o) {
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3), Tk = k.size(2), Dv = v.size(3);
  const std::vector<double> Q = vals(q), K = vals(k), V = vals(v);
  const Shape full{B, H, Tq, Tk};
  std::vector<double> M, P;
  if (o.attn_mask.defined()) M = vals(broadcast_to(o.attn_mask, full).contiguous());
  if (o.key_padding_mask.defined()) P = vals(o.key_padding_mask);
  const double scale = o.scale ? *o.scale : 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> out(static_cast<size_t>(B * H * Tq * Dv), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        std::vector<double> s(static_cast<size_t>(Tk));
        std::vector<bool> ok(static_cast<size_t>(Tk), true);
        for (int64_t j = 0; j < Tk; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += Q[((b * H + h) * Tq + i) * D + d] * K[((b * H + h) * Tk + j) * D + d];
          s[j] = dot * scale;
          const size_t mi = static_cast<size_t>(((b * H + h) * Tq + i) * Tk + j);
          if (!M.empty()) {
            if (o.attn_mask.dtype() == DType::boolean) ok[j] = M[mi] != 0;
            else s[j] += M[mi];
          }
          if (!P.empty() && P[b * Tk + j] != 0) ok[j] = false;
          if (o.causal && j > i + (Tk - Tq)) ok[j] = false;
        }
        double mx = -INFINITY;
        for (int64_t j = 0; j < Tk; ++j)
          if (ok[j]) mx = std::max(mx, s[j]);
        if (mx == -INFINITY) continue;  // zeros
        double sum = 0;
        for (int64_t j = 0; j < Tk; ++j) sum += ok[j] ? std::exp(s[j] - mx) : 0.0;
        for (int64_t j = 0; j < Tk; ++j) {
          if (!ok[j]) continue;
          const double pj = std::exp(s[j] - mx) / sum;
          for (int64_t d = 0; d < Dv; ++d) out[((b * H + h) * Tq + i) * Dv + d] += pj * V[((b * H + h) * Tk + j) * Dv + d];
        }
      }
  return out;
}

AttentionOptions make_opts(const MaskSpec& m, int64_t B, int64_t Tk, Generator& g, DType dt) {
  AttentionOptions o;
  if (!m.bool_mask.empty()) o.attn_mask = gt(rand(m.bool_mask, DType::f32, &g), scalar_tensor(0.3));
  if (!m.float_mask.empty()) o.attn_mask = randn(m.float_mask, dt, &g);
  if (m.padding) {
    // Batch 0 keeps every key; the others drop a random ~third of theirs.
    Tensor pad = gt(rand({B, Tk}, DType::f32, &g), scalar_tensor(0.65));
    pad.narrow(0, 0, 1).zero_();
    o.key_padding_mask = pad;
  }
  o.causal = m.causal;
  return o;
}

const std::vector<MaskSpec>& mask_specs() {
  static const std::vector<MaskSpec> specs = {
      {"none", {}, {}, false, false},
      {"bool (Tq, Tk)", {0}, {}, false, false},  // shapes filled per case (see shaped())
      {"bool (B, 1, 1, Tk)", {1}, {}, false, false},
      {"float (B, H, Tq, Tk)", {}, {2}, false, false},
      {"float (Tk)", {}, {3}, false, false},
      {"key padding", {}, {}, true, false},
      {"causal", {}, {}, false, true},
      {"causal + padding + bool", {0}, {}, true, true},
  };
  return specs;
}

// Replaces the placeholder shape codes of a spec by real shapes.
MaskSpec shaped(MaskSpec m, int64_t B, int64_t H, int64_t Tq, int64_t Tk) {
  const auto shape_of = [&](const Shape& code) -> Shape {
    if (code.empty()) return {};
    switch (code[0]) {
      case 0: return {Tq, Tk};
      case 1: return {B, 1, 1, Tk};
      case 2: return {B, H, Tq, Tk};
      default: return {Tk};
    }
  };
  m.bool_mask = shape_of(m.bool_mask);
  m.float_mask = shape_of(m.float_mask);
  return m;
}

bool has_nan(const Tensor& t) {
  for (double x : vals(t))
    if (std::isnan(x)) return true;
  return false;
}

// max |a - b| / max |b| (b's largest magnitude floored at 1e-3), on the host.
double rel_diff(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = vals(a.to(Device::cpu())), y = vals(b.to(Device::cpu()));
  double worst = 0, largest = 1e-3;
  for (size_t i = 0; i < x.size(); ++i) {
    worst = std::max(worst, std::fabs(x[i] - y[i]));
    largest = std::max(largest, std::fabs(y[i]));
  }
  return worst / largest;
}

}  // namespace

TEST_SUITE("attention") {
  TEST_CASE("fused forward and sdpa_reference against a naive loop, every mask kind, odd lengths") {
    struct Size {
      int64_t B, H, Tq, Tk, D, Dv;
    };
    const std::vector<Size> sizes = {{2, 3, 5, 5, 8, 8}, {1, 2, 7, 13, 5, 3}, {2, 1, 9, 4, 4, 6}, {1, 1, 1, 1, 3, 2},
                                     {1, 2, 131, 133, 8, 4}};  // 131 > one 128-query block
    Generator g(301);
    for (const Size& s : sizes)
      for (const MaskSpec& spec : mask_specs())
        for (DType dt : {DType::f32, DType::f64}) {
          const MaskSpec m = shaped(spec, s.B, s.H, s.Tq, s.Tk);
          CAPTURE(m.name);
          CAPTURE(s.Tq);
          CAPTURE(s.Tk);
          const std::string dt_name = dtype_name(dt);
          CAPTURE(dt_name);
          Tensor q = randn({s.B, s.H, s.Tq, s.D}, dt, &g), k = randn({s.B, s.H, s.Tk, s.D}, dt, &g);
          Tensor v = randn({s.B, s.H, s.Tk, s.Dv}, dt, &g);
          AttentionOptions o = make_opts(m, s.B, s.Tk, g, dt);
          const std::vector<double> want = naive(q, k, v, o);
          const double tol = dt == DType::f64 ? 1e-10 : 2e-5;
          Tensor fused = scaled_dot_product_attention(q, k, v, o);
          CHECK(fused.dtype() == dt);
          CHECK(fused.shape() == (Shape{s.B, s.H, s.Tq, s.Dv}));
          CHECK(ember_test::close_ratio(vals(fused), want, tol, tol) <= 1.0);
          CHECK(ember_test::close_ratio(vals(sdpa_reference(q, k, v, o)), want, tol, tol) <= 1.0);
        }
  }

  TEST_CASE("fused gradients equal the reference's autograd gradients for every mask kind") {
    Generator g(302);
    struct Size {
      int64_t B, H, Tq, Tk, D, Dv;
    };
    for (const Size& s : {Size{2, 2, 6, 6, 4, 4}, Size{1, 3, 5, 11, 6, 3}, Size{2, 1, 8, 3, 4, 5},
                          Size{1, 1, 130, 129, 4, 4}})
      for (const MaskSpec& spec : mask_specs()) {
        const MaskSpec m = shaped(spec, s.B, s.H, s.Tq, s.Tk);
        CAPTURE(m.name);
        CAPTURE(s.Tq);
        CAPTURE(s.Tk);
        Tensor q0 = randn({s.B, s.H, s.Tq, s.D}, DType::f64, &g), k0 = randn({s.B, s.H, s.Tk, s.D}, DType::f64, &g);
        Tensor v0 = randn({s.B, s.H, s.Tk, s.Dv}, DType::f64, &g), up = randn({s.B, s.H, s.Tq, s.Dv}, DType::f64, &g);
        AttentionOptions o = make_opts(m, s.B, s.Tk, g, DType::f64);
        o.scale = 0.37;  // not the default: a wrong scale in backward must show
        Tensor q = q0.clone().requires_grad_(), k = k0.clone().requires_grad_(), v = v0.clone().requires_grad_();
        Tensor qr = q0.clone().requires_grad_(), kr = k0.clone().requires_grad_(), vr = v0.clone().requires_grad_();
        (scaled_dot_product_attention(q, k, v, o) * up).sum().backward();
        (sdpa_reference(qr, kr, vr, o) * up).sum().backward();
        check_close(q.grad(), qr.grad(), 1e-9, 1e-9);
        check_close(k.grad(), kr.grad(), 1e-9, 1e-9);
        check_close(v.grad(), vr.grad(), 1e-9, 1e-9);
      }
  }

  TEST_CASE("gradcheck in f64: plain, causal with Tq != Tk, masks, scale, non-contiguous inputs") {
    Generator g(303);
    const auto run = [&](const char* what, AttentionOptions o, Shape qs, Shape ks, Shape vs) {
      CAPTURE(what);
      std::vector<Tensor> in = {randn(qs, DType::f64, &g).requires_grad_(), randn(ks, DType::f64, &g).requires_grad_(),
                                randn(vs, DType::f64, &g).requires_grad_()};
      GradcheckResult r = gradcheck(
          [o](const std::vector<Tensor>& x) { return scaled_dot_product_attention(x[0], x[1], x[2], o); }, in);
      CHECK_MESSAGE(r.ok, r.message);
    };
    run("plain", {}, {1, 2, 3, 4}, {1, 2, 5, 4}, {1, 2, 5, 3});
    AttentionOptions causal;
    causal.causal = true;
    run("causal Tq < Tk", causal, {1, 1, 3, 4}, {1, 1, 5, 4}, {1, 1, 5, 2});
    run("causal Tq > Tk (first rows fully masked)", causal, {1, 1, 5, 3}, {1, 1, 3, 3}, {1, 1, 3, 2});
    AttentionOptions masks;
    masks.attn_mask = from_vector<double>({0.5, -1.0, 0.0, 2.0, -0.25, 1.0}, {2, 3}, DType::f64);
    masks.key_padding_mask = from_vector<bool>({false, false, true, true, false, false}, {2, 3}, DType::boolean);
    masks.scale = 0.8;
    run("float mask + padding + scale", masks, {2, 1, 2, 3}, {2, 1, 3, 3}, {2, 1, 3, 2});
    // Non-contiguous q: a (B, T, H, D) tensor permuted to (B, H, T, D).
    std::vector<Tensor> in = {randn({1, 4, 2, 3}, DType::f64, &g).requires_grad_(),
                              randn({1, 2, 3, 3}, DType::f64, &g).requires_grad_(),
                              randn({1, 2, 3, 2}, DType::f64, &g).requires_grad_()};
    GradcheckResult r = gradcheck(
        [](const std::vector<Tensor>& x) { return scaled_dot_product_attention(x[0].permute({0, 2, 1, 3}), x[1], x[2]); },
        in);
    CHECK_MESSAGE(r.ok, r.message);
  }

  TEST_CASE("a fully masked row gives zeros and zero gradients, never NaN") {
    Generator g(304);
    Tensor q = randn({2, 2, 3, 4}, DType::f32, &g).requires_grad_(), k = randn({2, 2, 5, 4}, DType::f32, &g).requires_grad_();
    Tensor v = randn({2, 2, 5, 3}, DType::f32, &g).requires_grad_();
    AttentionOptions o;
    Tensor pad = zeros({2, 5}, DType::boolean);
    pad.narrow(0, 1, 1).fill_(1.0);  // batch 1: every key is padding
    o.key_padding_mask = pad;
    AttentionForward f = sdpa_forward(q, k, v, o);
    Tensor y = scaled_dot_product_attention(q, k, v, o);
    CHECK_FALSE(has_nan(y));
    check_close(y.select(0, 1), zeros({2, 3, 3}), 0, 0);
    CHECK(vals(f.logsumexp.select(0, 1))[0] == -INFINITY);
    (y * y).sum().backward();
    CHECK_FALSE(has_nan(q.grad()));
    check_close(q.grad().select(0, 1), zeros({2, 3, 4}), 0, 0);
    check_close(k.grad().select(0, 1), zeros({2, 5, 4}), 0, 0);
    // Batch 0 is untouched by the other batch's padding.
    check_close(y.select(0, 0), sdpa_reference(q.select(0, 0).unsqueeze(0), k.select(0, 0).unsqueeze(0),
                                               v.select(0, 0).unsqueeze(0)).squeeze(0), 2e-5, 2e-5);
    // A float mask of -inf everywhere on one row.
    AttentionOptions fm;
    Tensor m = zeros({3, 5});
    m.narrow(0, 1, 1).fill_(-INFINITY);
    fm.attn_mask = m;
    Tensor yf = scaled_dot_product_attention(q.detach(), k.detach(), v.detach(), fm);
    CHECK_FALSE(has_nan(yf));
    check_close(yf.narrow(2, 1, 1), zeros({2, 2, 1, 3}), 0, 0);
    check_close(yf, sdpa_reference(q.detach(), k.detach(), v.detach(), fm), 2e-5, 2e-5);
  }

  TEST_CASE("dropout: same generator state gives the same result; fused equals the reference; p = 0 is none") {
    Generator g(305);
    Tensor q0 = randn({2, 2, 7, 4}, DType::f64, &g), k0 = randn({2, 2, 9, 4}, DType::f64, &g);
    Tensor v0 = randn({2, 2, 9, 3}, DType::f64, &g), up = randn({2, 2, 7, 3}, DType::f64, &g);
    AttentionOptions o;
    o.dropout = 0.3;
    o.causal = true;
    Generator ga(77), gb(77), gr(77);
    o.generator = &ga;
    Tensor a = scaled_dot_product_attention(q0, k0, v0, o);
    o.generator = &gb;
    Tensor b = scaled_dot_product_attention(q0, k0, v0, o);
    CHECK(equal(a, b));
    CHECK(ga.offset() == gb.offset());
    CHECK(ga.offset() > 0);
    Tensor c = scaled_dot_product_attention(q0, k0, v0, o);  // gb advanced: another mask
    CHECK_FALSE(allclose(b, c));
    // Against the reference with the same stream, forward and gradients.
    Generator gf(91), gr2(91);
    Tensor q = q0.clone().requires_grad_(), k = k0.clone().requires_grad_(), v = v0.clone().requires_grad_();
    Tensor qr = q0.clone().requires_grad_(), kr = k0.clone().requires_grad_(), vr = v0.clone().requires_grad_();
    o.generator = &gf;
    Tensor yf = scaled_dot_product_attention(q, k, v, o);
    o.generator = &gr2;
    Tensor yr = sdpa_reference(qr, kr, vr, o);
    check_close(yf, yr, 1e-10, 1e-10);
    (yf * up).sum().backward();
    (yr * up).sum().backward();
    check_close(q.grad(), qr.grad(), 1e-9, 1e-9);
    check_close(k.grad(), kr.grad(), 1e-9, 1e-9);
    check_close(v.grad(), vr.grad(), 1e-9, 1e-9);
    // Some probabilities were dropped: the output differs from no dropout.
    AttentionOptions no_drop;
    no_drop.causal = true;
    CHECK_FALSE(allclose(yf, scaled_dot_product_attention(q0, k0, v0, no_drop), 1e-3, 1e-3));
    // p = 0: exactly no dropout, and no numbers drawn.
    AttentionOptions zero;
    zero.dropout = 0.0;
    zero.generator = &gr;
    CHECK(equal(scaled_dot_product_attention(q0, k0, v0, zero), scaled_dot_product_attention(q0, k0, v0)));
    CHECK(gr.offset() == 0);
    // p = 1: everything dropped (the composed path), zeros.
    AttentionOptions all;
    all.dropout = 1.0;
    check_close(scaled_dot_product_attention(q0, k0, v0, all), zeros({2, 2, 7, 3}, DType::f64), 0, 0);
  }

  TEST_CASE("sdpa_backward: only the gradients asked for; f16 and bf16 against f32 on rounded inputs") {
    Generator g(306);
    Tensor q = randn({2, 2, 9, 8}, DType::f32, &g), k = randn({2, 2, 10, 8}, DType::f32, &g);
    Tensor v = randn({2, 2, 10, 8}, DType::f32, &g), up = randn({2, 2, 9, 8}, DType::f32, &g);
    AttentionOptions o;
    o.causal = true;
    AttentionForward f = sdpa_forward(q, k, v, o);
    CHECK(f.logsumexp.shape() == (Shape{2, 2, 9}));
    CHECK(f.logsumexp.dtype() == DType::f32);
    AttentionGrads all = sdpa_backward(up, q, k, v, f, o);
    AttentionGrads only_k = sdpa_backward(up, q, k, v, f, o, {false, true, false});
    CHECK_FALSE(only_k.grad_q.defined());
    CHECK_FALSE(only_k.grad_v.defined());
    check_close(only_k.grad_k, all.grad_k, 0, 0);
    AttentionGrads only_v = sdpa_backward(up, q, k, v, f, o, {false, false, true});
    check_close(only_v.grad_v, all.grad_v, 0, 0);
    // logsumexp against log(sum(exp(S))) of the masked scores.
    Tensor s = matmul(q, k.transpose(2, 3)) / std::sqrt(8.0);
    Tensor lse_row = log(sum(exp(s.select(2, 0).narrow(2, 0, 2)), {2}));  // query 0 sees keys 0..1
    check_close(f.logsumexp.select(2, 0), lse_row, 1e-5, 1e-5);

    for (DType dt : {DType::f16, DType::bf16}) {
      const std::string dt_name = dtype_name(dt);
      CAPTURE(dt_name);
      const double tol = dt == DType::f16 ? 5e-3 : 4e-2;
      Tensor qh = q.to(dt).requires_grad_(), kh = k.to(dt).requires_grad_(), vh = v.to(dt).requires_grad_();
      Tensor qf = qh.detach().to(DType::f32).requires_grad_(), kf = kh.detach().to(DType::f32).requires_grad_(),
             vf = vh.detach().to(DType::f32).requires_grad_();
      Tensor yh = scaled_dot_product_attention(qh, kh, vh, o), yf = scaled_dot_product_attention(qf, kf, vf, o);
      CHECK(yh.dtype() == dt);
      check_close(yh, yf, tol, tol);
      (yh * up.to(dt)).sum().backward();
      (yf * up.to(dt).to(DType::f32)).sum().backward();
      CHECK(qh.grad().dtype() == dt);
      check_close(qh.grad(), qf.grad(), 2 * tol, 2 * tol);
      check_close(kh.grad(), kf.grad(), 2 * tol, 2 * tol);
      check_close(vh.grad(), vf.grad(), 2 * tol, 2 * tol);
    }
  }

  TEST_CASE("bad input raises ember::Error naming the op and the shapes") {
    Tensor q = randn({2, 3, 4, 8}), k = randn({2, 3, 5, 8}), v = randn({2, 3, 5, 6});
    const char* op = "scaled_dot_product_attention";
    CHECK_EMBER_ERROR(scaled_dot_product_attention(q, randn({2, 3, 5, 7}), v), op, "head dims", "(2, 3, 4, 8)",
                      "(2, 3, 5, 7)");
    CHECK_EMBER_ERROR(scaled_dot_product_attention(q, k, randn({2, 3, 6, 6})), op, "keys", "(2, 3, 6, 6)");
    CHECK_EMBER_ERROR(scaled_dot_product_attention(q, randn({2, 2, 5, 8}), randn({2, 2, 5, 6})), op, "head",
                      "(2, 2, 5, 8)");
    CHECK_EMBER_ERROR(scaled_dot_product_attention(randn({3, 4, 8}), k, v), op, "4-D", "(3, 4, 8)");
    CHECK_EMBER_ERROR(scaled_dot_product_attention(q, k.to(DType::f64), v), op, "dtype", "f64", "f32");
    CHECK_EMBER_ERROR(scaled_dot_product_attention(q.to(DType::i64), k.to(DType::i64), v.to(DType::i64)), op, "i64");
    AttentionOptions bad_mask;
    bad_mask.attn_mask = ones({4, 4}, DType::boolean);
    CHECK_EMBER_ERROR(scaled_dot_product_attention(q, k, v, bad_mask), op, "attn_mask", "(4, 4)", "(2, 3, 4, 5)");
    bad_mask.attn_mask = ones({4, 5}, DType::i64);
    CHECK_EMBER_ERROR(scaled_dot_product_attention(q, k, v, bad_mask), op, "attn_mask", "i64");
    AttentionOptions bad_pad;
    bad_pad.key_padding_mask = zeros({2, 4}, DType::boolean);
    CHECK_EMBER_ERROR(scaled_dot_product_attention(q, k, v, bad_pad), op, "key_padding_mask", "(2, 5)", "(2, 4)");
    bad_pad.key_padding_mask = zeros({2, 5});
    CHECK_EMBER_ERROR(scaled_dot_product_attention(q, k, v, bad_pad), op, "key_padding_mask", "bool");
    AttentionOptions bad_p;
    bad_p.dropout = 1.5;
    CHECK_EMBER_ERROR(scaled_dot_product_attention(q, k, v, bad_p), op, "dropout", "1.5");
    AttentionOptions bad_scale;
    bad_scale.scale = INFINITY;
    CHECK_EMBER_ERROR(scaled_dot_product_attention(q, k, v, bad_scale), op, "scale");
    CHECK_EMBER_ERROR(sdpa_reference(q, randn({2, 3, 5, 7}), v), "sdpa_reference", "(2, 3, 5, 7)");
    AttentionForward f = sdpa_forward(q, k, v);
    CHECK_EMBER_ERROR(sdpa_backward(randn({2, 3, 4, 5}), q, k, v, f), "sdpa_backward", "grad_output", "(2, 3, 4, 5)");
    AttentionForward f2 = f;
    f2.logsumexp = randn({2, 3, 5});
    CHECK_EMBER_ERROR(sdpa_backward(randn({2, 3, 4, 6}), q, k, v, f2), "sdpa_backward", "logsumexp", "(2, 3, 5)");
    const Device dev = ember_test::test_device();
    CHECK_EMBER_ERROR(scaled_dot_product_attention(q, k.to(dev), v), op, dev.str(), "cpu");
  }

  TEST_CASE("CUDA fused attention matches the CPU: f16/bf16, D 64 and 128, T 1/17/200/1000, causal, masks") {
    cuda::set_poison_allocations(cuda::is_available());
    const Device dev = ember_test::test_device();
    Generator g(307);
    // T 1000 (several key and query tiles of every kernel, double-buffering) only on a GPU:
    // the CPU reference of all the cases would take minutes on the stand-in device.
    const std::vector<int64_t> lengths = ember_test::on_gpu() ? std::vector<int64_t>{1, 17, 200, 1000}
                                                              : std::vector<int64_t>{1, 17, 200};
    for (DType dt : {DType::f16, DType::bf16})
      for (int64_t D : {64, 128})
        for (int64_t T : lengths)
          // 0 plain, 1 causal, 2 padding, 3 causal + bool + Tq < Tk, 4 causal + padding + Tq > Tk (the first
          // Tq - Tk queries see no key: zero gradients)
          for (int variant = 0; variant < 5; ++variant) {
            const int64_t B = T >= 1000 ? 1 : 2, H = T >= 1000 ? 2 : 3;
            const int64_t Tq = variant == 3 ? (T + 1) / 2 : T, Tk = variant == 4 ? (T + 1) / 2 : T;
            const std::string ctx = std::string(dtype_name(dt)) + " D=" + std::to_string(D) + " T=" +
                                    std::to_string(T) + " variant " + std::to_string(variant);
            CAPTURE(ctx);
            Tensor q = randn({B, H, Tq, D}, DType::f32, &g).to(dt), k = randn({B, H, Tk, D}, DType::f32, &g).to(dt);
            Tensor v = randn({B, H, Tk, D}, DType::f32, &g).to(dt), up = randn({B, H, Tq, D}, DType::f32, &g).to(dt);
            AttentionOptions o;
            o.causal = variant == 1 || variant == 3 || variant == 4;
            if (variant == 2 || variant == 4) {
              Tensor pad = gt(rand({B, Tk}, DType::f32, &g), scalar_tensor(0.7));
              pad.narrow(0, 0, 1).zero_();
              o.key_padding_mask = pad;
            }
            if (variant == 3) o.attn_mask = gt(rand({Tq, Tk}, DType::f32, &g), scalar_tensor(0.2));
            AttentionOptions od = o;
            if (o.key_padding_mask.defined()) od.key_padding_mask = o.key_padding_mask.to(dev);
            if (o.attn_mask.defined()) od.attn_mask = o.attn_mask.to(dev);
            Tensor qd = q.to(dev).requires_grad_(), kd = k.to(dev).requires_grad_(), vd = v.to(dev).requires_grad_();
            REQUIRE(sdpa_fused_supported(qd, kd, vd, od));
            Tensor qc = q.clone().requires_grad_(), kc = k.clone().requires_grad_(), vc = v.clone().requires_grad_();
            Tensor yd = scaled_dot_product_attention(qd, kd, vd, od), yc = scaled_dot_product_attention(qc, kc, vc, o);
            (yd * up.to(dev)).sum().backward();
            (yc * up).sum().backward();
            const double tol = dt == DType::f16 ? 1e-2 : 5e-2;
            check_close(yd.to(Device::cpu()), yc, tol, tol);
            check_close(qd.grad().to(Device::cpu()), qc.grad(), tol, 2 * tol);
            check_close(kd.grad().to(Device::cpu()), kc.grad(), tol, 2 * tol);
            check_close(vd.grad().to(Device::cpu()), vc.grad(), tol, 2 * tol);
            CHECK_FALSE(has_nan(qd.grad()));
            CHECK_FALSE(has_nan(kd.grad()));
            AttentionForward fd = sdpa_forward(q.to(dev), k.to(dev), v.to(dev), od), fc = sdpa_forward(q, k, v, o);
            check_close(fd.logsumexp.to(Device::cpu()), fc.logsumexp, 1e-3, 1e-3);
          }
    // Routed to the composed path on the GPU: f32, a float mask, another head dim.
    Tensor q = randn({1, 2, 5, 16}), k = randn({1, 2, 6, 16}), v = randn({1, 2, 6, 16});
    AttentionOptions fm;
    fm.attn_mask = randn({5, 6});
    // (the stand-in runs the CPU's kernels, whose fused primitive takes everything)
    CHECK(sdpa_fused_supported(q.to(dev), k.to(dev), v.to(dev)) == !dev.is_cuda());
    AttentionOptions fmd = fm;
    fmd.attn_mask = fm.attn_mask.to(dev);
    check_close(scaled_dot_product_attention(q.to(dev), k.to(dev), v.to(dev), fmd).to(Device::cpu()),
                scaled_dot_product_attention(q, k, v, fm), 1e-4, 1e-4);
    cuda::set_poison_allocations(false);
  }

  TEST_CASE("CUDA fused attention with dropout equals the CPU for the same generator state, both CUDA kernels") {
    const Device dev = ember_test::test_device();
    cuda::set_poison_allocations(cuda::is_available());
    Generator g(309);
    // Both kernel settings (on the stand-in, which runs the CPU kernel, the setting is not read).
    for (const char* kernel : {"mma", "simt"})
      for (DType dt : {DType::f16, DType::bf16})
        for (int64_t D : {64, 128})
          for (int64_t T : {17, 200})
            for (bool causal : {false, true}) {
              ScopedEnv choice("EMBER_ATTENTION_KERNEL", kernel);
              // Tk odd for T 17 (rows start on every lane of a Philox block), a multiple of 4 for T 200;
              // causal with Tq < Tk and key padding.
              const int64_t B = 2, H = 2, Tq = T, Tk = causal ? T + 3 : T;
              const double p = T == 17 ? 0.5 : 0.2;
              const std::string ctx = std::string(kernel) + " " + dtype_name(dt) + " D=" + std::to_string(D) +
                                      " T=" + std::to_string(T) + (causal ? " causal" : "");
              CAPTURE(ctx);
              Tensor q = randn({B, H, Tq, D}, DType::f32, &g).to(dt), k = randn({B, H, Tk, D}, DType::f32, &g).to(dt);
              Tensor v = randn({B, H, Tk, D}, DType::f32, &g).to(dt), up = randn({B, H, Tq, D}, DType::f32, &g).to(dt);
              AttentionOptions o;
              o.causal = causal;
              o.dropout = p;
              if (causal) {
                Tensor pad = gt(rand({B, Tk}, DType::f32, &g), scalar_tensor(0.7));
                pad.narrow(0, 0, 1).zero_();
                o.key_padding_mask = pad;
              }
              AttentionOptions od = o;
              if (o.key_padding_mask.defined()) od.key_padding_mask = o.key_padding_mask.to(dev);
              Generator gd(900 + static_cast<uint64_t>(T)), gc(900 + static_cast<uint64_t>(T));
              od.generator = &gd;
              o.generator = &gc;
              Tensor qd = q.to(dev).requires_grad_(), kd = k.to(dev).requires_grad_(), vd = v.to(dev).requires_grad_();
              REQUIRE(sdpa_fused_supported(qd, kd, vd, od));
              Tensor qc = q.clone().requires_grad_(), kc = k.clone().requires_grad_(), vc = v.clone().requires_grad_();
              Tensor yd = scaled_dot_product_attention(qd, kd, vd, od);
              Tensor yc = scaled_dot_product_attention(qc, kc, vc, o);
              CHECK(gd.offset() == gc.offset());
              (yd * up.to(dev)).sum().backward();
              (yc * up).sum().backward();
              // The masks agree element for element, so the difference is rounding, as without dropout,
              // on values up to 1 / (1 - p) larger.
              const double tol = (dt == DType::f16 ? 1e-2 : 5e-2) / (1 - p);
              check_close(yd.to(Device::cpu()), yc, tol, tol);
              check_close(qd.grad().to(Device::cpu()), qc.grad(), tol, 2 * tol);
              check_close(kd.grad().to(Device::cpu()), kc.grad(), tol, 2 * tol);
              check_close(vd.grad().to(Device::cpu()), vc.grad(), tol, 2 * tol);
              CHECK_FALSE(has_nan(qd.grad()));
              CHECK_FALSE(has_nan(kd.grad()));
              CHECK_FALSE(has_nan(vd.grad()));
            }
    cuda::set_poison_allocations(false);
  }

  TEST_CASE("CUDA dropout mask: element for element the CPU's, kept fraction within binomial bounds") {
    const Device dev = ember_test::test_device();
    Generator g(310);
    // v = the identity (Tk = D keys): out[b, h, i, j] is the dropped probability P[i, j] / (1 - p) or
    // 0, so the output shows the mask itself.
    for (const char* kernel : {"mma", "simt"})
      for (DType dt : {DType::f16, DType::bf16})
        for (int64_t D : {64, 128}) {
          ScopedEnv choice("EMBER_ATTENTION_KERNEL", kernel);
          const int64_t B = 2, H = 2, Tq = 200, Tk = D;
          const double p = 0.3;
          const std::string ctx = std::string(kernel) + " " + dtype_name(dt) + " D=" + std::to_string(D);
          CAPTURE(ctx);
          std::vector<float> eye(static_cast<size_t>(B * H * Tk * D), 0.f);
          for (int64_t m = 0; m < B * H; ++m)
            for (int64_t j = 0; j < Tk; ++j) eye[static_cast<size_t>((m * Tk + j) * D + j)] = 1.f;
          Tensor v = from_vector<float>(eye, {B, H, Tk, D}, DType::f32).to(dt);
          Tensor q = randn({B, H, Tq, D}, DType::f32, &g).to(dt), k = randn({B, H, Tk, D}, DType::f32, &g).to(dt);
          AttentionOptions o;
          o.dropout = p;
          Generator gd(77), gc(77);
          o.generator = &gd;
          const std::vector<double> yd =
              vals(scaled_dot_product_attention(q.to(dev), k.to(dev), v.to(dev), o).to(Device::cpu()));
          o.generator = &gc;
          const std::vector<double> yc = vals(scaled_dot_product_attention(q, k, v, o));
          const std::vector<double> full = vals(scaled_dot_product_attention(q, k, v));  // P itself
          int64_t counted = 0, kept = 0, mismatched = 0;
          for (size_t i = 0; i < full.size(); ++i) {
            if (full[i] < 1e-3) continue;  // a probability that could round to 0 in the output
            ++counted;
            kept += yd[i] != 0;
            mismatched += (yd[i] != 0) != (yc[i] != 0);
          }
          CHECK(mismatched == 0);
          REQUIRE(counted > 20000);
          const double frac = static_cast<double>(kept) / static_cast<double>(counted);
          const double sigma = std::sqrt((1 - p) * p / static_cast<double>(counted));
          CHECK(std::fabs(frac - (1 - p)) <= 5 * sigma);
        }
    // EMBER_ATTENTION_DROPOUT=composed sends CUDA dropout to the composed path (the CPU kernel takes it
    // everywhere, so the stand-in is unaffected).
    Tensor q = randn({1, 1, 4, 64}, DType::f32, &g).to(DType::bf16).to(dev);
    AttentionOptions drop;
    drop.dropout = 0.1;
    CHECK(sdpa_fused_supported(q, q, q, drop));
    {
      ScopedEnv composed("EMBER_ATTENTION_DROPOUT", "composed");
      CHECK(sdpa_fused_supported(q, q, q, drop) == !dev.is_cuda());
      CHECK(sdpa_fused_supported(q, q, q));  // no dropout: fused
    }
    if (dev.is_cuda()) {
      ScopedEnv bad("EMBER_ATTENTION_DROPOUT", "sometimes");
      CHECK_EMBER_ERROR(sdpa_fused_supported(q, q, q, drop), "scaled_dot_product_attention", "EMBER_ATTENTION_DROPOUT",
                        "sometimes");
    }
  }

  TEST_CASE("CUDA attention backward: the tensor-core kernels against the SIMT kernels") {
    if (!ember_test::on_gpu()) return;  // both kernels are CUDA-only
    const Device dev = ember_test::test_device();
    cuda::set_poison_allocations(true);
    Generator g(308);
    for (DType dt : {DType::f16, DType::bf16})
      for (int64_t D : {64, 128})
        for (int64_t T : {1, 17, 200, 1000})
          for (int variant = 0; variant < 4; ++variant) {  // 0 plain, 1 causal Tq < Tk, 2 padding + bool, 3 causal Tq > Tk
            const int64_t B = 2, H = 2, Tq = variant == 1 ? (T + 1) / 2 : T, Tk = variant == 3 ? (T + 1) / 2 : T;
            const std::string ctx = std::string(dtype_name(dt)) + " D=" + std::to_string(D) + " T=" +
                                    std::to_string(T) + " variant " + std::to_string(variant);
            CAPTURE(ctx);
            const auto make = [&](Shape s) { return randn(s, DType::f32, &g).to(dt).to(dev); };
            Tensor q = make({B, H, Tq, D}), k = make({B, H, Tk, D}), v = make({B, H, Tk, D}), up = make({B, H, Tq, D});
            AttentionOptions o;
            o.causal = variant == 1 || variant == 3;
            if (variant == 2 || variant == 3) {
              Tensor pad = gt(rand({B, Tk}, DType::f32, &g), scalar_tensor(0.7));
              pad.narrow(0, 0, 1).zero_();
              o.key_padding_mask = pad.to(dev);
            }
            if (variant == 2) o.attn_mask = gt(rand({B, 1, Tq, Tk}, DType::f32, &g), scalar_tensor(0.2)).to(dev);
            const AttentionForward f = sdpa_forward(q, k, v, o);
            AttentionGrads simt, mma;
            {
              ScopedEnv choice("EMBER_ATTENTION_KERNEL", "simt");
              simt = sdpa_backward(up, q, k, v, f, o);
            }
            {
              ScopedEnv choice("EMBER_ATTENTION_KERNEL", "mma");
              mma = sdpa_backward(up, q, k, v, f, o);
              // Only the gradients asked for, each equal to the full call's.
              AttentionGrads only_k = sdpa_backward(up, q, k, v, f, o, {false, true, false});
              CHECK_FALSE(only_k.grad_q.defined());
              CHECK_FALSE(only_k.grad_v.defined());
              CHECK(equal(only_k.grad_k, mma.grad_k));
              AttentionGrads only_q = sdpa_backward(up, q, k, v, f, o, {true, false, false});
              CHECK(equal(only_q.grad_q, mma.grad_q));
            }
            // P and dS rounded to the input type before the products (u = 2^-11 f16, 2^-8 bf16),
            // as the kernel's own first-use check measures it.
            const double u = dt == DType::f16 ? 1.0 / 2048 : 1.0 / 256;
            CHECK(rel_diff(mma.grad_q, simt.grad_q) <= 8 * u);
            CHECK(rel_diff(mma.grad_k, simt.grad_k) <= 8 * u);
            CHECK(rel_diff(mma.grad_v, simt.grad_v) <= 8 * u);
            CHECK_FALSE(has_nan(mma.grad_q));
            CHECK_FALSE(has_nan(mma.grad_k));
            CHECK_FALSE(has_nan(mma.grad_v));
            // The two paths round differently, so bit-equal results at T >= 17 would mean the
            // tensor-core kernels did not run (their first-use check fell back).
            if (T >= 17) CHECK_FALSE(equal(mma.grad_k, simt.grad_k));
          }
    cuda::set_poison_allocations(false);
  }
}
