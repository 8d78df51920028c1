// dist (ember/dist.h): the job (rank, world) and the collectives: host-memory tensors over MPI
// here, CUDA tensors handed to the NCCL path (src/dist/nccl.cpp). Every collective is
// non-blocking underneath (MPI_I*, NCCL on its own stream), so the blocking forms and
// Work::wait share one loop that tests for completion and gives up after the job's timeout.
#include "ember/dist.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <string>
#include <thread>

#include "ember/autograd/grad_mode.h"
#include "ember/core/error.h"
#include "ember/core/generator.h"
#include "core/capture.h"
#include "ember/ops/ops.h"
#include "dist/internal.h"

#if EMBER_WITH_MPI
#include <mpi.h>
#endif

namespace ember::dist {
namespace {

struct Job {
  bool initialized = false, finalized = false, mpi = false;
  int rank = 0, world = 1, local = 0;
  double timeout = 300.0;
};
Job g_job;

int env_int(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return -1;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  EMBER_CHECK(end != v && *end == '\0' && x >= 0 && x < (1L << 30), "dist.init", "environment variable ", name,
              " is not a rank or a count: \"", std::string(v).substr(0, 20), "\"");
  return static_cast<int>(x);
}

void check_ready(const char* op) {
  EMBER_CHECK(!g_job.finalized, op, "dist::finalize() was called: no more collectives");
}

using detail::where;

void check_tensor(const char* op, const Tensor& t) {
  EMBER_CHECK(t.defined(), op, "needs a defined tensor (", where(), ")");
}

// Only all-reduces can be part of a captured graph (what DDP needs); the others are refused
// inside a capture rather than run once at capture and never again.
void check_not_captured(const char* op) {
  ember::detail::check_not_capturing(op, "a collective other than all_reduce (only all-reduces can be captured)");
}

#if EMBER_WITH_CUDA
// CUDA tensors go through NCCL; at a world of 1 too when NCCL is there (the same code path as
// a real job), else a world of 1 has nothing to do.
bool use_nccl(const Tensor& t) {
  return t.device().is_cuda() && (g_job.world > 1 || detail::nccl_available());
}
#endif

#if EMBER_WITH_MPI
MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i32: return MPI_INT32_T;
    case DType::i64: return MPI_INT64_T;
    case DType::boolean: return MPI_C_BOOL;
    default: return MPI_DATATYPE_NULL;  // f16/bf16: staged in f32
  }
}
MPI_Op mpi_op(ReduceOp op, DType t) {
  if (t == DType::boolean) return op == ReduceOp::min ? MPI_LAND : MPI_LOR;
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg: return MPI_SUM;
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
  }
  return MPI_SUM;
}
#endif

// What a collective needs from a tensor: contiguous memory of an MPI type. `work` is t itself
// when it already is that, else a staged copy (f16/bf16 -> f32, or contiguous); `back` copies
// the result into t.
#if EMBER_WITH_MPI
struct Staged {
  Tensor work;
  bool staged = false;
};
Staged stage(const Tensor& t) {
  NoGradGuard ng;
  const bool low = t.dtype() == DType::f16 || t.dtype() == DType::bf16;
  if (!low && t.is_contiguous()) return {t, false};
  // Both make new memory: to_dtype converts, contiguous copies a strided tensor.
  return {contiguous(to_dtype(t.detach(), low ? DType::f32 : t.dtype())), true};
}
#endif

}  // namespace

namespace detail {
std::string where() { return "rank " + std::to_string(g_job.rank) + " of " + std::to_string(g_job.world); }
}  // namespace detail

namespace {
Work completed(std::function<void()> finish) {
  auto s = std::make_shared<Work::State>();
  if (finish) finish();
  s->done = true;
  return Work(s);
}

#if EMBER_WITH_MPI
// A Work whose completion is an MPI request; `start(request)` posts the MPI_I* call.
template <class Start>
std::shared_ptr<Work::State> mpi_work(const char* op, Start start) {
  auto s = std::make_shared<Work::State>();
  s->op = op;
  auto request = std::make_shared<MPI_Request>(MPI_REQUEST_NULL);
  start(request.get());
  s->test = [request]() {
    int flag = 0;
    MPI_Test(request.get(), &flag, MPI_STATUS_IGNORE);
    return flag != 0;
  };
  return s;
}
#endif
}  // namespace

