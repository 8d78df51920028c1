// Hierarchical softmax ops (include/ember/ops/hsoftmax.h): argument checks, dtype handling,
// dispatch to src/cpu/hsoftmax.cpp or kernels/hsoftmax.cu, recorded backwards, and the
// reference composed from basic ops.
#include "ember/ops/hsoftmax.h"

#include <limits>

#include "ops/common.h"
#include "ops/op_call.h"
#include "ops/dispatch.h"
#include "prim/hsoftmax_layout.h"

namespace ember {
namespace {
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;
using detail::make_tensor;

using detail::defined_of;
using detail::prepared;

hs::Dims dims_of(const HSoftmaxTree& t) {
  return {t.num_classes, t.num_nodes, t.num_rows, t.max_depth, t.max_arity};
}

void check_tree(const char* op, const HSoftmaxTree& tree) {
  EMBER_CHECK(tree.table.defined(), op, "the tree's table is an undefined tensor");
  const hs::Dims d = dims_of(tree);
  EMBER_CHECK(d.C >= 2 && d.I >= 1 && d.S >= 1 && d.L >= 1 && d.A >= 2, op, "bad tree sizes: ", d.C, " classes, ",
              d.I, " nodes, ", d.S, " rows, depth ", d.L, ", arity ", d.A);
  EMBER_CHECK(tree.table.dtype() == DType::i32 && tree.table.dim() == 1 && tree.table.numel() == d.table_len(), op,
              "the tree's table must be a (", d.table_len(), ",) i32 tensor for ", d.C, " classes and ", d.I,
              " nodes, got ", detail::describe(tree.table));
}

struct Checked {
  int64_t N = 0, D = 0;
  Tensor classes;  // (M) i64, contiguous, detached (targets; undefined when not asked for)
};

// Checks h (N, D), W (S, D), b (S) or undefined against the tree; classes (when defined):
// integral, every value in [0, C), classes.size(0) == N.
Checked check_inputs(const char* op, const Tensor& h, const Tensor& W, const Tensor& b, const Tensor& classes,
                     const HSoftmaxTree& tree, bool check_range) {
  EMBER_CHECK(h.defined() && W.defined(), op, "h and W must be defined tensors");
  check_tree(op, tree);
  EMBER_CHECK(h.dim() == 2, op, "h must be 2-D (N, D), got ", shape_str(h.shape()));
  EMBER_CHECK(is_floating(h.dtype()), op, "h must be a float tensor, got ", detail::describe(h));
  const int64_t N = h.size(0), D = h.size(1), S = tree.num_rows;
  EMBER_CHECK(W.dim() == 2 && W.size(0) == S && W.size(1) == D, op, "W must be (", S, ", ", D, ") for a tree of ", S,
              " rows and h ", shape_str(h.shape()), ", got ", shape_str(W.shape()));
  EMBER_CHECK(W.dtype() == h.dtype(), op, "W dtype ", W.dtype(), " differs from h dtype ", h.dtype(), " (h ",
              shape_str(h.shape()), ", W ", shape_str(W.shape()), ")");
  if (b.defined()) {
    EMBER_CHECK(b.dim() == 1 && b.size(0) == S, op, "b must be (", S, ",) for W ", shape_str(W.shape()), ", got ",
                shape_str(b.shape()));
    EMBER_CHECK(b.dtype() == h.dtype(), op, "b dtype ", b.dtype(), " differs from h dtype ", h.dtype());
  }
  EMBER_CHECK(D > 0, op, "h ", shape_str(h.shape()), " has hidden size 0");
  detail::check_same_device(op, defined_of({h, W, b, tree.table, classes}));
  Checked c{N, D, Tensor()};
  if (!classes.defined()) return c;
  EMBER_CHECK(is_integral(classes.dtype()), op, "classes must be i64 or i32 indices, got ",
              detail::describe(classes));
  EMBER_CHECK(classes.dim() >= 1 && classes.size(0) == N, op, "h ", shape_str(h.shape()), " and classes ",
              shape_str(classes.shape()), " disagree on N");
  c.classes = prepared(classes, DType::i64).reshape({-1});
  if (check_range)  // on a device, bad classes read class 0 until the queued check reports them
    c.classes = detail::checked_indices(op, c.classes, tree.num_classes, std::nullopt, 0,
                                        detail::cat("class indices must lie in [0, ", tree.num_classes, ") for h ",
                                                    shape_str(h.shape()), " and W ", shape_str(W.shape())));
  return c;
}

HSoftmaxGrads nll_backward_impl(const Tensor& grad_loss, const Tensor& h, const Tensor& W, const Tensor& b,
                                const Tensor& targets, const HSoftmaxTree& tree, std::array<bool, 3> needs,
                                bool check_range) {
  const char* op = "hsoftmax_nll_backward";
  const Checked a = check_inputs(op, h, W, b, targets, tree, check_range);
  EMBER_CHECK(targets.dim() == 1, op, "targets must be 1-D (N), got ", shape_str(targets.shape()));
  EMBER_CHECK(grad_loss.defined() && grad_loss.shape() == Shape{a.N} && grad_loss.dtype() == h.dtype(), op,
              "grad_loss must be (", a.N, ",) ", h.dtype(), " for h ", detail::describe(h), ", got ",
              grad_loss.defined() ? detail::describe(grad_loss) : std::string("undefined"));
  detail::check_same_device(op, {h, grad_loss});
  HSoftmaxGrads out;
  needs[2] = needs[2] && b.defined();
  if (!needs[0] && !needs[1] && !needs[2]) return out;
  const Device dev = h.device();
  const DType cd = backend::compute_dtype_on(h.dtype(), dev);  // what the kernels read
  const DType ad = compute_dtype(h.dtype());                   // what they accumulate and write
  const Tensor hc = prepared(h, cd), Wc = prepared(W, cd), bc = prepared(b, cd), gc = prepared(grad_loss, cd);
  if (needs[0]) out.grad_h = make_tensor(h.shape(), ad, dev);
  if (needs[1]) out.grad_weight = make_tensor(W.shape(), ad, dev);
  if (needs[2]) out.grad_bias = make_tensor(b.shape(), ad, dev);
  const Tensor table = contiguous(tree.table);
  backend::call<prim::hsoftmax_nll_backward>(hc.device(), gc, hc, Wc, bc, a.classes, table, dims_of(tree), out.grad_h,
                                               out.grad_weight, out.grad_bias, a.N, a.D);
  for (Tensor* t : {&out.grad_h, &out.grad_weight, &out.grad_bias})
    if (t->defined() && t->dtype() != h.dtype()) *t = to_dtype(*t, h.dtype());
  return out;
}

Tensor tree_backward_impl(const Tensor& grad_out, const Tensor& logits, const HSoftmaxTree& tree) {
  const Device dev = logits.device();
  const DType cd = backend::compute_dtype_on(logits.dtype(), dev);
  const Tensor g = prepared(grad_out, cd), z = prepared(logits, cd);
  Tensor out = make_tensor(logits.shape(), cd, dev);
  if (logits.size(0) > 0)
    backend::call<prim::hsoftmax_tree_backward>(z.device(), g, z, contiguous(tree.table), dims_of(tree), out, logits.size(0));
  return cd == logits.dtype() ? out : to_dtype(out, logits.dtype());
}

}  // namespace

// What observers see: the tree's size as attributes, and the results of the struct-returning
// ops (OpScope::done).
Attrs tree_attrs(const HSoftmaxTree& t) {
  return Attrs{{"num_classes", t.num_classes}, {"num_nodes", t.num_nodes}, {"max_depth", t.max_depth}};
}
std::vector<Tensor> op_outputs(const HSoftmaxGrads& r) { return {r.grad_h, r.grad_weight, r.grad_bias}; }
std::vector<Tensor> op_outputs(const HSoftmaxTopK& r) { return {r.values, r.classes}; }

Tensor hsoftmax_nll(const Tensor& h_in, const Tensor& W_in, const Tensor& b_in, const Tensor& targets_in,
                    const HSoftmaxTree& tree) {
  detail::OpScope scope(OpId::hsoftmax_nll, [&] { return tree_attrs(tree); }, h_in, W_in, b_in, targets_in);
  const Tensor& h = scope.in(0, h_in);
  const Tensor& W = scope.in(1, W_in);
  const Tensor& b = scope.in(2, b_in);
  const Tensor& targets = scope.in(3, targets_in);
  const char* op = "hsoftmax_nll";
  EMBER_CHECK(targets.defined(), op, "targets must be a defined tensor");
  const Checked a = check_inputs(op, h, W, b, targets, tree, true);
  EMBER_CHECK(targets.dim() == 1, op, "targets must be 1-D (N), got ", shape_str(targets.shape()), " for h ",
              shape_str(h.shape()));
  const Device dev = h.device();
  const DType cd = backend::compute_dtype_on(h.dtype(), dev);
  const Tensor hc = prepared(h, cd), Wc = prepared(W, cd), bc = prepared(b, cd);
  Tensor loss = make_tensor({a.N}, cd, dev);
  if (a.N > 0)
    backend::call<prim::hsoftmax_nll_forward>(hc.device(), hc, Wc, bc, a.classes, contiguous(tree.table), dims_of(tree), loss,
                                                a.N, a.D);
  if (cd != h.dtype()) loss = to_dtype(loss, h.dtype());
  record(
      op, {h, W, b}, {loss},
      [tree](const Grads& g, const Grads& s, const Needs& n) {
        HSoftmaxGrads r = nll_backward_impl(g[0], s[0], s[1], s[2], s[3], tree, {n[0], n[1], n[2]},
                                            /*check_range=*/false);
        return Grads{r.grad_h, r.grad_weight, r.grad_bias};
      },
      {h, W, b, a.classes});
  return scope.done(loss);
}

HSoftmaxGrads hsoftmax_nll_backward(const Tensor& grad_loss, const Tensor& h, const Tensor& W, const Tensor& b,
                                    const Tensor& targets, const HSoftmaxTree& tree, std::array<bool, 3> needs) {
  detail::OpScope scope(OpId::hsoftmax_nll_backward, [&] { return tree_attrs(tree); }, grad_loss, h, W, b, targets);
  EMBER_CHECK(targets.defined(), "hsoftmax_nll_backward", "targets must be a defined tensor");
  return scope.done(nll_backward_impl(grad_loss, h, W, b, targets, tree, needs, /*check_range=*/true));
}

Tensor hsoftmax_log_prob(const Tensor& h_in, const Tensor& W_in, const Tensor& b_in, const Tensor& classes_in,
                         const HSoftmaxTree& tree) {
  detail::OpScope scope(OpId::hsoftmax_log_prob, [&] { return tree_attrs(tree); }, h_in, W_in, b_in, classes_in);
  const Tensor& h = scope.in(0, h_in);
  const Tensor& W = scope.in(1, W_in);
  const Tensor& b = scope.in(2, b_in);
  const Tensor& classes = scope.in(3, classes_in);
  const char* op = "hsoftmax_log_prob";
  EMBER_CHECK(classes.defined(), op, "classes must be a defined tensor");
  const Checked a = check_inputs(op, h, W, b, classes, tree, false);  // hsoftmax_nll checks the range
  EMBER_CHECK(classes.dim() == 1 || classes.dim() == 2, op, "classes must be (N) or (N, K), got ",
              shape_str(classes.shape()), " for h ", shape_str(h.shape()));
  if (classes.dim() == 1) return scope.done(neg(hsoftmax_nll(h, W, b, classes, tree)));
  const int64_t K = classes.size(1);
  const Tensor hk = reshape(expand(unsqueeze(h, 1), {a.N, K, a.D}), {a.N * K, a.D});  // row i*K + k = h[i]
  return scope.done(reshape(neg(hsoftmax_nll(hk, W, b, reshape(classes, {a.N * K}), tree)), {a.N, K}));
}

Tensor hsoftmax_tree_log_prob(const Tensor& logits_in, const HSoftmaxTree& tree) {
  detail::OpScope scope(OpId::hsoftmax_tree_log_prob, [&] { return tree_attrs(tree); }, logits_in);
  const Tensor& logits = scope.in(0, logits_in);
  const char* op = "hsoftmax_tree_log_prob";
  EMBER_CHECK(logits.defined(), op, "logits must be a defined tensor");
  check_tree(op, tree);
  EMBER_CHECK(logits.dim() == 2 && logits.size(1) == tree.num_rows && is_floating(logits.dtype()), op,
              "logits must be a float (M, ", tree.num_rows, ") tensor for a tree of ", tree.num_rows, " rows, got ",
              detail::describe(logits));
  detail::check_same_device(op, {logits, tree.table});
  const Device dev = logits.device();
  const DType cd = backend::compute_dtype_on(logits.dtype(), dev);
  const Tensor z = prepared(logits, cd);
  const int64_t M = logits.size(0);
  Tensor out = make_tensor({M, tree.num_classes}, cd, dev);
  if (M > 0) backend::call<prim::hsoftmax_tree_forward>(z.device(), z, contiguous(tree.table), dims_of(tree), out, M);
  if (cd != logits.dtype()) out = to_dtype(out, logits.dtype());
  record(
      op, {logits}, {out},
      [tree](const Grads& g, const Grads& s, const Needs&) { return Grads{tree_backward_impl(g[0], s[0], tree)}; },
      {logits});
  return scope.done(out);
}

Tensor hsoftmax_full_log_prob(const Tensor& h_in, const Tensor& W_in, const Tensor& b_in, const HSoftmaxTree& tree) {
  detail::OpScope scope(OpId::hsoftmax_full_log_prob, [&] { return tree_attrs(tree); }, h_in, W_in, b_in);
  const Tensor& h = scope.in(0, h_in);
  const Tensor& W = scope.in(1, W_in);
  const Tensor& b = scope.in(2, b_in);
  check_inputs("hsoftmax_full_log_prob", h, W, b, Tensor(), tree, false);
  Tensor logits = matmul(h, W.t());  // (N, S)
  if (b.defined()) logits = logits + b;
  return scope.done(hsoftmax_tree_log_prob(logits, tree));
}

HSoftmaxTopK hsoftmax_topk(const Tensor& h_in, const Tensor& W_in, const Tensor& b_in, int64_t k, int64_t beam,
                           const HSoftmaxTree& tree) {
  detail::OpScope scope(OpId::hsoftmax_topk,
                        [&] { return Attrs{{"k", k}, {"beam", beam}, {"num_classes", tree.num_classes}}; },
                        h_in, W_in, b_in);
  const Tensor& h = scope.in(0, h_in);
  const Tensor& W = scope.in(1, W_in);
  const Tensor& b = scope.in(2, b_in);
  const char* op = "hsoftmax_topk";
  const Checked a = check_inputs(op, h, W, b, Tensor(), tree, false);
  EMBER_CHECK(k >= 1 && k <= tree.num_classes, op, "k must lie in [1, ", tree.num_classes, "], got ", k);
  EMBER_CHECK(beam >= k, op, "beam (", beam, ") must be at least k (", k, ")");
  const Device dev = h.device();
  const DType cd = backend::compute_dtype_on(h.dtype(), dev);
  const Tensor hc = prepared(h, cd), Wc = prepared(W, cd), bc = prepared(b, cd);
  HSoftmaxTopK r{make_tensor({a.N, k}, cd, dev), make_tensor({a.N, k}, DType::i64, dev)};
  // Wider than every level is exhaustive already; the cap keeps the device scratch small.
  const int64_t eff_beam = std::min(beam, tree.num_nodes);
  if (a.N > 0)
    backend::call<prim::hsoftmax_topk>(hc.device(), hc, Wc, bc, contiguous(tree.table), dims_of(tree), k, eff_beam, r.values,
                                         r.classes, a.N, a.D);
  if (cd != h.dtype()) r.values = to_dtype(r.values, h.dtype());
  return scope.done(r);
}

Tensor hsoftmax_nll_reference(const Tensor& h, const Tensor& W, const Tensor& b, const Tensor& targets,
                              const HSoftmaxTree& tree) {
  const char* op = "hsoftmax_nll_reference";
  EMBER_CHECK(targets.defined(), op, "targets must be a defined tensor");
  const Checked a = check_inputs(op, h, W, b, targets, tree, true);
  const hs::Dims d = dims_of(tree);
  const int64_t N = a.N, D = a.D, L = d.L, A = d.A, S = d.S;
  // Index tables on the host: for example i, depth l (leaf first), slot j: the row of W to
  // use (S = the appended zero row: a binary node's fixed logit, or padding), whether the
  // slot exists, and the child taken. Padded depths keep one valid zero slot (log-prob 0).
  const std::vector<int32_t> tab = tree.table.to(Device::cpu()).to_vector<int32_t>();
  const hs::Tree tr(tab.data(), d);
  const std::vector<int64_t> tgt = a.classes.to(Device::cpu()).to_vector<int64_t>();
  std::vector<int64_t> idx(static_cast<size_t>(N * L * A), S), child(static_cast<size_t>(N * L), 0);
  std::vector<bool> valid(static_cast<size_t>(N * L * A), false);
  for (int64_t i = 0; i < N; ++i) {
    int64_t l = 0;
    for (int32_t s = tr.class_slot[tgt[static_cast<size_t>(i)]]; s >= 0; ++l) {
      const int32_t n = tr.slot_node[s];
      for (int32_t j = 0; j < tr.arity(n); ++j) {
        const size_t at = static_cast<size_t>((i * L + l) * A + j);
        valid[at] = true;
        if (j < tr.nrows(n)) idx[at] = tr.row_off[n] + j;
      }
      child[static_cast<size_t>(i * L + l)] = s - tr.slot_off[n];
      s = tr.parent_slot[n];
    }
    for (; l < L; ++l) valid[static_cast<size_t>((i * L + l) * A)] = true;
  }
  const Device dev = h.device();
  const DType sd = compute_dtype(h.dtype());
  const TensorOptions fo = TensorOptions(sd).with_device(dev);
  const Tensor index = from_vector(idx, {N * L * A}).to(dev);
  const Tensor invalid = logical_not(from_vector(valid, {N, L, A}, DType::boolean).to(dev));
  const Tensor taken = from_vector(child, {N, L, 1}).to(dev);
  const Tensor hf = to_dtype(h, sd);
  const Tensor Wx = cat({to_dtype(W, sd), zeros({1, D}, fo)}, 0);  // (S + 1, D)
  const Tensor bx = b.defined() ? cat({to_dtype(b, sd), zeros({1}, fo)}, 0) : zeros({S + 1}, fo);
  const Tensor rows = reshape(index_select(Wx, 0, index), {N, L * A, D});
  Tensor scores = reshape(bmm(rows, reshape(hf, {N, D, 1})), {N, L, A}) + reshape(index_select(bx, 0, index), {N, L, A});
  scores = masked_fill(scores, invalid, -std::numeric_limits<double>::infinity());
  const Tensor picked = gather(log_softmax(scores, 2), 2, taken);  // (N, L, 1)
  return to_dtype(neg(sum(picked, {1, 2})), h.dtype());
}

}  // namespace ember
