// The NCCL path of ember/dist.h: collectives on CUDA tensors (src/dist/internal.h). Compiled
// in CUDA builds only (the whole file is empty without EMBER_WITH_CUDA).
//
// NCCL is loaded at run time (dlopen of libnccl.so.2, or EMBER_NCCL_LIBRARY), so linking
// ember never needs it and a machine without it still runs everything but CUDA collectives;
// its header (nccl.h, found by CMake next to the CUDA toolkit's or through NCCL_ROOT) gives
// the types and function signatures. The communicator is non-blocking (ncclConfig_t::blocking
// = 0): every NCCL call returns at once and completion is polled, so a dead or hanging rank
// ends in the job's timeout error (after ncclCommAbort) instead of a hang, during
// initialisation as well as in a collective.
#if EMBER_WITH_CUDA
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "core/capture.h"
#include "cuda/runtime.h"
#include "ember/cuda.h"
#include "dist/internal.h"
#include "ember/autograd/grad_mode.h"
#include "ember/core/error.h"
#include "ember/ops/ops.h"

#if EMBER_WITH_NCCL_H
#include <nccl.h>
#endif

namespace ember::dist::detail {

#if EMBER_WITH_NCCL_H
namespace {

struct Api {
  decltype(&ncclGetVersion) get_version = nullptr;
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRankConfig) init_rank_config = nullptr;
  decltype(&ncclCommGetAsyncError) async_error = nullptr;
  decltype(&ncclCommAbort) abort = nullptr;
  decltype(&ncclCommFinalize) finalize = nullptr;
  decltype(&ncclCommDestroy) destroy = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclBroadcast) broadcast = nullptr;
  decltype(&ncclAllGather) all_gather = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
  decltype(&ncclGetLastError) last_error = nullptr;
  std::string why;  // empty when loaded
  int version = 0;
};

template <class F>
bool bind(void* lib, const char* name, F& f, std::string& why) {
  f = reinterpret_cast<F>(dlsym(lib, name));
  if (f == nullptr && why.empty()) why = std::string("the NCCL library has no ") + name + " (NCCL >= 2.14 needed)";
  return f != nullptr;
}

Api load() {
  Api a;
  const char* env = std::getenv("EMBER_NCCL_LIBRARY");
  void* lib = nullptr;
  std::string tried;
  for (const char* name : {env, "libnccl.so.2", "libnccl.so"}) {
    if (name == nullptr || *name == '\0') continue;
    lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib != nullptr) break;
    const char* e = dlerror();
    tried += std::string(tried.empty() ? "" : "; ") + (e ? e : name);
  }
  if (lib == nullptr) {
    a.why = "libnccl.so.2 could not be loaded (" + tried +
            "); install NCCL (Debian: libnccl2; pip: nvidia-nccl-cu12) or set EMBER_NCCL_LIBRARY";
    return a;
  }
  bind(lib, "ncclGetVersion", a.get_version, a.why);
  bind(lib, "ncclGetUniqueId", a.get_unique_id, a.why);
  bind(lib, "ncclCommInitRankConfig", a.init_rank_config, a.why);
  bind(lib, "ncclCommGetAsyncError", a.async_error, a.why);
  bind(lib, "ncclCommAbort", a.abort, a.why);
  bind(lib, "ncclCommFinalize", a.finalize, a.why);
  bind(lib, "ncclCommDestroy", a.destroy, a.why);
  bind(lib, "ncclAllReduce", a.all_reduce, a.why);
  bind(lib, "ncclBroadcast", a.broadcast, a.why);
  bind(lib, "ncclAllGather", a.all_gather, a.why);
  bind(lib, "ncclGetErrorString", a.error_string, a.why);
  bind(lib, "ncclGetLastError", a.last_error, a.why);
  if (a.why.empty() && a.get_version(&a.version) != ncclSuccess) a.why = "ncclGetVersion failed";
  return a;
}

