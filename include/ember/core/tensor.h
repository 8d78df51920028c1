// Tensor: a cheap-to-copy handle onto a TensorImpl (storage + shape + strides + offset +
// dtype + autograd metadata). Copies of a Tensor share everything; views share storage.
//
// Ops live as free functions in ember/ops/ops.h; the methods below are sugar for them.
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ember/core/device.h"
#include "ember/core/dtype.h"
#include "ember/core/error.h"
#include "ember/core/shape.h"
#include "ember/core/storage.h"

namespace ember {

class Node;
class Tensor;
struct TensorImpl;

// A hook sees the gradient flowing into a tensor and may return a replacement
// (an undefined Tensor keeps the original).
using GradHook = std::function<Tensor(const Tensor&)>;
// Called once a leaf's .grad is final for the current backward pass.
using GradReadyHook = std::function<void(Tensor& leaf)>;

struct AutogradMeta {
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;   // accumulated gradient of a leaf (or retained)
  std::shared_ptr<Node> grad_fn;      // null for leaves
  uint32_t output_nr = 0;             // which output of grad_fn this tensor is
  std::weak_ptr<Node> grad_accumulator;  // leaves: the AccumulateGrad node, made on demand
  std::vector<GradHook> hooks;        // leaves only; non-leaf hooks live on grad_fn
  std::vector<GradReadyHook> ready_hooks;
  bool is_view = false;               // a view of a tensor that requires grad
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::f32;
  AutogradMeta autograd;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // --- metadata ---------------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t size(int64_t d) const;
  int64_t stride(int64_t d) const;
  int64_t numel() const { return numel_of(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  bool is_contiguous() const;
  size_t element_size() const { return dtype_size(dtype()); }
  std::string str() const;  // "Tensor(shape=(2, 3), dtype=f32, device=cpu)"

  // Pointer to the first element (storage + offset). data<T>() checks T against dtype.
  void* data_ptr() const;
  template <class T>
  T* data() const {
    EMBER_CHECK(dtype_of<T>::value == dtype(), "data", "requested ", dtype_of<T>::value,
                " pointer from a ", dtype(), " tensor");
    return static_cast<T*>(data_ptr());
  }
  // The single value of a one-element tensor, converted to T.
  template <class T>
  T item() const;
  // Copies all elements (in logical order) into a vector of T.
  template <class T>
  std::vector<T> to_vector() const;

  TensorImpl& impl() const {
    EMBER_CHECK(impl_, "tensor", "use of an undefined tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }
  uint64_t version() const { return impl().storage->version(); }

  // --- autograd ---------------------------------------------------------------------------
  bool requires_grad() const { return defined() && impl().autograd.requires_grad; }
  // Marks a leaf as needing gradients. Throws on a non-leaf or a non-float tensor.
  Tensor& requires_grad_(bool on = true);
  bool is_leaf() const { return impl().autograd.grad_fn == nullptr; }
  Tensor grad() const;
  void set_grad(const Tensor& g) const;
  const std::shared_ptr<Node>& grad_fn() const { return impl().autograd.grad_fn; }
  // Reverse-mode from this tensor. A scalar needs no gradient; anything else does.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  Tensor detach() const;  // shares storage, cut from the graph
  void register_hook(GradHook hook) const;
  // Leaves only: fn runs once this leaf's gradient is final in each backward pass.
  void register_grad_ready_hook(GradReadyHook fn) const;
  // Keep .grad() on a non-leaf after backward.
  void retain_grad() const;

  // --- sugar for common ops (see ember/ops/ops.h) -----------------------------------------
  Tensor view(const Shape& s) const;
  Tensor reshape(const Shape& s) const;
  Tensor permute(const Shape& dims) const;
  Tensor transpose(int64_t a, int64_t b) const;
  Tensor t() const;  // transpose of a 2-D tensor
  Tensor narrow(int64_t d, int64_t start, int64_t length) const;
  Tensor select(int64_t d, int64_t index) const;
  Tensor expand(const Shape& s) const;
  Tensor squeeze(std::optional<int64_t> d = std::nullopt) const;
  Tensor unsqueeze(int64_t d) const;
  Tensor flatten(int64_t start = 0, int64_t end = -1) const;
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor to(DType t) const;
  Tensor to(Device d) const;
  Tensor sum() const;
  Tensor mean() const;

  // In-place (bump the version counter).
  Tensor& zero_();
  Tensor& fill_(double v);
  Tensor& copy_(const Tensor& src);  // broadcasts src, converts dtype
  Tensor& add_(const Tensor& o, double alpha = 1.0);
  Tensor& mul_(const Tensor& o);
  Tensor& mul_(double s);

 private:
  std::shared_ptr<TensorImpl> impl_;
};

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a);
Tensor operator+(const Tensor& a, double b);
Tensor operator-(const Tensor& a, double b);
Tensor operator*(const Tensor& a, double b);
Tensor operator/(const Tensor& a, double b);
Tensor operator+(double a, const Tensor& b);
Tensor operator-(double a, const Tensor& b);
Tensor operator*(double a, const Tensor& b);
Tensor operator/(double a, const Tensor& b);

std::ostream& operator<<(std::ostream& os, const Tensor& t);  // values, numpy-like

// Typed data pointers for kernels whose tensor arguments are optional (a bias, class weights):
// nullptr when t is undefined. No dtype check, unlike Tensor::data<T>(): backends pass their
// own storage types (__half, Half).
template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.data_ptr()) : nullptr;
}
template <class T>
T* mut_ptr_or_null(const Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}

}  // namespace ember
