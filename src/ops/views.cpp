// Views: new shape/strides/offset over the same storage. Each records a backward that maps
// the view's gradient back to the base's shape.
#include <algorithm>
#include <numeric>

#include "ops/common.h"
#include "ops/op_call.h"

namespace ember {
using detail::make_view;

namespace {
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;

Tensor finish_view(const char* name, const Tensor& x, const Tensor& v, FunctionNode::BackwardFn fn) {
  detail::mark_view(x, v);
  record(name, {x}, {v}, std::move(fn));
  return v;
}

// Resolves a single -1 and checks the element count.
Shape infer_shape(const Shape& shape, int64_t numel, const char* op, const Shape& from) {
  Shape s = shape;
  int64_t known = 1, neg = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      EMBER_CHECK(neg < 0, op, "only one dimension can be -1 in ", shape_str(shape));
      neg = static_cast<int64_t>(i);
    } else {
      EMBER_CHECK(s[i] >= 0, op, "invalid dimension ", s[i], " in ", shape_str(shape));
      EMBER_CHECK(!__builtin_mul_overflow(known, s[i], &known), op, "shape ", shape_str(shape),
                  " has more elements than int64 holds (tensor of shape ", shape_str(from), ")");
    }
  }
  if (neg >= 0) {
    EMBER_CHECK(known != 0 && numel % known == 0, op, "shape ", shape_str(shape),
                " is invalid for a tensor of shape ", shape_str(from), " (", numel, " elements)");
    s[neg] = numel / known;
  }
  EMBER_CHECK(numel_of(s) == numel, op, "shape ", shape_str(shape), " is invalid for a tensor of shape ",
              shape_str(from), " (", numel, " elements)");
  return s;
}

// Strides for viewing x as `shape` without a copy, or nullopt when impossible. Old dims
// are grouped into chunks that are contiguous with each other; each chunk must be covered
// exactly by a run of new dims.
std::optional<Shape> view_strides(const Tensor& x, const Shape& shape) {
  if (x.is_contiguous() || x.numel() == 0 || x.dim() == 0) return contiguous_strides(shape);
  const Shape& os = x.shape();
  const Shape& ost = x.strides();
  Shape st(shape.size());
  int64_t vd = static_cast<int64_t>(shape.size()) - 1;
  int64_t base = ost.back(), tnumel = 1, vnumel = 1;
  for (int64_t td = static_cast<int64_t>(os.size()) - 1; td >= 0; --td) {
    tnumel *= os[td];
    const bool chunk_ends = td == 0 || (os[td - 1] != 1 && ost[td - 1] != tnumel * base);
    if (!chunk_ends) continue;
    while (vd >= 0 && (vnumel < tnumel || shape[vd] == 1)) {
      st[vd] = vnumel * base;
      vnumel *= shape[vd];
      --vd;
    }
    if (vnumel != tnumel) return std::nullopt;
    if (td > 0) {
      base = ost[td - 1];
      tnumel = 1;
      vnumel = 1;
    }
  }
  if (vd != -1) return std::nullopt;
  return st;
}
}  // namespace

Tensor view(const Tensor& x, const Shape& shape) {
  detail::OpScope scope(OpId::view, [&] { return Attrs{{"shape", shape}}; }, x);
  detail::check_defined("view", {x});
  Shape s = infer_shape(shape, x.numel(), "view", x.shape());
  auto st = view_strides(x, s);
  EMBER_CHECK(st.has_value(), "view", "cannot view a tensor of shape ", shape_str(x.shape()),
              " with strides ", shape_str(x.strides()), " as ", shape_str(s),
              " without a copy; use reshape()");
  Shape orig = x.shape();
  return scope.done(finish_view("view", x, make_view(x, s, *st, x.offset()),
                     [orig](const Grads& g, const Grads&, const Needs&) { return Grads{reshape(g[0], orig)}; }));
}

Tensor reshape(const Tensor& x, const Shape& shape) {
  detail::OpScope scope(OpId::reshape, [&] { return Attrs{{"shape", shape}}; }, x);
  detail::check_defined("reshape", {x});
  Shape s = infer_shape(shape, x.numel(), "reshape", x.shape());
  if (view_strides(x, s)) return scope.done(view(x, s));
  return scope.done(view(clone(x), s));
}

Tensor flatten(const Tensor& x, int64_t start, int64_t end) {
  detail::OpScope scope(OpId::flatten, [&] { return Attrs{{"start", start}, {"end", end}}; }, x);
  detail::check_defined("flatten", {x});
  if (x.dim() == 0) return scope.done(reshape(x, {1}));
  start = wrap_dim(start, x.dim(), "flatten");
  end = wrap_dim(end, x.dim(), "flatten");
  EMBER_CHECK(start <= end, "flatten", "start dim ", start, " after end dim ", end);
  Shape s(x.shape().begin(), x.shape().begin() + start);
  int64_t m = 1;
  for (int64_t i = start; i <= end; ++i) m = checked_mul(m, x.size(i), "flatten");  // (0, 2^40, 2^40) overflows
  s.push_back(m);
  s.insert(s.end(), x.shape().begin() + end + 1, x.shape().end());
  return scope.done(reshape(x, s));
}

