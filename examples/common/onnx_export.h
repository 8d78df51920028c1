// --export-onnx FILE: the bundled examples write their trained model as ONNX (ember/io/onnx.h,
// docs/deploy.md) with a sample: a few inputs and ember's outputs for them in
// FILE's stem + ".sample.safetensors", which tests/onnx/check_onnx.py runs in onnxruntime and
// compares. Built without ember::onnx (no libonnx-dev), the flag is an error saying so.
#pragma once
#include <cstdio>
#include <string>
#include <vector>

#include "ember/core/device.h"
#include "ember/core/error.h"
#include "ember/dist.h"
#include "ember/io/onnx.h"
#include "ember/nn/module.h"

namespace example {

// FILE without its ".onnx" extension, + ".sample.safetensors".
inline std::string onnx_sample_path(const std::string& path) {
  const std::string ext = ".onnx";
  const bool has = path.size() > ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0;
  return (has ? path.substr(0, path.size() - ext.size()) : path) + ".sample.safetensors";
}

// Exports `model` (moved to the CPU first: the program ends after this) traced through
// `forward` on `inputs` (CPU tensors) to `path`, on rank 0 only.
inline void export_onnx(const char* program, const std::string& path, ember::nn::Module& model,
                        const std::vector<ember::Tensor>& inputs, ember::io::ExportOptions options,
                        const ember::io::ForwardFn& forward) {
  if (ember::dist::rank() != 0) return;
#ifdef EMBER_WITH_ONNX
  (void)program;
  model.to(ember::Device::cpu());
  options.sample_path = onnx_sample_path(path);
  ember::io::export_onnx(model, inputs, path, options, forward);
  std::printf("exported ONNX model to %s (sample inputs and outputs: %s)\n", path.c_str(), options.sample_path.c_str());
  std::fflush(stdout);
#else
  (void)path, (void)model, (void)inputs, (void)options, (void)forward;
  throw ember::Error(program,
                     "--export-onnx: this build has no ONNX export (install libonnx-dev and "
                     "libprotobuf-dev and reconfigure)");
#endif
}

}  // namespace example
