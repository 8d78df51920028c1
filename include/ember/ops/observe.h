// Watching every kernel an op runs. Every primitive (src/prim/primitives.h) reaches its
// kernel through one function, backend::call (src/ops/dispatch.h); an observer installed on a
// thread sees each call there: the primitive's name, the device and the tensors it was given
// (inputs and outputs, already allocated), once before and once after the kernel runs (after:
// launched, for CUDA). A profiler or a tracer starts here. Without an observer the cost is one
// thread-local load and a branch per kernel call.
#pragma once
#include <vector>

#include "ember/core/device.h"
#include "ember/core/tensor.h"

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

}  // namespace ember
