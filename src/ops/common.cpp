#include "ops/common.h"

#include <algorithm>

#include "ops/dispatch.h"

namespace ember::detail {

size_t check_allocatable(const Shape& shape, DType dtype, Device device, const char* op) {
  const size_t nbytes = checked_nbytes(shape, dtype_size(dtype), op);
  EMBER_CHECK(nbytes <= kMaxStorageBytes, op, "a ", dtype_name(dtype), " tensor of shape ", shape_str(shape), " on ",
              device.str(), " needs ", nbytes, " bytes, more than the ", kMaxStorageBytes,
              "-byte (64 TiB) limit on one allocation");
  return nbytes;
}

Tensor make_tensor(const Shape& shape, DType dtype, Device device, const char* op) {
  const size_t nbytes = check_allocatable(shape, dtype, device, op);
  Shape strides = contiguous_strides(shape, op);  // before allocating: it may throw
  if (device.is_cuda()) backend::load_backends();  // registers the CUDA allocator, once
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(nbytes, device);
  impl->shape = shape;
  impl->strides = std::move(strides);
  impl->dtype = dtype;
  return Tensor(impl);
}

Tensor make_view(const Tensor& x, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = x.impl().storage;
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = x.dtype();
  return Tensor(impl);
}

std::string describe(const Tensor& t) {
  return shape_str(t.shape()) + " " + dtype_name(t.dtype()) + " " + t.device().str();
}

void check_defined(const char* op, const std::vector<Tensor>& ts) {
  for (size_t i = 0; i < ts.size(); ++i)
    EMBER_CHECK(ts[i].defined(), op, "argument ", i, " is an undefined tensor");
}

Tensor scalar_to_device(const Tensor& s, const Tensor& other) {
  if (s.dim() == 0 && s.device().is_cpu() && !other.device().is_cpu()) return to_device(s, other.device());
  return s;
}

void check_same_device(const char* op, const std::vector<Tensor>& ts) {
  check_defined(op, ts);
  for (const auto& t : ts)
    if (t.device() != ts[0].device()) {
      std::string all;
      for (const auto& u : ts) all += (all.empty() ? "" : ", ") + describe(u);
      EMBER_FAIL(op, "expected all tensors on one device, got ", all);
    }
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  const int64_t lead = g.dim() - static_cast<int64_t>(shape.size());
  Shape dims;
  for (int64_t i = 0; i < g.dim(); ++i)
    if (i < lead || (shape[i - lead] == 1 && g.size(i) != 1)) dims.push_back(i);
  Tensor r = dims.empty() ? g : sum(g, dims, true);
  return reshape(r, shape);
}

void mark_view(const Tensor& base, const Tensor& view) {
  if (base.requires_grad()) view.impl().autograd.is_view = true;
}

std::vector<int64_t> reduction_dims(const Shape& dims, int64_t ndim, const char* op) {
  std::vector<int64_t> r;
  if (dims.empty()) {
    for (int64_t i = 0; i < ndim; ++i) r.push_back(i);
    return r;
  }
  for (auto d : dims) r.push_back(wrap_dim(d, ndim, op));
  std::sort(r.begin(), r.end());
  EMBER_CHECK(std::adjacent_find(r.begin(), r.end()) == r.end(), op, "dim repeated in ",
              shape_str(dims));
  if (ndim == 0) r.clear();
  return r;
}

Shape reduced_shape(const Shape& s, const std::vector<int64_t>& dims, bool keepdim) {
  Shape r;
  for (int64_t i = 0; i < static_cast<int64_t>(s.size()); ++i) {
    bool red = std::find(dims.begin(), dims.end(), i) != dims.end();
    if (!red) r.push_back(s[i]);
    else if (keepdim) r.push_back(1);
  }
  return r;
}

}  // namespace ember::detail
