// The fused updates (src/optim/fused.h): groups records by (device, dtype) and runs each group
// through its primitive on that device's backend, in one call.
#include "optim/fused.h"

#include <cmath>
#include <memory>
#include <utility>

#include "core/capture.h"
#include "ember/core/error.h"
#include "ember/ops/ops.h"
#include "ops/dispatch.h"

namespace ember::optim::fused {
namespace {

thread_local const Tensor* t_skip = nullptr;

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
    if (t_skip != nullptr) {
      EMBER_CHECK(t_skip->device() == d, "optimizer step", "the skip flag is on ", t_skip->device(), ", parameter on ",
                  d);
      b->args.back().skip = static_cast<const float*>(t_skip->data_ptr());
    }
  }
  return out;
}

}  // namespace

void sgd_step(const std::vector<SGDItem>& items) {
  for (const auto& b : bucket_by_device_dtype<SGDItem, SGDArgs>(items))
    backend::call<prim::sgd_step>(b.device, b.device, b.dtype, b.args);
}

void adam_step(const std::vector<AdamItem>& items, bool decoupled) {
  for (const auto& b : bucket_by_device_dtype<AdamItem, AdamArgs>(items))
    backend::call<prim::adam_step>(b.device, b.device, b.dtype, decoupled, b.args);
}

bool capturing() { return detail::capture_state() != nullptr; }

SkipIf::SkipIf(const Tensor& flag) : previous_(t_skip) {
  EMBER_CHECK(flag.defined() && flag.dtype() == DType::f32 && flag.numel() == 1, "optimizer step",
              "internal: the skip flag must be one f32 element");
  t_skip = &flag;
}
SkipIf::~SkipIf() { t_skip = previous_; }

namespace {
// One device tensor of rows per device; the hook refills them all before each replay.
template <class Item>
void capture_hyper_impl(std::vector<Item>& items, int width, HyperFill fill) {
  struct Block {
    Device device;
    std::vector<size_t> items;  // record indices on this device, in row order
    Tensor rows;
  };
  auto blocks = std::make_shared<std::vector<Block>>();
  for (size_t k = 0; k < items.size(); ++k) {
    const Device d = items[k].param.device();
    Block* b = nullptr;
    for (auto& x : *blocks)
      if (x.device == d) b = &x;
    if (!b) b = &blocks->emplace_back(Block{d, {}, Tensor()});
    b->items.push_back(k);
  }
  for (Block& b : *blocks) {
    const int64_t n = static_cast<int64_t>(b.items.size());
    b.rows = empty({n, width}, TensorOptions(DType::f64).with_device(b.device));  // from the graph's pool
    const double* base = static_cast<const double*>(b.rows.data_ptr());
    for (size_t r = 0; r < b.items.size(); ++r) items[b.items[r]].args.hyper = base + r * width;
  }
  detail::on_replay([blocks, width, fill = std::move(fill)] {
    for (Block& b : *blocks) {
      std::vector<double> host(b.items.size() * static_cast<size_t>(width));
      for (size_t r = 0; r < b.items.size(); ++r) fill(b.items[r], host.data() + r * width);
      b.rows.copy_(from_vector(host, {static_cast<int64_t>(b.items.size()), width}));
    }
  });
}
}  // namespace

void capture_hyper(std::vector<SGDItem>& items, HyperFill fill) { capture_hyper_impl(items, 1, std::move(fill)); }
void capture_hyper(std::vector<AdamItem>& items, HyperFill fill) { capture_hyper_impl(items, 3, std::move(fill)); }

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
  Tensor norm = empty({}, TensorOptions(out_dtype).with_device(device));
  backend::call<prim::clip_grad_norm>(device, device, bucket_grads(grads), norm_type, max_norm, norm, scale);
  return norm;
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
  for (const auto& [device, b] : buckets) backend::call<prim::clamp_grads>(device, device, b.dtype, b.grads, clip_value);
}

void unscale_grads(const std::vector<Tensor>& grads, double inv_scale, const Tensor& found_inf) {
  std::vector<GradBucket> buckets;
  for (const Tensor& g : grads) {
    GradBucket* b = nullptr;
    for (auto& x : buckets)
      if (x.dtype == g.dtype()) b = &x;
    if (!b) b = &buckets.emplace_back(GradBucket{g.dtype(), {}});
    b->grads.push_back({g.data_ptr(), g.numel()});
  }
  const Device device = found_inf.device();
  for (const GradBucket& b : buckets)
    backend::call<prim::unscale_grads>(device, device, b.dtype, b.grads, inv_scale, found_inf);
}

GradList collect_grads(const std::vector<Tensor>& params, const char* op, bool one_device) {
  GradList out;
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i];
    EMBER_CHECK(p.defined(), op, "parameter ", i, " is an undefined tensor");
    Tensor g = p.grad();
    if (!g.defined()) continue;
    EMBER_CHECK(is_floating(g.dtype()), op, "gradient of parameter ", i, " is ", g.dtype(), ", expected a float tensor");
    if (one_device && !out.work.empty())
      EMBER_CHECK(g.device() == out.work.front().device(), op, "gradients on different devices: ",
                  out.work.front().device(), " and ", g.device(), " (parameter ", i, ")");
    if (g.is_contiguous()) {
      out.work.push_back(g);
    } else {
      Tensor c = contiguous(g);
      out.copies.emplace_back(g, c);
      out.work.push_back(c);
    }
  }
  return out;
}

void write_back(const GradList& grads) {
  for (const Tensor& g : grads.work) g.impl().storage->bump_version();
  for (const auto& [orig, copy] : grads.copies) {
    Tensor o = orig;
    o.copy_(copy);
  }
}

}  // namespace ember::optim::fused
