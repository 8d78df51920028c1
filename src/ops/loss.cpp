// Loss primitives (include/ember/ops/loss_ops.h): the fused cross-entropy with its backward
// primitive, dispatched to src/cpu/loss.cpp or kernels/loss.cu, and binary cross-entropy with
// logits, composed from elementwise ops with a backward written by hand.
#include "ember/ops/loss_ops.h"

#include <cmath>

#include "ops/common.h"
#include "ops/op_call.h"
#include "ops/dispatch.h"

namespace ember {
namespace {
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;
using detail::make_tensor;

using detail::defined_of;
using detail::prepared;

// --- cross-entropy ------------------------------------------------------------------------------

struct CeArgs {
  int64_t N, C;
  Tensor target;  // (N) i64, contiguous, detached
  Tensor weight;  // (C) in the statistics dtype (f32/f64), contiguous, detached; or undefined
};

CeArgs check_cross_entropy(const char* op, const Tensor& logits, const Tensor& target, const Tensor& weight,
                           int64_t ignore_index, double label_smoothing, bool check_range) {
  EMBER_CHECK(logits.defined() && target.defined(), op, "logits and target must be defined tensors");
  EMBER_CHECK(logits.dim() == 2, op, "logits must be 2-D (N, C), got ", shape_str(logits.shape()));
  EMBER_CHECK(is_floating(logits.dtype()), op, "logits must be a float tensor, got ", logits.dtype(), " of shape ",
              shape_str(logits.shape()));
  EMBER_CHECK(target.dim() == 1, op, "target must be 1-D (N), got ", shape_str(target.shape()));
  EMBER_CHECK(is_integral(target.dtype()), op, "target must be i64 or i32 class indices, got ", target.dtype(),
              " of shape ", shape_str(target.shape()));
  const int64_t n = logits.size(0), c = logits.size(1);
  EMBER_CHECK(target.size(0) == n, op, "logits ", shape_str(logits.shape()), " and target ",
              shape_str(target.shape()), " disagree on N");
  EMBER_CHECK(c > 0, op, "logits ", shape_str(logits.shape()), " have no classes");
  if (weight.defined())
    EMBER_CHECK(weight.dim() == 1 && weight.size(0) == c && is_floating(weight.dtype()), op,
                "weight must be a float tensor of shape (", c, ",) for logits ", shape_str(logits.shape()), ", got ",
                shape_str(weight.shape()), " ", weight.dtype());
  EMBER_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, op, "label_smoothing must lie in [0, 1], got ",
              label_smoothing);
  detail::check_same_device(op, defined_of({logits, target, weight}));
  CeArgs a{n, c, prepared(target, DType::i64), prepared(weight, compute_dtype(logits.dtype()))};
  // Ignored rows may hold any value. On a device, out-of-range rows become ignored rows for
  // the kernels until the queued check reports them; the recorded backward reuses a.target.
  if (check_range)
    a.target = detail::checked_indices(op, a.target, c, ignore_index, ignore_index,
                                       detail::cat("target values must lie in [0, ", c, ") for logits ",
                                                   shape_str(logits.shape()), " (or equal ignore_index = ",
                                                   ignore_index, ")"));
  return a;
}

// The backward primitive; check_range false when called from the recorded backward (the
// forward checked the same targets and saved them with any bad entry replaced).
Tensor cross_entropy_backward_impl(const Tensor& grad_loss, const Tensor& logits, const Tensor& target,
                                   const Tensor& weight, const Tensor& logsumexp, int64_t ignore_index,
                                   double label_smoothing, bool check_range) {
  const char* op = "cross_entropy_backward";
  const CeArgs a = check_cross_entropy(op, logits, target, weight, ignore_index, label_smoothing, check_range);
  const DType sd = compute_dtype(logits.dtype());
  EMBER_CHECK(grad_loss.defined() && logsumexp.defined(), op, "grad_loss and logsumexp must be defined tensors");
  EMBER_CHECK(grad_loss.shape() == Shape{a.N} && grad_loss.dtype() == logits.dtype(), op, "grad_loss must be (",
              a.N, ",) ", logits.dtype(), " for logits ", detail::describe(logits), ", got ",
              detail::describe(grad_loss));
  EMBER_CHECK(logsumexp.shape() == Shape{a.N} && logsumexp.dtype() == sd, op, "logsumexp must be (", a.N, ",) ", sd,
              " for logits ", detail::describe(logits), ", got ", detail::describe(logsumexp));
  detail::check_same_device(op, {logits, grad_loss, logsumexp});
  const Device dev = logits.device();
  const DType cd = backend::compute_dtype_on(logits.dtype(), dev);
  const Tensor z = prepared(logits, cd), g = prepared(grad_loss, cd), lse = prepared(logsumexp, sd);
  // sum(weight) is needed only for the smoothing share of S; a 0-d tensor on the device.
  const Tensor wsum = a.weight.defined() && label_smoothing > 0 ? sum(a.weight) : Tensor();
  Tensor out = make_tensor({a.N, a.C}, cd, dev);
  if (a.N > 0)
    backend::call<prim::cross_entropy_backward>(z.device(), g, z, a.target, a.weight, wsum, lse, ignore_index, label_smoothing, out,
                                            a.N, a.C);
  return cd == logits.dtype() ? out : to_dtype(out, logits.dtype());
}

// --- binary cross-entropy with logits -------------------------------------------------------------

void check_broadcasts_to(const char* op, const char* what, const Tensor& p, const Tensor& logits) {
  if (!p.defined()) return;
  EMBER_CHECK(is_floating(p.dtype()), op, what, " must be a float tensor, got ", p.dtype(), " of shape ",
              shape_str(p.shape()));
  bool ok = p.dim() <= logits.dim();
  for (int64_t i = 1; i <= p.dim() && ok; ++i) ok = p.size(-i) == 1 || p.size(-i) == logits.size(-i);
  EMBER_CHECK(ok, op, what, " ", shape_str(p.shape()), " does not broadcast to logits ", shape_str(logits.shape()));
}

// softplus(-x) = log(1 + exp(-x)) = log1p(exp(-|x|)) + max(-x, 0), without overflow.
Tensor softplus_neg(const Tensor& x) { return log1p(exp(-abs(x))) + relu(-x); }

// The per-element loss before the weight (p: pos_weight or undefined).
Tensor bce_unweighted(const Tensor& x, const Tensor& y, const Tensor& p) {
  if (!p.defined()) return relu(x) - x * y + log1p(exp(-abs(x)));
  return (1.0 - y) * x + ((p - 1.0) * y + 1.0) * softplus_neg(x);
}

}  // namespace