const Api& api() {
  static const Api a = load();
  return a;
}

const Api& checked_api(const char* op) {
  const Api& a = api();
  EMBER_CHECK(a.why.empty(), op, "CUDA tensors go through NCCL, but ", a.why, " (", where(), ")");
  return a;
}

// The process's communicator. `broken` after an abort: later collectives fail at once.
struct Comm {
  ncclComm_t comm = nullptr;
  int device = -1;
  cudaStream_t stream = nullptr;
  bool broken = false;
  std::string broken_why;
};
Comm g_comm;

std::string nccl_error(ncclResult_t r) {
  const Api& a = api();
  std::string s = a.error_string ? a.error_string(r) : "NCCL error";
  if (g_comm.comm != nullptr && a.last_error != nullptr) {
    const char* last = a.last_error(g_comm.comm);
    if (last != nullptr && *last != '\0') s += std::string(": ") + last;
  }
  return s;
}

[[noreturn]] void abort_and_fail(const char* op, const std::string& why) {
  if (g_comm.comm != nullptr && !g_comm.broken) api().abort(g_comm.comm);
  g_comm.broken = true;
  g_comm.broken_why = why;
  EMBER_FAIL(op, why, " (", where(), "); the NCCL communicator was aborted and the job cannot continue");
}

// Polls the communicator until its pending call (init, or the enqueue of a collective)
// finished, failing on an NCCL error or after the job's timeout from `start`.
void wait_ready(const char* op, std::chrono::steady_clock::time_point start) {
  const Api& a = api();
  const auto deadline = start + std::chrono::duration<double>(dist::timeout());
  for (int spins = 0;; ++spins) {
    ncclResult_t st = ncclSuccess;
    const ncclResult_t r = a.async_error(g_comm.comm, &st);
    if (r != ncclSuccess) abort_and_fail(op, "ncclCommGetAsyncError failed: " + nccl_error(r));
    if (st == ncclSuccess) return;
    if (st != ncclInProgress) abort_and_fail(op, "NCCL failed: " + nccl_error(st));
    if (std::chrono::steady_clock::now() > deadline)
      abort_and_fail(op, "did not complete within the timeout of " + std::to_string(dist::timeout()) + " s");
    if (spins > 64) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void check_call(const char* op, ncclResult_t r, std::chrono::steady_clock::time_point start) {
  if (r == ncclSuccess) return;
  if (r == ncclInProgress) return wait_ready(op, start);
  abort_and_fail(op, "NCCL failed: " + nccl_error(r));
}

Comm& comm_for(const Tensor& t, const char* op) {
  const Api& a = checked_api(op);
  EMBER_CHECK(!g_comm.broken, op, "the NCCL communicator was aborted after an earlier failure (",
              g_comm.broken_why, "); the job cannot continue (", where(), ")");
  const int dev = t.device().index;
  if (g_comm.comm != nullptr) {
    EMBER_CHECK(dev == g_comm.device, op, "tensor ", t.str(), " is on ", t.device(),
                " but this process's NCCL communicator is on cuda:", g_comm.device,
                ": one GPU per process (pick it with dist::local_rank())");
    return g_comm;
  }
  const auto start = std::chrono::steady_clock::now();
  ncclUniqueId id{};
  if (dist::rank() == 0) {
    const ncclResult_t r = a.get_unique_id(&id);
    EMBER_CHECK(r == ncclSuccess, op, "ncclGetUniqueId failed: ", nccl_error(r), " (", where(), ")");
  }
  broadcast_bytes(&id, static_cast<int>(sizeof id), op);
  cuda::DeviceGuard guard(dev);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  const ncclResult_t r = a.init_rank_config(&comm, dist::world_size(), id, dist::rank(), &config);
  g_comm.comm = comm;
  g_comm.device = dev;
  if (r != ncclSuccess && r != ncclInProgress) {
    g_comm.comm = nullptr;
    EMBER_FAIL(op, "ncclCommInitRankConfig failed on cuda:", dev, ": ", nccl_error(r), " (", where(), ")");
  }
  wait_ready(op, start);
  EMBER_CUDA_CHECK(cudaStreamCreateWithFlags(&g_comm.stream, cudaStreamNonBlocking));
  return g_comm;
}

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::f16: return ncclFloat16;
    case DType::bf16: return ncclBfloat16;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::boolean: return ncclUint8;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op, DType t) {
  // Booleans are bytes 0/1: sum/avg/max are "any" (max), min is "all".
  if (t == DType::boolean) return op == ReduceOp::min ? ncclMin : ncclMax;
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::avg: return ncclAvg;
    case ReduceOp::max: return ncclMax;
    case ReduceOp::min: return ncclMin;
  }
  return ncclSum;
}

