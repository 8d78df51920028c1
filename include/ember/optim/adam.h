// Adam and AdamW, PyTorch's update rules with bias correction. For a parameter's step t:
//   Adam:  g = grad + wd * p                 AdamW:  p = p * (1 - lr * wd);  g = grad
//   m = beta1 * m + (1 - beta1) * g
//   v = beta2 * v + (1 - beta2) * g^2
//   vmax = max(vmax, v)                                      (amsgrad only; v below is vmax)
//   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// The optimizer does not look at gradient values: one step on a NaN or Inf gradient makes the
// parameter NaN. Check first with clip_grad_norm_(..., error_if_nonfinite = true) (clip.h). eps, lr, betas and weight_decay are checked when the
// optimizer is built and before every step (eps finite and > 0).
// m, v (and vmax) start at zero and are kept in f32 (f64 for f64 parameters), also for f16 and
// bf16 parameters. All parameters update through one fused multi-tensor kernel per
// (device, dtype).
#pragma once
#include <vector>

#include "ember/core/tensor.h"
#include "ember/optim/optimizer.h"

namespace ember::optim {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;           // finite and > 0: with 0 a parameter whose gradients were all 0 gets 0 / 0
  double weight_decay = 0.0;  // Adam: added to the gradient (L2); AdamW: decoupled
  bool amsgrad = false;
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, AdamOptions opt = {});
  // Groups' unset options follow `defaults` (see ParamGroup).
  Adam(std::vector<ParamGroup> groups, AdamOptions defaults = {});
  AdamOptions& options() { return opt_; }
  const AdamOptions& options() const { return opt_; }
  AdamOptions group_options(size_t group) const;

 protected:
  Adam(const char* name, bool decoupled, std::vector<ParamGroup> groups, AdamOptions defaults);

 private:
  void step_impl() override;
  double default_lr() const override { return opt_.lr; }
  double default_weight_decay() const override { return opt_.weight_decay; }
  std::vector<std::string> own_options() const override;
  void validate() const override;
  std::vector<std::string> required_buffers() const override;
  void save_defaults(StateDict& sd) const override;
  void load_defaults(const StateDict& sd, std::vector<std::string>& problems, bool apply) override;

  bool decoupled_;
  AdamOptions opt_;
};

// AdamW: Adam with decoupled weight decay (Loshchilov & Hutter). The same options as Adam,
// with PyTorch's AdamW default weight_decay of 1e-2.
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;  // finite and > 0
  double weight_decay = 1e-2;
  bool amsgrad = false;
};

class AdamW : public Adam {
 public:
  AdamW(std::vector<Tensor> params, AdamWOptions opt = {});
  AdamW(std::vector<ParamGroup> groups, AdamWOptions defaults = {});
};

}  // namespace ember::optim
