// Watching ops and the kernels they run.
//
// Ops: every op of the table in ember/ops/op_def.h goes through one path (src/ops/op_call.h);
// an OpObserver installed on a thread sees each call there, once before it runs (its OpDef,
// its inputs as the op will use them, i.e. after autocast, and its typed attributes) and once
// after (its outputs too). Ops call ops: `depth` is 0 for a call from outside any op, and
// greater inside another op or a backward formula, so a tracer keeps depth 0 and a profiler
// may nest.
//
// Kernels: Every primitive (src/prim/primitives.h) reaches its
// kernel through one function, backend::call (src/ops/dispatch.h); an observer installed on a
// thread sees each call there: the primitive's name, the device and the tensors it was given
// (inputs and outputs, already allocated), once before and once after the kernel runs (after:
// launched, for CUDA). A profiler or a tracer starts here. Without an observer the cost is one
// thread-local load and a branch per kernel call.
#pragma once
#include <vector>

#include "ember/core/device.h"
#include "ember/core/tensor.h"
#include "ember/ops/op_def.h"

namespace ember {

struct KernelCall {
  const char* primitive;        // "bmm", "unary", "cross_entropy_forward", ...
  Device device;                // where it runs (cpu and fake:N run the CPU backend's kernels)
  std::vector<Tensor> tensors;  // every defined tensor argument, in argument order
};

class KernelObserver {
 public:
  virtual ~KernelObserver() = default;
  virtual void before(const KernelCall& call) = 0;
  virtual void after(const KernelCall& call) = 0;
};

// Installs `observer` on this thread while alive; guards nest (the inner one sees the calls,
// the outer one again after the inner guard ends). The observer must outlive the guard.
class ObserveKernels {
 public:
  explicit ObserveKernels(KernelObserver& observer);
  ~ObserveKernels();
  ObserveKernels(const ObserveKernels&) = delete;
  ObserveKernels& operator=(const ObserveKernels&) = delete;

 private:
  KernelObserver* previous_;
};

struct OpCall {
  const OpDef* def;
  int depth = 0;                // 0: called from outside any op (and outside a backward)
  bool in_backward = false;     // called by a backward formula during Tensor::backward
  std::vector<Tensor> inputs;   // tensor arguments in order (undefined where an optional one is absent)
  Attrs attrs;                  // the non-tensor arguments
  std::vector<Tensor> outputs;  // after(): the results; empty when the op threw
};

class OpObserver {
 public:
  virtual ~OpObserver() = default;
  virtual void before(const OpCall& call) = 0;
  virtual void after(const OpCall& call) = 0;
};

// Installs `observer` on this thread while alive; nests like ObserveKernels.
class ObserveOps {
 public:
  explicit ObserveOps(OpObserver& observer);
  ~ObserveOps();
  ObserveOps(const ObserveOps&) = delete;
  ObserveOps& operator=(const ObserveOps&) = delete;

 private:
  OpObserver* previous_;
};

}  // namespace ember
