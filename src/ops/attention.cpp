// scaled_dot_product_attention: argument checks, the choice between the fused kernels
// (src/cpu/attention.cpp, kernels/attention.cu) and the composed reference, dtype handling,
// and the recorded backward (which calls the sdpa_backward primitive).
#include "ember/ops/attention.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "core/capture.h"
#include "prim/attention_params.h"
#include "ops/common.h"
#include "ops/op_call.h"
#include "ops/dispatch.h"

namespace ember {
namespace {
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;
using detail::describe;
using detail::make_tensor;

struct Dims {
  int64_t B, H, Tq, Tk, D, Dv;
  double scale;
  int64_t scores;  // B * H * Tq * Tk, checked
};

std::string qkv_str(const Tensor& q, const Tensor& k, const Tensor& v) {
  return "q " + shape_str(q.shape()) + ", k " + shape_str(k.shape()) + ", v " + shape_str(v.shape());
}

Dims check_attention(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o) {
  EMBER_CHECK(q.defined() && k.defined() && v.defined(), op, "q, k and v must be defined tensors");
  EMBER_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op,
              "q, k, v must be 4-D (B, H, T, D), got ", qkv_str(q, k, v));
  EMBER_CHECK(is_floating(q.dtype()), op, "q must be a float tensor, got ", describe(q));
  EMBER_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype(), op, "q, k, v must share one dtype, got q ",
              describe(q), ", k ", describe(k), ", v ", describe(v));
  detail::check_same_device(op, {q, k, v});
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3);
  const int64_t Tk = k.size(2), Dv = v.size(3);
  EMBER_CHECK(k.size(0) == B && v.size(0) == B && k.size(1) == H && v.size(1) == H, op,
              "batch and head dims (0, 1) of q, k, v differ: ", qkv_str(q, k, v));
  EMBER_CHECK(k.size(3) == D, op, "head dims differ: q ends in D = ", D, ", k in ", k.size(3), " (",
              qkv_str(q, k, v), ")");
  EMBER_CHECK(v.size(2) == Tk, op, "k and v must have the same number of keys (dim 2): ", qkv_str(q, k, v));
  EMBER_CHECK(D > 0 && Tk > 0, op, "head dim and key count must be positive: ", qkv_str(q, k, v));
  const Shape full{B, H, Tq, Tk};
  // The score matrix: materialised by the reference, counted by dropout's random draw.
  const int64_t scores = checked_numel(full, op);
  if (o.attn_mask.defined()) {
    const Tensor& m = o.attn_mask;
    EMBER_CHECK(m.dtype() == DType::boolean || is_floating(m.dtype()), op,
                "attn_mask must be bool or float, got ", describe(m));
    bool ok = m.dim() <= 4;
    for (int64_t d = 0; ok && d < m.dim(); ++d) {
      const int64_t s = m.size(m.dim() - 1 - d), t = full[3 - d];
      ok = s == 1 || s == t;
    }
    EMBER_CHECK(ok, op, "attn_mask ", shape_str(m.shape()), " does not broadcast to (B, H, Tq, Tk) = ",
                shape_str(full), " (", qkv_str(q, k, v), ")");
    detail::check_same_device(op, {q, m});
  }
  if (o.key_padding_mask.defined()) {
    const Tensor& m = o.key_padding_mask;
    EMBER_CHECK(m.dtype() == DType::boolean, op, "key_padding_mask must be bool (true = padding), got ", describe(m));
    EMBER_CHECK(m.shape() == (Shape{B, Tk}), op, "key_padding_mask must be (B, Tk) = ", shape_str({B, Tk}),
                ", got ", shape_str(m.shape()), " (", qkv_str(q, k, v), ")");
    detail::check_same_device(op, {q, m});
  }
  EMBER_CHECK(o.dropout >= 0 && o.dropout <= 1, op, "dropout probability ", o.dropout, " outside [0, 1]");
  const double scale = o.scale ? *o.scale : 1.0 / std::sqrt(static_cast<double>(D));
  EMBER_CHECK(std::isfinite(scale), op, "scale must be finite, got ", scale);
  return {B, H, Tq, Tk, D, Dv, scale, scores};
}

