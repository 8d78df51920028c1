// Mixed-precision training: autocast (ember/ops/autocast.h) and a GradScaler with dynamic loss
// scaling. A training step (docs/amp.md):
//
//   amp::GradScaler scaler;                          // f16: scale the loss; bf16: enabled = false
//   {
//     amp::AutocastGuard autocast(device, DType::f16);
//     loss = nn::cross_entropy(model.forward(x), y);
//   }
//   scaler.scale(loss).backward();                  // gradients of the scaled loss, in f32
//   scaler.unscale_(opt);                            // optional: before clipping
//   optim::clip_grad_norm_(model.parameters(), 1.0);
//   scaler.step(opt);                                // skipped when a gradient is inf or NaN
//   scaler.update();                                 // back off on overflow, grow when clean
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "ember/core/state_dict.h"
#include "ember/core/tensor.h"
#include "ember/ops/autocast.h"
#include "ember/optim/optimizer.h"

namespace ember::amp {

struct GradScalerOptions {
  double init_scale = 65536.0;
  double growth_factor = 2.0;   // > 1
  double backoff_factor = 0.5;  // in (0, 1)
  int64_t growth_interval = 2000;  // clean steps in a row before the scale grows; > 0
  bool enabled = true;          // false: scale, unscale_ and update pass through; step just steps
};

class GradScaler {
 public:
  explicit GradScaler(GradScalerOptions o = {});

  // loss * the current scale (loss unchanged when disabled).
  Tensor scale(const Tensor& loss);
  // Divides every gradient of opt's parameters by the scale, once per step, in one fused pass
  // per (device, dtype) that also notes any inf or NaN. A second call before update() is an
  // error.
  void unscale_(optim::Optimizer& opt);
  // unscale_ if not done yet; then opt.step() unless a gradient was inf or NaN, in which case
  // parameters and optimizer state stay bit for bit as they were. Returns whether it stepped.
  // Reads the found-inf flag once: the step's one device-to-host synchronisation.
  // Inside a CUDA graph capture (ember/cuda_graph.h) nothing is read: the optimizer's kernels
  // skip their update on the device when the flag is set, and step() returns true.
  bool step(optim::Optimizer& opt);
  // After the step(s) of an iteration: scale *= backoff_factor if any step found inf/NaN
  // (and the clean-step count restarts), else after growth_interval clean steps in a row
  // scale *= growth_factor. The scale stays finite and > 0. Inside a capture the same rule runs
  // on the device: call update() inside the captured step then.
  void update();

  // Once a captured step has used the scaler, the scale and the clean-step count live on the
  // device: these read them there (a host synchronisation; never inside a capture).
  double get_scale() const;  // 1.0 when disabled
  bool is_enabled() const { return o_.enabled; }
  int64_t growth_tracker() const;  // clean steps since the last change

  // "scale", "growth_tracker" (and the options) as meta text, exact (hex float).
  StateDict state_dict() const;
  // Checks every entry before changing anything; an error names the bad entry.
  void load_state_dict(const StateDict& sd);

 private:
  struct PerOptimizer {
    const optim::Optimizer* opt;
    bool unscaled = false;
    bool stepped = false;
    std::vector<Tensor> found_inf;  // one 1-element f32 flag per device
    bool found = false;             // read by step()
  };
  PerOptimizer& state_of(const optim::Optimizer& opt);
  // The device copy of scale and growth tracker (0-d f32 tensors) that a captured step works
  // on; made while capturing and filled from the host values before the graph's first replay.
  struct DeviceState {
    Tensor scale, tracker;
    bool filled = false;      // by the first replay of a graph that captured it
    uint64_t hooked_pool = 0;  // the capture whose first replay fills it
  };
  DeviceState& device_state(Device device);

  GradScalerOptions o_;
  double scale_;
  int64_t growth_tracker_ = 0;
  std::vector<PerOptimizer> pending_;  // this iteration's optimizers, until update()
  std::shared_ptr<DeviceState> dev_;   // set once a captured step used the scaler
};

}  // namespace ember::amp
