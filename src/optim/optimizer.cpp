// The optimizer base: parameter checks, groups, learning rates, the work list a fused step
// updates, and the checkpoint format (see include/ember/optim/optimizer.h).
#include "ember/optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "ember/autograd/grad_mode.h"
#include "ember/core/error.h"
#include "ember/ops/ops.h"
#include "optim/meta.h"

namespace ember::optim {
namespace {

// The ParamGroup options, by name (checkpoint keys and "not this optimizer's" checks).
struct OptionField {
  const char* name;
  std::optional<double> ParamGroup::*number;
  std::optional<bool> ParamGroup::*flag;
};
const OptionField kOptionFields[] = {
    {"lr", &ParamGroup::lr, nullptr},
    {"weight_decay", &ParamGroup::weight_decay, nullptr},
    {"momentum", &ParamGroup::momentum, nullptr},
    {"dampening", &ParamGroup::dampening, nullptr},
    {"nesterov", nullptr, &ParamGroup::nesterov},
    {"beta1", &ParamGroup::beta1, nullptr},
    {"beta2", &ParamGroup::beta2, nullptr},
    {"eps", &ParamGroup::eps, nullptr},
    {"amsgrad", nullptr, &ParamGroup::amsgrad},
};

bool is_set(const ParamGroup& g, const OptionField& f) {
  return f.number ? (g.*f.number).has_value() : (g.*f.flag).has_value();
}

std::string state_key(size_t g, size_t i, const std::string& what) {
  return "state." + std::to_string(g) + "." + std::to_string(i) + "." + what;
}
std::string group_key(size_t g, const std::string& what) { return "group." + std::to_string(g) + "." + what; }

std::vector<std::string> split_names(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos) comma = s.size();
    if (comma > start) out.push_back(s.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

}  // namespace

Optimizer::Optimizer(std::string name, std::vector<ParamGroup> groups, std::vector<std::string> buffer_names)
    : name_(std::move(name)), groups_(std::move(groups)), buffer_names_(std::move(buffer_names)) {
  size_t total = 0;
  std::set<const TensorImpl*> seen;
  for (size_t g = 0; g < groups_.size(); ++g) {
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      const Tensor& p = groups_[g].params[i];
      const std::string where = groups_.size() == 1 ? "parameter " + std::to_string(i)
                                                    : "parameter " + std::to_string(i) + " of group " + std::to_string(g);
      EMBER_CHECK(p.defined(), name_, where, " is an undefined tensor");
      EMBER_CHECK(p.is_leaf() && p.requires_grad(), name_, where, " ", p.str(), " must be a leaf that requires grad");
      EMBER_CHECK(seen.insert(p.impl_ptr().get()).second, name_, where, " ", p.str(),
                  " appears more than once in the optimizer's parameters");
      ++total;
    }
  }
  EMBER_CHECK(total > 0, name_, "got an empty parameter list");
  state_.resize(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) {
    state_[g].resize(groups_[g].params.size());
    for (auto& s : state_[g]) s.buffers.resize(buffer_names_.size());
  }
}

void Optimizer::check_options() const {
  const std::vector<std::string> own = own_options();
  for (size_t g = 0; g < groups_.size(); ++g)
    for (const OptionField& f : kOptionFields)
      EMBER_CHECK(!is_set(groups_[g], f) || std::find(own.begin(), own.end(), f.name) != own.end(), name_,
                  "group ", g, " sets ", f.name, ", which ", name_, " does not use");
  validate();
}

void Optimizer::step() {
  NoGradGuard no_grad;
  validate();  // options may have changed since the last step
  step_impl();
}

void Optimizer::zero_grad(bool set_to_none) {
  NoGradGuard no_grad;
  for (const auto& group : groups_)
    for (const Tensor& p : group.params) {
      if (set_to_none) p.set_grad(Tensor());
      else if (Tensor g = p.grad(); g.defined()) g.zero_();
    }
}

const ParamGroup& Optimizer::param_group(size_t group) const {
  EMBER_CHECK(group < groups_.size(), name_, "group ", group, " out of range (", groups_.size(), " groups)");
  return groups_[group];
}

std::vector<Tensor> Optimizer::parameters() const {
  std::vector<Tensor> out;
  for (const auto& group : groups_) out.insert(out.end(), group.params.begin(), group.params.end());
  return out;
}

double Optimizer::lr(size_t group) const {
  const ParamGroup& g = param_group(group);
  return g.lr ? *g.lr : default_lr();
}

void Optimizer::set_lr(size_t group, double lr) {
  param_group(group);  // range check
  EMBER_CHECK(std::isfinite(lr) && lr >= 0.0, name_, "lr must be finite and >= 0, got ", lr, " (group ", group, ")");
  groups_[group].lr = lr;
}

double Optimizer::weight_decay(size_t group) const {
  const ParamGroup& g = param_group(group);
  return g.weight_decay ? *g.weight_decay : default_weight_decay();
}

int64_t Optimizer::step_count(size_t group, size_t index) const {
  const ParamGroup& g = param_group(group);
  EMBER_CHECK(index < g.params.size(), name_, "parameter ", index, " out of range (group ", group, " has ",
              g.params.size(), ")");
  return state_[group][index].step;
}

// --- the work list of a step -----------------------------------------------------------------------

std::optional<Optimizer::Work> Optimizer::prepare(size_t group, size_t index) const {
  const Tensor& p = groups_[group].params[index];
  Tensor g = p.grad();
  if (!g.defined()) return std::nullopt;
  EMBER_CHECK(g.shape() == p.shape(), name_, "gradient ", shape_str(g.shape()), " does not match parameter ", index,
              " of group ", group, " ", shape_str(p.shape()));
  EMBER_CHECK(g.device() == p.device(), name_, "gradient on ", g.device(), " for parameter ", index, " of group ",
              group, " on ", p.device());
  if (g.dtype() != p.dtype()) g = to_dtype(g, p.dtype());
  if (!g.is_contiguous()) g = contiguous(g);
  return Work{p, p.is_contiguous() ? p : contiguous(p), g};
}

void Optimizer::finish_update(const std::vector<Work>& work) {
  for (const Work& w : work) {
    if (w.data.is_same(w.param)) {
      w.param.impl().storage->bump_version();  // written in place by a kernel
    } else {
      Tensor p = w.param;
      p.copy_(w.data);  // bumps the version
    }
  }
}

Tensor& Optimizer::state_buffer(size_t group, size_t index, size_t slot, bool& created) {
  const Tensor& p = groups_[group].params[index];
  Tensor& b = state_[group][index].buffers[slot];
  const DType want = state_dtype(p.dtype());
  created = false;
  if (!b.defined()) {
    b = empty(p.shape(), TensorOptions(want).with_device(p.device()));
    created = true;
  } else if (b.device() != p.device() || b.dtype() != want || !b.is_contiguous()) {
    b = contiguous(to_dtype(to_device(b, p.device()), want));
  }
  return b;
}

// --- checkpoints -------------------------------------------------------------------------------------

StateDict Optimizer::state_dict() const {
  StateDict sd;
  sd.meta["optimizer"] = name_;
  sd.meta["groups"] = std::to_string(groups_.size());
  save_defaults(sd);
  for (size_t g = 0; g < groups_.size(); ++g) {
    sd.meta[group_key(g, "params")] = std::to_string(groups_[g].params.size());
    for (const OptionField& f : kOptionFields) {
      if (!is_set(groups_[g], f)) continue;
      sd.meta[group_key(g, f.name)] = f.number ? meta::fmt(*(groups_[g].*f.number)) : meta::fmt(*(groups_[g].*f.flag));
    }
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      const ParamState& s = state_[g][i];
      sd.meta[state_key(g, i, "step")] = meta::fmt(s.step);
      std::vector<std::string> names;
      for (size_t k = 0; k < buffer_names_.size(); ++k) {
        if (!s.buffers[k].defined()) continue;
        names.push_back(buffer_names_[k]);
        sd.tensors.emplace_back(state_key(g, i, buffer_names_[k]), s.buffers[k]);
      }
      sd.meta[state_key(g, i, "buffers")] = meta::join(names, ",");
    }
  }
  return sd;
}

