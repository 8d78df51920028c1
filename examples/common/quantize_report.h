// --eval-only and --quantize int8|f16|bf16, shared by the classifier examples: load a trained
// model from its checkpoint without training, then compare the f32 model with its int8
// (nn::quantize_dynamic) or f16/bf16 (Module::to(DType)) form on the test set: accuracy, size
// (bytes of the state dict) and latency / throughput at batch 1 and a large batch, ending with
//   result: f32_accuracy=.. <form>_accuracy=.. accuracy_gap=.. f32_bytes=.. <form>_bytes=..
//           size_ratio=.. latency_b1_ms=.. speedup_b1=.. throughput_bN=.. speedup_bN=..
// (one line). docs/deploy.md, "Quantising", has the table these lines fill.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ember/autograd/grad_mode.h"
#include "ember/core/error.h"
#include "ember/io/safetensors.h"
#include "ember/nn/module.h"
#include "ember/nn/quantized.h"
#include "ember/ops/ops.h"

namespace example {

enum class QuantForm { int8, f16, bf16 };

inline const char* quant_name(QuantForm f) {
  switch (f) {
    case QuantForm::int8:
      return "int8";
    case QuantForm::f16:
      return "f16";
    case QuantForm::bf16:
      return "bf16";
  }
  return "?";
}

// --quantize int8|f16|bf16.
inline QuantForm parse_quantize(const char* prog, const std::string& v) {
  if (v == "int8") return QuantForm::int8;
  if (v == "f16") return QuantForm::f16;
  EMBER_CHECK(v == "bf16", prog, "--quantize expects int8, f16 or bf16, got \"", v, "\"");
  return QuantForm::bf16;
}

// Loads the "model." tensors of a checkpoint (io::save_checkpoint's file) into `model`, strictly:
// the optimizer and schedule state are not needed to evaluate.
inline void load_model_weights(const char* prog, const std::string& path, ember::nn::Module& model) {
  EMBER_CHECK(!path.empty(), prog, "--eval-only needs a checkpoint to load (--checkpoint PATH)");
  const ember::StateDict file = ember::io::load_safetensors(path);
  ember::StateDict sd;
  const std::string prefix = "model.";
  for (const auto& [name, t] : file.tensors)
    if (name.rfind(prefix, 0) == 0) sd.tensors.emplace_back(name.substr(prefix.size()), t);
  EMBER_CHECK(!sd.tensors.empty(), prog, path,
              " holds no model tensors (\"model.*\"): not a checkpoint of this program");
  model.load_state_dict(sd);
}

// What the report needs from an example: its test accuracy (percent) and one forward pass of
// `batch` test samples, both with the model's inputs in `dtype` (f32, or f16/bf16 for a model
// converted to them; int8 models take f32).
struct QuantizeHooks {
  std::function<double(ember::DType dtype)> accuracy;
  std::function<void(int64_t batch, ember::DType dtype)> forward;
  int64_t large_batch = 256;
  // Called once the model is converted: a model that keeps typed handles to its layers re-reads
  // them here (nn::quantize_dynamic replaces them in the module tree).
  std::function<void()> converted;
};

// The hooks of a classifier: `forward` maps a batch of test inputs (rows of x on `device`, in
// the dtype asked for when x is floating; token ids stay ids) to logits (N, classes); x and y (i64
// labels) are the test set on the host.
inline QuantizeHooks classifier_hooks(std::function<ember::Tensor(const ember::Tensor&)> forward, ember::Tensor x,
                                      ember::Tensor y, ember::Device device, int64_t chunk = 512) {
  const auto cast = [](const ember::Tensor& t, ember::DType dt) {
    return ember::is_floating(t.dtype()) ? ember::to_dtype(t, dt) : t;
  };
  QuantizeHooks h;
  h.accuracy = [=](ember::DType dt) {
    ember::NoGradGuard ng;
    const int64_t n = x.size(0);
    int64_t correct = 0;
    for (int64_t s = 0; s < n; s += chunk) {
      const int64_t len = std::min(chunk, n - s);
      const ember::Tensor logits = forward(cast(x.narrow(0, s, len), dt).to(device));
      correct += ember::sum(ember::eq(ember::argmax(logits, 1), y.narrow(0, s, len).to(device))).item<int64_t>();
    }
    return n > 0 ? 100.0 * static_cast<double>(correct) / static_cast<double>(n) : 0.0;
  };
  h.forward = [=](int64_t batch, ember::DType dt) {
    (void)forward(cast(x.narrow(0, 0, std::min(batch, x.size(0))), dt).to(device));
  };
  h.large_batch = std::min<int64_t>(256, x.size(0));
  return h;
}

namespace detail {
// Milliseconds of one forward at `batch`: the fastest of several calls after a few warm-up
// calls (on a shared machine the noise only adds time, so the minimum is the steadiest figure).
inline double forward_ms(const QuantizeHooks& h, int64_t batch, ember::DType dt) {
  ember::NoGradGuard ng;
  for (int i = 0; i < 3; ++i) h.forward(batch, dt);
  std::vector<double> t;
  const int reps = batch == 1 ? 100 : 15;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    h.forward(batch, dt);
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return *std::min_element(t.begin(), t.end());
}
}  // namespace detail

// Measures the f32 model, converts it in place to `form`, measures again and prints the
// comparison and the result line. The model is left converted.
inline void quantize_report(const char* prog, ember::nn::Module& model, QuantForm form, const QuantizeHooks& h) {
  using ember::DType;
  model.eval();
  const int64_t big = h.large_batch;
  const double acc32 = h.accuracy(DType::f32);
  const int64_t bytes32 = ember::nn::state_dict_bytes(model);
  const double b1_32 = detail::forward_ms(h, 1, DType::f32), bn_32 = detail::forward_ms(h, big, DType::f32);

  DType in_dtype = DType::f32;
  if (form == QuantForm::int8) {
    const int64_t n = ember::nn::quantize_dynamic(model);
    std::printf("%s: quantize_dynamic replaced %lld modules (Linear, Conv1d, RNN/LSTM/GRU) by their int8 forms\n", prog,
                static_cast<long long>(n));
  } else {
    in_dtype = form == QuantForm::f16 ? DType::f16 : DType::bf16;
    model.to(in_dtype);
  }
  if (h.converted) h.converted();
  const char* q = quant_name(form);
  const double accq = h.accuracy(in_dtype);
  const int64_t bytesq = ember::nn::state_dict_bytes(model);
  const double b1_q = detail::forward_ms(h, 1, in_dtype), bn_q = detail::forward_ms(h, big, in_dtype);
  const double ratio = static_cast<double>(bytesq) / static_cast<double>(std::max<int64_t>(bytes32, 1));
  std::printf("%s: test accuracy f32 %.2f%%, %s %.2f%% (gap %.2f points)\n", prog, acc32, q, accq, acc32 - accq);
  std::printf("%s: size f32 %lld bytes, %s %lld bytes (%.3fx)\n", prog, static_cast<long long>(bytes32), q,
              static_cast<long long>(bytesq), ratio);
  std::printf(
      "%s: latency batch 1: f32 %.3f ms, %s %.3f ms (%.2fx); batch %lld: f32 %.0f samples/s, %s %.0f samples/s "
      "(%.2fx)\n",
      prog, b1_32, q, b1_q, b1_32 / b1_q, static_cast<long long>(big), 1e3 * big / bn_32, q, 1e3 * big / bn_q,
      bn_32 / bn_q);
  std::printf(
      "result: f32_accuracy=%.2f %s_accuracy=%.2f accuracy_gap=%.2f f32_bytes=%lld %s_bytes=%lld "
      "size_ratio=%.3f latency_b1_ms=%.3f speedup_b1=%.2f throughput_b%lld=%.0f speedup_b%lld=%.2f\n",
      acc32, q, accq, acc32 - accq, static_cast<long long>(bytes32), q, static_cast<long long>(bytesq), ratio, b1_q,
      b1_32 / b1_q, static_cast<long long>(big), 1e3 * big / bn_q, static_cast<long long>(big), bn_32 / bn_q);
  std::fflush(stdout);
}

}  // namespace example
