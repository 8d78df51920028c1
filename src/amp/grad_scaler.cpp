// GradScaler (ember/amp.h): dynamic loss scaling over the fused unscale_grads primitive.
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/capture.h"
#include "ember/amp.h"
#include "ember/autograd/grad_mode.h"
#include "ember/core/error.h"
#include "ember/dist.h"
#include "ember/ops/ops.h"
#include "optim/fused.h"

namespace ember::amp {
namespace {

// The scale multiplies losses as an f32 scalar: it stays a positive, finite, normal f32.
constexpr double kMinScale = FLT_MIN;
constexpr double kMaxScale = FLT_MAX;

void check_options(const GradScalerOptions& o) {
  const char* op = "GradScaler";
  EMBER_CHECK(std::isfinite(o.init_scale) && o.init_scale >= kMinScale && o.init_scale <= kMaxScale, op,
              "init_scale must be a positive finite f32 value, got ", o.init_scale);
  EMBER_CHECK(std::isfinite(o.growth_factor) && o.growth_factor > 1.0, op, "growth_factor must be > 1, got ",
              o.growth_factor);
  EMBER_CHECK(o.backoff_factor > 0.0 && o.backoff_factor < 1.0, op, "backoff_factor must lie in (0, 1), got ",
              o.backoff_factor);
  EMBER_CHECK(o.growth_interval > 0, op, "growth_interval must be > 0, got ", o.growth_interval);
}

// Exact text for a double (hex float), and back.
std::string exact(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%a", v);
  return buf;
}
double parse_double(const StateDict& sd, const std::string& key) {
  const auto it = sd.meta.find(key);
  EMBER_CHECK(it != sd.meta.end(), "GradScaler.load_state_dict", "missing entry '", key, "'");
  char* end = nullptr;
  const double v = std::strtod(it->second.c_str(), &end);
  EMBER_CHECK(end != it->second.c_str() && *end == '\0', "GradScaler.load_state_dict", "entry '", key,
              "' is not a number: '", it->second.substr(0, 40), "'");
  return v;
}
int64_t parse_int(const StateDict& sd, const std::string& key) {
  const double v = parse_double(sd, key);
  EMBER_CHECK(std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.0e15, "GradScaler.load_state_dict",
              "entry '", key, "' is not an integer: ", v);
  return static_cast<int64_t>(v);
}

}  // namespace

GradScaler::GradScaler(GradScalerOptions o) : o_(o), scale_(o.init_scale) { check_options(o_); }

double GradScaler::get_scale() const {
  if (!o_.enabled) return 1.0;
  if (!dev_) return scale_;
  ember::detail::check_not_capturing("GradScaler.get_scale", "reading the scale on the host");
  return dev_->filled ? static_cast<double>(dev_->scale.item<float>()) : scale_;
}

int64_t GradScaler::growth_tracker() const {
  if (!dev_) return growth_tracker_;
  ember::detail::check_not_capturing("GradScaler.growth_tracker", "reading the clean-step count on the host");
  return dev_->filled ? static_cast<int64_t>(dev_->tracker.item<float>()) : growth_tracker_;
}

// Made inside the capture (its memory is the graph's, kept by dev_) and filled from the host
// state by a hook before the first replay of a capture that uses it: no host-to-device copy
// inside the capture. Once filled, the device copy is the scaler's state.
GradScaler::DeviceState& GradScaler::device_state(Device device) {
  const uint64_t pool = ember::detail::capture_state()->pool;
  if (dev_) {
    EMBER_CHECK(dev_->scale.device() == device, "GradScaler", "its captured state is on ", dev_->scale.device(),
                ", this step runs on ", device, ": one scaler per device in captured steps");
  } else {
    const TensorOptions o = TensorOptions(DType::f32).with_device(device);
    dev_ = std::make_shared<DeviceState>(DeviceState{empty({}, o), empty({}, o)});
  }
  if (!dev_->filled && dev_->hooked_pool != pool) {
    dev_->hooked_pool = pool;
    ember::detail::on_replay([state = dev_, this] {
      if (state->filled) return;
      state->scale.copy_(scalar_tensor(scale_, DType::f32));
      state->tracker.copy_(scalar_tensor(static_cast<double>(growth_tracker_), DType::f32));
      state->filled = true;
    });
  }
  return *dev_;
}

GradScaler::PerOptimizer& GradScaler::state_of(const optim::Optimizer& opt) {
  for (PerOptimizer& p : pending_)
    if (p.opt == &opt) return p;
  PerOptimizer& p = pending_.emplace_back();
  p.opt = &opt;
  return p;
}

Tensor GradScaler::scale(const Tensor& loss) {
  EMBER_CHECK(loss.defined() && is_floating(loss.dtype()), "GradScaler.scale", "needs a float loss tensor, got ",
              loss.defined() ? loss.str() : std::string("an undefined tensor"));
  if (!o_.enabled) return loss;
  // An f16/bf16 loss is scaled in f32 (65536 * loss would overflow f16).
  const DType dt = loss.dtype() == DType::f64 ? DType::f64 : DType::f32;
  if (ember::detail::capture_state() != nullptr)  // the scale as the graph's device state has it then
    return mul(loss, to_dtype(device_state(loss.device()).scale, dt));
  return mul(loss, scalar_tensor(scale_, TensorOptions(dt).with_device(loss.device())));
}

void GradScaler::unscale_(optim::Optimizer& opt) {
  PerOptimizer& st = state_of(opt);
  EMBER_CHECK(!st.unscaled, "GradScaler.unscale_",
              "unscale_() was already called for this optimizer since the last update()");
  EMBER_CHECK(!st.stepped, "GradScaler.unscale_", "unscale_() after step(): call it before step()");
  st.unscaled = true;
  if (!o_.enabled) return;
  NoGradGuard no_grad;
  const optim::fused::GradList grads = optim::fused::collect_grads(opt.parameters(), "GradScaler.unscale_", false);
  std::vector<std::vector<Tensor>> by_device;
  for (const Tensor& g : grads.work) {
    std::vector<Tensor>* group = nullptr;
    for (auto& d : by_device)
      if (d.front().device() == g.device()) group = &d;
    if (group == nullptr) group = &by_device.emplace_back();
    group->push_back(g);
  }
  if (ember::detail::capture_state() != nullptr) {
    // Captured: the fused pass only notes inf/NaN (factor 1); the gradients are then divided by
    // the device scale (a power of two, so the quotient is the eager one).
    for (const auto& group : by_device) {
      const Device d = group.front().device();
      Tensor flag = zeros({1}, TensorOptions(DType::f32).with_device(d));
      optim::fused::unscale_grads(group, 1.0, flag);
      const Tensor inv = 1.0 / device_state(d).scale;
      for (const Tensor& g : group) {
        Tensor w = g;
        w.mul_(to_dtype(inv, g.dtype()));
      }
      st.found_inf.push_back(flag);
    }
    optim::fused::write_back(grads);
    return;
  }
  const double inv = 1.0 / scale_;
  for (const auto& group : by_device) {
    Tensor flag = zeros({1}, TensorOptions(DType::f32).with_device(group.front().device()));
    optim::fused::unscale_grads(group, inv, flag);
    st.found_inf.push_back(flag);
  }
  optim::fused::write_back(grads);
}

bool GradScaler::step(optim::Optimizer& opt) {
  if (!o_.enabled) {
    opt.step();
    return true;
  }
  PerOptimizer& st0 = state_of(opt);
  EMBER_CHECK(!st0.stepped, "GradScaler.step", "step() was already called for this optimizer since the last update()");
  if (!st0.unscaled) unscale_(opt);
  PerOptimizer& st = state_of(opt);  // unscale_ may have grown pending_
  st.stepped = true;
  if (ember::detail::capture_state() != nullptr) {
    // No host read: the update kernels skip themselves when the flag is set.
    EMBER_CHECK(st.found_inf.size() <= 1, "GradScaler.step",
                "a captured step with gradients on several devices is not supported");
    // Under data parallelism the flag is all-reduced (max) inside the graph too, so every rank
    // skips the same replayed steps.
    if (dist::world_size() > 1)
      for (Tensor& f : st.found_inf) dist::all_reduce(f, dist::ReduceOp::max);
    if (st.found_inf.empty()) {
      opt.step();
    } else {
      optim::fused::SkipIf skip(st.found_inf.front());
      opt.step();
    }
    return true;
  }
  if (dist::world_size() > 1)  // every rank skips the same steps
    for (Tensor& f : st.found_inf) dist::all_reduce(f, dist::ReduceOp::max);
  for (const Tensor& f : st.found_inf) st.found = st.found || f.item<float>() != 0.0f;
  if (st.found) return false;
  opt.step();
  return true;
}

void GradScaler::update() {
  if (!o_.enabled) {
    pending_.clear();
    return;
  }
  EMBER_CHECK(!pending_.empty(), "GradScaler.update",
              "no unscale_() or step() since the last update(): nothing to decide the scale from",
              dev_ ? " (this scaler runs inside a CUDA graph: call update() inside the captured step)" : "");
  if (ember::detail::capture_state() != nullptr) {
    // The host rule below, on the device: 0-d f32 tensors, where() for the branches.
    EMBER_CHECK(dev_ != nullptr, "GradScaler.update", "a captured update() without a captured scale() before it");
    DeviceState& d = *dev_;
    Tensor found = zeros({}, TensorOptions(DType::f32).with_device(d.scale.device()));
    for (const PerOptimizer& p : pending_)
      for (const Tensor& f : p.found_inf) found = maximum(found, f.reshape(Shape{}));
    pending_.clear();
    const TensorOptions f32 = TensorOptions(DType::f32).with_device(d.scale.device());
    auto c = [&](double v) { return scalar_tensor(v, f32); };
    const Tensor any = gt(found, c(0.0));
    const Tensor clean = d.tracker + 1.0;
    const Tensor grow = ge(clean, c(static_cast<double>(o_.growth_interval)));
    const Tensor grown = d.scale * o_.growth_factor;
    const Tensor grown_ok = logical_and(grow, le(grown, c(kMaxScale)));  // an inf scale is not taken
    const Tensor new_scale = where(any, maximum(d.scale * o_.backoff_factor, c(kMinScale)), where(grown_ok, grown, d.scale));
    const Tensor new_tracker = where(logical_or(any, grow), zeros_like(clean), clean);
    d.scale.copy_(new_scale);
    d.tracker.copy_(new_tracker);
    return;
  }
  bool found = false;
  for (PerOptimizer& p : pending_) {
    if (!p.stepped)  // unscaled, never stepped: read its flags now
      for (const Tensor& f : p.found_inf) p.found = p.found || f.item<float>() != 0.0f;
    found = found || p.found;
  }
  pending_.clear();
  if (found) {
    scale_ = std::max(scale_ * o_.backoff_factor, kMinScale);
    growth_tracker_ = 0;
    return;
  }
  if (++growth_tracker_ >= o_.growth_interval) {
    const double grown = scale_ * o_.growth_factor;
    if (std::isfinite(grown) && grown <= kMaxScale) scale_ = grown;
    growth_tracker_ = 0;
  }
}

StateDict GradScaler::state_dict() const {
  StateDict sd;
  sd.meta["scale"] = exact(o_.enabled ? get_scale() : scale_);
  sd.meta["growth_tracker"] = std::to_string(growth_tracker());
  sd.meta["growth_factor"] = exact(o_.growth_factor);
  sd.meta["backoff_factor"] = exact(o_.backoff_factor);
  sd.meta["growth_interval"] = std::to_string(o_.growth_interval);
  sd.meta.emplace("enabled", std::string(o_.enabled ? "1" : "0"));  // not operator=: GCC 12 -Wrestrict
  return sd;
}

void GradScaler::load_state_dict(const StateDict& sd) {
  const char* op = "GradScaler.load_state_dict";
  GradScalerOptions o = o_;
  const double scale = parse_double(sd, "scale");
  const int64_t tracker = parse_int(sd, "growth_tracker");
  o.growth_factor = parse_double(sd, "growth_factor");
  o.backoff_factor = parse_double(sd, "backoff_factor");
  o.growth_interval = parse_int(sd, "growth_interval");
  const int64_t enabled = parse_int(sd, "enabled");
  EMBER_CHECK(enabled == 0 || enabled == 1, op, "entry 'enabled' must be 0 or 1, got ", enabled);
  o.enabled = enabled == 1;
  EMBER_CHECK(std::isfinite(scale) && scale >= kMinScale && scale <= kMaxScale, op,
              "entry 'scale' must be a positive finite f32 value, got ", scale);
  EMBER_CHECK(tracker >= 0, op, "entry 'growth_tracker' must be >= 0, got ", tracker);
  o.init_scale = scale;
  check_options(o);
  o_ = o;
  scale_ = scale;
  growth_tracker_ = tracker;
  pending_.clear();
  if (dev_ && dev_->filled) {  // a graph's device copy follows the loaded state (outside a capture: a host copy)
    dev_->scale.copy_(scalar_tensor(scale, DType::f32));
    dev_->tracker.copy_(scalar_tensor(static_cast<double>(tracker), DType::f32));
  }
}

}  // namespace ember::amp