namespace {
void complete(Work::State& s) {
  s.done = true;
  if (s.finish) {
    auto finish = std::move(s.finish);
    s.finish = nullptr;
    finish();
  }
  s.keep.clear();
}
}  // namespace

void Work::wait() {
  if (!s_ || s_->done) return;
  if (s_->join) {
    auto join = std::move(s_->join);
    s_->join = nullptr;
    join();
    complete(*s_);
    return;
  }
  const auto deadline = s_->start + std::chrono::duration<double>(g_job.timeout);
  for (int spins = 0; s_->test && !s_->test(); ++spins) {
    if (std::chrono::steady_clock::now() > deadline) {
      if (s_->on_timeout) s_->on_timeout();
      s_->test = nullptr;
      s_->done = true;
      EMBER_FAIL(s_->op, "did not complete within the timeout of ", g_job.timeout, " s on ", where(),
                 ": another rank died, hangs, or called a different collective; the job cannot continue");
    }
    if (spins > 64) std::this_thread::yield();
  }
  complete(*s_);
}

void Work::then(std::function<void()> f) {
  if (!s_) s_ = std::make_shared<State>();  // a default Work has completed
  if (s_->done || (!s_->test && !s_->join)) {
    if (!s_->done) complete(*s_);
    f();
    return;
  }
  s_->finish = [first = std::move(s_->finish), f = std::move(f)]() {
    if (first) first();
    f();
  };
}

bool Work::is_completed() {
  if (!s_ || s_->done) return true;
  if (s_->join) return false;  // captured: completes when wait() joins it
  if (!s_->test || s_->test()) complete(*s_);
  return s_->done;
}

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return "sum";
    case ReduceOp::avg: return "avg";
    case ReduceOp::max: return "max";
    case ReduceOp::min: return "min";
  }
  return "?";
}

void init(const InitOptions& o) {
  EMBER_CHECK(!g_job.initialized, "dist.init", "called twice (", where(), ")");
  EMBER_CHECK(!g_job.finalized, "dist.init", "called after dist::finalize()");
  EMBER_CHECK(o.timeout > 0, "dist.init", "timeout must be > 0 seconds, got ", o.timeout);
  int env_rank = env_int("OMPI_COMM_WORLD_RANK"), env_world = env_int("OMPI_COMM_WORLD_SIZE");
  int env_local = env_int("OMPI_COMM_WORLD_LOCAL_RANK");
  if (env_world < 0) {
    env_rank = env_int("SLURM_PROCID");
    env_world = env_int("SLURM_NTASKS");
    env_local = env_int("SLURM_LOCALID");
  }
  Job job;
  job.timeout = o.timeout;
  if (env_world > 1 || (o.world_size > 1)) {
#if EMBER_WITH_MPI
    // OpenMPI's non-blocking all-reduce (libnbc, which every ember all-reduce is) picks a
    // binomial tree by default, 2.3x slower than a ring at 64 MiB on 2 ranks and 3x at 4 MiB
    // (docs/perf/dist.md). Ring unless the user chose (the variable or --mca on mpirun).
    setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "1", /*overwrite=*/0);
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &job.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &job.world);
    job.mpi = true;
    job.local = env_local >= 0 ? env_local : 0;
#else
    EMBER_FAIL("dist.init", "launched as one of ", std::max(env_world, o.world_size),
               " processes, but this ember was built without MPI (apt-get install libopenmpi-dev, rebuild)");
#endif
  } else {
    job.local = env_local >= 0 ? env_local : 0;
  }
  EMBER_CHECK(env_rank < 0 || !job.mpi || env_rank == job.rank, "dist.init", "the launcher says rank ", env_rank,
              " but MPI says rank ", job.rank);
  EMBER_CHECK(o.rank < 0 || o.rank == job.rank, "dist.init", "InitOptions::rank ", o.rank,
              " disagrees with the launcher's rank ", job.rank);
  EMBER_CHECK(o.world_size < 0 || o.world_size == job.world, "dist.init", "InitOptions::world_size ", o.world_size,
              " disagrees with the launcher's world size ", job.world);
  if (o.local_rank >= 0) job.local = o.local_rank;
  job.initialized = true;
  g_job = job;
}

bool is_initialized() { return g_job.initialized; }
int rank() { return g_job.rank; }
int world_size() { return g_job.world; }
int local_rank() { return g_job.local; }
double timeout() { return g_job.timeout; }

