// Nodes, saved tensors, and how ops record themselves in the graph.
#include "ember/autograd/node.h"

#include <atomic>

#include "ember/autograd/grad_mode.h"
#include "ember/ops/ops.h"

namespace ember {
namespace {
std::atomic<uint64_t> g_next_sequence{0};

// A handle on the same memory with no autograd history (what backward formulas see).
Tensor alias_without_history(const Tensor& t) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.impl().storage;
  impl->shape = t.shape();
  impl->strides = t.strides();
  impl->offset = t.offset();
  impl->dtype = t.dtype();
  return Tensor(impl);
}
}  // namespace

SavedTensor::SavedTensor(const Tensor& t) {
  if (t.defined()) {
    data_ = alias_without_history(t);
    version_ = t.version();
  }
}

Tensor SavedTensor::unpack(const std::string& op) const {
  if (!data_.defined()) return data_;
  EMBER_CHECK(data_.version() == version_, op,
              "a tensor of shape ", shape_str(data_.shape()), " (", data_.dtype(),
              ") saved for backward was modified by an in-place operation (version ", version_,
              " when saved, ", data_.version(), " now); clone it before modifying it in place");
  return data_;
}

std::vector<Tensor> FunctionNode::apply(std::vector<Tensor>&& grads) {
  EMBER_CHECK(!released_, name_,
              "trying to run backward through the graph a second time: its saved tensors were "
              "freed after the first backward; pass retain_graph=true to the first backward()");
  for (size_t i = 0; i < grads.size(); ++i)
    if (!grads[i].defined()) {
      const auto& m = output_meta[i];
      grads[i] = zeros(m.shape, TensorOptions(m.dtype).with_device(m.device));
    }
  std::vector<Tensor> saved;
  saved.reserve(saved_.size());
  for (const auto& s : saved_) saved.push_back(s.unpack(name_));
  std::vector<bool> needs(next_edges.size());
  for (size_t i = 0; i < needs.size(); ++i) needs[i] = next_edges[i].fn != nullptr;
  auto out = fn_(grads, saved, needs);
  EMBER_CHECK(out.size() == next_edges.size(), name_, "backward returned ", out.size(),
              " gradients for ", next_edges.size(), " inputs");
  return out;
}

void FunctionNode::release() {
  saved_.clear();
  released_ = true;
}

void add_grad(Tensor& grad, const Tensor& g, const char* where) {
  EMBER_CHECK(grad.shape() == g.shape(), where, "gradient of shape ", shape_str(g.shape()),
              " cannot accumulate into a gradient of shape ", shape_str(grad.shape()));
  grad.add_(g);
}

std::vector<Tensor> AccumulateGrad::apply(std::vector<Tensor>&& grads) {
  Tensor g = std::move(grads[0]);
  if (!g.defined()) return {};
  Tensor leaf(leaf_);
  for (auto& hook : leaf_->autograd.hooks) {
    Tensor r = hook(g);
    if (r.defined()) g = r;
  }
  EMBER_CHECK(g.shape() == leaf.shape(), "AccumulateGrad", "gradient of shape ",
              shape_str(g.shape()), " does not match its leaf of shape ", shape_str(leaf.shape()));
  auto& slot = leaf_->autograd.grad;
  if (!slot) {
    // The leaf owns its gradient's memory. A gradient that nothing else holds (no other handle,
    // no view of its storage) and that already has the leaf's dtype, device and a plain
    // contiguous layout becomes .grad as it is; anything else is copied. Skipping the copy
    // matters for large parameters (a 100 MB output-layer weight is one more full pass).
    const bool sole = g.dtype() == leaf.dtype() && g.device() == leaf.device() && g.is_contiguous() &&
                      g.offset() == 0 && !g.requires_grad() && g.impl_ptr().use_count() == 1 &&
                      g.impl().storage.use_count() == 1 && g.impl().storage.get() != leaf.impl().storage.get();
    slot = sole ? g.impl_ptr() : g.to(leaf.dtype()).clone().impl_ptr();
  } else {
    Tensor acc(slot);
    add_grad(acc, g.to(leaf.dtype()), "AccumulateGrad");
  }
  for (auto& ready : leaf_->autograd.ready_hooks) ready(leaf);
  return {};
}

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  for (const auto& t : inputs)
    if (t.requires_grad()) return true;
  return false;
}

Edge gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  auto& meta = t.impl().autograd;
  if (meta.grad_fn) return {meta.grad_fn, meta.output_nr};
  std::shared_ptr<Node> acc = meta.grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t.impl_ptr());
    acc->output_meta.push_back({t.shape(), t.dtype(), t.device()});
    meta.grad_accumulator = acc;
  }
  return {acc, 0};
}

void record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
            FunctionNode::BackwardFn fn, const std::vector<Tensor>& saved) {
  if (!grad_enabled() || !any_requires_grad(inputs)) return;
  std::vector<SavedTensor> saved_t;
  saved_t.reserve(saved.size());
  for (const auto& s : saved) saved_t.emplace_back(s);
  auto node = std::make_shared<FunctionNode>(name, std::move(fn), std::move(saved_t));
  node->sequence_nr = g_next_sequence++;
  for (const auto& in : inputs) node->next_edges.push_back(gradient_edge(in));
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& o = outputs[i];
    node->output_meta.push_back({o.shape(), o.dtype(), o.device()});
    if (!is_floating(o.dtype())) continue;
    auto& meta = o.impl().autograd;
    meta.requires_grad = true;
    meta.grad_fn = node;
    meta.output_nr = static_cast<uint32_t>(i);
  }
}

}  // namespace ember
