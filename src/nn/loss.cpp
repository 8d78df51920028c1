// Losses: the reductions and options around the primitives of ember/ops/loss_ops.h, nll_loss
// and mse_loss composed from ops, and the composed references the tests compare against.
#include "ember/nn/loss.h"

#include "ember/core/error.h"
#include "ember/ops/loss_ops.h"
#include "ember/ops/ops.h"
#include "ops/common.h"
#include "ops/op_call.h"

namespace ember::nn {
namespace {

TensorOptions on(const Tensor& t, DType dt) { return TensorOptions(dt).with_device(t.device()); }

// sum(loss) / sum(weights), added in f32 for f16/bf16 (whose sums lose digits fast), in the
// loss's dtype. weights are the rows' target weights (0 for ignored rows).
Tensor weighted_mean(const Tensor& loss, const Tensor& weights) {
  const DType acc = compute_dtype(loss.dtype());
  return to_dtype(div(sum(to_dtype(loss, acc)), sum(to_dtype(weights, acc))), loss.dtype());
}

const char* reduction_name(Reduction r) { return r == Reduction::none ? "none" : r == Reduction::sum ? "sum" : "mean"; }

Tensor reduce(const char* op, const Tensor& loss, Reduction r) {
  switch (r) {
    case Reduction::none: return loss;
    case Reduction::sum: return sum(loss);
    case Reduction::mean: return mean(loss);
  }
  EMBER_FAIL(op, "unknown reduction ", static_cast<int>(r));
}

Tensor reduce_weighted(const char* op, const Tensor& loss, const Tensor& weights, Reduction r) {
  return r == Reduction::mean ? weighted_mean(loss, weights) : reduce(op, loss, r);
}

// Checks a (N, C) class-score tensor, its (N) targets and (C) weights, and returns the targets
// as i64. `scores` names the first argument in messages ("log_probs").
Tensor check_class_target(const char* op, const char* scores, const Tensor& x, const Tensor& target,
                          const Tensor& weight, int64_t ignore_index) {
  EMBER_CHECK(x.defined() && target.defined(), op, scores, " and target must be defined tensors");
  EMBER_CHECK(x.dim() == 2, op, scores, " must be 2-D (N, C), got ", shape_str(x.shape()));
  EMBER_CHECK(is_floating(x.dtype()), op, scores, " must be a float tensor, got ", x.dtype(), " of shape ",
              shape_str(x.shape()));
  EMBER_CHECK(target.dim() == 1, op, "target must be 1-D (N), got ", shape_str(target.shape()));
  EMBER_CHECK(is_integral(target.dtype()), op, "target must be i64 or i32 class indices, got ", target.dtype(),
              " of shape ", shape_str(target.shape()));
  const int64_t n = x.size(0), c = x.size(1);
  EMBER_CHECK(target.size(0) == n, op, scores, " ", shape_str(x.shape()), " and target ", shape_str(target.shape()),
              " disagree on N");
  EMBER_CHECK(c > 0, op, scores, " ", shape_str(x.shape()), " have no classes");
  if (weight.defined()) {
    EMBER_CHECK(weight.dim() == 1 && weight.size(0) == c && is_floating(weight.dtype()), op,
                "weight must be a float tensor of shape (", c, ",) for ", scores, " ", shape_str(x.shape()), ", got ",
                shape_str(weight.shape()), " ", weight.dtype());
    EMBER_CHECK(weight.device() == x.device(), op, "weight lives on ", weight.device(), " but ", scores, " on ",
                x.device());
  }
  EMBER_CHECK(target.device() == x.device(), op, "target lives on ", target.device(), " but ", scores, " on ",
              x.device());
  // On a device, out-of-range targets become ignored rows (gathers stay in bounds) until the
  // queued check reports them.
  return detail::checked_indices(op, to_dtype(target.detach(), DType::i64), c, ignore_index, ignore_index,
                                 detail::cat("target values must lie in [0, ", c, ") for ", scores, " ",
                                             shape_str(x.shape()), " (or equal ignore_index = ", ignore_index, ")"));
}

// The (N) target weights: w[t_i] (1 without weights), 0 where t_i == ignore_index, in dtype dt.
// Also returns the targets with ignored entries replaced by class 0 (safe to index with).
struct RowWeights {
  Tensor weights, safe_target, valid;
};
RowWeights row_weights(const Tensor& t, const Tensor& weight, int64_t ignore_index, DType dt) {
  RowWeights r;
  r.valid = ne(t, full({}, static_cast<double>(ignore_index), on(t, DType::i64)));
  r.safe_target = where(r.valid, t, zeros({}, on(t, DType::i64)));
  const Tensor w = weight.defined() ? index_select(to_dtype(weight.detach(), dt), 0, r.safe_target)
                                    : ones({t.numel()}, on(t, dt));
  r.weights = where(r.valid, w, zeros({}, on(t, dt)));
  return r;
}

void check_same_shape(const char* op, const char* a_name, const Tensor& a, const char* b_name, const Tensor& b) {
  EMBER_CHECK(a.defined() && b.defined(), op, a_name, " and ", b_name, " must be defined tensors");
  EMBER_CHECK(is_floating(a.dtype()) && is_floating(b.dtype()), op, a_name, " and ", b_name,
              " must be float tensors, got ", a.dtype(), " ", shape_str(a.shape()), " and ", b.dtype(), " ",
              shape_str(b.shape()));
  EMBER_CHECK(a.shape() == b.shape(), op, a_name, " ", shape_str(a.shape()), " and ", b_name, " ",
              shape_str(b.shape()), " must have the same shape");
}

}  // namespace

// --- the losses -----------------------------------------------------------------------------------

Tensor cross_entropy(const Tensor& logits_in, const Tensor& target, const CrossEntropyOptions& o_in) {
  detail::OpScope scope(OpId::cross_entropy,
                        [&] {
                          return Attrs{{"reduction", reduction_name(o_in.reduction)},
                                        {"ignore_index", o_in.ignore_index},
                                        {"label_smoothing", o_in.label_smoothing}};
                        },
                        logits_in, target, o_in.weight);
  const Tensor& logits = scope.in(0, logits_in);
  CrossEntropyOptions o = o_in;
  o.weight = scope.in(2, o_in.weight);
  const CrossEntropyRows rows = cross_entropy_rows(logits, target, o.weight, o.ignore_index, o.label_smoothing);
  return scope.done(reduce_weighted("cross_entropy", rows.loss, rows.target_weight, o.reduction));
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction r) {
  CrossEntropyOptions o;
  o.reduction = r;
  return cross_entropy(logits, target, o);
}

Tensor nll_loss(const Tensor& log_probs_in, const Tensor& target, const NLLLossOptions& o_in) {
  detail::OpScope scope(OpId::nll_loss,
                        [&] {
                          return Attrs{{"reduction", reduction_name(o_in.reduction)},
                                        {"ignore_index", o_in.ignore_index}};
                        },
                        log_probs_in, target, o_in.weight);
  const Tensor& log_probs = scope.in(0, log_probs_in);
  NLLLossOptions o = o_in;
  o.weight = scope.in(2, o_in.weight);
  const char* op = "nll_loss";
  const Tensor t = check_class_target(op, "log_probs", log_probs, target, o.weight, o.ignore_index);
  const RowWeights rw = row_weights(t, o.weight, o.ignore_index, log_probs.dtype());
  const Tensor picked = gather(log_probs, 1, rw.safe_target.unsqueeze(1)).squeeze(1);  // (N)
  const Tensor loss = neg(mul(picked, rw.weights));                                     // (N)
  return scope.done(reduce_weighted(op, loss, rw.weights, o.reduction));
}

Tensor nll_loss(const Tensor& log_probs, const Tensor& target, Reduction r) {
  NLLLossOptions o;
  o.reduction = r;
  return nll_loss(log_probs, target, o);
}

Tensor binary_cross_entropy_with_logits(const Tensor& logits_in, const Tensor& targets_in,
                                        const BCEWithLogitsOptions& o_in) {
  detail::OpScope scope(OpId::binary_cross_entropy_with_logits,
                        [&] { return Attrs{{"reduction", reduction_name(o_in.reduction)}}; }, logits_in, targets_in,
                        o_in.weight, o_in.pos_weight);
  const Tensor &logits = scope.in(0, logits_in), &targets = scope.in(1, targets_in);
  BCEWithLogitsOptions o = o_in;
  o.weight = scope.in(2, o_in.weight);
  o.pos_weight = scope.in(3, o_in.pos_weight);
  return scope.done(reduce("binary_cross_entropy_with_logits",
                           bce_with_logits_elements(logits, targets, o.weight, o.pos_weight),
                o.reduction));
}

Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& targets, Reduction r) {
  BCEWithLogitsOptions o;
  o.reduction = r;
  return binary_cross_entropy_with_logits(logits, targets, o);
}

