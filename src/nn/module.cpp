// Module bookkeeping: parameters and submodules are kept in registration order, so
// named_parameters() is deterministic (optimizer state and checkpoints rely on that).
#include "ember/nn/module.h"

#include "ember/autograd/grad_mode.h"
#include "ember/core/error.h"
#include "ember/ops/ops.h"

namespace ember::nn {

namespace {
// Appends this module's parameters, then each child's with "child." in front, depth first.
void collect(const std::vector<std::pair<std::string, Tensor>>& params,
             const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children,
             std::vector<std::pair<std::string, Tensor>>& out) {
  for (const auto& p : params) out.push_back(p);
  for (const auto& [name, child] : children) {
    for (auto& [sub, t] : child->named_parameters()) out.emplace_back(name + "." + sub, t);
  }
}
}  // namespace

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect(params_, children_, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (const auto& t : parameters()) n += t.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::zero_grad() {
  for (auto& t : parameters()) t.set_grad(Tensor());
}

Module& Module::to(Device device) {
  std::vector<Tensor> params;
  for (const Tensor& p : parameters()) {  // a parameter shared by two submodules moves once
    bool seen = false;
    for (const Tensor& q : params) seen = seen || q.is_same(p);
    if (!seen) params.push_back(p);
  }
  std::vector<Tensor> moved;
  moved.reserve(params.size());
  {
    NoGradGuard no_grad;  // a copy, not a differentiable op: parameters stay leaves
    for (const Tensor& p : params) {
      moved.push_back(p.device() == device ? Tensor() : to_device(p.detach(), device));
    }
  }
  // Nothing below throws: swap the memory of each parameter's TensorImpl for the copy's.
  for (size_t i = 0; i < params.size(); ++i) {
    if (!moved[i].defined()) continue;
    TensorImpl& dst = params[i].impl();
    TensorImpl& src = moved[i].impl();
    dst.storage = src.storage;
    dst.strides = src.strides;
    dst.offset = src.offset;
    dst.autograd.grad.reset();
  }
  return *this;
}

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  EMBER_CHECK(!name.empty() && name.find('.') == std::string::npos, "register_parameter",
              "parameter name must be non-empty and contain no '.', got \"", name, "\"");
  EMBER_CHECK(t.defined(), "register_parameter", "parameter \"", name, "\" is an undefined tensor");
  for (const auto& p : params_) {
    EMBER_CHECK(p.first != name, "register_parameter", "parameter \"", name, "\" registered twice");
  }
  t.requires_grad_(true);
  params_.emplace_back(name, t);
  return t;
}

}  // namespace ember::nn
