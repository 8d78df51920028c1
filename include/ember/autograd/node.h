// The autograd graph: a Node (grad_fn) per op output set, with edges to the nodes that made
// its inputs. Leaves end in an AccumulateGrad node that adds into .grad.
//
// Backward formulas are written with ordinary ops and run under NoGradGuard (no double
// backward). Tensors a backward needs are stored as SavedTensor: a detached alias plus the
// storage version at save time, checked on use so in-place edits raise a clear error.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ember/core/tensor.h"

namespace ember {

struct Edge {
  std::shared_ptr<Node> fn;  // null: the input needs no gradient
  uint32_t input_nr = 0;     // which output of fn this edge feeds
};

// Shape/dtype/device of one output, so a missing gradient can be filled with zeros.
struct OutputMeta {
  Shape shape;
  DType dtype = DType::f32;
  Device device;
};

class SavedTensor {
 public:
  SavedTensor() = default;
  explicit SavedTensor(const Tensor& t);
  // The saved value; throws when its storage was modified in place since it was saved.
  Tensor unpack(const std::string& op) const;
  bool defined() const { return data_.defined(); }

 private:
  Tensor data_;
  uint64_t version_ = 0;
};

class Node : public std::enable_shared_from_this<Node> {
 public:
  virtual ~Node() = default;
  // grads[i] is the gradient of output i (undefined where no gradient reached it; apply may
  // fill zeros from output_meta). Returns one gradient per next_edges entry.
  virtual std::vector<Tensor> apply(std::vector<Tensor>&& grads) = 0;
  virtual std::string name() const = 0;
  // Frees saved tensors after a backward without retain_graph.
  virtual void release() {}

  std::vector<Edge> next_edges;
  std::vector<OutputMeta> output_meta;
  uint64_t sequence_nr = 0;  // creation order: later nodes run first among ready ones
  // Hooks registered on non-leaf outputs, by output index.
  std::map<uint32_t, std::vector<GradHook>> pre_hooks;
};

// A node whose backward is a function of (output grads, saved tensors) -> input grads.
class FunctionNode : public Node {
 public:
  // needs[i] says whether input i wants a gradient: skip the work for the others (return an
  // undefined Tensor there).
  using BackwardFn = std::function<std::vector<Tensor>(
      const std::vector<Tensor>& grads, const std::vector<Tensor>& saved, const std::vector<bool>& needs)>;
  FunctionNode(std::string name, BackwardFn fn, std::vector<SavedTensor> saved)
      : name_(std::move(name)), fn_(std::move(fn)), saved_(std::move(saved)) {}
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override;
  std::string name() const override { return name_; }
  void release() override;

 private:
  friend void record(const char*, const std::vector<Tensor>&, const std::vector<Tensor>&,
                     FunctionNode::BackwardFn, const std::vector<Tensor>&);
  std::string name_;
  BackwardFn fn_;
  std::vector<SavedTensor> saved_;
  bool released_ = false;
};

// Adds the incoming gradient into a leaf's .grad (the one checked place where leaf gradients
// accumulate), runs the leaf's hooks before and its grad-ready hooks after.
class AccumulateGrad : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<TensorImpl> leaf) : leaf_(std::move(leaf)) {}
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override;
  std::string name() const override { return "AccumulateGrad"; }

 private:
  std::shared_ptr<TensorImpl> leaf_;
};

// The one rule for a gradient of a tensor (shape, dtype, device), applied wherever gradients
// are summed (the engine's buffers, AccumulateGrad, add_grad): shape and device must match
// exactly and the gradient must be a float tensor (else an ember::Error naming `where`, both
// shapes, dtypes and devices); a float gradient of another dtype (a bf16 gradient of an f32
// parameter under autocast) is converted to the tensor's dtype. Returns it in that dtype.
Tensor conform_grad(const Tensor& g, const Shape& shape, DType dtype, Device device, const std::string& where);
// grad += conform_grad(g, ...grad's shape, dtype, device...).
void add_grad(Tensor& grad, const Tensor& g, const char* where);

// --- helpers ops use to record themselves ----------------------------------------------------
bool any_requires_grad(const std::vector<Tensor>& inputs);
// The edge a gradient for `t` should flow along (null fn when t needs no gradient).
Edge gradient_edge(const Tensor& t);
// When grad mode is on and some input requires grad: builds a FunctionNode, wires it to the
// inputs and makes it the grad_fn of outputs. Undefined inputs are allowed (no edge).
void record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
            FunctionNode::BackwardFn fn, const std::vector<Tensor>& saved = {});
// Runs `fn` when the backward pass now running has finished every node (a DDP waits for its
// gradient buckets there). Callbacks run in the order queued; one queued outside a backward
// pass is an error.
void queue_backward_callback(std::function<void()> fn);
// Runs the backward pass from roots with the given gradients.
void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph);

}  // namespace ember
