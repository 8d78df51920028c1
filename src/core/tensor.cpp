// Tensor methods that only read or rebuild metadata. The methods that run ops (element
// access, in-place ops, the operator and method sugar, printing) are defined by the op layer
// (src/ops/tensor_methods.cpp), the autograd entry points by autograd
// (src/autograd/tensor_autograd.cpp): core knows no op, backend or autograd.
#include "ember/core/tensor.h"

namespace ember {

int64_t Tensor::size(int64_t d) const { return shape()[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides()[wrap_dim(d, dim(), "stride")]; }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (shape()[i] == 1) continue;
    if (strides()[i] != expected) return false;
    expected *= shape()[i];
  }
  return true;
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  return "Tensor(shape=" + shape_str(shape()) + ", dtype=" + dtype_name(dtype()) +
         ", device=" + device().str() + ")";
}

void* Tensor::data_ptr() const {
  return static_cast<char*>(impl().storage->data()) + offset() * static_cast<int64_t>(element_size());
}

Tensor Tensor::grad() const {
  const auto& g = impl().autograd.grad;
  return g ? Tensor(g) : Tensor();
}

void Tensor::set_grad(const Tensor& g) const {
  if (g.defined())
    EMBER_CHECK(g.shape() == shape(), "set_grad", "gradient of shape ", shape_str(g.shape()),
                " for a tensor of shape ", shape_str(shape()));
  impl().autograd.grad = g.defined() ? g.impl_ptr() : nullptr;
}

Tensor Tensor::detach() const {
  auto impl2 = std::make_shared<TensorImpl>();
  impl2->storage = impl().storage;
  impl2->shape = shape();
  impl2->strides = strides();
  impl2->offset = offset();
  impl2->dtype = dtype();
  return Tensor(impl2);
}

}  // namespace ember
