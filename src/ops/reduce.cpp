// Reductions and softmax. Reduced dims are moved last and the input made contiguous, so the
// backend only ever reduces rows; a sum over leading dims of a contiguous tensor reduces
// columns in place instead (the bias-gradient case).
#include <numeric>

#include "ops/dispatch.h"
#include "ops/common.h"
#include "ops/op_call.h"

namespace ember {
namespace {
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;
using detail::make_tensor;

// Moves `dims` (sorted) to the end: returns (contiguous x as (M, R), M, R, kept shape).
struct Rows {
  Tensor data;
  int64_t M, R;
  Shape kept;
};
Rows to_rows(const Tensor& x, const std::vector<int64_t>& dims) {
  Shape perm, kept;
  int64_t R = 1;
  for (int64_t i = 0; i < x.dim(); ++i)
    if (std::find(dims.begin(), dims.end(), i) == dims.end()) {
      perm.push_back(i);
      kept.push_back(x.size(i));
    }
  for (auto d : dims) {
    perm.push_back(d);
    R = checked_mul(R, x.size(d), "reduce");  // a subset of dims of an empty tensor can overflow
  }
  Tensor p = contiguous(permute(x, perm));
  return {p, numel_of(kept), R, kept};
}

DType sum_result(DType t) { return is_floating(t) ? t : DType::i64; }

// Reduction without autograd; result has the kept shape, dtype `rd`.
Tensor reduce_raw(ReduceOp op, const Tensor& x, const std::vector<int64_t>& dims, DType rd) {
  const DType cd = backend::compute_dtype_on(rd, x.device());
  Tensor xc = to_dtype(x.detach(), cd);
  bool leading = op == ReduceOp::sum && xc.is_contiguous() && !dims.empty();
  for (size_t i = 0; i < dims.size() && leading; ++i) leading = dims[i] == static_cast<int64_t>(i);
  Tensor out;
  if (leading) {
    Shape kept(xc.shape().begin() + dims.size(), xc.shape().end());
    const int64_t M = numel_of(kept), R = xc.numel() / std::max<int64_t>(M, 1);
    out = make_tensor(kept, cd, x.device());
    if (M > 0) backend::call<prim::sum_cols>(out.device(), xc, out, R, M);
  } else {
    Rows r = to_rows(xc, dims);
    EMBER_CHECK(r.R > 0 || op == ReduceOp::sum || op == ReduceOp::prod,
                op == ReduceOp::max ? "amax" : "amin", "cannot reduce over an empty dim of shape ",
                shape_str(x.shape()));
    out = make_tensor(r.kept, cd, x.device());
    if (r.M > 0) backend::call<prim::reduce_rows>(out.device(), op, r.data, out, r.M, r.R);
  }
  return cd == rd ? out : to_dtype(out, rd);
}

// Gradient of a reduction, broadcast back over the reduced dims.
Tensor expand_back(const Tensor& g, const Shape& in_shape, const std::vector<int64_t>& dims, bool keepdim) {
  Tensor gk = keepdim ? g : reshape(g, detail::reduced_shape(in_shape, dims, true));
  return expand(gk, in_shape);
}

Tensor finish_keepdim(const Tensor& out, const Shape& in_shape, const std::vector<int64_t>& dims, bool keepdim) {
  if (!keepdim) return out;
  return out.view(detail::reduced_shape(in_shape, dims, true));
}

}  // namespace

Tensor sum(const Tensor& x_in, const Shape& dims_in, bool keepdim) {
  detail::OpScope scope(OpId::sum, [&] { return Attrs{{"dims", dims_in}, {"keepdim", keepdim}}; }, x_in);
  const Tensor& x = scope.in(0, x_in);
  detail::check_defined("sum", {x});
  auto dims = detail::reduction_dims(dims_in, x.dim(), "sum");
  Tensor out = finish_keepdim(reduce_raw(ReduceOp::sum, x, dims, sum_result(x.dtype())), x.shape(), dims, keepdim);
  record("sum", {x}, {out}, [shape = x.shape(), dt = x.dtype(), dims, keepdim](const Grads& g, const Grads&, const Needs&) {
    return Grads{to_dtype(contiguous(expand_back(g[0], shape, dims, keepdim)), dt)};
  });
  return scope.done(out);
}

Tensor mean(const Tensor& x_in, const Shape& dims_in, bool keepdim) {
  detail::OpScope scope(OpId::mean, [&] { return Attrs{{"dims", dims_in}, {"keepdim", keepdim}}; }, x_in);
  const Tensor& x = scope.in(0, x_in);
  detail::check_defined("mean", {x});
  auto dims = detail::reduction_dims(dims_in, x.dim(), "mean");
  int64_t count = 1;
  for (auto d : dims) count = checked_mul(count, x.size(d), "mean");
  Tensor xf = is_floating(x.dtype()) ? x : to_dtype(x, DType::f32);
  Tensor s = sum(xf, dims_in, keepdim);
  const Tensor n = scalar_tensor(static_cast<double>(count), TensorOptions(s.dtype()).with_device(s.device()));
  return scope.done(div(s, n));
}

Tensor var(const Tensor& x_in, const Shape& dims_in, int64_t correction, bool keepdim) {
  detail::OpScope scope(OpId::var,
                        [&] { return Attrs{{"dims", dims_in}, {"correction", correction}, {"keepdim", keepdim}}; },
                        x_in);
  const Tensor& x = scope.in(0, x_in);
  detail::check_defined("var", {x});
  auto dims = detail::reduction_dims(dims_in, x.dim(), "var");
  int64_t count = 1;
  for (auto d : dims) count = checked_mul(count, x.size(d), "var");
  Tensor xf = is_floating(x.dtype()) ? x : to_dtype(x, DType::f32);
  Tensor d = sub(xf, mean(xf, dims_in, true));
  Tensor ss = sum(mul(d, d), dims_in, keepdim);
  const double denom = static_cast<double>(std::max<int64_t>(count - correction, 0));
  return scope.done(div(ss, scalar_tensor(denom, TensorOptions(ss.dtype()).with_device(ss.device()))));
}

Tensor prod(const Tensor& x_in, const Shape& dims_in, bool keepdim) {
  detail::OpScope scope(OpId::prod, [&] { return Attrs{{"dims", dims_in}, {"keepdim", keepdim}}; }, x_in);
  const Tensor& x = scope.in(0, x_in);
  detail::check_defined("prod", {x});
  auto dims = detail::reduction_dims(dims_in, x.dim(), "prod");
  Tensor out = finish_keepdim(reduce_raw(ReduceOp::prod, x, dims, sum_result(x.dtype())), x.shape(), dims, keepdim);
  // d prod / d x_i = prod / x_i (inputs containing zeros give non-finite gradients).
  record(
      "prod", {x}, {out},
      [shape = x.shape(), dims, keepdim](const Grads& g, const Grads& s, const Needs&) {
        return Grads{div(mul(expand_back(g[0], shape, dims, keepdim), expand_back(s[1], shape, dims, keepdim)), s[0])};
      },
      {x, out});
  return scope.done(out);
}

namespace {
Tensor amax_amin(const char* name, ReduceOp op, const Tensor& x, const Shape& dims_in, bool keepdim) {
  detail::check_defined(name, {x});
  auto dims = detail::reduction_dims(dims_in, x.dim(), name);
  EMBER_CHECK(x.numel() > 0, name, "cannot reduce an empty tensor of shape ", shape_str(x.shape()));
  DType rd = x.dtype() == DType::boolean ? DType::i64 : x.dtype();
  Tensor out = finish_keepdim(reduce_raw(op, x, dims, rd), x.shape(), dims, keepdim);
  // Ties share the gradient evenly.
  record(
      name, {x}, {out},
      [shape = x.shape(), dims, keepdim](const Grads& g, const Grads& s, const Needs&) {
        Tensor hit = to_dtype(eq(s[0], expand_back(s[1], shape, dims, keepdim)), g[0].dtype());
        Tensor count = sum(hit, Shape(dims.begin(), dims.end()), true);
        return Grads{mul(expand_back(g[0], shape, dims, keepdim), div(hit, count))};
      },
      {x, out});
  return out;
}

ValuesIndices arg_reduce(const char* name, bool is_max, const Tensor& x, int64_t dim, bool keepdim) {
  detail::check_defined(name, {x});
  const int64_t d = wrap_dim(dim, x.dim(), name);
  EMBER_CHECK(x.dim() == 0 || x.size(d) > 0, name, "cannot reduce over dim ", d, " of size 0 (shape ",
              shape_str(x.shape()), ")");
  if (x.dim() == 0) {
    Tensor v = clone(x);
    return {v, zeros({}, detail::on_device_of(x, DType::i64))};
  }
  const DType rd = x.dtype() == DType::boolean ? DType::i64 : x.dtype();
  const DType cd = backend::compute_dtype_on(rd, x.device());
  Rows r = to_rows(to_dtype(x.detach(), cd), {d});
  Tensor values = make_tensor(r.kept, cd, x.device());
  Tensor indices = make_tensor(r.kept, DType::i64, x.device());
  if (r.M > 0) backend::call<prim::arg_reduce_rows>(values.device(), is_max, r.data, values, indices, r.M, r.R);
  if (cd != rd) values = to_dtype(values, rd);
  if (keepdim) {
    values = values.unsqueeze(d);
    indices = indices.unsqueeze(d);
  }
  record(
      name, {x}, {values},
      [shape = x.shape(), dt = x.dtype(), d, keepdim](const Grads& g, const Grads& s, const Needs&) {
        Tensor gk = keepdim ? g[0] : g[0].unsqueeze(d);
        Tensor ik = keepdim ? s[0] : s[0].unsqueeze(d);
        return Grads{scatter_add(zeros(shape, detail::on_device_of(g[0], dt)), d, contiguous(ik), contiguous(gk))};
      },
      {indices});
  return {values, indices};
}
}  // namespace

Tensor amax(const Tensor& x, const Shape& dims, bool keepdim) {
  detail::OpScope scope(OpId::amax, [&] { return Attrs{{"dims", dims}, {"keepdim", keepdim}}; }, x);
  return scope.done(amax_amin("amax", ReduceOp::max, x, dims, keepdim));
}
Tensor amin(const Tensor& x, const Shape& dims, bool keepdim) {
  detail::OpScope scope(OpId::amin, [&] { return Attrs{{"dims", dims}, {"keepdim", keepdim}}; }, x);
  return scope.done(amax_amin("amin", ReduceOp::min, x, dims, keepdim));
}
ValuesIndices max(const Tensor& x, int64_t dim, bool keepdim) {
  detail::OpScope scope(OpId::max, [&] { return Attrs{{"dim", dim}, {"keepdim", keepdim}}; }, x);
  ValuesIndices r = arg_reduce("max", true, x, dim, keepdim);
  return scope.done(r, {r.values, r.indices});
}
ValuesIndices min(const Tensor& x, int64_t dim, bool keepdim) {
  detail::OpScope scope(OpId::min, [&] { return Attrs{{"dim", dim}, {"keepdim", keepdim}}; }, x);
  ValuesIndices r = arg_reduce("min", false, x, dim, keepdim);
  return scope.done(r, {r.values, r.indices});
}
Tensor max(const Tensor& x) {
  detail::OpScope scope(OpId::max, x);
  return scope.done(amax(x));
}
Tensor min(const Tensor& x) {
  detail::OpScope scope(OpId::min, x);
  return scope.done(amin(x));
}

Tensor argmax(const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
  detail::OpScope scope(OpId::argmax, [&] { return Attrs{{"dim", dim}, {"keepdim", keepdim}}; }, x);
  if (!dim) return scope.done(arg_reduce("argmax", true, reshape(x.detach(), {-1}), 0, false).indices);
  return scope.done(arg_reduce("argmax", true, x.detach(), *dim, keepdim).indices);
}
Tensor argmin(const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
  detail::OpScope scope(OpId::argmin, [&] { return Attrs{{"dim", dim}, {"keepdim", keepdim}}; }, x);
  if (!dim) return scope.done(arg_reduce("argmin", false, reshape(x.detach(), {-1}), 0, false).indices);
  return scope.done(arg_reduce("argmin", false, x.detach(), *dim, keepdim).indices);
}

// --- softmax ---------------------------------------------------------------------------------
namespace {
Tensor softmax_impl(const char* name, bool log, const Tensor& x, int64_t dim) {
  detail::check_defined(name, {x});
  EMBER_CHECK(is_floating(x.dtype()), name, "needs a float tensor, got ", x.dtype(), " of shape ",
              shape_str(x.shape()));
  if (x.dim() == 0) {
    Tensor r = log ? zeros_like(x) : ones_like(x);
    return r;
  }
  const int64_t d = wrap_dim(dim, x.dim(), name);
  const DType cd = backend::compute_dtype_on(x.dtype(), x.device());
  Rows r = to_rows(to_dtype(x.detach(), cd), {d});
  Tensor out_rows = make_tensor(r.data.shape(), cd, x.device());
  if (r.M > 0 && r.R > 0) backend::call<prim::softmax_rows>(out_rows.device(), log, r.data, out_rows, r.M, r.R);
  // Undo the move of `d` to the end as a view.
  Shape perm(x.dim());
  std::iota(perm.begin(), perm.end(), 0);
  perm.erase(perm.begin() + d);
  perm.push_back(d);
  Shape inv(x.dim());
  for (int64_t i = 0; i < x.dim(); ++i) inv[perm[i]] = i;
  Tensor out = permute(out_rows, inv);
  if (cd != x.dtype()) out = to_dtype(out, x.dtype());
  if (log)
    record(
        name, {x}, {out},
        [d](const Grads& g, const Grads& s, const Needs&) {
          return Grads{sub(g[0], mul(exp(s[0]), sum(g[0], {d}, true)))};
        },
        {out});
  else
    record(
        name, {x}, {out},
        [d](const Grads& g, const Grads& s, const Needs&) {
          return Grads{mul(s[0], sub(g[0], sum(mul(g[0], s[0]), {d}, true)))};
        },
        {out});
  return out;
}
}  // namespace

Tensor softmax(const Tensor& x_in, int64_t dim) {
  detail::OpScope scope(OpId::softmax, [&] { return Attrs{{"dim", dim}}; }, x_in);
  const Tensor& x = scope.in(0, x_in);
  return scope.done(softmax_impl("softmax", false, x, dim));
}
Tensor log_softmax(const Tensor& x_in, int64_t dim) {
  detail::OpScope scope(OpId::log_softmax, [&] { return Attrs{{"dim", dim}}; }, x_in);
  const Tensor& x = scope.in(0, x_in);
  return scope.done(softmax_impl("log_softmax", true, x, dim));
}

}  // namespace ember
