// The op path. Every op of the table (ember/ops/op_def.h) opens an OpScope first:
//
//   Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
//     detail::OpScope op(OpId::matmul, a_in, b_in);             // enter: autocast, observers
//     const Tensor &a = op.in(0, a_in), &b = op.in(1, b_in);   // the inputs as the op uses them
//     ... checks, shape/dtype rule, make_tensor, backend::call<prim::...>, record ...
//     return op.done(out);                                     // observers see the outputs
//   }
//
// so one place sees each call: its OpDef, inputs, typed attributes (a lambda, evaluated only
// while an observer listens) and outputs. The scope costs one thread-local increment and one
// branch when neither autocast nor an observer is active. Autocast applies to calls at depth
// 0 outside backward only: the ops an op calls, and backward formulas, run in the dtypes they
// are handed (a backward runs in its forward's dtypes).
#pragma once
#include <concepts>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "ember/ops/observe.h"
#include "ember/ops/op_def.h"

namespace ember::detail {

// Per-thread state of the op path.
struct OpThreadState {
  int depth = 0;             // ops entered and not yet left on this thread
  bool in_backward = false;  // inside a backward formula
  uint8_t autocast_mask = 0;  // bit (1 << DeviceType): autocast on for that device type
  DType autocast_low[3] = {DType::bf16, DType::bf16, DType::bf16};  // by DeviceType
  OpObserver* observer = nullptr;
};
inline thread_local OpThreadState t_op;

// The autocast hook (src/ops/autocast.cpp): casts the floating tensors of `inputs` in place as
// `precision` says for the low dtype `low`. A leaf that requires grad (a parameter) is cast once
// per autocast region and the cast reused while its storage is unchanged. Returns whether it
// cast any.
bool autocast_inputs(std::vector<Tensor>& inputs, Precision precision, DType low);

// Runs backward formulas as nested calls (no autocast; observers see in_backward).
class BackwardOpScope {
 public:
  BackwardOpScope() : saved_(t_op.in_backward) {
    ++t_op.depth;
    t_op.in_backward = true;
  }
  ~BackwardOpScope() {
    --t_op.depth;
    t_op.in_backward = saved_;
  }
  BackwardOpScope(const BackwardOpScope&) = delete;
  BackwardOpScope& operator=(const BackwardOpScope&) = delete;

 private:
  bool saved_;
};

template <class T>
concept OpInput = std::same_as<T, Tensor> || std::same_as<T, std::vector<Tensor>>;

class OpScope {
 public:
  template <OpInput... Ts>
  explicit OpScope(OpId id, const Ts&... inputs) : id_(id), depth_(t_op.depth++) {
    if (t_op.autocast_mask != 0 || t_op.observer != nullptr) [[unlikely]]
    {
      auto no_attrs = [] { return Attrs{}; };
      enter(collect(inputs...), no_attrs);
    }
  }
  template <class F, OpInput... Ts>
    requires std::is_invocable_r_v<Attrs, F&>
  OpScope(OpId id, F&& attrs, const Ts&... inputs) : id_(id), depth_(t_op.depth++) {
    if (t_op.autocast_mask != 0 || t_op.observer != nullptr) [[unlikely]]
      enter(collect(inputs...), attrs);
  }
  ~OpScope();
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

  const OpDef& def() const { return op_def(id_); }
  const char* name() const { return op_def(id_).name; }
  // Input i (counting the elements of a list argument one by one) as the op must use it:
  // `given` unless autocast replaced it.
  const Tensor& in(size_t i, const Tensor& given) const { return cast_ ? cast_->at(i) : given; }
  // The inputs of an op whose only argument is a list (cat, stack).
  const std::vector<Tensor>& in_all(const std::vector<Tensor>& given) const { return cast_ ? *cast_ : given; }

  // Reports the results to the observer (if any) and returns them.
  Tensor done(Tensor out) {
    if (call_) [[unlikely]] finish({out});
    return out;
  }
  std::vector<Tensor> done(std::vector<Tensor> outs) {
    if (call_) [[unlikely]] finish(outs);
    return outs;
  }
  // A result struct: `outs` lists its tensors.
  template <class R>
  R done(R result, std::initializer_list<Tensor> outs) {
    if (call_) [[unlikely]] finish(std::vector<Tensor>(outs));
    return result;
  }
  // A result struct whose family file declares `std::vector<Tensor> op_outputs(const R&)`.
  template <class R>
  R done(R result) {
    if (call_) [[unlikely]] finish(op_outputs(result));
    return result;
  }

 private:
  template <class... Ts>
  static std::vector<Tensor> collect(const Ts&... inputs) {
    std::vector<Tensor> r;
    (append(r, inputs), ...);
    return r;
  }
  static void append(std::vector<Tensor>& r, const Tensor& t) { r.push_back(t); }
  static void append(std::vector<Tensor>& r, const std::vector<Tensor>& ts) { r.insert(r.end(), ts.begin(), ts.end()); }
  template <class F>
  void enter(std::vector<Tensor> inputs, F& attrs) {
    const bool observed = t_op.observer != nullptr;
    enter_inputs(std::move(inputs), observed);
    if (observed) {
      call_->attrs = attrs();
      observer_ = t_op.observer;
      observer_->before(*call_);
    }
  }
  void enter_inputs(std::vector<Tensor> inputs, bool observed);
  void finish(std::vector<Tensor> outs);

  OpId id_;
  int depth_;
  std::unique_ptr<std::vector<Tensor>> cast_;  // the inputs after autocast, when it cast any
  std::unique_ptr<OpCall> call_;               // while an observer listens
  OpObserver* observer_ = nullptr;
};

}  // namespace ember::detail