// What observers see as the results of the struct-returning ops (OpScope::done).
std::vector<Tensor> op_outputs(const CrossEntropyRows& r) { return {r.loss, r.target_weight, r.logsumexp}; }

CrossEntropyRows cross_entropy_rows(const Tensor& logits_in, const Tensor& target_in, const Tensor& weight_in,
                                    int64_t ignore_index, double label_smoothing) {
  detail::OpScope scope(OpId::cross_entropy_rows,
                        [&] { return Attrs{{"ignore_index", ignore_index}, {"label_smoothing", label_smoothing}}; },
                        logits_in, target_in, weight_in);
  const Tensor& logits = scope.in(0, logits_in);
  const Tensor& target = scope.in(1, target_in);
  const Tensor& weight = scope.in(2, weight_in);
  const CeArgs a = check_cross_entropy("cross_entropy", logits, target, weight, ignore_index, label_smoothing, true);
  const Device dev = logits.device();
  const DType cd = backend::compute_dtype_on(logits.dtype(), dev);  // what the kernel reads
  const DType sd = compute_dtype(logits.dtype());                   // statistics: f32, or f64
  const Tensor z = prepared(logits, cd);
  Tensor loss = make_tensor({a.N}, cd, dev);
  Tensor target_weight = make_tensor({a.N}, sd, dev), lse = make_tensor({a.N}, sd, dev);
  if (a.N > 0)
    backend::call<prim::cross_entropy_forward>(z.device(), z, a.target, a.weight, ignore_index, label_smoothing, loss, target_weight,
                                           lse, a.N, a.C);
  if (cd != logits.dtype()) loss = to_dtype(loss, logits.dtype());
  record(
      "cross_entropy", {logits}, {loss},
      [ignore_index, label_smoothing](const Grads& g, const Grads& s, const Needs&) {
        return Grads{cross_entropy_backward_impl(g[0], s[0], s[1], s[2], s[3], ignore_index, label_smoothing,
                                                 /*check_range=*/false)};
      },
      {logits, a.target, a.weight, lse});
  return scope.done(CrossEntropyRows{loss, target_weight, lse});
}

