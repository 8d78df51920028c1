// The fused multi-tensor updates behind the optimizers and gradient clipping: groups the
// records (prim/optim_records.h) by (device, dtype) and runs each group through its primitive
// (prim/primitives.h) on the backend of that device.
#pragma once
#include <cstdint>
#include <utility>
#include <functional>
#include <vector>

#include "ember/core/tensor.h"
#include "prim/optim_records.h"

namespace ember::optim::fused {

using prim::AdamArgs;
using prim::GradArgs;
using prim::GradBucket;
using prim::SGDArgs;

// One fused update: `tensors[i]` pairs a record with the parameter it updates (whose device
// and dtype pick the backend and instantiation). Records are grouped by (device, dtype).
struct SGDItem {
  Tensor param;
  SGDArgs args;
};
struct AdamItem {
  Tensor param;
  AdamArgs args;
};
void sgd_step(const std::vector<SGDItem>& items);

// True while this thread captures a graph (ember/cuda_graph.h): the optimizers then take the
// hyper-parameters that change from step to step from device memory that capture_hyper fills.
bool capturing();
// While alive, the fused updates of this thread skip themselves on the device when `flag` (a
// 1-element f32 tensor on their device) is non-zero: the GradScaler's step in a captured graph.
class SkipIf {
 public:
  explicit SkipIf(const Tensor& flag);
  ~SkipIf();
  SkipIf(const SkipIf&) = delete;
  SkipIf& operator=(const SkipIf&) = delete;

 private:
  const Tensor* previous_;
};
// Captured steps: gives the records `width` doubles each of device memory (on each record's
// device) and points their `hyper` at them, and registers a hook that, before every replay,
// calls fill(k, row) for every record k on the host and copies the rows over (one copy per
// device). The optimizer must outlive the graph.
using HyperFill = std::function<void(size_t k, double* row)>;
void capture_hyper(std::vector<SGDItem>& items, HyperFill fill);
void capture_hyper(std::vector<AdamItem>& items, HyperFill fill);
// decoupled: AdamW's weight decay.
void adam_step(const std::vector<AdamItem>& items, bool decoupled);

// Gradients for clipping: contiguous, all on `device`, any float dtypes (checked by callers).
// Returns the total p-norm (norm_type may be +inf) as a 0-d tensor of `out_dtype` on the
// device, after multiplying every gradient by min(1, max_norm / (norm + 1e-6)) (only the norm
// when `scale` is false). No host synchronisation on CUDA.
Tensor clip_grad_norm(Device device, const std::vector<Tensor>& grads, double norm_type, double max_norm,
                      DType out_dtype, bool scale = true);
// Clamps every element into [-clip_value, clip_value] (NaN stays NaN).
void clamp_grads(const std::vector<Tensor>& grads, double clip_value);
// Gradients on found_inf's device, any float dtypes: every one *= inv_scale, and found_inf (a
// 1-element f32 tensor there) becomes 1 if any value is inf or NaN (never reset here). One
// fused pass per dtype; no host synchronisation on CUDA.
void unscale_grads(const std::vector<Tensor>& grads, double inv_scale, const Tensor& found_inf);

// The gradients of a parameter list, ready for the fused kernels: `work` holds each existing
// .grad, or a contiguous copy of it (then `copies` pairs the original with the copy, which
// write_back copies back after the kernel ran).
struct GradList {
  std::vector<Tensor> work;
  std::vector<std::pair<Tensor, Tensor>> copies;  // (original .grad, contiguous copy)
};
// Checks every parameter is defined and every gradient a float tensor (and, with one_device,
// that they share a device), naming `op` and the parameter's index.
GradList collect_grads(const std::vector<Tensor>& params, const char* op, bool one_device);
// Bumps the version of every gradient written and copies the contiguous copies back.
void write_back(const GradList& grads);

}  // namespace ember::optim::fused