void finalize() {
  if (!g_job.initialized || g_job.finalized) return;
#if EMBER_WITH_CUDA
  detail::nccl_finalize();
#endif
#if EMBER_WITH_MPI
  if (g_job.mpi) MPI_Finalize();
#endif
  g_job.finalized = true;
  g_job.initialized = false;
}

void barrier() {
  check_ready("dist.barrier");
  check_not_captured("dist.barrier");
  if (g_job.world == 1) return;
#if EMBER_WITH_MPI
  Work(mpi_work("dist.barrier", [](MPI_Request* r) { MPI_Ibarrier(MPI_COMM_WORLD, r); })).wait();
#endif
}

namespace {

// Every rank's (numel, dtype, dims, shape hash): a clear error when they differ. Costs one
// small all-gather; the unchecked internal collectives skip it.
void check_same_everywhere([[maybe_unused]] const char* op, [[maybe_unused]] const Tensor& t) {
  if (g_job.world == 1) return;
#if EMBER_WITH_MPI
  uint64_t h = 1469598103934665603ULL;
  for (int64_t d : t.shape()) h = (h ^ static_cast<uint64_t>(d)) * 1099511628211ULL;
  const int64_t mine[4] = {t.numel(), static_cast<int64_t>(t.dtype()), t.dim(), static_cast<int64_t>(h >> 1)};
  std::vector<int64_t> all(static_cast<size_t>(4 * g_job.world));
  Work(mpi_work(op, [&](MPI_Request* r) {
    MPI_Iallgather(mine, 4, MPI_INT64_T, all.data(), 4, MPI_INT64_T, MPI_COMM_WORLD, r);
  })).wait();
  for (int r = 0; r < g_job.world; ++r) {
    const int64_t* o = &all[static_cast<size_t>(4 * r)];
    EMBER_CHECK(std::equal(o, o + 4, mine), op, "tensors differ across ranks: rank ", g_job.rank, " has ",
                shape_str(t.shape()), " ", dtype_name(t.dtype()), ", rank ", r, " has ", o[0], " elements of ",
                dtype_name(static_cast<DType>(o[1])), " in ", o[2], " dims");
  }
#endif
}

}  // namespace

namespace detail {
// The unchecked all-reduce behind the public one and DDP's buckets.
Work all_reduce_unchecked(Tensor& t, ReduceOp op, const char* name) {
  check_ready(name);
  check_tensor(name, t);
  EMBER_CHECK(op != ReduceOp::avg || is_floating(t.dtype()), name, "avg needs a float tensor, got ", t.str());
  if (const ember::detail::CaptureState* cs = ember::detail::capture_state()) {
    // Inside a graph capture. On CUDA, NCCL's all-reduce is captured like a kernel (nccl.cpp).
    // On the stand-in device the collective joins the record: every replay runs it, blocking,
    // at this point of the step, on every rank (each rank replays the same record).
    EMBER_CHECK(t.device() == cs->device, name, "an all-reduce of ", t.str(), " inside a graph captured on ",
                cs->device, ": a captured collective must be on the capture's device (", where(), ")");
    if (t.device().is_fake()) {
      EMBER_CHECK(cs->record != nullptr, name, "no record to add the all-reduce to (", where(), ")");
      if (g_job.world > 1)
        cs->record->push_back([t, op, name]() mutable { all_reduce_unchecked(t, op, name).wait(); });
      return completed(nullptr);  // a world of 1: the reduction is the tensor itself
    }
  }
#if EMBER_WITH_CUDA
  if (use_nccl(t)) return nccl_all_reduce(t, op, name);
#endif
  if (g_job.world == 1) return completed(nullptr);
#if EMBER_WITH_MPI
  const double world = g_job.world;
  Tensor target = t;
  Staged st = stage(t);
  Tensor work = st.work;
  const bool staged = st.staged;
  auto s = mpi_work(name, [&](MPI_Request* r) {
    MPI_Iallreduce(MPI_IN_PLACE, work.data_ptr(), static_cast<int>(work.numel()), mpi_type(work.dtype()),
                   mpi_op(op, work.dtype()), MPI_COMM_WORLD, r);
  });
  s->keep = {work, target};
  s->finish = [work, target, op, world, staged]() mutable {
    NoGradGuard ng;
    if (op == ReduceOp::avg) work.mul_(1.0 / world);
    if (staged) target.copy_(work);
  };
  return Work(s);
#else
  return completed(nullptr);
#endif
}

void broadcast_bytes([[maybe_unused]] void* data, [[maybe_unused]] int bytes, [[maybe_unused]] const char* op) {
  check_ready(op);
  if (g_job.world == 1) return;
#if EMBER_WITH_MPI
  Work(mpi_work(op, [&](MPI_Request* r) { MPI_Ibcast(data, bytes, MPI_BYTE, 0, MPI_COMM_WORLD, r); })).wait();
#endif
}
}  // namespace detail

