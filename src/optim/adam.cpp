// Adam and AdamW, PyTorch's rules with bias correction (see adam.h). Bias corrections are
// computed per parameter on the host in double (each parameter has its own step count: one
// without a gradient skips a step); the update of all parameters is one fused multi-tensor
// kernel per (device, dtype): src/cpu/optim.cpp and kernels/optim.cu.
#include "ember/optim/adam.h"

#include <cmath>
#include <utility>

#include "ember/core/error.h"
#include "optim/fused.h"
#include "optim/meta.h"

namespace ember::optim {
namespace {

void check_adam_options(const std::string& name, const AdamOptions& o, const std::string& where) {
  EMBER_CHECK(std::isfinite(o.lr) && o.lr >= 0.0, name, where, "lr must be >= 0, got ", o.lr);
  EMBER_CHECK(o.beta1 >= 0.0 && o.beta1 < 1.0, name, where, "beta1 must be in [0, 1), got ", o.beta1);
  EMBER_CHECK(o.beta2 >= 0.0 && o.beta2 < 1.0, name, where, "beta2 must be in [0, 1), got ", o.beta2);
  // eps = 0 divides by sqrt(v) = 0 for a parameter whose gradients have all been 0: NaN.
  EMBER_CHECK(std::isfinite(o.eps) && o.eps > 0.0, name, where, "eps must be finite and > 0, got ", o.eps);
  EMBER_CHECK(std::isfinite(o.weight_decay) && o.weight_decay >= 0.0, name, where, "weight_decay must be >= 0, got ",
              o.weight_decay);
}

AdamOptions from_adamw(const AdamWOptions& w) {
  return AdamOptions{.lr = w.lr, .beta1 = w.beta1, .beta2 = w.beta2, .eps = w.eps, .weight_decay = w.weight_decay,
                     .amsgrad = w.amsgrad};
}

constexpr size_t kExpAvg = 0, kExpAvgSq = 1, kMaxExpAvgSq = 2;

}  // namespace

Adam::Adam(std::vector<Tensor> params, AdamOptions opt)
    : Adam("Adam", false, std::vector<ParamGroup>{ParamGroup{.params = std::move(params)}}, opt) {}

Adam::Adam(std::vector<ParamGroup> groups, AdamOptions defaults) : Adam("Adam", false, std::move(groups), defaults) {}

Adam::Adam(const char* name, bool decoupled, std::vector<ParamGroup> groups, AdamOptions defaults)
    : Optimizer(name, std::move(groups), {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
      decoupled_(decoupled),
      opt_(defaults) {
  check_options();
}

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions opt)
    : Adam("AdamW", true, std::vector<ParamGroup>{ParamGroup{.params = std::move(params)}}, from_adamw(opt)) {}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions defaults)
    : Adam("AdamW", true, std::move(groups), from_adamw(defaults)) {}

AdamOptions Adam::group_options(size_t group) const {
  const ParamGroup& g = param_group(group);
  AdamOptions o = opt_;
  if (g.lr) o.lr = *g.lr;
  if (g.beta1) o.beta1 = *g.beta1;
  if (g.beta2) o.beta2 = *g.beta2;
  if (g.eps) o.eps = *g.eps;
  if (g.weight_decay) o.weight_decay = *g.weight_decay;
  if (g.amsgrad) o.amsgrad = *g.amsgrad;
  return o;
}

std::vector<std::string> Adam::own_options() const { return {"lr", "weight_decay", "beta1", "beta2", "eps", "amsgrad"}; }

void Adam::validate() const {
  check_adam_options(name_, opt_, "");
  for (size_t g = 0; g < groups_.size(); ++g)
    check_adam_options(name_, group_options(g), groups_.size() > 1 ? "group " + std::to_string(g) + ": " : "");
}

std::vector<std::string> Adam::required_buffers() const { return {"exp_avg", "exp_avg_sq"}; }

void Adam::step_impl() {
  std::vector<fused::AdamItem> items;
  std::vector<Work> work;
  // Captured into a graph, this host code runs once: the step count, the bias corrections and
  // the learning rate (a schedule changes it) are written before every replay instead.
  const bool captured = fused::capturing();
  std::vector<std::pair<size_t, size_t>> where;  // (group, index) of each record
  for (size_t g = 0; g < groups_.size(); ++g) {
    const AdamOptions o = group_options(g);
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      std::optional<Work> w = prepare(g, i);
      if (!w) continue;
      // Moments start at zero (also a max buffer switched on mid-training: max(0, v) = v).
      bool created = false;
      Tensor& m = state_buffer(g, i, kExpAvg, created);
      if (created) m.zero_();
      Tensor& v = state_buffer(g, i, kExpAvgSq, created);
      if (created) v.zero_();
      Tensor* vmax = nullptr;
      if (o.amsgrad) {
        vmax = &state_buffer(g, i, kMaxExpAvgSq, created);
        if (created) vmax->zero_();
      }
      const int64_t t = captured ? state_[g][i].step + 1 : ++state_[g][i].step;
      const double bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(t));
      const double bc2 = 1.0 - std::pow(o.beta2, static_cast<double>(t));
      fused::AdamArgs a{};
      a.param = w->data.data_ptr();
      a.grad = w->grad.data_ptr();
      a.exp_avg = m.data_ptr();
      a.exp_avg_sq = v.data_ptr();
      a.max_exp_avg_sq = vmax ? vmax->data_ptr() : nullptr;
      a.numel = w->data.numel();
      a.lr = o.lr;
      a.weight_decay = o.weight_decay;
      a.beta1 = o.beta1;
      a.beta2 = o.beta2;
      a.eps = o.eps;
      a.step_size = o.lr / bc1;
      a.bias_correction2_sqrt = std::sqrt(bc2);
      items.push_back({w->data, a});
      where.emplace_back(g, i);
      work.push_back(std::move(*w));
    }
  }
  if (captured)
    fused::capture_hyper(items, [this, where](size_t k, double* row) {
      const auto [g, i] = where[k];
      const AdamOptions o = group_options(g);
      const int64_t t = ++state_[g][i].step;
      const double bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(t));
      const double bc2 = 1.0 - std::pow(o.beta2, static_cast<double>(t));
      row[0] = o.lr;
      row[1] = o.lr / bc1;
      row[2] = std::sqrt(bc2);
    });
  fused::adam_step(items, decoupled_);
  finish_update(work);
}

void Adam::save_defaults(StateDict& sd) const {
  sd.meta["defaults.lr"] = meta::fmt(opt_.lr);
  sd.meta["defaults.beta1"] = meta::fmt(opt_.beta1);
  sd.meta["defaults.beta2"] = meta::fmt(opt_.beta2);
  sd.meta["defaults.eps"] = meta::fmt(opt_.eps);
  sd.meta["defaults.weight_decay"] = meta::fmt(opt_.weight_decay);
  sd.meta["defaults.amsgrad"] = meta::fmt(opt_.amsgrad);
}

void Adam::load_defaults(const StateDict& sd, std::vector<std::string>& problems, bool apply) {
  AdamOptions o = opt_;
  const size_t before = problems.size();
  meta::read(sd, "defaults.lr", o.lr, problems);
  meta::read(sd, "defaults.beta1", o.beta1, problems);
  meta::read(sd, "defaults.beta2", o.beta2, problems);
  meta::read(sd, "defaults.eps", o.eps, problems);
  meta::read(sd, "defaults.weight_decay", o.weight_decay, problems);
  meta::read(sd, "defaults.amsgrad", o.amsgrad, problems);
  if (apply && problems.size() == before) opt_ = o;
}

}  // namespace ember::optim
