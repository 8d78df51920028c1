// DistributedDataParallel (ember/nn/ddp.h): gradient buckets, grad-ready hooks, overlapped
// all-reduces, and the checks that turn a would-be hang into an error.
#include "ember/nn/ddp.h"

#include <chrono>
#include <cstring>

#include "dist/internal.h"
#include "ember/autograd/grad_mode.h"
#include "ember/autograd/node.h"
#include "ember/core/error.h"
#include "ember/ops/ops.h"

namespace ember::nn {
namespace {
constexpr const char* kOp = "DistributedDataParallel";

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

uint64_t mix(uint64_t h, uint64_t v) { return (h ^ v) * 1099511628211ULL; }

bool same_memory(const Tensor& a, const Tensor& b) {
  return a.defined() && b.defined() && a.impl().storage == b.impl().storage && a.offset() == b.offset() &&
         a.shape() == b.shape() && a.strides() == b.strides();
}
}  // namespace

DistributedDataParallel::DistributedDataParallel(Module& model, DDPOptions options)
    : model_(model), options_(options), alive_(std::make_shared<bool>(true)) {
  EMBER_CHECK(options.bucket_cap_mb > 0 && options.first_bucket_mb > 0, kOp,
              "bucket sizes must be > 0 MiB, got first_bucket_mb ", options.first_bucket_mb, ", bucket_cap_mb ",
              options.bucket_cap_mb);
  for (const auto& [name, p] : model.named_parameters())
    if (p.requires_grad()) params_.emplace_back(name, p);
  EMBER_CHECK(!params_.empty(), kOp, "the module has no parameters that require a gradient");

  // The same parameters on every rank: count, elements, and a hash of names, shapes and dtypes.
  uint64_t h = 1469598103934665603ULL;
  int64_t numel = 0;
  for (const auto& [name, p] : params_) {
    for (char c : name) h = mix(h, static_cast<unsigned char>(c));
    for (int64_t d : p.shape()) h = mix(h, static_cast<uint64_t>(d));
    h = mix(h, static_cast<uint64_t>(p.dtype()));
    numel += p.numel();
  }
  {
    NoGradGuard ng;
    const Tensor sig = from_vector(std::vector<int64_t>{static_cast<int64_t>(params_.size()), numel,
                                                        static_cast<int64_t>(h >> 1)},
                                   {3});
    const std::vector<Tensor> all = dist::all_gather(sig);
    const std::vector<int64_t> mine = sig.to_vector<int64_t>();
    for (size_t r = 0; r < all.size(); ++r) {
      const std::vector<int64_t> other = all[r].to_vector<int64_t>();
      EMBER_CHECK(other == mine, kOp, "the model differs across ranks: rank ", dist::rank(), " has ", mine[0],
                  " parameters (", mine[1], " elements), rank ", r, " has ", other[0], " (", other[1],
                  " elements)", mine[0] == other[0] && mine[1] == other[1] ? ", with other names, shapes or dtypes" : "");
    }
    // Rank 0's weights and buffers everywhere.
    for (auto& [name, p] : params_) {
      Tensor t = p;
      dist::broadcast(t, 0);
    }
    for (auto [name, b] : model.named_buffers()) dist::broadcast(b, 0);
  }

  // Buckets, in reverse registration order.
  bucket_of_.assign(params_.size(), 0);
  offset_of_.assign(params_.size(), 0);
  std::vector<int64_t> elems;
  for (size_t k = params_.size(); k-- > 0;) {
    const Tensor& p = params_[k].second;
    const double cap = (buckets_.empty() || buckets_.size() == 1 ? options.first_bucket_mb : options.bucket_cap_mb) *
                       1024.0 * 1024.0;
    bool fresh = buckets_.empty();
    if (!fresh) {
      const Tensor& first = params_[buckets_.back().params.front()].second;
      const double bytes = static_cast<double>(elems.back() + p.numel()) * static_cast<double>(dtype_size(p.dtype()));
      fresh = first.dtype() != p.dtype() || first.device() != p.device() || bytes > cap;
    }
    if (fresh) {
      buckets_.emplace_back();
      elems.push_back(0);
    }
    bucket_of_[k] = buckets_.size() - 1;
    offset_of_[k] = static_cast<size_t>(elems.back());
    buckets_.back().params.push_back(k);
    elems.back() += p.numel();
  }
  NoGradGuard ng;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const Tensor& first = params_[buckets_[b].params.front()].second;
    buckets_[b].flat = zeros({elems[b]}, TensorOptions(first.dtype()).with_device(first.device()));
  }
  ready_.assign(params_.size(), false);
  std::weak_ptr<bool> alive = alive_;
  for (size_t k = 0; k < params_.size(); ++k) {
    Tensor& p = params_[k].second;
    Tensor view = buckets_[bucket_of_[k]].flat.narrow(0, static_cast<int64_t>(offset_of_[k]), p.numel()).view(p.shape());
    if (p.grad().defined()) view.copy_(p.grad());
    p.set_grad(view);
    views_.push_back(view);
    p.register_grad_ready_hook([this, k, alive](Tensor&) {
      if (alive.lock()) on_ready(k);
    });
  }
}