Tensor mse_loss(const Tensor& input_in, const Tensor& target_in, Reduction r) {
  detail::OpScope scope(OpId::mse_loss, [&] { return Attrs{{"reduction", reduction_name(r)}}; }, input_in, target_in);
  const Tensor& input = scope.in(0, input_in);
  const Tensor& target = scope.in(1, target_in);
  const char* op = "mse_loss";
  check_same_shape(op, "input", input, "target", target);
  EMBER_CHECK(input.device() == target.device(), op, "input lives on ", input.device(), " but target on ",
              target.device());
  const Tensor d = sub(input, target);
  return scope.done(reduce(op, mul(d, d), r));
}

// --- references -----------------------------------------------------------------------------------

Tensor cross_entropy_reference(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& o) {
  const Tensor logp = log_softmax(logits, 1);
  NLLLossOptions nll_opt;
  nll_opt.reduction = o.reduction;
  nll_opt.weight = o.weight;
  nll_opt.ignore_index = o.ignore_index;
  const Tensor nll = nll_loss(logp, target, nll_opt);
  if (o.label_smoothing == 0.0) return nll;
  // PyTorch's smoothing term: -sum_c w[c] * logp[i, c], 0 for ignored rows, reduced like nll.
  const int64_t c = logits.size(1);
  const RowWeights rw = row_weights(to_dtype(target, DType::i64), o.weight, o.ignore_index, logp.dtype());
  const Tensor wl = o.weight.defined() ? mul(logp, to_dtype(o.weight, logp.dtype()).unsqueeze(0)) : logp;
  const Tensor smooth = where(rw.valid, neg(sum(wl, {1})), zeros({}, on(logp, logp.dtype())));  // (N)
  const Tensor s = reduce_weighted("cross_entropy_reference", smooth, rw.weights, o.reduction);
  return nll * (1.0 - o.label_smoothing) + s * (o.label_smoothing / static_cast<double>(c));
}