Work all_reduce_async(Tensor& t, ReduceOp op) {
  check_ready("dist.all_reduce");
  check_tensor("dist.all_reduce", t);
  check_same_everywhere("dist.all_reduce", t);
  return detail::all_reduce_unchecked(t, op, "dist.all_reduce");
}
void all_reduce(Tensor& t, ReduceOp op) { all_reduce_async(t, op).wait(); }

Work broadcast_async(Tensor& t, int root) {
  const char* op = "dist.broadcast";
  check_ready(op);
  check_not_captured(op);
  check_tensor(op, t);
  EMBER_CHECK(root >= 0 && root < g_job.world, op, "root ", root, " is not a rank of a world of ", g_job.world);
  check_same_everywhere(op, t);
#if EMBER_WITH_CUDA
  if (use_nccl(t)) return detail::nccl_broadcast(t, root, op);
#endif
  if (g_job.world == 1) return completed(nullptr);
#if EMBER_WITH_MPI
  Staged st = stage(t);
  Tensor work = st.work, target = t;
  auto s = mpi_work(op, [&](MPI_Request* r) {
    MPI_Ibcast(work.data_ptr(), static_cast<int>(work.numel()), mpi_type(work.dtype()), root, MPI_COMM_WORLD, r);
  });
  s->keep = {work, target};
  if (st.staged)
    s->finish = [work, target]() mutable {
      NoGradGuard ng;
      target.copy_(work);
    };
  return Work(s);
#else
  return completed(nullptr);
#endif
}
void broadcast(Tensor& t, int root) { broadcast_async(t, root).wait(); }

Work all_gather_async(const Tensor& t, std::vector<Tensor>& out) {
  const char* op = "dist.all_gather";
  check_ready(op);
  check_not_captured(op);
  check_tensor(op, t);
  check_same_everywhere(op, t);
  NoGradGuard ng;
  out.clear();
  const int world = g_job.world;
  const Shape shape = t.shape();
  const DType dtype = t.dtype();
  // `all` holds every rank's copy along dim 0; each becomes one tensor of t's shape and dtype.
  auto unpack = [&out, world, shape, dtype](const Tensor& all) {
    NoGradGuard inner;
    out.clear();
    for (int r = 0; r < world; ++r) out.push_back(to_dtype(all.select(0, r).reshape(shape), dtype).clone());
  };
#if EMBER_WITH_CUDA
  if (use_nccl(t)) {
    Tensor all;
    Work w = detail::nccl_all_gather(t, all, op);
    w.then([unpack, all]() mutable { unpack(all); });
    return w;
  }
#endif
  if (world == 1) {
    out = {t.detach().clone()};
    return completed(nullptr);
  }
#if EMBER_WITH_MPI
  Staged st = stage(t);
  Tensor all = empty({world, t.numel()}, TensorOptions(st.work.dtype()).with_device(t.device()));
  auto s = mpi_work(op, [&](MPI_Request* r) {
    MPI_Iallgather(st.work.data_ptr(), static_cast<int>(t.numel()), mpi_type(st.work.dtype()), all.data_ptr(),
                   static_cast<int>(t.numel()), mpi_type(st.work.dtype()), MPI_COMM_WORLD, r);
  });
  s->keep = {st.work, all};
  s->finish = [unpack, all]() { unpack(all); };
  return Work(s);
#else
  return completed(nullptr);
#endif
}

std::vector<Tensor> all_gather(const Tensor& t) {
  std::vector<Tensor> out;
  all_gather_async(t, out).wait();
  return out;
}

bool nccl_available(std::string* why) {
#if EMBER_WITH_CUDA
  return detail::nccl_available(why);
#else
  if (why != nullptr) *why = "this ember was built without CUDA";
  return false;
#endif
}

std::vector<int64_t> split_rows(int64_t n, int world) {
  EMBER_CHECK(n >= 0 && world > 0, "dist.split_rows", "needs n >= 0 and world > 0, got ", n, " and ", world);
  std::vector<int64_t> r(static_cast<size_t>(world), n / world);
  for (int64_t i = 0; i < n % world; ++i) ++r[static_cast<size_t>(i)];
  return r;
}