Tensor permute(const Tensor& x, const Shape& dims) {
  detail::OpScope scope(OpId::permute, [&] { return Attrs{{"dims", dims}}; }, x);
  detail::check_defined("permute", {x});
  EMBER_CHECK(static_cast<int64_t>(dims.size()) == x.dim(), "permute", "got ", dims.size(),
              " dims ", shape_str(dims), " for a tensor of shape ", shape_str(x.shape()));
  Shape s(dims.size()), st(dims.size()), inv(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], x.dim(), "permute");
    EMBER_CHECK(!seen[d], "permute", "dim ", d, " repeated in ", shape_str(dims));
    seen[d] = true;
    s[i] = x.size(d);
    st[i] = x.stride(d);
    inv[d] = static_cast<int64_t>(i);
  }
  return scope.done(finish_view("permute", x, make_view(x, s, st, x.offset()),
                     [inv](const Grads& g, const Grads&, const Needs&) { return Grads{permute(g[0], inv)}; }));
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  detail::OpScope scope(OpId::transpose, [&] { return Attrs{{"dim0", d0}, {"dim1", d1}}; }, x);
  detail::check_defined("transpose", {x});
  if (x.dim() == 0) return scope.done(x);
  d0 = wrap_dim(d0, x.dim(), "transpose");
  d1 = wrap_dim(d1, x.dim(), "transpose");
  Shape p(x.dim());
  std::iota(p.begin(), p.end(), 0);
  std::swap(p[d0], p[d1]);
  return scope.done(permute(x, p));
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  detail::OpScope scope(OpId::slice,
                        [&] { return Attrs{{"dim", dim}, {"start", start}, {"end", end}, {"step", step}}; },
                        x);
  detail::check_defined("slice", {x});
  EMBER_CHECK(x.dim() > 0, "slice", "cannot slice a 0-d tensor");
  dim = wrap_dim(dim, x.dim(), "slice");
  EMBER_CHECK(step > 0, "slice", "step must be positive, got ", step);
  const int64_t n = x.size(dim);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape s = x.shape(), st = x.strides();
  // ceil((end - start) / step) without forming end - start + step - 1 (step may be INT64_MAX).
  s[dim] = end > start ? (end - start - 1) / step + 1 : 0;
  // With one element or none the stride is never used; keep it rather than overflow.
  if (s[dim] > 1) st[dim] = checked_mul(st[dim], step, "slice");
  Shape orig = x.shape();
  DType dt = x.dtype();
  return scope.done(finish_view("slice", x, make_view(x, s, st, x.offset() + start * x.stride(dim)),
                     [orig, dt, dim, start, end, step](const Grads& g, const Grads&, const Needs&) {
                       Tensor r = zeros(orig, detail::on_device_of(g[0], dt));
                       slice(r, dim, start, end, step).copy_(g[0]);
                       return Grads{r};
                     }));
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  detail::OpScope scope(OpId::narrow, [&] { return Attrs{{"dim", dim}, {"start", start}, {"length", length}}; }, x);
  detail::check_defined("narrow", {x});
  EMBER_CHECK(x.dim() > 0, "narrow", "cannot narrow a 0-d tensor");
  dim = wrap_dim(dim, x.dim(), "narrow");
  const int64_t n = x.size(dim);
  if (start < 0 && start >= -n) start += n;
  EMBER_CHECK(start >= 0 && start <= n && length >= 0 && length <= n - start, "narrow", "range of ", length,
              " elements from ", start, " out of bounds for dim ", dim, " of size ", n, " (shape ",
              shape_str(x.shape()), ")");
  return scope.done(slice(x, dim, start, start + length, 1));
}

Tensor select(const Tensor& x, int64_t dim, int64_t index) {
  detail::OpScope scope(OpId::select, [&] { return Attrs{{"dim", dim}, {"index", index}}; }, x);
  detail::check_defined("select", {x});
  EMBER_CHECK(x.dim() > 0, "select", "cannot select from a 0-d tensor");
  dim = wrap_dim(dim, x.dim(), "select");
  const int64_t n = x.size(dim);
  EMBER_CHECK(index >= -n && index < n, "select", "index ", index, " out of range for dim ", dim,
              " of size ", n, " (shape ", shape_str(x.shape()), ")");
  if (index < 0) index += n;
  Shape s = x.shape(), st = x.strides();
  s.erase(s.begin() + dim);
  st.erase(st.begin() + dim);
  Shape orig = x.shape();
  DType dt = x.dtype();
  return scope.done(finish_view("select", x, make_view(x, s, st, x.offset() + index * x.stride(dim)),
                     [orig, dt, dim, index](const Grads& g, const Grads&, const Needs&) {
                       Tensor r = zeros(orig, detail::on_device_of(g[0], dt));
                       select(r, dim, index).copy_(g[0]);
                       return Grads{r};
                     }));
}

