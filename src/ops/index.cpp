// Indexing ops: gather/scatter_add, index_select/index_add, embedding, one_hot. Indices are
// checked against their dim before any memory is touched.
#include "ops/dispatch.h"
#include "ops/common.h"
#include "ops/op_call.h"

namespace ember {
namespace {
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;
using detail::make_tensor;

// Checks an index tensor's dtype and range; returns it as contiguous i64.
Tensor checked_index(const char* op, const Tensor& index, int64_t limit, const Tensor& x, int64_t dim) {
  EMBER_CHECK(index.dtype() == DType::i64 || index.dtype() == DType::i32, op,
              "index must be i64 or i32, got ", detail::describe(index));
  Tensor idx = contiguous(to_dtype(index.detach(), DType::i64));
  // On a device the check is deferred like the losses' target checks (no device-to-host copy in
  // the op: a stall per call on a GPU, and impossible inside a graph capture): reported at the
  // next host read or check_deferred_errors(); bad entries read row 0 meanwhile.
  if (!idx.device().is_cpu())
    return detail::checked_indices(op, idx, limit, std::nullopt, 0,
                                   ember::detail::cat("index out of range [0, ", limit, ") for dim ", dim,
                                                      " of a tensor of shape ", shape_str(x.shape())));
  // On the CPU the bounds are checked now.
  Tensor host = to_device(idx, Device::cpu());
  const int64_t* p = host.data<int64_t>();
  for (int64_t i = 0; i < host.numel(); ++i)
    EMBER_CHECK(p[i] >= 0 && p[i] < limit, op, "index ", p[i], " out of range [0, ", limit, ") for dim ",
                dim, " of a tensor of shape ", shape_str(x.shape()));
  return idx;
}

void check_like_dims(const char* op, const Tensor& index, const Tensor& x, int64_t dim, const Tensor* src) {
  EMBER_CHECK(index.dim() == x.dim(), op, "index has ", index.dim(), " dims, input has ", x.dim(),
              " (index ", shape_str(index.shape()), ", input ", shape_str(x.shape()), ")");
  if (src)
    EMBER_CHECK(src->dim() == index.dim(), op, "src has ", src->dim(), " dims, index has ", index.dim(),
                " (src ", shape_str(src->shape()), ", index ", shape_str(index.shape()), ")");
  for (int64_t d = 0; d < x.dim(); ++d) {
    EMBER_CHECK(d == dim || index.size(d) <= x.size(d), op, "index of shape ", shape_str(index.shape()),
                " is larger than the input of shape ", shape_str(x.shape()), " in dim ", d);
    if (src)
      EMBER_CHECK(index.size(d) <= src->size(d), op, "index of shape ", shape_str(index.shape()),
                  " is larger than src of shape ", shape_str(src->shape()), " in dim ", d);
  }
}
}  // namespace

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  detail::OpScope scope(OpId::gather, [&] { return Attrs{{"dim", dim}}; }, x, index);
  detail::check_same_device("gather", {x, index});
  dim = wrap_dim(dim, x.dim(), "gather");
  check_like_dims("gather", index, x, dim, nullptr);
  Tensor idx = checked_index("gather", index, x.dim() ? x.size(dim) : 1, x, dim);
  const DType cd = backend::compute_dtype_on(x.dtype(), x.device());
  Tensor xc = to_dtype(x.detach(), cd);
  Tensor out = make_tensor(idx.shape(), cd, x.device());
  backend::call<prim::gather>(out.device(), xc, dim, idx, out);
  if (cd != x.dtype()) out = to_dtype(out, x.dtype());
  record(
      "gather", {x}, {out},
      [shape = x.shape(), dt = x.dtype(), dim](const Grads& g, const Grads& s, const Needs&) {
        return Grads{scatter_add(zeros(shape, detail::on_device_of(g[0], dt)), dim, s[0], g[0])};
      },
      {idx});
  return scope.done(out);
}

