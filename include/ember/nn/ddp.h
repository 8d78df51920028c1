// Data-parallel training: every rank holds the whole model, trains on its shard of the batch,
// and DistributedDataParallel averages the gradients across ranks during backward
// (docs/distributed.md).
//
//   dist::init();
//   auto model = std::make_shared<MyNet>(...);               // the same seed on every rank
//   nn::DistributedDataParallel ddp(*model);                 // rank 0's weights everywhere
//   optim::SGD opt(model->parameters(), {...});
//   loss = model->forward(x_shard) ...; loss.backward();     // buckets all-reduce as they fill
//   opt.step();                                              // the same step on every rank
//
// Buckets: parameters in reverse registration order (the order backward usually produces
// their gradients), one dtype and device per bucket, the first up to first_bucket_mb, then up
// to bucket_cap_mb. Each parameter's .grad is a view of its bucket, so the all-reduce works on
// the gradients in place. When every gradient of a bucket is final (grad-ready hooks) its
// all-reduce (avg) starts while backward goes on; buckets start in the same order on every
// rank; the backward pass ends by waiting for all of them.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ember/dist.h"
#include "ember/nn/module.h"

namespace ember::nn {

struct DDPOptions {
  double bucket_cap_mb = 25.0;
  double first_bucket_mb = 1.0;
  // false: a parameter that gets no gradient in a backward pass is an error naming it (instead
  // of a hang). true: such parameters take part with a zero gradient.
  bool find_unused_parameters = false;
};

// What the last synchronised backward pass did (seconds on a steady clock, for tests and
// profiling): when each bucket's all-reduce started, and when backward's last node finished.
struct DDPStats {
  std::vector<double> bucket_started;
  double backward_finished = 0;
  int64_t buckets = 0;
};

class DistributedDataParallel {
 public:
  // Checks that every rank has the same parameters (count, shapes, dtypes) and broadcasts
  // rank 0's parameters and buffers. The module must outlive this object.
  explicit DistributedDataParallel(Module& model, DDPOptions options = {});
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  Module& module() { return model_; }
  // While alive, backward passes accumulate gradients locally (no communication); the next
  // backward outside it averages everything accumulated.
  class NoSync {
   public:
    explicit NoSync(DistributedDataParallel& d) : d_(d) { d_.sync_ = false; }
    ~NoSync() { d_.sync_ = true; }
    NoSync(const NoSync&) = delete;
    NoSync& operator=(const NoSync&) = delete;

   private:
    DistributedDataParallel& d_;
  };
  NoSync no_sync() { return NoSync(*this); }

  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }
  // Parameter names of each bucket, in bucket order.
  std::vector<std::vector<std::string>> bucket_layout() const;
  const DDPStats& last_stats() const { return stats_; }

 private:
  struct Bucket {
    Tensor flat;
    std::vector<size_t> params;  // indices into params_
    int64_t pending = 0;
    bool started = false;
    dist::Work work;
  };
  void on_ready(size_t param);
  void start_ready_buckets();
  void finish_backward();

  Module& model_;
  DDPOptions options_;
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<size_t> bucket_of_, offset_of_;
  std::vector<Tensor> views_;  // views_[k]: parameter k's place in its bucket (its .grad)
  std::vector<Bucket> buckets_;
  std::vector<bool> ready_;
  size_t next_bucket_ = 0;       // the next bucket to start
  size_t oldest_in_flight_ = 0;  // started buckets before it have completed
  bool in_backward_ = false;
  bool sync_ = true;
  std::shared_ptr<bool> alive_;
  DDPStats stats_;
};

}  // namespace ember::nn