// t detached, converted to dtype dt, contiguous and 16-byte aligned (the CUDA kernels load
// element pairs; a contiguous view can start at any element).
Tensor prepared(const Tensor& t, DType dt) {
  Tensor c = contiguous(to_dtype(t.detach(), dt));
  return reinterpret_cast<uintptr_t>(c.data_ptr()) % 16 == 0 ? c : clone(c);
}

// The backend's view of the call; mask tensors converted (float mask to cd) and expanded.
AttentionParams make_params(const Dims& d, const AttentionOptions& o, DType cd) {
  AttentionParams p;
  p.B = d.B, p.H = d.H, p.Tq = d.Tq, p.Tk = d.Tk, p.D = d.D, p.Dv = d.Dv;
  p.scale = d.scale;
  p.causal = o.causal;
  p.dropout = o.dropout;
  if (o.attn_mask.defined()) {
    p.mask_is_bool = o.attn_mask.dtype() == DType::boolean;
    Tensor m = p.mask_is_bool ? o.attn_mask.detach() : to_dtype(o.attn_mask.detach(), cd);
    while (m.dim() < 4) m = unsqueeze(m, 0);
    p.mask = expand(m, {d.B, d.H, d.Tq, d.Tk});  // a view: broadcast dims get stride 0
  }
  if (o.key_padding_mask.defined()) p.key_padding = contiguous(o.key_padding_mask.detach());
  return p;
}

// EMBER_ATTENTION_DROPOUT=composed (read on every call): CUDA calls with dropout take the composed
// path, as they did before the kernels applied dropout themselves (for comparison, and the way
// out should the kernels' first-use dropout check fail on a device). Unset, empty or "fused":
// the kernels.
bool cuda_dropout_fused() {
  const char* e = std::getenv("EMBER_ATTENTION_DROPOUT");
  if (e == nullptr || *e == '\0' || std::strcmp(e, "fused") == 0) return true;
  EMBER_CHECK(std::strcmp(e, "composed") == 0, "scaled_dot_product_attention", "EMBER_ATTENTION_DROPOUT=\"", e,
              "\" is not a choice; use fused (the default) or composed");
  return false;
}

bool fused_ok(const Dims& d, const Tensor& q, const AttentionOptions& o) {
  if (o.dropout >= 1) return false;  // everything dropped: the composed path returns zeros
  if (q.device().is_host_memory()) return true;  // the CPU kernel (also on the stand-in device)
  const bool half = q.dtype() == DType::f16 || q.dtype() == DType::bf16;
  const bool float_mask = o.attn_mask.defined() && o.attn_mask.dtype() != DType::boolean;
  // Dropout p in (0, 1): the kernels draw the CPU's Philox mask themselves.
  return half && d.D == d.Dv && (d.D == 64 || d.D == 128) && !float_mask && (o.dropout == 0 || cuda_dropout_fused());
}

}  // namespace

bool sdpa_fused_supported(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opts) {
  return fused_ok(check_attention("scaled_dot_product_attention", q, k, v, opts), q, opts);
}

// What observers see: the options as attributes, and the results of the struct-returning ops
// (OpScope::done).
Attrs attention_attrs(const AttentionOptions& o) {
  return Attrs{{"causal", o.causal},
               {"dropout", o.dropout},
               {"scale", o.scale},
               {"has_attn_mask", o.attn_mask.defined()},
               {"has_key_padding_mask", o.key_padding_mask.defined()}};
}
std::vector<Tensor> op_outputs(const AttentionForward& r) { return {r.output, r.logsumexp}; }
std::vector<Tensor> op_outputs(const AttentionGrads& r) { return {r.grad_q, r.grad_k, r.grad_v}; }