using EventPtr = std::shared_ptr<CUevent_st>;
EventPtr make_event() {
  cudaEvent_t e = nullptr;
  EMBER_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return EventPtr(e, [](cudaEvent_t x) { cudaEventDestroy(x); });
}

// Runs `call(comm, stream)` on the communicator's stream after everything queued so far on the
// caller's current stream, and returns the Work that completes with it. `work` is the
// contiguous buffer NCCL reads and writes; `finish` copies it back into the caller's tensor.
template <class Call>
Work launch(const char* op, const Tensor& work, std::vector<Tensor> keep, Call call, std::function<void()> finish) {
  const auto start = std::chrono::steady_clock::now();
  const bool captured = ember::detail::capture_state() != nullptr;
  // Making the communicator synchronises and talks to the other ranks: never inside a capture.
  EMBER_CHECK(!captured || g_comm.comm != nullptr, op,
              "the first NCCL collective of the process runs inside a graph capture; run one step eagerly first "
              "(cuda::StepGraph's warm-up steps do) so that the communicator exists (", where(), ")");
  Comm& c = comm_for(work, op);
  cuda::DeviceGuard guard(c.device);
  EventPtr ready = make_event(), done = make_event();
  EMBER_CUDA_CHECK(cudaEventRecord(ready.get(), cuda::current_stream(c.device)));
  EMBER_CUDA_CHECK(cudaStreamWaitEvent(c.stream, ready.get(), 0));
  check_call(op, call(c.comm, c.stream), start);
  EMBER_CUDA_CHECK(cudaEventRecord(done.get(), c.stream));
  auto s = std::make_shared<Work::State>();
  s->op = op;
  s->start = start;
  s->keep = std::move(keep);
  s->finish = std::move(finish);
  if (captured) {
    // Inside a capture the communicator's stream is forked from the captured stream by `ready`;
    // wait() joins it back with `done` (edges of the graph; the capture cannot end with the fork
    // open). No polling: querying a captured event is not allowed, and a replayed collective's
    // failure shows up as NCCL's asynchronous error at the next eager collective.
    const int dev = c.device;
    s->join = [done, dev]() { EMBER_CUDA_CHECK(cudaStreamWaitEvent(cuda::current_stream(dev), done.get(), 0)); };
    return Work(s);
  }
  s->test = [op, done]() {
    ncclResult_t st = ncclSuccess;
    if (g_comm.comm != nullptr && api().async_error(g_comm.comm, &st) == ncclSuccess && st != ncclSuccess &&
        st != ncclInProgress)
      abort_and_fail(op, "NCCL failed: " + nccl_error(st));
    const cudaError_t e = cudaEventQuery(done.get());
    if (e == cudaErrorNotReady) return false;
    EMBER_CUDA_CHECK(e);
    return true;
  };
  s->on_timeout = []() {
    if (g_comm.comm != nullptr && !g_comm.broken) api().abort(g_comm.comm);
    g_comm.broken = true;
    g_comm.broken_why = "a collective timed out";
  };
  return Work(s);
}

