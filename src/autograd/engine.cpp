// The backward engine: counts dependencies over the reachable graph, then runs each node once
// all gradients flowing into it have been summed (so a leaf's AccumulateGrad sees its final
// gradient, and grad-ready hooks fire once per leaf per pass).
#include <cmath>
#include <limits>
#include <queue>
#include <unordered_map>

#include "ember/autograd/anomaly.h"
#include "ember/autograd/grad_mode.h"
#include "ember/autograd/node.h"
#include "ember/ops/ops.h"
#include "ops/op_call.h"

namespace ember {
namespace {

// Anomaly mode: throws, naming the node, when the gradient it made for input i holds a NaN or
// an infinity. x * 0 is 0 for finite x and NaN otherwise, so one sum answers; .item() is the
// host synchronisation the header documents. The counts are only computed for the message.
void check_finite(const Node& n, size_t input, const Tensor& g) {
  if (!is_floating(g.dtype()) || g.numel() == 0) return;
  const TensorOptions o = TensorOptions(g.dtype()).with_device(g.device());
  if (!std::isnan(sum(mul(g, scalar_tensor(0.0, o))).item<double>())) return;
  const int64_t nans = sum(to_dtype(ne(g, g), DType::i64)).item<int64_t>();
  const int64_t infs =
      sum(to_dtype(eq(abs(g), scalar_tensor(std::numeric_limits<double>::infinity(), o)), DType::i64)).item<int64_t>();
  EMBER_FAIL(n.name(), "backward produced a non-finite gradient for input ", input, ": ", nans, " NaN and ", infs,
             " infinite values in a ", shape_str(g.shape()), " ", dtype_name(g.dtype()), " tensor on ", g.device(),
             " (anomaly detection)");
}

}  // namespace

// --- running nodes -----------------------------------------------------------------------------

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

Tensor conform_grad(const Tensor& g, const Shape& shape, DType dtype, Device device, const std::string& where) {
  EMBER_CHECK(g.shape() == shape, where, "gradient of shape ", shape_str(g.shape()), " (", dtype_name(g.dtype()), " ",
              g.device(), ") for a tensor of shape ", shape_str(shape), " (", dtype_name(dtype), " ", device, ")");
  EMBER_CHECK(g.device() == device, where, "gradient on ", g.device(), " for a tensor on ", device, " (shape ",
              shape_str(shape), "): a backward made it on the wrong device");
  EMBER_CHECK(is_floating(g.dtype()), where, "gradient of dtype ", dtype_name(g.dtype()), " for a ",
              dtype_name(dtype), " tensor of shape ", shape_str(shape), ": gradients are float tensors");
  return g.dtype() == dtype ? g : to_dtype(g, dtype);
}

void add_grad(Tensor& grad, const Tensor& g, const char* where) {
  grad.add_(conform_grad(g, grad.shape(), grad.dtype(), grad.device(), where));
}

std::vector<Tensor> AccumulateGrad::apply(std::vector<Tensor>&& grads) {
  Tensor g = std::move(grads[0]);
  if (!g.defined()) return {};
  Tensor leaf(leaf_);
  for (auto& hook : leaf_->autograd.hooks) {
    Tensor r = hook(g);
    if (r.defined()) g = r;
  }
  g = conform_grad(g, leaf.shape(), leaf.dtype(), leaf.device(), "AccumulateGrad");
  auto& slot = leaf_->autograd.grad;
  if (!slot) {
    // The leaf owns its gradient's memory. A gradient that nothing else holds (no other handle,
    // no view of its storage) and that already has the leaf's dtype, device and a plain
    // contiguous layout becomes .grad as it is; anything else is copied. Skipping the copy
    // matters for large parameters (a 100 MB output-layer weight is one more full pass).
    const bool sole = g.is_contiguous() && g.offset() == 0 && !g.requires_grad() && g.impl_ptr().use_count() == 1 &&
                      g.impl().storage.use_count() == 1 && g.impl().storage.get() != leaf.impl().storage.get();
    slot = sole ? g.impl_ptr() : g.clone().impl_ptr();
  } else {
    Tensor acc(slot);
    acc.add_(g);
  }
  for (auto& ready : leaf_->autograd.ready_hooks) ready(leaf);
  return {};
}

namespace {
thread_local std::vector<std::function<void()>>* t_backward_callbacks = nullptr;
void run_graph(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph);
}  // namespace

void queue_backward_callback(std::function<void()> fn) {
  EMBER_CHECK(t_backward_callbacks != nullptr, "queue_backward_callback", "called outside a backward pass");
  t_backward_callbacks->push_back(std::move(fn));
}

void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph) {
  std::vector<std::function<void()>> callbacks;
  struct CallbackScope {
    std::vector<std::function<void()>>* saved;
    explicit CallbackScope(std::vector<std::function<void()>>* mine) : saved(t_backward_callbacks) {
      t_backward_callbacks = mine;
    }
    ~CallbackScope() { t_backward_callbacks = saved; }
  } callback_scope(&callbacks);
  run_graph(roots, grads, retain_graph);
  for (size_t i = 0; i < callbacks.size(); ++i) {  // a callback may queue another
    std::function<void()> fn = std::move(callbacks[i]);
    fn();
  }
}

