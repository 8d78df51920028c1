// Value checks that would need a device-to-host copy inside an op (ember/ops/ops.h,
// check_deferred_errors): computed on the device, queued per thread, read when the user asks,
// when a device tensor is read on the host anyway, or when too many are pending.
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ember/autograd/grad_mode.h"
#include "ember/ops/ops.h"
#include "ops/common.h"

namespace ember {
namespace {

struct PendingCheck {
  std::string op, message;
  Tensor lo_hi;  // (2) i64 on the device: min and max of the checked values
  int64_t bound;
};

constexpr size_t kMaxPending = 256;
thread_local std::vector<PendingCheck> t_pending;
thread_local detail::DeferredCheckList* t_captured = nullptr;

void report(const PendingCheck& c, const std::vector<int64_t>& lo_hi) {
  EMBER_CHECK(lo_hi[0] >= 0 && lo_hi[1] < c.bound, c.op, c.message, ", found ", lo_hi[0] < 0 ? lo_hi[0] : lo_hi[1]);
}

}  // namespace

struct detail::DeferredCheckList {
  std::vector<PendingCheck> checks;
};

std::shared_ptr<detail::DeferredCheckList> detail::begin_deferred_capture() {
  auto list = std::make_shared<DeferredCheckList>();
  t_captured = list.get();
  return list;
}
void detail::end_deferred_capture() { t_captured = nullptr; }
void detail::requeue_deferred(const DeferredCheckList& list) {
  t_pending.insert(t_pending.end(), list.checks.begin(), list.checks.end());
  if (t_pending.size() > kMaxPending) check_deferred_errors();
}

Tensor detail::checked_indices(const char* op, const Tensor& values, int64_t bound, std::optional<int64_t> keep,
                              int64_t replacement, std::string message) {
  if (values.numel() == 0) return values;
  NoGradGuard no_grad;
  const TensorOptions o = TensorOptions(values.dtype()).with_device(values.device());
  const Tensor zero = zeros({}, o);
  // `keep` entries count as class 0: always in range.
  const Tensor kept = keep ? where(eq(values, full({}, static_cast<double>(*keep), o)), zero, values) : values;
  PendingCheck c{op, std::move(message), stack({amin(kept), amax(kept)}), bound};
  if (values.device().is_cpu()) {
    report(c, c.lo_hi.to_vector<int64_t>());
    return values;
  }
  if (t_captured != nullptr) {
    t_captured->checks.push_back(std::move(c));
  } else {
    t_pending.push_back(std::move(c));
    if (t_pending.size() > kMaxPending) check_deferred_errors();
  }
  const Tensor ok = logical_and(ge(kept, zero), lt(kept, full({}, static_cast<double>(bound), o)));
  return where(ok, values, full({}, static_cast<double>(replacement), o));
}

void check_deferred_errors() {
  if (t_pending.empty()) return;
  // Taken out first: reading the values below is itself a host read, which flushes (nothing).
  std::vector<PendingCheck> pending = std::move(t_pending);
  t_pending.clear();
  for (const PendingCheck& c : pending) report(c, c.lo_hi.to(Device::cpu()).to_vector<int64_t>());
}

int64_t pending_deferred_checks() { return static_cast<int64_t>(t_pending.size()); }

}  // namespace ember
