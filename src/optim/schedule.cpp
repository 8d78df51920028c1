// Learning-rate schedules (see schedule.h): closed forms of the epoch count, and
// ReduceLROnPlateau's counters, each with a StateDict of meta only.
#include "ember/optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

#include "ember/core/error.h"
#include "optim/meta.h"

namespace ember::optim {

// --- LRScheduler -----------------------------------------------------------------------------

LRScheduler::LRScheduler(std::string name, Optimizer& opt) : name_(std::move(name)), opt_(opt) {
  for (size_t g = 0; g < opt_.num_groups(); ++g) base_lrs_.push_back(opt_.lr(g));
}

void LRScheduler::start() { apply(); }

void LRScheduler::apply() {
  for (size_t g = 0; g < opt_.num_groups(); ++g) opt_.set_lr(g, lr_at(base_lrs_[g], epoch_));
}

void LRScheduler::step() {
  ++epoch_;
  apply();
}

std::vector<double> LRScheduler::last_lr() const {
  std::vector<double> out;
  for (size_t g = 0; g < opt_.num_groups(); ++g) out.push_back(opt_.lr(g));
  return out;
}

StateDict LRScheduler::state_dict() const {
  StateDict sd;
  sd.meta["scheduler"] = name_;
  sd.meta["last_epoch"] = meta::fmt(epoch_);
  sd.meta["groups"] = std::to_string(base_lrs_.size());
  for (size_t g = 0; g < base_lrs_.size(); ++g) sd.meta["base_lr." + std::to_string(g)] = meta::fmt(base_lrs_[g]);
  save_options(sd);
  return sd;
}

void LRScheduler::load_state_dict(const StateDict& sd) {
  const char* op = "load_state_dict";
  const std::string* kind = meta::find(sd, "scheduler");
  EMBER_CHECK(kind, op, name_, ": missing meta \"scheduler\" (not a schedule's state dict?)");
  EMBER_CHECK(*kind == name_, op, "the state dict is from ", io::detail::printable(*kind), ", this schedule is ", name_);
  std::vector<std::string> problems;
  int64_t epoch = 0, groups = 0;
  // step() adds one: the largest int64 would overflow on the next.
  if (meta::read(sd, "last_epoch", epoch, problems) && (epoch < 0 || epoch == std::numeric_limits<int64_t>::max()))
    problems.push_back("last_epoch = " + std::to_string(epoch) + " is out of range [0, 2^63 - 1)");
  if (meta::read(sd, "groups", groups, problems) && groups != static_cast<int64_t>(opt_.num_groups()))
    problems.push_back("the state dict has " + std::to_string(groups) + " groups, the optimizer " +
                       std::to_string(opt_.num_groups()));
  std::vector<double> base(opt_.num_groups(), 0.0);
  for (size_t g = 0; g < base.size(); ++g) {
    const std::string key = "base_lr." + std::to_string(g);
    if (meta::read(sd, key, base[g], problems) && !(std::isfinite(base[g]) && base[g] >= 0.0))
      problems.push_back(key + " must be finite and >= 0, got " + meta::fmt(base[g]));
  }
  EMBER_CHECK(problems.empty(), op, name_, ": ", meta::join(problems, "; "));
  // Options next (load_options sets them only when they all read and check), then the learning
  // rates they give: all of them valid, or the old options come back and nothing changed.
  StateDict old_options;
  save_options(old_options);
  load_options(sd, problems);
  EMBER_CHECK(problems.empty(), op, name_, ": ", meta::join(problems, "; "));
  std::vector<double> lrs(base.size());
  for (size_t g = 0; g < base.size(); ++g) {
    lrs[g] = lr_at(base[g], epoch);
    if (!(std::isfinite(lrs[g]) && lrs[g] >= 0.0))
      problems.push_back("group " + std::to_string(g) + " would get lr " + meta::fmt(lrs[g]) + " at epoch " +
                         std::to_string(epoch));
  }
  if (!problems.empty()) {
    std::vector<std::string> ignored;
    load_options(old_options, ignored);
    EMBER_FAIL(op, name_, ": ", meta::join(problems, "; "));
  }
  epoch_ = epoch;
  base_lrs_ = base;
  for (size_t g = 0; g < lrs.size(); ++g) opt_.set_lr(g, lrs[g]);  // checked above: cannot throw
}

// --- StepLR ------------------------------------------------------------------------------------

StepLR::StepLR(Optimizer& opt, int64_t step_size, double gamma)
    : LRScheduler("StepLR", opt), step_size_(step_size), gamma_(gamma) {
  EMBER_CHECK(step_size > 0, "StepLR", "step_size must be > 0, got ", step_size);
  EMBER_CHECK(std::isfinite(gamma) && gamma >= 0.0, "StepLR", "gamma must be >= 0, got ", gamma);
  start();
}

double StepLR::lr_at(double base, int64_t epoch) const {
  return base * std::pow(gamma_, static_cast<double>(epoch / step_size_));
}

void StepLR::save_options(StateDict& sd) const {
  sd.meta["step_size"] = meta::fmt(step_size_);
  sd.meta["gamma"] = meta::fmt(gamma_);
}

void StepLR::load_options(const StateDict& sd, std::vector<std::string>& problems) {
  int64_t step_size = step_size_;
  double gamma = gamma_;
  meta::read(sd, "step_size", step_size, problems);
  meta::read(sd, "gamma", gamma, problems);
  if (problems.empty() && step_size <= 0) problems.push_back("step_size must be > 0, got " + std::to_string(step_size));
  if (problems.empty() && !(std::isfinite(gamma) && gamma >= 0.0))
    problems.push_back("gamma must be finite and >= 0, got " + meta::fmt(gamma));
  if (!problems.empty()) return;
  step_size_ = step_size;
  gamma_ = gamma;
}

// --- WarmupCosineLR ------------------------------------------------------------------------------

namespace {
void check_cosine(const WarmupCosineOptions& o, std::vector<std::string>& problems) {
  if (o.warmup_steps < 0) problems.push_back("warmup_steps must be >= 0, got " + std::to_string(o.warmup_steps));
  if (o.total_steps <= o.warmup_steps)
    problems.push_back("total_steps (" + std::to_string(o.total_steps) + ") must be > warmup_steps (" +
                       std::to_string(o.warmup_steps) + ")");
  if (!(o.min_lr >= 0.0)) problems.push_back("min_lr must be >= 0, got " + meta::fmt(o.min_lr));
  if (!(o.start_factor >= 0.0)) problems.push_back("start_factor must be >= 0, got " + meta::fmt(o.start_factor));
}
}  // namespace

WarmupCosineLR::WarmupCosineLR(Optimizer& opt, WarmupCosineOptions o) : LRScheduler("WarmupCosineLR", opt), o_(o) {
  std::vector<std::string> problems;
  check_cosine(o_, problems);
  EMBER_CHECK(problems.empty(), "WarmupCosineLR", meta::join(problems, "; "));
  start();
}

double WarmupCosineLR::lr_at(double base, int64_t epoch) const {
  if (epoch < o_.warmup_steps)
    return base * (o_.start_factor + (1.0 - o_.start_factor) * static_cast<double>(epoch) / o_.warmup_steps);
  if (epoch > o_.total_steps) return o_.min_lr;
  const double progress = static_cast<double>(epoch - o_.warmup_steps) / static_cast<double>(o_.total_steps - o_.warmup_steps);
  return o_.min_lr + (base - o_.min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

void WarmupCosineLR::save_options(StateDict& sd) const {
  sd.meta["warmup_steps"] = meta::fmt(o_.warmup_steps);
  sd.meta["total_steps"] = meta::fmt(o_.total_steps);
  sd.meta["min_lr"] = meta::fmt(o_.min_lr);
  sd.meta["start_factor"] = meta::fmt(o_.start_factor);
}

void WarmupCosineLR::load_options(const StateDict& sd, std::vector<std::string>& problems) {
  WarmupCosineOptions o = o_;
  meta::read(sd, "warmup_steps", o.warmup_steps, problems);
  meta::read(sd, "total_steps", o.total_steps, problems);
  meta::read(sd, "min_lr", o.min_lr, problems);
  meta::read(sd, "start_factor", o.start_factor, problems);
  if (problems.empty() && !(std::isfinite(o.min_lr) && std::isfinite(o.start_factor)))
    problems.push_back("min_lr and start_factor must be finite, got " + meta::fmt(o.min_lr) + " and " +
                       meta::fmt(o.start_factor));
  if (problems.empty()) check_cosine(o, problems);
  if (problems.empty()) o_ = o;
}

// --- LinearLR ------------------------------------------------------------------------------------

namespace {
void check_linear(const LinearLROptions& o, std::vector<std::string>& problems) {
  if (o.total_steps <= 0) problems.push_back("total_steps must be > 0, got " + std::to_string(o.total_steps));
  if (!(o.start_factor >= 0.0) || !(o.end_factor >= 0.0))
    problems.push_back("start_factor and end_factor must be >= 0, got " + meta::fmt(o.start_factor) + " and " +
                       meta::fmt(o.end_factor));
}
}  // namespace

LinearLR::LinearLR(Optimizer& opt, LinearLROptions o) : LRScheduler("LinearLR", opt), o_(o) {
  std::vector<std::string> problems;
  check_linear(o_, problems);
  EMBER_CHECK(problems.empty(), "LinearLR", meta::join(problems, "; "));
  start();
}

double LinearLR::lr_at(double base, int64_t epoch) const {
  const double t = static_cast<double>(std::min(epoch, o_.total_steps)) / static_cast<double>(o_.total_steps);
  return base * (o_.start_factor + (o_.end_factor - o_.start_factor) * t);
}

void LinearLR::save_options(StateDict& sd) const {
  sd.meta["start_factor"] = meta::fmt(o_.start_factor);
  sd.meta["end_factor"] = meta::fmt(o_.end_factor);
  sd.meta["total_steps"] = meta::fmt(o_.total_steps);
}

void LinearLR::load_options(const StateDict& sd, std::vector<std::string>& problems) {
  LinearLROptions o = o_;
  meta::read(sd, "start_factor", o.start_factor, problems);
  meta::read(sd, "end_factor", o.end_factor, problems);
  meta::read(sd, "total_steps", o.total_steps, problems);
  if (problems.empty() && !(std::isfinite(o.start_factor) && std::isfinite(o.end_factor)))
    problems.push_back("start_factor and end_factor must be finite, got " + meta::fmt(o.start_factor) + " and " +
                       meta::fmt(o.end_factor));
  if (problems.empty()) check_linear(o, problems);
  if (problems.empty()) o_ = o;
}

// --- ReduceLROnPlateau ---------------------------------------------------------------------------

namespace {
void check_plateau(const PlateauOptions& o, std::vector<std::string>& problems) {
  if (!(o.factor > 0.0 && o.factor < 1.0)) problems.push_back("factor must be in (0, 1), got " + meta::fmt(o.factor));
  if (o.patience < 0) problems.push_back("patience must be >= 0, got " + std::to_string(o.patience));
  if (!(o.threshold >= 0.0)) problems.push_back("threshold must be >= 0, got " + meta::fmt(o.threshold));
  if (o.cooldown < 0) problems.push_back("cooldown must be >= 0, got " + std::to_string(o.cooldown));
  if (!(o.min_lr >= 0.0)) problems.push_back("min_lr must be >= 0, got " + meta::fmt(o.min_lr));
  if (!(o.eps >= 0.0)) problems.push_back("eps must be >= 0, got " + meta::fmt(o.eps));
}
}  // namespace

ReduceLROnPlateau::ReduceLROnPlateau(Optimizer& opt, PlateauOptions o) : opt_(opt), o_(o) {
  std::vector<std::string> problems;
  check_plateau(o_, problems);
  EMBER_CHECK(problems.empty(), "ReduceLROnPlateau", meta::join(problems, "; "));
  best_ = o_.mode_max ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
}

bool ReduceLROnPlateau::is_better(double a, double best) const {
  if (!o_.mode_max) return o_.threshold_abs ? a < best - o_.threshold : a < best * (1.0 - o_.threshold);
  return o_.threshold_abs ? a > best + o_.threshold : a > best * (1.0 + o_.threshold);
}

void ReduceLROnPlateau::step(double metric) {
  ++epoch_;
  if (is_better(metric, best_)) {
    best_ = metric;
    num_bad_ = 0;
  } else {
    ++num_bad_;
  }
  if (cooldown_counter_ > 0) {
    --cooldown_counter_;
    num_bad_ = 0;  // bad epochs during cooldown do not count
  }
  if (num_bad_ > o_.patience) {
    for (size_t g = 0; g < opt_.num_groups(); ++g) {
      const double old_lr = opt_.lr(g);
      const double new_lr = std::max(old_lr * o_.factor, o_.min_lr);
      if (old_lr - new_lr > o_.eps) opt_.set_lr(g, new_lr);
    }
    cooldown_counter_ = o_.cooldown;
    num_bad_ = 0;
  }
}

std::vector<double> ReduceLROnPlateau::last_lr() const {
  std::vector<double> out;
  for (size_t g = 0; g < opt_.num_groups(); ++g) out.push_back(opt_.lr(g));
  return out;
}

StateDict ReduceLROnPlateau::state_dict() const {
  StateDict sd;
  sd.meta["scheduler"] = "ReduceLROnPlateau";
  sd.meta["last_epoch"] = meta::fmt(epoch_);
  sd.meta["best"] = meta::fmt(best_);
  sd.meta["num_bad_epochs"] = meta::fmt(num_bad_);
  sd.meta["cooldown_counter"] = meta::fmt(cooldown_counter_);
  sd.meta["mode_max"] = meta::fmt(o_.mode_max);
  sd.meta["factor"] = meta::fmt(o_.factor);
  sd.meta["patience"] = meta::fmt(o_.patience);
  sd.meta["threshold"] = meta::fmt(o_.threshold);
  sd.meta["threshold_abs"] = meta::fmt(o_.threshold_abs);
  sd.meta["cooldown"] = meta::fmt(o_.cooldown);
  sd.meta["min_lr"] = meta::fmt(o_.min_lr);
  sd.meta["eps"] = meta::fmt(o_.eps);
  return sd;
}

void ReduceLROnPlateau::load_state_dict(const StateDict& sd) {
  const char* op = "load_state_dict";
  const std::string* kind = meta::find(sd, "scheduler");
  EMBER_CHECK(kind, op, "ReduceLROnPlateau: missing meta \"scheduler\" (not a schedule's state dict?)");
  EMBER_CHECK(*kind == "ReduceLROnPlateau", op, "the state dict is from ", io::detail::printable(*kind), ", this schedule is ReduceLROnPlateau");
  std::vector<std::string> problems;
  PlateauOptions o = o_;
  int64_t epoch = 0, bad = 0, cooldown_counter = 0;
  double best = 0.0;
  meta::read(sd, "last_epoch", epoch, problems);
  meta::read(sd, "best", best, problems);
  meta::read(sd, "num_bad_epochs", bad, problems);
  meta::read(sd, "cooldown_counter", cooldown_counter, problems);
  meta::read(sd, "mode_max", o.mode_max, problems);
  meta::read(sd, "factor", o.factor, problems);
  meta::read(sd, "patience", o.patience, problems);
  meta::read(sd, "threshold", o.threshold, problems);
  meta::read(sd, "threshold_abs", o.threshold_abs, problems);
  meta::read(sd, "cooldown", o.cooldown, problems);
  meta::read(sd, "min_lr", o.min_lr, problems);
  meta::read(sd, "eps", o.eps, problems);
  if (problems.empty()) check_plateau(o, problems);
  if (problems.empty()) {
    if (epoch < 0 || epoch == std::numeric_limits<int64_t>::max())
      problems.push_back("last_epoch = " + std::to_string(epoch) + " is out of range [0, 2^63 - 1)");
    if (bad < 0 || bad == std::numeric_limits<int64_t>::max())
      problems.push_back("num_bad_epochs = " + std::to_string(bad) + " is out of range [0, 2^63 - 1)");
    if (cooldown_counter < 0) problems.push_back("cooldown_counter must be >= 0, got " + std::to_string(cooldown_counter));
    if (std::isnan(best)) problems.push_back("best must not be NaN");
    if (!std::isfinite(o.threshold) || !std::isfinite(o.min_lr) || !std::isfinite(o.eps))
      problems.push_back("threshold, min_lr and eps must be finite");
  }
  EMBER_CHECK(problems.empty(), op, "ReduceLROnPlateau: ", meta::join(problems, "; "));
  o_ = o;
  epoch_ = epoch;
  best_ = best;
  num_bad_ = bad;
  cooldown_counter_ = cooldown_counter;
}

}  // namespace ember::optim