namespace {
void run_graph(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph) {
  NoGradGuard no_grad;
  detail::BackwardOpScope backward_ops;  // formulas run as nested ops: no autocast
  const bool detect_anomaly = autograd::anomaly_detection_enabled();
  std::unordered_map<Node*, int> deps;
  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  std::vector<Node*> stack;

  auto visit = [&](Node* n) {
    if (deps.emplace(n, 0).second) stack.push_back(n);
  };
  std::vector<Edge> root_edges;
  for (const auto& r : roots) {
    Edge e = gradient_edge(r);
    EMBER_CHECK(e.fn, "backward", "tensor of shape ", shape_str(r.shape()),
                " does not require grad and has no grad_fn");
    root_edges.push_back(e);
    visit(e.fn.get());
  }
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (auto& e : n->next_edges)
      if (e.fn) {
        visit(e.fn.get());
        deps[e.fn.get()]++;
      }
  }

  auto accumulate = [&](Node* n, uint32_t slot, const Tensor& g) {
    auto& buf = buffers[n];
    if (buf.empty()) buf.resize(n->output_meta.size());
    const auto& meta = n->output_meta[slot];
    const Tensor gc = conform_grad(g, meta.shape, meta.dtype, meta.device, n->name());
    buf[slot] = buf[slot].defined() ? add(buf[slot], gc) : gc;
  };
  for (size_t i = 0; i < roots.size(); ++i) accumulate(root_edges[i].fn.get(), root_edges[i].input_nr, grads[i]);

  auto later_first = [](Node* a, Node* b) { return a->sequence_nr < b->sequence_nr; };
  std::priority_queue<Node*, std::vector<Node*>, decltype(later_first)> ready(later_first);
  std::unordered_map<Node*, std::shared_ptr<Node>> keep;  // hold nodes alive while running
  for (auto& e : root_edges) {
    keep[e.fn.get()] = e.fn;
    if (deps[e.fn.get()] == 0) {
      deps[e.fn.get()] = -1;  // queued
      ready.push(e.fn.get());
    }
  }
  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    auto buf = std::move(buffers[n]);
    buffers.erase(n);
    buf.resize(n->output_meta.size());
    for (auto& [slot, hooks] : n->pre_hooks)
      if (slot < buf.size() && buf[slot].defined())
        for (auto& h : hooks) {
          Tensor r = h(buf[slot]);
          if (r.defined()) buf[slot] = r;
        }
    std::vector<Tensor> out = n->apply(std::move(buf));
    if (!retain_graph) n->release();
    for (size_t i = 0; i < n->next_edges.size(); ++i) {
      const Edge& e = n->next_edges[i];
      if (!e.fn) continue;
      Node* m = e.fn.get();
      keep[m] = e.fn;
      if (i < out.size() && out[i].defined()) {
        if (detect_anomaly) check_finite(*n, i, out[i]);
        // A backward formula that allocates on the wrong device is caught here, naming it,
        // not later as a mixed-device error in an unrelated op (the stand-in device shows it
        // in CI).
        const Device want = m->output_meta[e.input_nr].device;
        EMBER_CHECK(out[i].device() == want, n->name(), "backward made the gradient of input ", i, " on ",
                    out[i].device(), " but that input lives on ", want, " (shape ", shape_str(out[i].shape()),
                    "): a backward formula made its result on the wrong device");
        accumulate(m, e.input_nr, out[i]);
      }
      if (--deps[m] == 0) {
        deps[m] = -1;
        ready.push(m);
      }
    }
  }
}

}  // namespace

}  // namespace ember
