// The optimizer base: parameter groups, the step/zero_grad cycle, learning rates for schedules,
// and checkpoints (state_dict / load_state_dict).
//
// A ParamGroup holds parameters that share hyper-parameters. Its options are *overrides*: an
// option left unset follows the optimizer's options (SGD::options(), Adam::options()), also
// when those are changed later, so `opt.options().lr = x` still moves every group that did not
// set its own lr. set_lr(group, x) sets the override (what the schedules call).
//
// Per-parameter state (step count, moment buffers) lives in the optimizer, indexed by group and
// position. Every optimizer updates all its parameters through one fused multi-tensor kernel
// per (device, dtype) — see docs/optim.md — under no autograd.
//
// Checkpoint contract (StateDict, ember/io/state_dict.h):
//   tensors  "state.<g>.<i>.<buffer>"   buffer in {momentum_buffer} (SGD) or
//                                       {exp_avg, exp_avg_sq, max_exp_avg_sq} (Adam, AdamW);
//                                       the parameter's shape, f32 (f64 for f64 parameters)
//   meta     "optimizer"                "SGD" | "Adam" | "AdamW"
//            "groups"                   number of groups
//            "group.<g>.params"         number of parameters in group g
//            "group.<g>.<option>"       group g's overrides (only the ones that are set)
//            "defaults.<option>"        the optimizer's options
//            "state.<g>.<i>.step"       steps parameter i of group g has taken
//            "state.<g>.<i>.buffers"    comma-separated buffer names saved for it ("" for none)
// Numbers are written with 17 significant digits, so a round trip is exact. state_dict()'s
// tensors are the optimizer's own buffers (no copy, as PyTorch): write or clone them before the
// next step(). load_state_dict copies what it loads onto each parameter's device.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ember/core/tensor.h"
#include "ember/core/state_dict.h"

namespace ember::optim {

struct ParamGroup {
  std::vector<Tensor> params = {};
  std::optional<double> lr = std::nullopt;
  std::optional<double> weight_decay = std::nullopt;
  // SGD only
  std::optional<double> momentum = std::nullopt;
  std::optional<double> dampening = std::nullopt;
  std::optional<bool> nesterov = std::nullopt;
  // Adam and AdamW only
  std::optional<double> beta1 = std::nullopt;
  std::optional<double> beta2 = std::nullopt;
  std::optional<double> eps = std::nullopt;
  std::optional<bool> amsgrad = std::nullopt;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a gradient; parameters without one are skipped
  // (their state and step count stay as they are). Records no autograd.
  void step();
  // set_to_none: drop every .grad (the default); otherwise zero the gradients in place.
  void zero_grad(bool set_to_none = true);

  const std::string& name() const { return name_; }
  size_t num_groups() const { return groups_.size(); }
  // The group as given (options are overrides; unset ones follow the optimizer's options).
  const ParamGroup& param_group(size_t group) const;
  // Every parameter, group by group.
  std::vector<Tensor> parameters() const;

  // The learning rate group `group` uses now (its override, else the optimizer's lr).
  double lr(size_t group) const;
  void set_lr(size_t group, double lr);  // sets the group's override; lr >= 0
  double weight_decay(size_t group) const;
  // How many steps parameter `index` of `group` has taken.
  int64_t step_count(size_t group, size_t index) const;

  StateDict state_dict() const;
  // Restores what state_dict() wrote into an optimizer of the same kind over parameters of the
  // same shapes. Checks everything before changing anything: on a mismatch it throws one
  // ember::Error that names every missing, mis-shaped and unexpected entry.
  void load_state_dict(const StateDict& sd);

 protected:
  // buffer_names: the per-parameter buffers this optimizer may keep (state slots, in order).
  Optimizer(std::string name, std::vector<ParamGroup> groups, std::vector<std::string> buffer_names);

  // Per-parameter state. buffers[k] is slot k of buffer_names (undefined until used).
  struct ParamState {
    int64_t step = 0;
    std::vector<Tensor> buffers;
  };

  virtual void step_impl() = 0;
  virtual double default_lr() const = 0;
  virtual double default_weight_decay() const = 0;
  // The ParamGroup options this optimizer reads ("lr", "momentum", ...); a group that sets
  // another one is an error.
  virtual std::vector<std::string> own_options() const = 0;
  // Checks the optimizer's options and every group's resolved options (throws ember::Error).
  virtual void validate() const = 0;
  // Buffers every parameter that has taken a step must have (checked on load).
  virtual std::vector<std::string> required_buffers() const = 0;
  virtual void save_defaults(StateDict& sd) const = 0;
  // Reads "defaults.*" from meta; appends a line to `problems` for each missing or bad key
  // and, when there are none and `apply`, sets the options.
  virtual void load_defaults(const StateDict& sd, std::vector<std::string>& problems, bool apply) = 0;
  // For derived constructors: rejects options of other optimizers set on a group, then runs
  // validate().
  void check_options() const;

  // The tensor a fused kernel updates for a parameter: the parameter itself when contiguous,
  // else a contiguous copy that finish_update() writes back.
  struct Work {
    Tensor param;   // the parameter (as given)
    Tensor data;    // contiguous tensor the kernel writes
    Tensor grad;    // contiguous, parameter's dtype and device
  };
  // Checks p's gradient (shape, device) and makes Work; nullopt when p has no gradient.
  std::optional<Work> prepare(size_t group, size_t index) const;
  // Writes non-contiguous parameters back and bumps the version of every updated parameter.
  static void finish_update(const std::vector<Work>& work);
  // Slot `slot` of a parameter's state in the state dtype on the parameter's device: allocated
  // (uninitialised, `created` = true) when missing; moved or converted, values kept, when the
  // parameter changed device or dtype since (Module::to after the optimizer was built).
  Tensor& state_buffer(size_t group, size_t index, size_t slot, bool& created);
  // The dtype optimizer state is kept in for a parameter of dtype t: f64 for f64, else f32.
  static DType state_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

  std::string name_;
  std::vector<ParamGroup> groups_;
  std::vector<std::string> buffer_names_;
  std::vector<std::vector<ParamState>> state_;
};

}  // namespace ember::optim
