// Joining and splitting (cat, stack, split, chunk), constant padding, and dropout.
#include "ops/dispatch.h"
#include "ops/common.h"
#include "ops/op_call.h"

namespace ember {
namespace {
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;
}  // namespace

Tensor cat(const std::vector<Tensor>& xs_given, int64_t dim) {
  detail::OpScope scope(OpId::cat, [&] { return Attrs{{"dim", dim}}; }, xs_given);
  const std::vector<Tensor>& xs = scope.in_all(xs_given);
  EMBER_CHECK(!xs.empty(), "cat", "needs at least one tensor");
  detail::check_same_device("cat", xs);
  const Tensor& first = xs[0];
  EMBER_CHECK(first.dim() > 0, "cat", "cannot concatenate 0-D tensors (use stack)");
  dim = wrap_dim(dim, first.dim(), "cat");
  DType dt = first.dtype();
  int64_t total = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& t = xs[i];
    EMBER_CHECK(t.dim() == first.dim(), "cat", "tensor ", i, " has shape ", shape_str(t.shape()),
                ", tensor 0 has shape ", shape_str(first.shape()), " (dims differ)");
    for (int64_t d = 0; d < t.dim(); ++d)
      EMBER_CHECK(d == dim || t.size(d) == first.size(d), "cat", "tensor ", i, " has shape ",
                  shape_str(t.shape()), ", tensor 0 has shape ", shape_str(first.shape()),
                  "; sizes must match except in dim ", dim);
    total = checked_add(total, t.size(dim), "cat");  // expanded inputs can be huge
    dt = promote_types(dt, t.dtype());
  }
  Shape s = first.shape();
  s[dim] = total;
  Tensor out = detail::make_tensor(s, dt, first.device(), "cat");
  std::vector<int64_t> sizes;
  int64_t at = 0;
  for (const auto& t : xs) {
    backend::copy(t, detail::make_view(out, [&] { Shape v = s; v[dim] = t.size(dim); return v; }(),
                                   out.strides(), at * out.stride(dim)));
    sizes.push_back(t.size(dim));
    at += t.size(dim);
  }
  std::vector<DType> dts;
  for (const auto& t : xs) dts.push_back(t.dtype());
  record("cat", xs, {out}, [sizes, dim, dts](const Grads& g, const Grads&, const Needs& n) {
    Grads r;
    int64_t off = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      r.push_back(n[i] ? to_dtype(g[0].narrow(dim, off, sizes[i]), dts[i]) : Tensor());
      off += sizes[i];
    }
    return r;
  });
  return scope.done(out);
}

Tensor stack(const std::vector<Tensor>& xs_given, int64_t dim) {
  detail::OpScope scope(OpId::stack, [&] { return Attrs{{"dim", dim}}; }, xs_given);
  const std::vector<Tensor>& xs = scope.in_all(xs_given);
  EMBER_CHECK(!xs.empty(), "stack", "needs at least one tensor");
  dim = wrap_dim(dim, xs[0].dim() + 1, "stack");
  std::vector<Tensor> u;
  for (size_t i = 0; i < xs.size(); ++i) {
    EMBER_CHECK(xs[i].defined() && xs[i].shape() == xs[0].shape(), "stack", "tensor ", i, " has shape ",
                xs[i].defined() ? shape_str(xs[i].shape()) : "undefined", ", tensor 0 has shape ",
                shape_str(xs[0].shape()), "; all must match");
    u.push_back(xs[i].unsqueeze(dim));
  }
  return scope.done(cat(u, dim));
}

std::vector<Tensor> split_sizes(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  detail::OpScope scope(OpId::split_sizes, [&] { return Attrs{{"sizes", sizes}, {"dim", dim}}; }, x);
  detail::check_defined("split_sizes", {x});
  dim = wrap_dim(dim, x.dim(), "split_sizes");
  int64_t total = 0;
  for (auto s : sizes) {
    EMBER_CHECK(s >= 0, "split_sizes", "negative split size ", s);
    EMBER_CHECK(!__builtin_add_overflow(total, s, &total), "split_sizes", "split sizes ", shape_str(sizes),
                " sum to more than int64 holds (dim ", dim, " of shape ", shape_str(x.shape()), ")");
  }
  EMBER_CHECK(total == x.size(dim), "split_sizes", "sizes sum to ", total, " but dim ", dim, " of shape ",
              shape_str(x.shape()), " has ", x.size(dim));
  // The pieces are views of x made by one node, whose backward is one cat of their gradients
  // (a piece nobody used gets zeros from the engine). Separate narrow views would each build a
  // zero tensor of x's full shape and the engine would then sum them: for the Q/K/V split of an
  // attention projection that is three full-size fills and two full-size adds per step.
  std::vector<Tensor> r;
  int64_t at = 0;
  for (auto s : sizes) {
    Shape shape = x.shape();
    shape[dim] = s;
    Tensor v = detail::make_view(x, shape, x.strides(), x.offset() + at * x.stride(dim));
    detail::mark_view(x, v);
    r.push_back(v);
    at += s;
  }
  record("split", {x}, r, [dim](const Grads& g, const Grads&, const Needs&) { return Grads{cat(g, dim)}; });
  return scope.done(r);
}

