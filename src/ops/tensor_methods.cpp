// Tensor methods that run ops (declared in ember/core/tensor.h): element access, in-place ops
// with their autograd bookkeeping, the method and operator sugar, printing.
#include <cmath>
#include <iomanip>
#include <sstream>

#include "ember/autograd/grad_mode.h"
#include "ember/autograd/node.h"
#include "ember/core/tensor.h"
#include "ember/ops/ops.h"
#include "ops/dispatch.h"

namespace ember {

template <class T>
T Tensor::item() const {
  EMBER_CHECK(numel() == 1, "item", "item() needs a tensor with one element, got shape ",
              shape_str(shape()));
  return to_vector<T>()[0];
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  if (!device().is_cpu()) check_deferred_errors();  // a host read synchronises anyway
  Tensor c = ember::contiguous(to_dtype(to_device(*this, Device::cpu()), dtype_of<T>::value));
  const T* p = c.data<T>();
  return std::vector<T>(p, p + c.numel());
}

#define EMBER_INSTANTIATE_ACCESS(T) \
  template T Tensor::item<T>() const; \
  template std::vector<T> Tensor::to_vector<T>() const;
EMBER_INSTANTIATE_ACCESS(float)
EMBER_INSTANTIATE_ACCESS(double)
EMBER_INSTANTIATE_ACCESS(int32_t)
EMBER_INSTANTIATE_ACCESS(int64_t)
EMBER_INSTANTIATE_ACCESS(bool)
#undef EMBER_INSTANTIATE_ACCESS

// --- in-place ops ----------------------------------------------------------------------------
namespace {

// Writes `value` (already computed, same shape) into self's memory and, when autograd is
// involved, makes self's history the history of `value`.
void commit_inplace(Tensor& self, const Tensor& value, const char* op) {
  backend::copy(value, self);
  self.impl().storage->bump_version();
  if (value.requires_grad()) {
    auto& meta = self.impl().autograd;
    meta.requires_grad = true;
    meta.grad_fn = value.impl().autograd.grad_fn;
    meta.output_nr = value.impl().autograd.output_nr;
  }
  (void)op;
}

void check_inplace(const Tensor& self, bool other_requires_grad, const char* op) {
  if (!grad_enabled()) return;
  const auto& meta = self.impl().autograd;
  EMBER_CHECK(!(meta.requires_grad && self.is_leaf()), op,
              "a leaf tensor that requires grad (", self.str(),
              ") cannot be modified in place while recording a graph; update parameters under "
              "NoGradGuard");
  EMBER_CHECK(!(meta.is_view && (meta.requires_grad || other_requires_grad)), op,
              "in-place modification of a view of a tensor that requires grad is not supported (",
              self.str(), "); use the out-of-place op");
  EMBER_CHECK(!(other_requires_grad && !is_floating(self.dtype())), op,
              "cannot write a gradient-carrying value into a ", self.dtype(), " tensor in place");
}

// An alias of self that carries self's history, so the out-of-place op records its graph
// edge to whatever produced self.
Tensor history_alias(const Tensor& self) {
  auto impl = std::make_shared<TensorImpl>(self.impl());
  return Tensor(impl);
}

}  // namespace

Tensor& Tensor::zero_() { return fill_(0.0); }

Tensor& Tensor::fill_(double v) {
  check_inplace(*this, false, "fill_");
  backend::call<prim::fill>(device(), *this, v);
  impl().storage->bump_version();
  if (grad_enabled() && requires_grad()) {
    // The filled values no longer depend on anything: cut the history.
    impl().autograd.grad_fn = nullptr;
    impl().autograd.requires_grad = false;
  }
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace(*this, src.requires_grad(), "copy_");
  EMBER_CHECK(src.defined(), "copy_", "the source is an undefined tensor (destination ", str(), ")");
  // The source may live on another device: without autograd the backend's copy crosses
  // devices itself (staging strided or converting copies); with autograd, to_device records
  // the move so the gradient flows back to the source's device.
  Tensor s;
  if (grad_enabled() && src.requires_grad())
    s = to_dtype(ember::expand(to_device(src, device()), shape()), dtype()).contiguous();
  else
    s = ember::expand(src.detach(), shape());
  commit_inplace(*this, s, "copy_");
  return *this;
}

namespace {
// Without autograd, same dtype and a broadcastable operand: run the kernel straight into
// self's memory (the optimizer's hot path). Returns false when the general path is needed.
bool inplace_direct(Tensor& self, BinaryOp op, const Tensor& o, double alpha) {
  if (grad_enabled() && (self.requires_grad() || o.requires_grad())) return false;
  if (self.dtype() != o.dtype() || backend::compute_dtype_on(self.dtype(), self.device()) != self.dtype() ||
      self.dtype() == DType::boolean || self.device() != o.device() ||
      self.impl().storage == o.impl().storage)  // overlapping operands take the copying path
    return false;
  if (broadcast_shapes(self.shape(), o.shape(), op == BinaryOp::add ? "add_" : "mul_") != self.shape())
    return false;
  backend::call<prim::binary>(self.device(), op, self, ember::expand(o.detach(), self.shape()), self, alpha);
  self.impl().storage->bump_version();
  return true;
}
}  // namespace

Tensor& Tensor::add_(const Tensor& o, double alpha) {
  check_inplace(*this, o.requires_grad(), "add_");
  if (inplace_direct(*this, BinaryOp::add, o, alpha)) return *this;
  Tensor r = add(grad_enabled() ? history_alias(*this) : detach(), o, alpha);
  EMBER_CHECK(r.shape() == shape(), "add_", "result of shape ", shape_str(r.shape()),
              " cannot be written into a tensor of shape ", shape_str(shape()));
  commit_inplace(*this, r, "add_");
  return *this;
}

Tensor& Tensor::mul_(const Tensor& o) {
  check_inplace(*this, o.requires_grad(), "mul_");
  if (inplace_direct(*this, BinaryOp::mul, o, 1.0)) return *this;
  Tensor r = mul(grad_enabled() ? history_alias(*this) : detach(), o);
  EMBER_CHECK(r.shape() == shape(), "mul_", "result of shape ", shape_str(r.shape()),
              " cannot be written into a tensor of shape ", shape_str(shape()));
  commit_inplace(*this, r, "mul_");
  return *this;
}

Tensor& Tensor::mul_(double s) { return mul_(scalar_tensor(s, TensorOptions(dtype()).with_device(device()))); }

// --- method sugar ----------------------------------------------------------------------------
Tensor Tensor::view(const Shape& s) const { return ember::view(*this, s); }
Tensor Tensor::reshape(const Shape& s) const { return ember::reshape(*this, s); }
Tensor Tensor::permute(const Shape& d) const { return ember::permute(*this, d); }
Tensor Tensor::transpose(int64_t a, int64_t b) const { return ember::transpose(*this, a, b); }
Tensor Tensor::t() const {
  EMBER_CHECK(dim() == 2, "t", "expects a 2-D tensor, got shape ", shape_str(shape()));
  return ember::transpose(*this, 0, 1);
}
Tensor Tensor::narrow(int64_t d, int64_t s, int64_t l) const { return ember::narrow(*this, d, s, l); }
Tensor Tensor::select(int64_t d, int64_t i) const { return ember::select(*this, d, i); }
Tensor Tensor::expand(const Shape& s) const { return ember::expand(*this, s); }
Tensor Tensor::squeeze(std::optional<int64_t> d) const { return ember::squeeze(*this, d); }
Tensor Tensor::unsqueeze(int64_t d) const { return ember::unsqueeze(*this, d); }
Tensor Tensor::flatten(int64_t s, int64_t e) const { return ember::flatten(*this, s, e); }
Tensor Tensor::contiguous() const { return ember::contiguous(*this); }
Tensor Tensor::clone() const { return ember::clone(*this); }
Tensor Tensor::to(DType t) const { return to_dtype(*this, t); }
Tensor Tensor::to(Device d) const { return to_device(*this, d); }
Tensor Tensor::sum() const { return ember::sum(*this); }
Tensor Tensor::mean() const { return ember::mean(*this); }

namespace {
Tensor scalar_like(double v, const Tensor& t) {
  // A Python-like scalar: keeps float tensors' dtype; integers stay integers when v is whole.
  DType dt = t.dtype();
  if (!is_floating(dt) && v != std::floor(v)) dt = DType::f32;
  if (dt == DType::boolean) dt = DType::i64;
  return scalar_tensor(v, TensorOptions(dt).with_device(t.device()));
}
}  // namespace

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& a) { return neg(a); }
Tensor operator+(const Tensor& a, double b) { return add(a, scalar_like(b, a)); }
Tensor operator-(const Tensor& a, double b) { return sub(a, scalar_like(b, a)); }
Tensor operator*(const Tensor& a, double b) { return mul(a, scalar_like(b, a)); }
Tensor operator/(const Tensor& a, double b) { return div(a, scalar_like(b, a)); }
Tensor operator+(double a, const Tensor& b) { return add(scalar_like(a, b), b); }
Tensor operator-(double a, const Tensor& b) { return sub(scalar_like(a, b), b); }
Tensor operator*(double a, const Tensor& b) { return mul(scalar_like(a, b), b); }
Tensor operator/(double a, const Tensor& b) { return div(scalar_like(a, b), b); }

