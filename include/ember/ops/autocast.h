// Autocast: while an AutocastGuard lives, ops on tensors of its device type run in the precision
// their category asks for (ember/ops/op_def.h): GEMM-bound ops (matmul, linear, bmm, conv1d,
// recurrences, attention) in the low dtype, ops that need range or accumulation (softmax,
// log_softmax, layer_norm, losses, sum/mean/var, exp/log/pow, ...) in f32, mixed binary ops in
// the widest dtype. Everything else, in-place ops, and the backward pass run as given. The
// GradScaler that goes with it is in ember/amp.h.
#pragma once
#include "ember/core/device.h"
#include "ember/core/dtype.h"

namespace ember::amp {

// Autocast on for `device`'s type (cpu, cuda or the stand-in device; the index is ignored)
// while alive, with `low` (bf16 or f16) as the low dtype; `enabled = false` turns it off for
// the guard's lifetime instead. Guards nest: the inner one wins until it ends. Casts of a
// parameter (a leaf that requires grad) are cached until the outermost guard ends.
class AutocastGuard {
 public:
  AutocastGuard(Device device, DType low = DType::bf16, bool enabled = true);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  DeviceType type_;
  bool was_enabled_;
  DType previous_low_;
};

bool is_autocast_enabled(Device device);
// The low dtype autocast uses for `device`'s type (meaningful while enabled).
DType autocast_dtype(Device device);
// Entries in this thread's cast cache (parameters cast in the current autocast region).
int64_t autocast_cache_size();

}  // namespace ember::amp
