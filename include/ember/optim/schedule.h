// Learning-rate schedules on an Optimizer (which must outlive the schedule).
//
// LRScheduler: the lr of group g after e calls of step() is lr_at(base_lr[g], e), a closed
// form, where base_lr[g] is the group's lr when the schedule was built. The constructor
// already sets lr_at(base, 0) (e.g. the start of a warmup), as PyTorch does; call step() once
// per epoch or per optimizer step, whichever the schedule counts in.
// ReduceLROnPlateau: multiplies every group's lr by `factor` when a metric stops improving.
//
// Checkpoints (StateDict meta, no tensors): "scheduler" (the class name), "last_epoch",
// "base_lr.<g>", and each schedule's own options and counters under their names. Loading a
// closed-form schedule also sets the optimizer's lrs to lr_at(base, last_epoch), so the order
// in which optimizer and schedule are restored does not matter.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ember/core/state_dict.h"
#include "ember/optim/optimizer.h"

namespace ember::optim {

class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  void step();                       // one more epoch: sets every group's lr
  int64_t last_epoch() const { return epoch_; }  // how many step() calls so far
  std::vector<double> last_lr() const;           // the lrs the optimizer's groups have now
  const std::vector<double>& base_lrs() const { return base_lrs_; }
  // The lr a group with base lr `base` gets at `epoch`.
  virtual double lr_at(double base, int64_t epoch) const = 0;
  const std::string& name() const { return name_; }

  StateDict state_dict() const;
  void load_state_dict(const StateDict& sd);

 protected:
  LRScheduler(std::string name, Optimizer& opt);
  // Call at the end of a derived constructor, once lr_at can run: applies epoch 0.
  void start();
  virtual void save_options(StateDict& sd) const = 0;
  virtual void load_options(const StateDict& sd, std::vector<std::string>& problems) = 0;

  std::string name_;
  Optimizer& opt_;
  std::vector<double> base_lrs_;
  int64_t epoch_ = 0;

 private:
  void apply();
};

// lr = base * gamma^floor(epoch / step_size).
class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& opt, int64_t step_size, double gamma = 0.1);
  double lr_at(double base, int64_t epoch) const override;

 private:
  void save_options(StateDict& sd) const override;
  void load_options(const StateDict& sd, std::vector<std::string>& problems) override;
  int64_t step_size_;
  double gamma_;
};

// Linear warmup, then cosine decay:
//   epoch <  warmup:          base * (start_factor + (1 - start_factor) * epoch / warmup)
//   warmup <= epoch <= total: min_lr + (base - min_lr) * (1 + cos(pi * (epoch - warmup) / (total - warmup))) / 2
//   epoch >  total:           min_lr
// warmup_steps >= 0, total_steps > warmup_steps.
struct WarmupCosineOptions {
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_lr = 0.0;
  double start_factor = 0.0;  // warmup starts at start_factor * base
};
class WarmupCosineLR : public LRScheduler {
 public:
  WarmupCosineLR(Optimizer& opt, WarmupCosineOptions o);
  double lr_at(double base, int64_t epoch) const override;

 private:
  void save_options(StateDict& sd) const override;
  void load_options(const StateDict& sd, std::vector<std::string>& problems) override;
  WarmupCosineOptions o_;
};

// Linear change of the factor from start_factor to end_factor over total_steps, then constant:
//   lr = base * (start_factor + (end_factor - start_factor) * min(epoch, total) / total)
// The defaults decay linearly to zero. total_steps > 0; factors >= 0.
struct LinearLROptions {
  double start_factor = 1.0;
  double end_factor = 0.0;
  int64_t total_steps = 1;
};
class LinearLR : public LRScheduler {
 public:
  LinearLR(Optimizer& opt, LinearLROptions o);
  double lr_at(double base, int64_t epoch) const override;

 private:
  void save_options(StateDict& sd) const override;
  void load_options(const StateDict& sd, std::vector<std::string>& problems) override;
  LinearLROptions o_;
};

// PyTorch's ReduceLROnPlateau. step(metric): a metric better than the best so far (mode min:
// metric < best * (1 - threshold), or < best - threshold with threshold_abs; mode max the
// mirror image) resets the count of bad epochs; during cooldown bad epochs are not counted;
// once there have been more than `patience` bad epochs, every group's lr becomes
// max(lr * factor, min_lr) (changes smaller than eps are skipped) and cooldown starts.
struct PlateauOptions {
  bool mode_max = false;       // false: lower metric is better
  double factor = 0.1;         // in (0, 1)
  int64_t patience = 10;       // >= 0
  double threshold = 1e-4;     // >= 0
  bool threshold_abs = false;  // false: relative threshold
  int64_t cooldown = 0;        // >= 0
  double min_lr = 0.0;         // >= 0
  double eps = 1e-8;
};
class ReduceLROnPlateau {
 public:
  ReduceLROnPlateau(Optimizer& opt, PlateauOptions o = {});
  void step(double metric);
  int64_t last_epoch() const { return epoch_; }
  double best() const { return best_; }
  int64_t num_bad_epochs() const { return num_bad_; }
  int64_t cooldown_counter() const { return cooldown_counter_; }
  std::vector<double> last_lr() const;

  StateDict state_dict() const;
  void load_state_dict(const StateDict& sd);

 private:
  bool is_better(double a, double best) const;
  Optimizer& opt_;
  PlateauOptions o_;
  double best_;
  int64_t num_bad_ = 0;
  int64_t cooldown_counter_ = 0;
  int64_t epoch_ = 0;
};

}  // namespace ember::optim
