// The op table, the op path's enter/leave steps and the op observers.
#include "ops/op_call.h"

#include <algorithm>
#include <array>

#include "ember/core/error.h"

namespace ember {
namespace {
constexpr OpDef kOps[] = {
#define EMBER_OP_ROW(op, prec) OpDef{OpId::op, #op, Precision::prec},
    EMBER_OPS(EMBER_OP_ROW)
#undef EMBER_OP_ROW
};
constexpr bool rows_in_order() {
  for (size_t i = 0; i < std::size(kOps); ++i)
    if (static_cast<size_t>(kOps[i].id) != i) return false;
  return true;
}
static_assert(rows_in_order());
}  // namespace

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::keep: return "keep";
    case Precision::lower: return "lower";
    case Precision::f32: return "f32";
    case Precision::widest: return "widest";
  }
  return "?";
}

const OpDef& op_def(OpId id) { return kOps[static_cast<size_t>(id)]; }
std::span<const OpDef> op_defs() { return kOps; }
std::optional<OpId> find_op(std::string_view name) {
  for (const OpDef& d : kOps)
    if (name == d.name) return d.id;
  return std::nullopt;
}

ObserveOps::ObserveOps(OpObserver& observer) : previous_(detail::t_op.observer) { detail::t_op.observer = &observer; }
ObserveOps::~ObserveOps() { detail::t_op.observer = previous_; }

namespace detail {

void OpScope::enter_inputs(std::vector<Tensor> inputs, bool observed) {
  const OpDef& d = op_def(id_);
  if (t_op.autocast_mask != 0 && depth_ == 0 && !t_op.in_backward && d.precision != Precision::keep) {
    auto first = std::find_if(inputs.begin(), inputs.end(), [](const Tensor& t) { return t.defined(); });
    if (first != inputs.end()) {
      const auto type = static_cast<unsigned>(first->device().type);
      if ((t_op.autocast_mask >> type) & 1u) {
        if (autocast_inputs(inputs, d.precision, t_op.autocast_low[type]))
          cast_ = std::make_unique<std::vector<Tensor>>(inputs);
      }
    }
  }
  if (observed) {
    call_ = std::make_unique<OpCall>();
    call_->def = &d;
    call_->depth = depth_;
    call_->in_backward = t_op.in_backward;
    call_->inputs = std::move(inputs);
  }
}

void OpScope::finish(std::vector<Tensor> outs) {
  std::unique_ptr<OpCall> call = std::move(call_);
  call->outputs = std::move(outs);
  observer_->after(*call);
}

OpScope::~OpScope() {
  --t_op.depth;
  if (call_) [[unlikely]] {
    // The op threw (or returned without done): observers see an empty result.
    std::unique_ptr<OpCall> call = std::move(call_);
    try {
      observer_->after(*call);
    } catch (...) {
    }
  }
}

}  // namespace detail
}  // namespace ember
