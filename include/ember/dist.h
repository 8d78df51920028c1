// Data-parallel training across processes: rank and world from the launcher (mpirun, Slurm's
// srun) or explicit options, collectives on tensors, and a sampler that shards a data set. CPU
// tensors (and the stand-in device's) go through MPI; nn::DistributedDataParallel
// (ember/nn/ddp.h) builds on these. docs/distributed.md.
//
//   dist::init();                                   // mpirun -np 4 ./train  (or a plain ./train)
//   Tensor t = ...;
//   dist::all_reduce(t, dist::ReduceOp::avg);       // in place, on every rank
//   dist::Work w = dist::all_reduce_async(t);       // ... overlap ...
//   w.wait();                                       // ember::Error after InitOptions::timeout
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ember/core/tensor.h"

namespace ember::dist {

struct InitOptions {
  // -1: from the launcher's environment (OpenMPI's OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK, Slurm's
  // SLURM_PROCID/NTASKS/LOCALID), or a world of 1 without a launcher. Given values must agree
  // with the launcher's.
  int rank = -1, world_size = -1, local_rank = -1;
  double timeout = 300.0;  // seconds a collective may wait before it fails on every rank it can
};

// Joins the job (MPI_Init when launched by mpirun or srun). A second call is an error.
void init(const InitOptions& options = {});
bool is_initialized();
int rank();        // 0 when not initialised
int world_size();  // 1 when not initialised
int local_rank();  // the rank on this node (pick the GPU with it)
double timeout();
void barrier();
// Leaves the job (MPI_Finalize). Collectives after it are errors; init may not be called again.
void finalize();

enum class ReduceOp { sum, avg, max, min };
const char* reduce_op_name(ReduceOp op);

// An asynchronous collective. wait() blocks until it completed on this rank (then the tensor
// holds the result) or throws ember::Error naming the collective, this rank and the timeout.
class Work {
 public:
  struct State;
  Work() = default;
  explicit Work(std::shared_ptr<State> s) : s_(std::move(s)) {}
  void wait();
  bool is_completed();  // tests without blocking
  // Runs f on this rank once the collective completed (after what the collective itself does
  // then), from wait() or is_completed(); at once when it already has.
  void then(std::function<void()> f);

 private:
  std::shared_ptr<State> s_;
};

// In place on every rank: t becomes the reduction of every rank's t (avg: sum / world size;
// float dtypes only for avg). Shapes and dtypes must match across ranks (checked: an error
// names both ranks' tensors). f16/bf16 reduce in f32.
void all_reduce(Tensor& t, ReduceOp op = ReduceOp::sum);
Work all_reduce_async(Tensor& t, ReduceOp op = ReduceOp::sum);
// In place: every rank's t becomes root's.
void broadcast(Tensor& t, int root = 0);
Work broadcast_async(Tensor& t, int root = 0);
// Every rank's t, in rank order (same shape and dtype on every rank). The async form fills
// `out` when the Work completes; `out` must outlive it.
std::vector<Tensor> all_gather(const Tensor& t);
Work all_gather_async(const Tensor& t, std::vector<Tensor>& out);
// Reduces t over ranks and gives each rank its slice of dim 0: rank r gets rows
// [offset_r, offset_r + rows_r) where the first (size(0) % world) ranks get one row more.
// The async form sets `out` when the Work completes; `out` must outlive it.
Tensor reduce_scatter(const Tensor& t, ReduceOp op = ReduceOp::sum);
Work reduce_scatter_async(const Tensor& t, Tensor& out, ReduceOp op = ReduceOp::sum);

// Whether collectives on CUDA tensors can run here: a CUDA build with nccl.h, and libnccl.so.2
// loadable now (EMBER_NCCL_LIBRARY names another file). `why` says what is missing. At a world
// of 1 a CUDA collective without NCCL leaves the tensor as it is (there is nothing to reduce).
bool nccl_available(std::string* why = nullptr);

// Rows per rank for n rows: what reduce_scatter and DistributedSampler use.
std::vector<int64_t> split_rows(int64_t n, int world);

// Each rank's share of a data set of n samples, for one epoch: with shuffle, a permutation of
// 0..n-1 drawn from (seed, epoch), the same on every rank and for every world size; padded
// (repeating its start) to a multiple of the world size so every rank takes the same number of
// steps; rank r takes positions start + r, start + r + world, ... of it. When every rank takes
// B samples per step, step s covers positions [start + s B W, start + (s + 1) B W): the
// samples consumed so far are a count of positions, the same whatever the world size. That
// count is what a checkpoint keeps (TrainingState::data_position) and set_start resumes from,
// also with another number of ranks.
class DistributedSampler {
 public:
  DistributedSampler(int64_t n, bool shuffle = true, uint64_t seed = 0, int rank = -1, int world_size = -1);
  void set_epoch(int64_t epoch) { epoch_ = epoch; }
  // Skips the first `position` positions of this epoch's order (0 <= position <= n); set_epoch
  // does not reset it: set it back to 0 for the next epoch.
  void set_start(int64_t position);
  std::vector<int64_t> indices() const;
  int64_t num_samples() const;  // per rank, from the start position
  int64_t total_size() const;   // padded, over all ranks, from the start position
  int64_t start() const { return start_; }

 private:
  int64_t n_;
  bool shuffle_;
  uint64_t seed_;
  int rank_, world_;
  int64_t epoch_ = 0, start_ = 0;
};

}  // namespace ember::dist
