// Nodes, saved tensors, and how ops record themselves in the graph. Running a node (which
// computes with ops) is the engine's: src/autograd/engine.cpp.
#include "ember/autograd/node.h"

#include <atomic>

#include "ember/autograd/grad_mode.h"

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

void FunctionNode::release() {
  // A node that saved nothing lost nothing: running it again is legitimate (a parameter's
  // autocast cast is reused by every forward of one autocast region).
  released_ = !saved_.empty();
  saved_.clear();
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