AttentionForward sdpa_forward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                              const AttentionOptions& opts) {
  detail::OpScope scope(OpId::sdpa_forward, [&] { return attention_attrs(opts); }, q_in, k_in, v_in);
  const Tensor& q = scope.in(0, q_in);
  const Tensor& k = scope.in(1, k_in);
  const Tensor& v = scope.in(2, v_in);
  const char* op = "sdpa_forward";
  const Dims d = check_attention(op, q, k, v, opts);
  EMBER_CHECK(fused_ok(d, q, opts), op, "no fused kernel for ", qkv_str(q, k, v), " ", q.dtype(), " on ",
              q.device(), " (dropout ", opts.dropout,
              "); scaled_dot_product_attention runs the composed reference for these");
  const Device dev = q.device();
  const DType cd = backend::compute_dtype_on(q.dtype(), dev);
  const DType sd = compute_dtype(q.dtype());
  AttentionParams p = make_params(d, opts, cd);
  AttentionForward f;
  if (opts.dropout > 0) {
    // As for ember::dropout: the seed and offset would be frozen into a captured graph, and every
    // replay would drop the same probabilities.
    if (!dev.is_cpu())
      detail::check_not_capturing(op, "drawing the attention dropout mask on the device would repeat the same mask "
                                      "at every replay");
    Generator& g = opts.generator ? *opts.generator : default_generator();
    f.dropout_seed = p.seed = g.seed();
    f.dropout_offset = p.offset = g.reserve(static_cast<uint64_t>(d.scores));
  }
  const Tensor qc = prepared(q, cd), kc = prepared(k, cd), vc = prepared(v, cd);
  f.output = make_tensor({d.B, d.H, d.Tq, d.Dv}, cd, dev);
  f.logsumexp = make_tensor({d.B, d.H, d.Tq}, sd, dev);
  if (d.scores > 0) backend::call<prim::attention_forward>(qc.device(), qc, kc, vc, p, f.output, f.logsumexp);
  if (cd != q.dtype()) f.output = to_dtype(f.output, q.dtype());
  return scope.done(f);
}

AttentionGrads sdpa_backward(const Tensor& grad_output, const Tensor& q, const Tensor& k, const Tensor& v,
                             const AttentionForward& fwd, const AttentionOptions& opts, std::array<bool, 3> needs) {
  detail::OpScope scope(OpId::sdpa_backward, [&] { return attention_attrs(opts); }, grad_output, q, k, v);
  const char* op = "sdpa_backward";
  const Dims d = check_attention(op, q, k, v, opts);
  EMBER_CHECK(fused_ok(d, q, opts), op, "no fused kernel for ", qkv_str(q, k, v), " ", q.dtype(), " on ", q.device());
  const Shape out_shape{d.B, d.H, d.Tq, d.Dv};
  EMBER_CHECK(grad_output.defined() && fwd.output.defined() && fwd.logsumexp.defined(), op,
              "grad_output, output and logsumexp must be defined tensors");
  EMBER_CHECK(grad_output.shape() == out_shape && grad_output.dtype() == q.dtype(), op, "grad_output ",
              describe(grad_output), " must be ", shape_str(out_shape), " ", q.dtype());
  EMBER_CHECK(fwd.output.shape() == out_shape && fwd.output.dtype() == q.dtype(), op, "output ",
              describe(fwd.output), " must be ", shape_str(out_shape), " ", q.dtype());
  const DType sd = compute_dtype(q.dtype());
  EMBER_CHECK(fwd.logsumexp.shape() == (Shape{d.B, d.H, d.Tq}) && fwd.logsumexp.dtype() == sd, op,
              "logsumexp must be ", shape_str({d.B, d.H, d.Tq}), " ", sd, ", got ", describe(fwd.logsumexp));
  detail::check_same_device(op, {q, grad_output, fwd.output, fwd.logsumexp});

  AttentionGrads g;
  if (!needs[0] && !needs[1] && !needs[2]) return scope.done(g);
  const Device dev = q.device();
  const DType cd = backend::compute_dtype_on(q.dtype(), dev);
  AttentionParams p = make_params(d, opts, cd);
  p.seed = fwd.dropout_seed;
  p.offset = fwd.dropout_offset;
  const Tensor qc = prepared(q, cd), kc = prepared(k, cd), vc = prepared(v, cd);
  const Tensor gc = prepared(grad_output, cd), oc = prepared(fwd.output, cd), lc = prepared(fwd.logsumexp, sd);
  if (needs[0]) g.grad_q = make_tensor(q.shape(), cd, dev);
  if (needs[1]) g.grad_k = make_tensor(k.shape(), cd, dev);
  if (needs[2]) g.grad_v = make_tensor(v.shape(), cd, dev);
  if (d.B > 0 && d.H > 0)
    backend::call<prim::attention_backward>(qc.device(), gc, qc, kc, vc, oc, lc, p, g.grad_q, g.grad_k, g.grad_v);
  if (cd != q.dtype())
    for (Tensor* t : {&g.grad_q, &g.grad_k, &g.grad_v})
      if (t->defined()) *t = to_dtype(*t, q.dtype());
  return scope.done(g);
}

