// The fused kernels' dispatcher (src/optim/fused.h): groups records by (device, dtype) and
// hands each group to the CPU or the CUDA backend in one call.
#include "optim/fused.h"

#include <cmath>
#include <utility>

#include "cpu/optim.h"
#include "ember/core/error.h"
#include "ember/ops/ops.h"
#ifdef EMBER_WITH_CUDA
#include "cuda/optim.h"
#endif

namespace ember::optim::fused {
namespace {

template <class Args>
struct Bucket {
  Device device;
  DType dtype;
  std::vector<Args> args;
};

// Groups (tensor, record) pairs by the tensor's device and dtype, in first-seen order.
template <class Item, class Args>
std::vector<Bucket<Args>> bucket_by_device_dtype(const std::vector<Item>& items) {
  std::vector<Bucket<Args>> out;
  for (const Item& it : items) {
    const Device d = it.param.device();
    const DType t = it.param.dtype();
    Bucket<Args>* b = nullptr;
    for (auto& x : out)
      if (x.device == d && x.dtype == t) b = &x;
    if (!b) {
      out.push_back({d, t, {}});
      b = &out.back();
    }
    b->args.push_back(it.args);
  }
  return out;
}

[[noreturn, maybe_unused]] void no_cuda(const char* op, Device d) {
  EMBER_FAIL(op, "tensors on ", d, " but this build of ember has no CUDA backend (configure with EMBER_CUDA=ON)");
}

}  // namespace

void sgd_step(const std::vector<SGDItem>& items) {
  for (const auto& b : bucket_by_device_dtype<SGDItem, SGDArgs>(items)) {
    if (b.device.is_host_memory()) {  // the CPU and the stand-in device
      cpu::sgd_step(b.dtype, b.args);
    } else {
#ifdef EMBER_WITH_CUDA
      cuda::sgd_step(b.device.index, b.dtype, b.args);
#else
      no_cuda("SGD", b.device);
#endif
    }
  }
}

void adam_step(const std::vector<AdamItem>& items, bool decoupled) {
  for (const auto& b : bucket_by_device_dtype<AdamItem, AdamArgs>(items)) {
    if (b.device.is_host_memory()) {  // the CPU and the stand-in device
      cpu::adam_step(b.dtype, decoupled, b.args);
    } else {
#ifdef EMBER_WITH_CUDA
      cuda::adam_step(b.device.index, b.dtype, decoupled, b.args);
#else
      no_cuda(decoupled ? "AdamW" : "Adam", b.device);
#endif
    }
  }
}

namespace {
std::vector<GradBucket> bucket_grads(const std::vector<Tensor>& grads) {
  std::vector<GradBucket> out;
  for (const Tensor& g : grads) {
    GradBucket* b = nullptr;
    for (auto& x : out)
      if (x.dtype == g.dtype()) b = &x;
    if (!b) {
      out.push_back({g.dtype(), {}});
      b = &out.back();
    }
    b->grads.push_back({g.data_ptr(), g.numel()});
  }
  return out;
}
}  // namespace

Tensor clip_grad_norm(Device device, const std::vector<Tensor>& grads, double norm_type, double max_norm,
                      DType out_dtype, bool scale) {
  const std::vector<GradBucket> buckets = bucket_grads(grads);
  if (device.is_cuda()) {
#ifdef EMBER_WITH_CUDA
    Tensor norm = empty({}, TensorOptions(out_dtype).with_device(device));
    cuda::clip_grad_norm(device.index, buckets, norm_type, max_norm, norm, scale);
    return norm;
#else
    no_cuda("clip_grad_norm_", device);
#endif
  }
  const bool is_inf = std::isinf(norm_type);
  double total = 0.0;
  for (const GradBucket& b : buckets) {
    const double part = cpu::grad_norm_accumulate(b.dtype, b.grads, norm_type);
    total = is_inf ? ((std::isnan(total) || total > part) ? total : part) : total + part;
  }
  double norm = total;
  if (!is_inf && norm_type == 2.0) norm = std::sqrt(total);
  else if (!is_inf && norm_type != 1.0) norm = std::pow(total, 1.0 / norm_type);
  double factor = max_norm / (norm + 1e-6);
  if (factor > 1.0) factor = 1.0;  // clamp(max=1); NaN stays NaN
  if (scale && !(factor == 1.0))   // multiplying by exactly 1 changes nothing
    for (const GradBucket& b : buckets) cpu::scale_grads(b.dtype, b.grads, factor);
  return scalar_tensor(norm, TensorOptions(out_dtype).with_device(device));
}

void clamp_grads(const std::vector<Tensor>& grads, double clip_value) {
  std::vector<std::pair<Device, GradBucket>> buckets;
  for (const Tensor& g : grads) {
    std::pair<Device, GradBucket>* b = nullptr;
    for (auto& x : buckets)
      if (x.first == g.device() && x.second.dtype == g.dtype()) b = &x;
    if (!b) {
      buckets.push_back({g.device(), {g.dtype(), {}}});
      b = &buckets.back();
    }
    b->second.grads.push_back({g.data_ptr(), g.numel()});
  }
  for (const auto& [device, b] : buckets) {
    if (device.is_host_memory()) {
      cpu::clamp_grads(b.dtype, b.grads, clip_value);
    } else {
#ifdef EMBER_WITH_CUDA
      cuda::clamp_grads(device.index, b.dtype, b.grads, clip_value);
#else
      no_cuda("clip_grad_value_", device);
#endif
    }
  }
}

}  // namespace ember::optim::fused