std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim) {
  detail::OpScope scope(OpId::split, [&] { return Attrs{{"split_size", split_size}, {"dim", dim}}; }, x);
  detail::check_defined("split", {x});
  EMBER_CHECK(split_size > 0, "split", "split_size must be positive, got ", split_size);
  dim = wrap_dim(dim, x.dim(), "split");
  std::vector<int64_t> sizes;
  const int64_t n = x.size(dim);
  for (int64_t at = 0; at < n; at += sizes.back()) sizes.push_back(std::min(split_size, n - at));  // no at + split_size
  return scope.done(split_sizes(x, sizes, dim));
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  detail::OpScope scope(OpId::chunk, [&] { return Attrs{{"chunks", chunks}, {"dim", dim}}; }, x);
  detail::check_defined("chunk", {x});
  EMBER_CHECK(chunks > 0, "chunk", "chunks must be positive, got ", chunks);
  dim = wrap_dim(dim, x.dim(), "chunk");
  const int64_t n = x.size(dim);
  // ceil, without n + chunks (which could overflow)
  return scope.done(split(x, std::max<int64_t>(n / chunks + (n % chunks != 0 ? 1 : 0), 1), dim));
}

Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, double value) {
  detail::OpScope scope(OpId::pad, [&] { return Attrs{{"pads", pads}, {"value", value}}; }, x);
  detail::check_defined("pad", {x});
  EMBER_CHECK(pads.size() % 2 == 0 && static_cast<int64_t>(pads.size()) / 2 <= x.dim(), "pad",
              "pads must hold (lo, hi) pairs for at most ", x.dim(), " dims, got ", pads.size(),
              " values for shape ", shape_str(x.shape()));
  Shape s = x.shape();
  for (size_t i = 0; i < pads.size(); ++i) {
    EMBER_CHECK(pads[i] >= 0, "pad", "negative padding ", pads[i], " is not supported");
    int64_t& d = s[x.dim() - 1 - static_cast<int64_t>(i / 2)];
    EMBER_CHECK(!__builtin_add_overflow(d, pads[i], &d), "pad", "pads ", shape_str(pads), " on shape ",
                shape_str(x.shape()), " give a dim longer than int64 holds");
  }
  detail::check_allocatable(s, x.dtype(), x.device(), "pad");
  Tensor out = full(s, value, TensorOptions(x.dtype()).with_device(x.device()));
  Tensor inner = out;
  for (size_t p = 0; p < pads.size() / 2; ++p) {
    const int64_t d = x.dim() - 1 - static_cast<int64_t>(p);
    inner = inner.narrow(d, pads[2 * p], x.size(d));
  }
  backend::copy(x, inner);
  record("pad", {x}, {out}, [pads, shape = x.shape()](const Grads& g, const Grads&, const Needs&) {
    Tensor r = g[0];
    for (size_t p = 0; p < pads.size() / 2; ++p) {
      const int64_t d = static_cast<int64_t>(shape.size()) - 1 - static_cast<int64_t>(p);
      r = r.narrow(d, pads[2 * p], shape[d]);
    }
    return Grads{contiguous(r)};
  });
  return scope.done(out);
}

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  detail::OpScope scope(OpId::dropout, [&] { return Attrs{{"p", p}, {"training", training}}; }, x);
  detail::check_defined("dropout", {x});
  EMBER_CHECK(p >= 0 && p <= 1, "dropout", "probability ", p, " outside [0, 1]");
  EMBER_CHECK(is_floating(x.dtype()), "dropout", "needs a float tensor, got ", detail::describe(x));
  if (!training || p == 0) return scope.done(x);
  if (p == 1) return scope.done(mul(x, zeros_like(x)));
  Tensor keep = bernoulli(x.shape(), 1.0 - p, TensorOptions(x.dtype()).with_device(x.device()), gen);
  const Tensor factor = scalar_tensor(1.0 / (1.0 - p), TensorOptions(x.dtype()).with_device(x.device()));
  return scope.done(mul(x, mul(keep, factor)));
}

}  // namespace ember