// The buffer NCCL works on: t itself when contiguous, else a contiguous copy (finish copies the
// result back).
Tensor buffer_for(const Tensor& t) {
  NoGradGuard ng;
  return t.is_contiguous() ? t : contiguous(t.detach());
}

// What finishes a collective on a staged buffer: copying the result into the caller's tensor.
std::function<void()> copy_back(Tensor work, Tensor target) {
  if (work.is_same(target)) return nullptr;
  return [work, target]() mutable {
    NoGradGuard ng;
    target.copy_(work);
  };
}

}  // namespace

bool nccl_available(std::string* why) {
  const Api& a = api();
  if (why != nullptr) *why = a.why;
  return a.why.empty();
}

Work nccl_all_reduce(Tensor& t, ReduceOp op, const char* name) {
  Tensor work = buffer_for(t), target = t;
  const DType dt = t.dtype();
  return launch(
      name, work, {work, target},
      [&](ncclComm_t comm, cudaStream_t stream) {
        return api().all_reduce(work.data_ptr(), work.data_ptr(), static_cast<size_t>(work.numel()), nccl_type(dt),
                                nccl_op(op, dt), comm, stream);
      },
      copy_back(work, target));
}

Work nccl_broadcast(Tensor& t, int root, const char* name) {
  Tensor work = buffer_for(t), target = t;
  const DType dt = t.dtype();
  return launch(
      name, work, {work, target},
      [&](ncclComm_t comm, cudaStream_t stream) {
        return api().broadcast(work.data_ptr(), work.data_ptr(), static_cast<size_t>(work.numel()), nccl_type(dt),
                               root, comm, stream);
      },
      copy_back(work, target));
}

Work nccl_all_gather(const Tensor& t, Tensor& all, const char* name) {
  Tensor work = buffer_for(t);
  Shape shape = t.shape();
  shape.insert(shape.begin(), dist::world_size());
  Tensor out = empty(shape, TensorOptions(t.dtype()).with_device(t.device()));
  all = out;
  return launch(
      name, work, {work, out},
      [&](ncclComm_t comm, cudaStream_t stream) {
        return api().all_gather(work.data_ptr(), out.data_ptr(), static_cast<size_t>(work.numel()),
                                nccl_type(t.dtype()), comm, stream);
      },
      nullptr);
}

void nccl_finalize() {
  if (g_comm.comm == nullptr) return;
  const Api& a = api();
  if (!g_comm.broken) {
    cuda::DeviceGuard guard(g_comm.device);
    cudaStreamSynchronize(g_comm.stream);
    const auto start = std::chrono::steady_clock::now();
    const ncclResult_t r = a.finalize(g_comm.comm);
    if (r == ncclSuccess || r == ncclInProgress) {
      try {
        wait_ready("dist.finalize", start);
      } catch (const Error&) {
        // Aborted by wait_ready; the communicator is gone either way.
      }
    }
    if (!g_comm.broken) a.destroy(g_comm.comm);
  }
  if (g_comm.stream != nullptr) cudaStreamDestroy(g_comm.stream);
  g_comm = Comm{};
}

#else  // built without nccl.h

namespace {
[[noreturn]] void no_nccl(const char* op) {
  EMBER_FAIL(op, "CUDA tensors go through NCCL, but this ember was built without nccl.h (install NCCL's headers, "
                 "or point NCCL_ROOT at them, and rebuild) (", where(), ")");
}
}  // namespace

bool nccl_available(std::string* why) {
  if (why != nullptr) *why = "built without nccl.h";
  return false;
}
Work nccl_all_reduce(Tensor&, ReduceOp, const char* name) { no_nccl(name); }
Work nccl_broadcast(Tensor&, int, const char* name) { no_nccl(name); }
Work nccl_all_gather(const Tensor&, Tensor&, const char* name) { no_nccl(name); }
void nccl_finalize() {}

#endif

}  // namespace ember::dist::detail

#endif  // EMBER_WITH_CUDA
