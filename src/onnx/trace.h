// The tracer behind io::export_onnx: records the depth-0 op calls of a forward pass through the
// op observer hook, and for the op whose tensors are not all op inputs (attention: its masks),
// the inputs of the ops it calls.
#pragma once
#include <vector>

#include "ember/ops/observe.h"

namespace ember::onnx_export {

struct NestedCall {
  OpId id;
  std::vector<Tensor> inputs;
};

struct TracedCall {
  const OpDef* def = nullptr;
  std::vector<Tensor> inputs;
  Attrs attrs;
  std::vector<Tensor> outputs;
  std::vector<NestedCall> nested;  // calls inside this one, any depth (attention only)
};

class Tracer : public OpObserver {
 public:
  void before(const OpCall& call) override {
    if (call.in_backward) return;
    if (call.depth == 0) {
      calls.push_back({call.def, call.inputs, call.attrs, {}, {}});
      open_ = true;
    } else if (open_ && !calls.empty() && calls.back().def->id == OpId::scaled_dot_product_attention) {
      calls.back().nested.push_back({call.def->id, call.inputs});
    }
  }
  void after(const OpCall& call) override {
    if (call.in_backward || call.depth != 0 || calls.empty()) return;
    calls.back().outputs = call.outputs;
    open_ = false;
  }

  std::vector<TracedCall> calls;

 private:
  bool open_ = false;
};

}  // namespace ember::onnx_export
