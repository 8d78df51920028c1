// The autograd entry points of Tensor (declared in ember/core/tensor.h): requires_grad_,
// backward, gradient hooks, retain_grad.
#include "ember/autograd/grad_mode.h"
#include "ember/autograd/node.h"
#include "ember/core/tensor.h"
#include "ember/ops/ops.h"

namespace ember {

Tensor& Tensor::requires_grad_(bool on) {
  EMBER_CHECK(is_leaf(), "requires_grad_", "only leaves can change requires_grad; this ",
              str(), " was produced by ", grad_fn()->name(), " (use detach() first)");
  EMBER_CHECK(!on || is_floating(dtype()), "requires_grad_",
              "only float tensors can require gradients, got ", dtype());
  impl().autograd.requires_grad = on;
  return *this;
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  EMBER_CHECK(requires_grad(), "backward", "called on a ", str(),
              " that does not require grad (no input of its graph requires grad)");
  Tensor g = gradient;
  if (!g.defined()) {
    EMBER_CHECK(numel() == 1, "backward", "a gradient must be given for a non-scalar output of shape ",
                shape_str(shape()));
    g = ones(shape(), TensorOptions(dtype()).with_device(device()));
  }
  EMBER_CHECK(g.shape() == shape(), "backward", "gradient of shape ", shape_str(g.shape()),
              " for an output of shape ", shape_str(shape()));
  run_backward({*this}, {g}, retain_graph);
}

void Tensor::register_hook(GradHook hook) const {
  EMBER_CHECK(requires_grad(), "register_hook", "cannot register a hook on a ", str(),
              " that does not require grad");
  auto& meta = impl().autograd;
  if (meta.grad_fn)
    meta.grad_fn->pre_hooks[meta.output_nr].push_back(std::move(hook));
  else
    meta.hooks.push_back(std::move(hook));
}

void Tensor::register_grad_ready_hook(GradReadyHook fn) const {
  EMBER_CHECK(requires_grad() && is_leaf(), "register_grad_ready_hook",
              "needs a leaf that requires grad, got ", str());
  impl().autograd.ready_hooks.push_back(std::move(fn));
}

void Tensor::retain_grad() const {
  if (is_leaf()) return;  // leaves keep their gradient anyway
  std::weak_ptr<TensorImpl> weak = impl_ptr();
  register_hook([weak](const Tensor& g) {
    if (auto self = weak.lock()) {
      if (!self->autograd.grad) {
        self->autograd.grad = g.clone().impl_ptr();
      } else {
        Tensor acc(self->autograd.grad);
        add_grad(acc, g, "retain_grad");
      }
    }
    return Tensor();
  });
}

}  // namespace ember
