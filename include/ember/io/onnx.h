// ONNX export: runs a model once (twice with dynamic axes) under an op observer and writes
// the ops it called as an ONNX graph (opset 17, IR version 8), the parameters as initialisers.
//
//   io::ExportOptions o;
//   o.input_names = {"tokens"};
//   o.output_names = {"logits"};
//   o.dynamic_axes = {{"tokens", {{0, "batch"}, {1, "seq"}}}, {"logits", {{0, "batch"}, {1, "seq"}}}};
//   io::export_onnx(model, {tokens}, "model.onnx", o,
//                   [&](const std::vector<Tensor>& in) { return std::vector<Tensor>{model.forward(in[0])}; });
//
// What is exported is what ran: the depth-0 op calls (ember/ops/observe.h) between the inputs
// and the outputs. Host-side control flow (a loop over the batch, an `if` on a tensor's value)
// is baked in as it ran for the example inputs; with dynamic axes the model is traced a second
// time at other sizes and an op sequence that changes with the size is an ember::Error naming
// the first op that differs. Docs: docs/deploy.md.
//
// This header belongs to the separate library target ember::onnx (built when CMake finds ONNX
// and Protobuf); the core library does not depend on protobuf.
#pragma once
#include <concepts>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "ember/core/tensor.h"
#include "ember/nn/module.h"

namespace ember::io {

struct ExportOptions {
  // Graph input and output names; missing ones default to "input_<i>" and "output_<i>".
  std::vector<std::string> input_names;
  std::vector<std::string> output_names;
  // Axes of an input or output (by name) whose size is free in the exported graph, each with
  // its symbolic name ("batch", "seq"): axes with the same name are the same size (the batch
  // axis of the tokens and of the lengths). Each dynamic input axis must have size >= 1.
  std::map<std::string, std::map<int64_t, std::string>> dynamic_axes;
  std::string graph_name = "ember";
  // When set, also writes the example inputs and ember's outputs for them to this
  // .safetensors file ("input.<name>", "output.<name>"), what tests/onnx/check_onnx.py runs
  // the model on and compares with.
  std::string sample_path;
  std::string doc_string;
};

// The forward pass to trace: example inputs in, outputs out.
using ForwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& inputs)>;

// Traces `forward` on `example_inputs` with `module` in eval mode and gradients off (the
// module's training flag is restored afterwards) and writes the ONNX model to `path`
// atomically (a temporary file in the same directory, then a rename: a failed export leaves
// no file and an existing file unchanged). Every parameter and buffer of `module` that the
// forward reads becomes an initialiser under its state_dict name; other tensors the ops read
// that are not computed from the inputs become initialisers "const_<i>".
// Throws ember::Error naming the op (or module) for: an op with no ONNX mapping (losses,
// random ops, training-mode dropout), a module or input not on the CPU, an op sequence or an
// attribute that changes with a dynamic axis in a way the graph cannot express, an output not
// computed by the traced ops, f16/bf16 tensors (export f32 or f64), and a failed write.
void export_onnx(nn::Module& module, const std::vector<Tensor>& example_inputs, const std::string& path,
                 const ExportOptions& options, const ForwardFn& forward);

// The common case: a module whose forward(const Tensor&) returns one Tensor.
template <class M>
requires requires(M& m, const Tensor& x) {
  { m.forward(x) } -> std::convertible_to<Tensor>;
}
void export_onnx(M& module, const Tensor& example_input, const std::string& path, const ExportOptions& options = {}) {
  export_onnx(module, {example_input}, path, options,
              [&module](const std::vector<Tensor>& in) { return std::vector<Tensor>{module.forward(in[0])}; });
}

}  // namespace ember::io