Tensor cross_entropy_backward(const Tensor& grad_loss, const Tensor& logits, const Tensor& target,
                              const Tensor& weight, const Tensor& logsumexp, int64_t ignore_index,
                              double label_smoothing) {
  detail::OpScope scope(OpId::cross_entropy_backward,
                        [&] { return Attrs{{"ignore_index", ignore_index}, {"label_smoothing", label_smoothing}}; },
                        grad_loss, logits, target, weight, logsumexp);
  return scope.done(cross_entropy_backward_impl(grad_loss, logits, target, weight, logsumexp, ignore_index,
                                                label_smoothing, /*check_range=*/true));
}

Tensor bce_with_logits_elements(const Tensor& logits_in, const Tensor& targets_in, const Tensor& weight_in,
                                const Tensor& pos_weight_in) {
  detail::OpScope scope(OpId::bce_with_logits_elements, logits_in, targets_in, weight_in, pos_weight_in);
  const Tensor& logits = scope.in(0, logits_in);
  const Tensor& targets = scope.in(1, targets_in);
  const Tensor& weight = scope.in(2, weight_in);
  const Tensor& pos_weight = scope.in(3, pos_weight_in);
  const char* op = "binary_cross_entropy_with_logits";
  EMBER_CHECK(logits.defined() && targets.defined(), op, "logits and targets must be defined tensors");
  EMBER_CHECK(is_floating(logits.dtype()) && is_floating(targets.dtype()), op,
              "logits and targets must be float tensors, got ", detail::describe(logits), " and ",
              detail::describe(targets));
  EMBER_CHECK(logits.shape() == targets.shape(), op, "logits ", shape_str(logits.shape()), " and targets ",
              shape_str(targets.shape()), " must have the same shape");
  check_broadcasts_to(op, "weight", weight, logits);
  check_broadcasts_to(op, "pos_weight", pos_weight, logits);
  detail::check_same_device(op, defined_of({logits, targets, weight, pos_weight}));

  const DType dt = logits.dtype();
  const auto as_dt = [dt](const Tensor& t) { return t.defined() ? to_dtype(t.detach(), dt) : Tensor(); };
  const Tensor x = logits.detach(), y = as_dt(targets), w = as_dt(weight), p = as_dt(pos_weight);
  Tensor loss;
  {
    NoGradGuard no_grad;  // the values only: the backward below is written by hand
    const Tensor l = bce_unweighted(x, y, p);
    loss = w.defined() ? l * w : l;
  }
  record(
      op, {logits, targets, weight, pos_weight}, {loss},
      [](const Grads& gs, const Grads& s, const Needs& needs) {
        const Tensor& x = s[0];
        const DType dt = x.dtype();
        const auto as_dt = [dt](const Tensor& t) { return t.defined() ? to_dtype(t, dt) : Tensor(); };
        const Tensor y = as_dt(s[1]), w = as_dt(s[2]), p = as_dt(s[3]);
        const Tensor g = gs[0];
        const Tensor gw = w.defined() ? g * w : g;  // upstream times weight
        Grads r(4);
        if (needs[0])  // w * (sigmoid(x) * (1 + (p - 1) y) - p y): exact at x = 0
          r[0] = gw * (p.defined() ? sigmoid(x) * ((p - 1.0) * y + 1.0) - p * y : sigmoid(x) - y);
        if (needs[1])  // w * ((p - 1) * softplus(-x) - x)
          r[1] = to_dtype(gw * (p.defined() ? (p - 1.0) * softplus_neg(x) - x : -x), s[1].dtype());
        if (needs[2])  // the unweighted loss, summed over the dims weight broadcasts along
          r[2] = to_dtype(detail::sum_to(g * bce_unweighted(x, y, p), s[2].shape()), s[2].dtype());
        if (needs[3])  // w * y * softplus(-x)
          r[3] = to_dtype(detail::sum_to(gw * y * softplus_neg(x), s[3].shape()), s[3].dtype());
        return r;
      },
      {logits, targets, weight, pos_weight});
  return scope.done(loss);
}

}  // namespace ember
