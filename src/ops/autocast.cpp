// The autocast hook of the op path and the guard that drives it.
#include "ember/ops/autocast.h"

#include <unordered_map>

#include "ember/autograd/grad_mode.h"
#include "ember/core/error.h"
#include "ember/ops/ops.h"
#include "ops/op_call.h"

namespace ember {
namespace {

struct CacheEntry {
  Tensor source;  // held so its address cannot be reused while the entry lives
  uint64_t version;
  Tensor cast;
};
// Casts of parameters, by (source, dtype); emptied when the outermost guard ends.
thread_local std::unordered_map<const TensorImpl*, std::vector<CacheEntry>> t_cast_cache;
thread_local int t_guards = 0;

Tensor cast_to(const Tensor& t, DType dt) {
  if (t.dtype() == dt) return t;
  // Only casts that carry the parameter's history are cached: one made under NoGradGuard
  // (evaluation inside the region) has none and would cut the gradient of a later use.
  if (!(t.is_leaf() && t.requires_grad() && grad_enabled())) return to_dtype(t, dt);
  std::vector<CacheEntry>& entries = t_cast_cache[&t.impl()];
  for (CacheEntry& e : entries)
    if (e.cast.dtype() == dt) {
      if (e.version == t.version()) return e.cast;
      e.cast = to_dtype(t, dt);
      e.version = t.version();
      return e.cast;
    }
  entries.push_back({t, t.version(), to_dtype(t, dt)});
  return entries.back().cast;
}

bool is_low(DType t) { return t == DType::f16 || t == DType::bf16; }

}  // namespace

namespace detail {
bool autocast_inputs(std::vector<Tensor>& inputs, Precision precision, DType low) {
  // The dtype each floating input should have, by category (nullopt: leave it).
  std::optional<DType> widest;
  if (precision == Precision::widest)
    for (const Tensor& t : inputs)
      if (t.defined() && is_floating(t.dtype())) widest = widest ? promote_types(*widest, t.dtype()) : t.dtype();
  bool changed = false;
  for (Tensor& t : inputs) {
    if (!t.defined() || !is_floating(t.dtype())) continue;
    DType want = t.dtype();
    if (precision == Precision::lower) want = low;
    else if (precision == Precision::f32 && is_low(t.dtype())) want = DType::f32;
    else if (precision == Precision::widest) want = *widest;
    if (want == t.dtype()) continue;
    t = cast_to(t, want);
    changed = true;
  }
  return changed;
}
}  // namespace detail

namespace amp {

AutocastGuard::AutocastGuard(Device device, DType low, bool enabled) : type_(device.type) {
  EMBER_CHECK(!enabled || low == DType::bf16 || low == DType::f16, "autocast",
              "the low dtype must be bf16 or f16, got ", dtype_name(low));
  detail::OpThreadState& s = detail::t_op;
  const auto bit = static_cast<uint8_t>(1u << static_cast<unsigned>(type_));
  was_enabled_ = (s.autocast_mask & bit) != 0;
  previous_low_ = s.autocast_low[static_cast<unsigned>(type_)];
  if (enabled) {
    s.autocast_mask |= bit;
    s.autocast_low[static_cast<unsigned>(type_)] = low;
  } else {
    s.autocast_mask &= static_cast<uint8_t>(~bit);
  }
  ++t_guards;
}

AutocastGuard::~AutocastGuard() {
  detail::OpThreadState& s = detail::t_op;
  const auto bit = static_cast<uint8_t>(1u << static_cast<unsigned>(type_));
  s.autocast_mask = was_enabled_ ? (s.autocast_mask | bit) : (s.autocast_mask & static_cast<uint8_t>(~bit));
  s.autocast_low[static_cast<unsigned>(type_)] = previous_low_;
  if (--t_guards == 0) t_cast_cache.clear();
}

bool is_autocast_enabled(Device device) {
  return (detail::t_op.autocast_mask >> static_cast<unsigned>(device.type)) & 1u;
}
DType autocast_dtype(Device device) { return detail::t_op.autocast_low[static_cast<unsigned>(device.type)]; }
int64_t autocast_cache_size() {
  int64_t n = 0;
  for (const auto& [k, v] : t_cast_cache) n += static_cast<int64_t>(v.size());
  return n;
}

}  // namespace amp
}  // namespace ember
