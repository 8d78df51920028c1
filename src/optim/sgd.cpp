// SGD with momentum, dampening, Nesterov and weight decay, PyTorch's rule (see sgd.h). The
// update of all parameters is one fused multi-tensor kernel per (device, dtype):
// src/cpu/optim.cpp and kernels/optim.cu.
#include "ember/optim/sgd.h"

#include <cmath>
#include <utility>

#include "ember/core/error.h"
#include "optim/fused.h"
#include "optim/meta.h"

namespace ember::optim {
namespace {

void check_sgd_options(const std::string& name, const SGDOptions& o, const std::string& where) {
  EMBER_CHECK(std::isfinite(o.lr) && o.lr >= 0.0, name, where, "lr must be >= 0, got ", o.lr);
  EMBER_CHECK(std::isfinite(o.momentum) && o.momentum >= 0.0, name, where, "momentum must be >= 0, got ", o.momentum);
  EMBER_CHECK(std::isfinite(o.weight_decay) && o.weight_decay >= 0.0, name, where, "weight_decay must be >= 0, got ",
              o.weight_decay);
  EMBER_CHECK(o.dampening >= 0.0 && o.dampening <= 1.0, name, where, "dampening must be in [0, 1], got ", o.dampening);
  EMBER_CHECK(!o.nesterov || (o.momentum > 0.0 && o.dampening == 0.0), name, where,
              "nesterov needs momentum > 0 and dampening == 0, got momentum ", o.momentum, " and dampening ",
              o.dampening);
}

}  // namespace

SGD::SGD(std::vector<Tensor> params, SGDOptions opt)
    : SGD(std::vector<ParamGroup>{ParamGroup{.params = std::move(params)}}, opt) {}

SGD::SGD(std::vector<ParamGroup> groups, SGDOptions defaults)
    : Optimizer("SGD", std::move(groups), {"momentum_buffer"}), opt_(defaults) {
  check_options();
}

SGDOptions SGD::group_options(size_t group) const {
  const ParamGroup& g = param_group(group);
  SGDOptions o = opt_;
  if (g.lr) o.lr = *g.lr;
  if (g.momentum) o.momentum = *g.momentum;
  if (g.weight_decay) o.weight_decay = *g.weight_decay;
  if (g.dampening) o.dampening = *g.dampening;
  if (g.nesterov) o.nesterov = *g.nesterov;
  return o;
}

std::vector<std::string> SGD::own_options() const { return {"lr", "weight_decay", "momentum", "dampening", "nesterov"}; }

void SGD::validate() const {
  check_sgd_options(name_, opt_, "");
  for (size_t g = 0; g < groups_.size(); ++g)
    check_sgd_options(name_, group_options(g), groups_.size() > 1 ? "group " + std::to_string(g) + ": " : "");
}

std::vector<std::string> SGD::required_buffers() const { return {}; }  // momentum_buffer only with momentum

void SGD::step_impl() {
  std::vector<fused::SGDItem> items;
  std::vector<Work> work;
  // Captured into a graph, this host code runs once: the learning rate (a schedule changes it)
  // and the step count are written before every replay instead.
  const bool captured = fused::capturing();
  std::vector<std::pair<size_t, size_t>> where;
  for (size_t g = 0; g < groups_.size(); ++g) {
    const SGDOptions o = group_options(g);
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      std::optional<Work> w = prepare(g, i);
      if (!w) continue;
      fused::SGDArgs a{};
      a.param = w->data.data_ptr();
      a.grad = w->grad.data_ptr();
      a.momentum_buffer = nullptr;
      a.numel = w->data.numel();
      a.lr = o.lr;
      a.weight_decay = o.weight_decay;
      a.momentum = o.momentum;
      a.dampening = o.dampening;
      a.nesterov = o.nesterov ? 1 : 0;
      a.first = 0;
      if (o.momentum != 0.0) {
        bool created = false;
        Tensor& buf = state_buffer(g, i, 0, created);
        a.momentum_buffer = buf.data_ptr();
        a.first = created ? 1 : 0;  // a new buffer becomes the gradient
        EMBER_CHECK(!(captured && created), name_, "the momentum buffer of group ", g, " parameter ", i,
                    " would be made inside a captured step, and every replay would treat it as new: run one "
                    "step eagerly before capturing (StepGraphOptions::warmup_steps >= 1)");
      }
      if (!captured) ++state_[g][i].step;
      items.push_back({w->data, a});
      where.emplace_back(g, i);
      work.push_back(std::move(*w));
    }
  }
  if (captured)
    fused::capture_hyper(items, [this, where](size_t k, double* row) {
      const auto [g, i] = where[k];
      ++state_[g][i].step;
      row[0] = group_options(g).lr;
    });
  fused::sgd_step(items);
  finish_update(work);
}

void SGD::save_defaults(StateDict& sd) const {
  sd.meta["defaults.lr"] = meta::fmt(opt_.lr);
  sd.meta["defaults.momentum"] = meta::fmt(opt_.momentum);
  sd.meta["defaults.weight_decay"] = meta::fmt(opt_.weight_decay);
  sd.meta["defaults.dampening"] = meta::fmt(opt_.dampening);
  sd.meta["defaults.nesterov"] = meta::fmt(opt_.nesterov);
}

void SGD::load_defaults(const StateDict& sd, std::vector<std::string>& problems, bool apply) {
  SGDOptions o = opt_;
  const size_t before = problems.size();
  meta::read(sd, "defaults.lr", o.lr, problems);
  meta::read(sd, "defaults.momentum", o.momentum, problems);
  meta::read(sd, "defaults.weight_decay", o.weight_decay, problems);
  meta::read(sd, "defaults.dampening", o.dampening, problems);
  meta::read(sd, "defaults.nesterov", o.nesterov, problems);
  if (apply && problems.size() == before) opt_ = o;
}

}  // namespace ember::optim