void Optimizer::load_state_dict(const StateDict& sd) {
  const char* op = "load_state_dict";
  // Structure first: without matching groups nothing else can be checked.
  const std::string* kind = meta::find(sd, "optimizer");
  EMBER_CHECK(kind, op, name_, ": missing meta \"optimizer\" (not an optimizer state dict?)");
  EMBER_CHECK(*kind == name_, op, "the state dict is from ", io::detail::printable(*kind), ", this optimizer is ", name_);
  std::vector<std::string> problems;
  int64_t ngroups = -1;
  meta::read(sd, "groups", ngroups, problems);
  EMBER_CHECK(problems.empty(), op, name_, ": ", meta::join(problems, "; "));
  EMBER_CHECK(ngroups == static_cast<int64_t>(groups_.size()), op, name_, ": the state dict has ", ngroups,
              " parameter groups, this optimizer ", groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) {
    int64_t n = -1;
    if (meta::read(sd, group_key(g, "params"), n, problems) && n != static_cast<int64_t>(groups_[g].params.size()))
      problems.push_back("group " + std::to_string(g) + " has " + std::to_string(n) + " parameters in the state dict, " +
                         std::to_string(groups_[g].params.size()) + " here");
  }
  EMBER_CHECK(problems.empty(), op, name_, ": ", meta::join(problems, "; "));

  // Options: parse everything into copies.
  load_defaults(sd, problems, false);
  const std::vector<std::string> own = own_options();
  std::vector<ParamGroup> new_groups = groups_;
  for (size_t g = 0; g < groups_.size(); ++g) {
    for (const OptionField& f : kOptionFields) {
      const std::string key = group_key(g, f.name);
      const bool mine = std::find(own.begin(), own.end(), f.name) != own.end();
      if (f.number) (new_groups[g].*f.number).reset();
      else (new_groups[g].*f.flag).reset();
      if (!meta::find(sd, key)) continue;
      if (!mine) {
        problems.push_back("unexpected meta \"" + key + "\" (" + name_ + " has no option " + f.name + ")");
      } else if (f.number) {
        double v = 0;
        if (meta::read(sd, key, v, problems)) new_groups[g].*f.number = v;
      } else {
        bool v = false;
        if (meta::read(sd, key, v, problems)) new_groups[g].*f.flag = v;
      }
    }
  }

  // State: every listed buffer present, with the parameter's shape; nothing left over.
  std::vector<std::vector<ParamState>> new_state(groups_.size());
  std::set<std::string> used;
  const std::vector<std::string> required = required_buffers();
  for (size_t g = 0; g < groups_.size(); ++g) {
    new_state[g].resize(groups_[g].params.size());
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      const Tensor& p = groups_[g].params[i];
      ParamState& s = new_state[g][i];
      s.buffers.resize(buffer_names_.size());
      if (meta::read(sd, state_key(g, i, "step"), s.step, problems) &&
          (s.step < 0 || s.step == std::numeric_limits<int64_t>::max()))
        problems.push_back("meta \"" + state_key(g, i, "step") + "\" = " + std::to_string(s.step) +
                           " is out of range [0, 2^63 - 1)");
      const std::string* listed = meta::find(sd, state_key(g, i, "buffers"));
      if (!listed) {
        problems.push_back("missing meta \"" + state_key(g, i, "buffers") + "\"");
        continue;
      }
      const std::vector<std::string> names = split_names(*listed);
      if (s.step > 0)
        for (const std::string& r : required)
          if (std::find(names.begin(), names.end(), r) == names.end())
            problems.push_back("missing tensor \"" + state_key(g, i, r) + "\" (the parameter has taken " +
                               std::to_string(s.step) + " steps)");
      for (const std::string& n : names) {
        const auto slot = std::find(buffer_names_.begin(), buffer_names_.end(), n);
        const std::string key = state_key(g, i, n);
        if (slot == buffer_names_.end()) {
          problems.push_back("unknown buffer \"" + key + "\" (" + name_ + " keeps " + meta::join(buffer_names_, ", ") + ")");
          continue;
        }
        const Tensor t = sd.find(key);
        if (!t.defined()) {
          problems.push_back("missing tensor \"" + key + "\"");
          continue;
        }
        used.insert(key);
        if (t.shape() != p.shape()) {
          problems.push_back("tensor \"" + key + "\" has shape " + shape_str(t.shape()) + ", the parameter " +
                             shape_str(p.shape()));
          continue;
        }
        if (!is_floating(t.dtype())) {
          problems.push_back("tensor \"" + key + "\" is " + dtype_name(t.dtype()) + ", expected a float tensor");
          continue;
        }
        s.buffers[slot - buffer_names_.begin()] = t;
      }
    }
  }
  for (const auto& [n, t] : sd.tensors)
    if (!used.count(n)) problems.push_back("unexpected tensor \"" + n + "\"");
  EMBER_CHECK(problems.empty(), op, name_, ": ", meta::join(problems, "; "));

  // Apply the options, checked as a whole; restore on failure.
  std::vector<ParamGroup> old_groups = groups_;
  StateDict old_defaults;
  save_defaults(old_defaults);
  std::vector<std::string> unused;
  load_defaults(sd, unused, true);
  groups_ = std::move(new_groups);
  try {
    validate();
  } catch (...) {
    groups_ = std::move(old_groups);
    load_defaults(old_defaults, unused, true);
    throw;
  }
  // Own copies of the buffers, in the state dtype on the parameter's device.
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      const Tensor& p = groups_[g].params[i];
      for (Tensor& b : new_state[g][i].buffers)
        if (b.defined()) b = clone(to_dtype(to_device(b.detach(), p.device()), state_dtype(p.dtype())));
    }
  state_ = std::move(new_state);
}

}  // namespace ember::optim