namespace {
Tensor expand_impl(const char* op, const Tensor& x, const Shape& shape) {
  detail::check_defined(op, {x});
  EMBER_CHECK(static_cast<int64_t>(shape.size()) >= x.dim(), op, "cannot expand shape ",
              shape_str(x.shape()), " to ", shape_str(shape), " (fewer dims)");
  const int64_t lead = static_cast<int64_t>(shape.size()) - x.dim();
  Shape s(shape.size()), st(shape.size());
  for (int64_t i = 0; i < static_cast<int64_t>(shape.size()); ++i) {
    if (i < lead) {
      EMBER_CHECK(shape[i] >= 0, op, "cannot expand shape ", shape_str(x.shape()), " to ",
                  shape_str(shape));
      s[i] = shape[i];
      st[i] = 0;
      continue;
    }
    const int64_t have = x.size(i - lead);
    const int64_t want = shape[i] == -1 ? have : shape[i];
    EMBER_CHECK(have == want || have == 1, op, "cannot broadcast ", shape_str(x.shape()),
                " to ", shape_str(shape));
    s[i] = want;
    st[i] = have == want ? x.stride(i - lead) : 0;
  }
  if (s == x.shape()) return x;
  checked_numel(s, op);  // a view, but numel() and every kernel over it must not overflow
  Shape orig = x.shape();
  return finish_view("expand", x, make_view(x, s, st, x.offset()),
                     [orig](const Grads& g, const Grads&, const Needs&) { return Grads{detail::sum_to(g[0], orig)}; });
}

}  // namespace

Tensor expand(const Tensor& x, const Shape& shape) {
  detail::OpScope scope(OpId::expand, [&] { return Attrs{{"shape", shape}}; }, x);
  return scope.done(expand_impl("expand", x, shape));
}
Tensor unfold(const Tensor& x, int64_t dim, int64_t size, int64_t step) {
  detail::OpScope scope(OpId::unfold, [&] { return Attrs{{"dim", dim}, {"size", size}, {"step", step}}; }, x);
  detail::check_defined("unfold", {x});
  EMBER_CHECK(x.dim() > 0, "unfold", "cannot unfold a 0-d tensor");
  dim = wrap_dim(dim, x.dim(), "unfold");
  EMBER_CHECK(size > 0 && step > 0, "unfold", "size and step must be positive, got size ", size,
              " and step ", step);
  EMBER_CHECK(size <= x.size(dim), "unfold", "window of ", size, " is longer than dim ", dim,
              " of shape ", shape_str(x.shape()));
  const int64_t windows = (x.size(dim) - size) / step + 1;
  Shape s = x.shape(), st = x.strides();
  s[dim] = windows;
  if (windows > 1) st[dim] = checked_mul(x.stride(dim), step, "unfold");
  s.push_back(size);
  st.push_back(x.stride(dim));
  return scope.done(finish_view("unfold", x, make_view(x, s, st, x.offset()),
                     [orig = x.shape(), dt = x.dtype(), dev = x.device(), dim, size, step, windows](
                         const Grads& g, const Grads&, const Needs&) {
                       // Windows overlap when step < size: add each window position back.
                       Tensor r = zeros(orig, TensorOptions(dt).with_device(dev));
                       for (int64_t j = 0; j < size; ++j)
                         slice(r, dim, j, j + step * (windows - 1) + 1, step).add_(g[0].select(-1, j));
                       return Grads{r};
                     }));
}

Tensor broadcast_to(const Tensor& x, const Shape& shape) {
  detail::OpScope scope(OpId::broadcast_to, [&] { return Attrs{{"shape", shape}}; }, x);
  return scope.done(expand_impl("broadcast_to", x, shape));
}

Tensor squeeze(const Tensor& x, std::optional<int64_t> dim) {
  detail::OpScope scope(OpId::squeeze, [&] { return Attrs{{"dim", dim}}; }, x);
  detail::check_defined("squeeze", {x});
  Shape s;
  if (dim) {
    int64_t d = wrap_dim(*dim, x.dim(), "squeeze");
    s = x.shape();
    if (x.dim() > 0 && s[d] == 1) s.erase(s.begin() + d);
  } else {
    for (auto v : x.shape())
      if (v != 1) s.push_back(v);
  }
  return scope.done(view(x, s));
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  detail::OpScope scope(OpId::unsqueeze, [&] { return Attrs{{"dim", dim}}; }, x);
  detail::check_defined("unsqueeze", {x});
  dim = wrap_dim(dim, x.dim() + 1, "unsqueeze");
  Shape s = x.shape(), st = x.strides();
  const int64_t inner = dim < x.dim() ? x.stride(dim) * x.size(dim) : 1;
  s.insert(s.begin() + dim, 1);
  st.insert(st.begin() + dim, inner);
  Shape orig = x.shape();
  return scope.done(finish_view("unsqueeze", x, make_view(x, s, st, x.offset()),
                     [orig](const Grads& g, const Grads&, const Needs&) { return Grads{reshape(g[0], orig)}; }));
}

}  // namespace ember
