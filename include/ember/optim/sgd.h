// Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (PyTorch's
// update rule):
//   g = grad + wd * p
//   buf = g on the parameter's first momentum step, else momentum * buf + (1 - dampening) * g
//   g = nesterov ? g + momentum * buf : buf        (when momentum != 0)
//   p -= lr * g
// All parameters update through one fused multi-tensor kernel per (device, dtype).
#pragma once
#include <vector>

#include "ember/core/tensor.h"
#include "ember/optim/optimizer.h"

namespace ember::optim {

struct SGDOptions {
  double lr = 0.01;
  double momentum = 0.0;
  double weight_decay = 0.0;
  double dampening = 0.0;
  bool nesterov = false;  // needs momentum > 0 and dampening == 0
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, SGDOptions opt);
  // Groups' unset options follow `defaults` (see ParamGroup).
  SGD(std::vector<ParamGroup> groups, SGDOptions defaults);
  // The defaults every group follows where it sets nothing; may be changed between steps.
  SGDOptions& options() { return opt_; }
  const SGDOptions& options() const { return opt_; }
  // The options group `group` uses now.
  SGDOptions group_options(size_t group) const;

 private:
  void step_impl() override;
  double default_lr() const override { return opt_.lr; }
  double default_weight_decay() const override { return opt_.weight_decay; }
  std::vector<std::string> own_options() const override;
  void validate() const override;
  std::vector<std::string> required_buffers() const override;
  void save_defaults(StateDict& sd) const override;
  void load_defaults(const StateDict& sd, std::vector<std::string>& problems, bool apply) override;

  SGDOptions opt_;
};

}  // namespace ember::optim