DistributedDataParallel::~DistributedDataParallel() = default;

std::vector<std::vector<std::string>> DistributedDataParallel::bucket_layout() const {
  std::vector<std::vector<std::string>> r;
  for (const Bucket& b : buckets_) {
    r.emplace_back();
    for (size_t k : b.params) r.back().push_back(params_[k].first);
  }
  return r;
}

void DistributedDataParallel::on_ready(size_t k) {
  if (!sync_) return;  // no_sync: gradients accumulate in .grad
  if (!in_backward_) {
    in_backward_ = true;
    for (Bucket& b : buckets_) {
      b.pending = static_cast<int64_t>(b.params.size());
      b.started = false;
      b.work = dist::Work();
    }
    ready_.assign(params_.size(), false);
    next_bucket_ = 0;
    oldest_in_flight_ = 0;
    stats_ = DDPStats{};
    std::weak_ptr<bool> alive = alive_;
    queue_backward_callback([this, alive] {
      if (alive.lock()) finish_backward();
    });
  }
  if (ready_[k]) return;
  ready_[k] = true;
  Tensor& p = params_[k].second;
  const Tensor& view = views_[k];
  const Tensor g = p.grad();
  if (!same_memory(g, view)) {  // a fresh .grad (zero_grad dropped the view): into the bucket
    NoGradGuard ng;
    Tensor v = view;
    v.copy_(g);
    p.set_grad(view);
  }
  --buckets_[bucket_of_[k]].pending;
  start_ready_buckets();
  // MPI moves non-blocking collectives forward only inside MPI calls: one test of the oldest
  // bucket in flight at every gradient-ready hook lets them all progress between backward ops.
  while (oldest_in_flight_ < next_bucket_ && buckets_[oldest_in_flight_].work.is_completed()) ++oldest_in_flight_;
}

void DistributedDataParallel::start_ready_buckets() {
  // In bucket order on every rank: a bucket whose predecessors are still filling waits.
  while (next_bucket_ < buckets_.size() && buckets_[next_bucket_].pending == 0) {
    Bucket& b = buckets_[next_bucket_++];
    b.work = dist::detail::all_reduce_unchecked(b.flat, dist::ReduceOp::avg, "DistributedDataParallel all-reduce");
    b.started = true;
    stats_.bucket_started.push_back(now_s());
  }
}

void DistributedDataParallel::finish_backward() {
  in_backward_ = false;
  stats_.backward_finished = now_s();
  std::vector<std::string> unused;
  for (size_t k = 0; k < params_.size(); ++k)
    if (!ready_[k]) unused.push_back(params_[k].first);
  if (!unused.empty()) {
    std::string names;
    for (const std::string& n : unused) names += (names.empty() ? "" : ", ") + n;
    EMBER_CHECK(options_.find_unused_parameters, kOp, unused.size(), " parameter(s) got no gradient in this backward pass on rank ",
                dist::rank(), ": ", names,
                ". Every rank must all-reduce every bucket; pass DDPOptions::find_unused_parameters = true to "
                "average zeros for them");
    NoGradGuard ng;
    for (size_t k = 0; k < params_.size(); ++k) {
      if (ready_[k]) continue;
      Tensor& p = params_[k].second;
      Tensor view = views_[k];
      if (!same_memory(p.grad(), view)) {
        view.zero_();
        if (p.grad().defined()) view.copy_(p.grad());
        p.set_grad(view);
      }
      ready_[k] = true;
      --buckets_[bucket_of_[k]].pending;
    }
    start_ready_buckets();
  }
  for (Bucket& b : buckets_) b.work.wait();
  stats_.buckets = static_cast<int64_t>(buckets_.size());
}

}  // namespace ember::nn