Tensor nll_loss_reference(const Tensor& log_probs, const Tensor& target, const NLLLossOptions& o) {
  const DType dt = log_probs.dtype();
  const int64_t c = log_probs.size(1);
  const Tensor t = to_dtype(target, DType::i64);
  const Tensor valid = ne(t, full({}, static_cast<double>(o.ignore_index), on(t, DType::i64)));
  const Tensor safe = where(valid, t, zeros({}, on(t, DType::i64)));
  // (N, C): the one-hot target, zero rows for ignored targets, times the class weights.
  Tensor pick = mul(to_dtype(one_hot(safe, c), dt), to_dtype(valid, dt).unsqueeze(1));
  if (o.weight.defined()) pick = mul(pick, to_dtype(o.weight, dt).unsqueeze(0));
  const Tensor loss = neg(sum(mul(log_probs, pick), {1}));
  return reduce_weighted("nll_loss_reference", loss, sum(pick, {1}), o.reduction);
}

Tensor binary_cross_entropy_with_logits_reference(const Tensor& logits, const Tensor& targets,
                                                  const BCEWithLogitsOptions& o) {
  const Tensor s = sigmoid(logits);
  Tensor pos = mul(targets, log(s));
  if (o.pos_weight.defined()) pos = mul(pos, o.pos_weight);
  Tensor l = neg(add(pos, mul(1.0 - targets, log(1.0 - s))));
  if (o.weight.defined()) l = mul(l, o.weight);
  return reduce("binary_cross_entropy_with_logits_reference", l, o.reduction);
}

Tensor mse_loss_reference(const Tensor& input, const Tensor& target, Reduction r) {
  return reduce("mse_loss_reference", pow(sub(input, target), 2.0), r);
}

}  // namespace ember::nn