Tensor scatter_add(const Tensor& self_in, int64_t dim, const Tensor& index_in, const Tensor& src_in) {
  detail::OpScope scope(OpId::scatter_add, [&] { return Attrs{{"dim", dim}}; }, self_in, index_in, src_in);
  const Tensor& self = scope.in(0, self_in);
  const Tensor& index = scope.in(1, index_in);
  const Tensor& src = scope.in(2, src_in);
  detail::check_same_device("scatter_add", {self, index, src});
  dim = wrap_dim(dim, self.dim(), "scatter_add");
  EMBER_CHECK(self.dtype() == src.dtype(), "scatter_add", "self and src dtypes differ: ",
              detail::describe(self), " vs ", detail::describe(src));
  check_like_dims("scatter_add", index, self, dim, &src);
  Tensor idx = checked_index("scatter_add", index, self.dim() ? self.size(dim) : 1, self, dim);
  const DType cd = backend::compute_dtype_on(self.dtype(), self.device());
  Tensor out = contiguous(clone(to_dtype(self.detach(), cd)));
  // src restricted to index's extent, contiguous, so position i of idx matches position i of src.
  Tensor s = to_dtype(src.detach(), cd);
  for (int64_t d = 0; d < s.dim(); ++d) s = s.narrow(d, 0, idx.size(d));
  s = contiguous(s);
  backend::call<prim::scatter_add>(out.device(), out, dim, idx, s);
  if (cd != self.dtype()) out = to_dtype(out, self.dtype());
  record(
      "scatter_add", {self, src}, {out},
      [src_shape = src.shape(), dim](const Grads& g, const Grads& sv, const Needs& n) {
        Tensor gs;
        if (n[1]) {
          Tensor part = gather(g[0], dim, sv[0]);
          gs = zeros(src_shape, detail::on_device_of(g[0], g[0].dtype()));
          Tensor region = gs;
          for (int64_t d = 0; d < region.dim(); ++d) region = region.narrow(d, 0, part.size(d));
          region.copy_(part);
        }
        return Grads{n[0] ? g[0] : Tensor(), gs};
      },
      {idx});
  return scope.done(out);
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  detail::OpScope scope(OpId::index_select, [&] { return Attrs{{"dim", dim}}; }, x, index);
  detail::check_same_device("index_select", {x, index});
  EMBER_CHECK(x.dim() >= 1, "index_select", "needs a tensor of at least 1 dim, got shape ",
              shape_str(x.shape()));
  dim = wrap_dim(dim, x.dim(), "index_select");
  EMBER_CHECK(index.dim() <= 1, "index_select", "index must be 0-D or 1-D, got shape ",
              shape_str(index.shape()));
  Tensor idx = checked_index("index_select", index, x.size(dim), x, dim).reshape({-1});
  Tensor xc = contiguous(x.detach());
  Shape s = x.shape();
  s[dim] = idx.numel();
  Tensor out = make_tensor(s, x.dtype(), x.device(), "index_select");
  backend::call<prim::index_select>(out.device(), xc, dim, idx, out);
  record(
      "index_select", {x}, {out},
      [shape = x.shape(), dt = x.dtype(), dim](const Grads& g, const Grads& sv, const Needs&) {
        return Grads{index_add(zeros(shape, detail::on_device_of(g[0], dt)), dim, sv[0], g[0])};
      },
      {idx});
  return scope.done(out);
}

Tensor index_add(const Tensor& self_in, int64_t dim, const Tensor& index_in, const Tensor& source_in, double alpha) {
  detail::OpScope scope(OpId::index_add,
                        [&] { return Attrs{{"dim", dim}, {"alpha", alpha}}; },
                        self_in, index_in, source_in);
  const Tensor& self = scope.in(0, self_in);
  const Tensor& index = scope.in(1, index_in);
  const Tensor& source = scope.in(2, source_in);
  detail::check_same_device("index_add", {self, index, source});
  EMBER_CHECK(self.dim() >= 1, "index_add", "needs a tensor of at least 1 dim, got shape ",
              shape_str(self.shape()));
  dim = wrap_dim(dim, self.dim(), "index_add");
  EMBER_CHECK(self.dtype() == source.dtype(), "index_add", "self and source dtypes differ: ",
              detail::describe(self), " vs ", detail::describe(source));
  EMBER_CHECK(index.dim() <= 1, "index_add", "index must be 0-D or 1-D, got shape ", shape_str(index.shape()));
  Tensor idx = checked_index("index_add", index, self.size(dim), self, dim).reshape({-1});
  Shape want = self.shape();
  want[dim] = idx.numel();
  EMBER_CHECK(source.shape() == want, "index_add", "source of shape ", shape_str(source.shape()),
              " does not match ", shape_str(want), " (self ", shape_str(self.shape()), " with ",
              idx.numel(), " indices in dim ", dim, ")");
  const DType cd = backend::compute_dtype_on(self.dtype(), self.device());
  Tensor out = clone(to_dtype(self.detach(), cd));
  backend::call<prim::index_add>(out.device(), out, dim, idx, contiguous(to_dtype(source.detach(), cd)), alpha);
  if (cd != self.dtype()) out = to_dtype(out, self.dtype());
  record(
      "index_add", {self, source}, {out},
      [dim, alpha](const Grads& g, const Grads& sv, const Needs& n) {
        Tensor gs;
        if (n[1]) {
          gs = index_select(g[0], dim, sv[0]);
          if (alpha != 1.0) gs = mul(gs, scalar_tensor(alpha, TensorOptions(gs.dtype()).with_device(gs.device())));
        }
        return Grads{n[0] ? g[0] : Tensor(), gs};
      },
      {idx});
  return scope.done(out);
}

Tensor embedding(const Tensor& weight, const Tensor& indices) {
  detail::OpScope scope(OpId::embedding, weight, indices);
  detail::check_same_device("embedding", {weight, indices});
  EMBER_CHECK(weight.dim() == 2, "embedding", "weight must be 2-D (num_embeddings, dim), got shape ",
              shape_str(weight.shape()));
  EMBER_CHECK(indices.dtype() == DType::i64 || indices.dtype() == DType::i32, "embedding",
              "indices must be i64 or i32, got ", detail::describe(indices));
  Tensor idx = checked_index("embedding", indices, weight.size(0), weight, 0);
  Tensor rows = index_select(weight, 0, reshape(idx, {-1}));
  Shape s = indices.shape();
  s.push_back(weight.size(1));
  return scope.done(reshape(rows, s));
}

Tensor one_hot(const Tensor& indices, int64_t num_classes) {
  detail::OpScope scope(OpId::one_hot, [&] { return Attrs{{"num_classes", num_classes}}; }, indices);
  detail::check_defined("one_hot", {indices});
  EMBER_CHECK(num_classes > 0, "one_hot", "num_classes must be positive, got ", num_classes);
  Tensor idx = checked_index("one_hot", indices, num_classes, indices, 0);
  Shape s = indices.shape();
  s.push_back(num_classes);
  Tensor out = make_tensor(s, DType::i64, indices.device(), "one_hot");
  backend::call<prim::one_hot>(out.device(), idx, out, num_classes);
  return scope.done(out);
}

}  // namespace ember