Work reduce_scatter_async(const Tensor& t, Tensor& out, ReduceOp op_kind) {
  const char* op = "dist.reduce_scatter";
  check_ready(op);
  check_not_captured(op);
  check_tensor(op, t);
  EMBER_CHECK(t.dim() >= 1, op, "needs a tensor of at least one dim, got ", t.str());
  EMBER_CHECK(op_kind != ReduceOp::avg || is_floating(t.dtype()), op, "avg needs a float tensor, got ", t.str());
  check_same_everywhere(op, t);
  NoGradGuard ng;
  const std::vector<int64_t> rows = split_rows(t.size(0), g_job.world);
  const int64_t mine = rows[static_cast<size_t>(g_job.rank)];
  int64_t start = 0;
  for (int r = 0; r < g_job.rank; ++r) start += rows[static_cast<size_t>(r)];
#if EMBER_WITH_CUDA
  if (use_nccl(t)) {
    // ncclReduceScatter needs equal counts; uneven rows reduce everything and keep this rank's.
    Tensor all = t.detach().clone();
    Work w = detail::nccl_all_reduce(all, op_kind, op);
    w.then([&out, all, start, mine]() { out = all.narrow(0, start, mine).clone(); });
    return w;
  }
#endif
  if (g_job.world == 1) {
    out = t.detach().clone();
    return completed(nullptr);
  }
#if EMBER_WITH_MPI
  Staged st = stage(t);
  const int64_t row = t.size(0) > 0 ? t.numel() / t.size(0) : 0;
  std::vector<int> counts;
  for (int64_t r : rows) counts.push_back(static_cast<int>(r * row));
  Shape shape = t.shape();
  shape[0] = mine;
  Tensor part = empty(shape, TensorOptions(st.work.dtype()).with_device(t.device()));
  auto s = mpi_work(op, [&](MPI_Request* r) {
    MPI_Ireduce_scatter(st.work.data_ptr(), part.data_ptr(), counts.data(), mpi_type(part.dtype()),
                        mpi_op(op_kind, part.dtype()), MPI_COMM_WORLD, r);
  });
  s->keep = {st.work, part};
  const DType dtype = t.dtype();
  const double world = g_job.world;
  s->finish = [&out, part, op_kind, world, dtype]() mutable {
    NoGradGuard inner;
    if (op_kind == ReduceOp::avg) part.mul_(1.0 / world);
    out = to_dtype(part, dtype);
  };
  return Work(s);
#else
  return completed(nullptr);
#endif
}

Tensor reduce_scatter(const Tensor& t, ReduceOp op_kind) {
  Tensor out;
  reduce_scatter_async(t, out, op_kind).wait();
  return out;
}

DistributedSampler::DistributedSampler(int64_t n, bool shuffle, uint64_t seed, int rank, int world_size)
    : n_(n), shuffle_(shuffle), seed_(seed), rank_(rank < 0 ? dist::rank() : rank),
      world_(world_size < 0 ? dist::world_size() : world_size) {
  EMBER_CHECK(n > 0, "DistributedSampler", "needs at least one sample, got ", n);
  EMBER_CHECK(world_ > 0 && rank_ >= 0 && rank_ < world_, "DistributedSampler", "rank ", rank_,
              " is not a rank of a world of ", world_);
}

void DistributedSampler::set_start(int64_t position) {
  EMBER_CHECK(position >= 0 && position <= n_, "DistributedSampler.set_start", "position ", position,
              " is outside the epoch's ", n_, " samples");
  start_ = position;
}

int64_t DistributedSampler::num_samples() const { return (n_ - start_ + world_ - 1) / world_; }
int64_t DistributedSampler::total_size() const { return num_samples() * world_; }

std::vector<int64_t> DistributedSampler::indices() const {
  std::vector<int64_t> order(static_cast<size_t>(n_));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (shuffle_) {
    Generator g(seed_ + static_cast<uint64_t>(epoch_) * 0x9e3779b97f4a7c15ULL);
    const std::vector<float> keys = rand({n_}, {}, &g).to_vector<float>();
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return keys[a] < keys[b]; });
  }
  // Positions past the end wrap to the epoch's first ones (padding).
  std::vector<int64_t> mine;
  const int64_t end = start_ + total_size();
  for (int64_t i = start_ + rank_; i < end; i += world_) mine.push_back(order[static_cast<size_t>(i % n_)]);
  return mine;
}

}  // namespace ember::dist