// --- printing --------------------------------------------------------------------------------
std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "Tensor(undefined)";
  constexpr int64_t kMaxShown = 6;  // per dim: first 3 and last 3
  Tensor c = to_dtype(to_device(t.detach(), Device::cpu()), is_floating(t.dtype()) ? DType::f64 : DType::i64).contiguous();
  const bool fl = is_floating(t.dtype());
  std::function<void(int64_t, int64_t, int)> rec = [&](int64_t d, int64_t off, int indent) {
    if (d == t.dim()) {
      if (fl) os << std::setprecision(6) << static_cast<const double*>(c.data_ptr())[off];
      else if (t.dtype() == DType::boolean) os << (static_cast<const int64_t*>(c.data_ptr())[off] ? "true" : "false");
      else os << static_cast<const int64_t*>(c.data_ptr())[off];
      return;
    }
    const int64_t n = t.size(d), st = c.stride(d);
    os << "[";
    for (int64_t i = 0; i < n; ++i) {
      if (n > kMaxShown && i == kMaxShown / 2) {
        os << "...";
        i = n - kMaxShown / 2 - 1;
        os << (d + 1 == t.dim() ? ", " : ",\n" + std::string(indent + 1, ' '));
        continue;
      }
      rec(d + 1, off + i * st, indent + 1);
      if (i + 1 < n) os << (d + 1 == t.dim() ? ", " : ",\n" + std::string(indent + 1, ' '));
    }
    os << "]";
  };
  os << "tensor(";
  rec(0, 0, 7);
  os << ", shape=" << shape_str(t.shape()) << ", dtype=" << t.dtype();
  if (!t.device().is_cpu()) os << ", device=" << t.device();
  if (t.requires_grad()) os << ", requires_grad";
  return os << ")";
}

}  // namespace ember