Tensor scaled_dot_product_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                    const AttentionOptions& opts) {
  detail::OpScope scope(OpId::scaled_dot_product_attention, [&] { return attention_attrs(opts); }, q_in, k_in, v_in);
  const Tensor& q = scope.in(0, q_in);
  const Tensor& k = scope.in(1, k_in);
  const Tensor& v = scope.in(2, v_in);
  if (!sdpa_fused_supported(q, k, v, opts)) return scope.done(sdpa_reference(q, k, v, opts));
  AttentionForward f = sdpa_forward(q, k, v, opts);
  // The backward needs the masks, not the generator (f carries the dropout stream).
  AttentionOptions saved_opts = opts;
  saved_opts.generator = nullptr;
  const uint64_t seed = f.dropout_seed, offset = f.dropout_offset;
  record(
      "scaled_dot_product_attention", {q, k, v}, {f.output},
      [saved_opts, seed, offset](const Grads& g, const Grads& s, const Needs& n) {
        AttentionForward fw{s[3], s[4], seed, offset};
        AttentionGrads r = sdpa_backward(g[0], s[0], s[1], s[2], fw, saved_opts, {n[0], n[1], n[2]});
        return Grads{r.grad_q, r.grad_k, r.grad_v};
      },
      {q, k, v, f.output, f.logsumexp});
  return scope.done(f.output);
}

Tensor sdpa_reference(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opts) {
  const Dims d = check_attention("sdpa_reference", q, k, v, opts);
  const DType sd = compute_dtype(q.dtype());  // f16/bf16 in f32, like the kernels
  const TensorOptions idx_opts = TensorOptions(DType::i64).with_device(q.device());
  Tensor s = matmul(to_dtype(q, sd), transpose(to_dtype(k, sd), 2, 3)) * d.scale;  // (B, H, Tq, Tk)
  Tensor allowed;  // bool, broadcastable to s; true = may attend
  const auto allow = [&](const Tensor& a) { allowed = allowed.defined() ? logical_and(allowed, a) : a; };
  if (opts.attn_mask.defined()) {
    if (opts.attn_mask.dtype() == DType::boolean) allow(opts.attn_mask);
    else s = s + to_dtype(opts.attn_mask, sd);
  }
  if (opts.key_padding_mask.defined()) allow(logical_not(opts.key_padding_mask.reshape({d.B, 1, 1, d.Tk})));
  if (opts.causal) {
    // key j allowed for query i iff j <= i + (Tk - Tq)
    Tensor last = arange(static_cast<double>(d.Tk - d.Tq), static_cast<double>(d.Tk), 1.0, idx_opts);
    allow(le(arange(0.0, static_cast<double>(d.Tk), 1.0, idx_opts).reshape({1, d.Tk}), last.reshape({d.Tq, 1})));
  }
  const double inf = std::numeric_limits<double>::infinity();
  if (allowed.defined()) s = masked_fill(s, logical_not(allowed), -inf);
  Tensor p;
  if (s.numel() == 0) {
    p = softmax(s, -1);
  } else {
    // A row with no allowed key: softmax over zeros (finite), then zeroed, so neither the
    // output nor the gradient sees a NaN.
    const Tensor dead = eq(amax(s, {-1}, true), scalar_tensor(-inf, TensorOptions(sd).with_device(q.device())));
    p = masked_fill(softmax(masked_fill(s, dead, 0.0), -1), dead, 0.0);
  }
  if (opts.dropout > 0) p = dropout(p, opts.dropout, true, opts.generator);
  return to_dtype(matmul(p, to_dtype(v, sd)), q.dtype());
}

}  // namespace ember
