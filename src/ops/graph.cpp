// CUDA graphs (ember/cuda_graph.h). On CUDA: stream capture on a side stream into a
// cudaGraph_t, instantiated once, launched per replay, its allocations in a private pool of the
// caching allocator. On the stand-in device: the kernels the work calls are recorded instead of
// run (backend::t_kernel_recording) and a replay runs the record, with the same private-pool
// rule in the stand-in allocator, so host code in a captured step runs once on both devices
// and the tests see what a GPU would do.
#include "ember/cuda_graph.h"

#include <exception>
#include <mutex>
#include <utility>
#include <vector>

#include "core/capture.h"
#include "ember/core/error.h"
#include "ember/cuda.h"
#include "ops/common.h"
#include "ops/dispatch.h"
#ifdef EMBER_WITH_CUDA
#include <cuda_runtime.h>

#include "cuda/runtime.h"
#endif

namespace ember::cuda {

bool is_capturing() { return detail::capture_state() != nullptr; }

struct Graph::Impl {
  Device device = Device::cpu();
  bool captured = false;
  uint64_t pool = 0;
  std::vector<std::function<void()>> before_replay;      // optimizers' hyper-parameter writes
  std::shared_ptr<detail::DeferredCheckList> checks;     // index checks, queued after each replay
  std::vector<std::function<void()>> recorded;           // the stand-in device's kernels
#ifdef EMBER_WITH_CUDA
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
#endif

  ~Impl() { clear(); }
  void clear() noexcept {
#ifdef EMBER_WITH_CUDA
    if (exec != nullptr && cudaGraphExecDestroy(exec) != cudaSuccess) cudaGetLastError();
    if (graph != nullptr && cudaGraphDestroy(graph) != cudaSuccess) cudaGetLastError();
    exec = nullptr;
    graph = nullptr;
#endif
    recorded.clear();  // drops the tensors the record holds before their pool goes
    before_replay.clear();
    checks.reset();
    if (pool != 0) {
      try {
        if (device.is_fake()) detail::release_fake_pool(pool);
#ifdef EMBER_WITH_CUDA
        if (device.is_cuda()) release_graph_pool(pool);
#endif
      } catch (...) {
        // A failing device synchronisation while dropping a graph: the pool's blocks stay
        // unusable, which is safe; destructors never throw.
      }
    }
    pool = 0;
    captured = false;
    device = Device::cpu();
  }
};

namespace {

// Restores the recording/check state of the thread whatever the captured work does.
struct CaptureSession {
  detail::CaptureScope scope;
  std::vector<std::function<void()>>* saved_recording;
  CaptureSession(const detail::CaptureState& st, std::vector<std::function<void()>>* record)
      : scope(st), saved_recording(backend::t_kernel_recording) {
    backend::t_kernel_recording = record;
  }
  ~CaptureSession() {
    backend::t_kernel_recording = saved_recording;
    detail::end_deferred_capture();
  }
};

#ifdef EMBER_WITH_CUDA
// One side stream per device for warm-up and capture (capture needs a stream other than the
// legacy default one; warm-up there fills that stream's cached blocks and decisions).
Stream side_stream(int device) {
  static std::mutex mu;
  static std::vector<Stream> streams;
  static std::vector<bool> made;
  std::lock_guard<std::mutex> lock(mu);
  if (streams.size() <= static_cast<size_t>(device)) {
    streams.resize(device + 1);
    made.resize(device + 1, false);
  }
  if (!made[device]) {
    streams[device] = Stream::create(device);
    made[device] = true;
  }
  return streams[device];
}

// Work queued on `later` from now on waits for what is queued on `first` so far.
void order_after(const Stream& first, const Stream& later) {
  cudaEvent_t ev = nullptr;
  EMBER_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  const cudaError_t rec = cudaEventRecord(ev, static_cast<cudaStream_t>(first.handle()));
  const cudaError_t wait = rec == cudaSuccess ? cudaStreamWaitEvent(static_cast<cudaStream_t>(later.handle()), ev, 0)
                                              : rec;
  cudaEventDestroy(ev);  // safe while pending: released once reached
  EMBER_CUDA_CHECK(wait);
}
#endif

}  // namespace

Graph::Graph() : impl_(std::make_unique<Impl>()) {}
Graph::~Graph() = default;
Graph::Graph(Graph&&) noexcept = default;
Graph& Graph::operator=(Graph&&) noexcept = default;

bool Graph::captured() const { return impl_ && impl_->captured; }
Device Graph::device() const { return impl_ ? impl_->device : Device::cpu(); }
void Graph::reset() {
  if (impl_) impl_->clear();
}

void Graph::capture(Device device, const std::function<void()>& work) {
  const char* op = "cuda::Graph.capture";
  EMBER_CHECK(device.is_cuda() || device.is_fake(), op, "graphs hold device work: capture on cuda:N or fake:N, got ",
              device);
  EMBER_CHECK(static_cast<bool>(work), op, "no work to capture (an empty function)");
  EMBER_CHECK(!is_capturing(), op, "capture on ", device, " started inside another capture: captures do not nest");
  if (!impl_) impl_ = std::make_unique<Impl>();
  Impl& g = *impl_;
  g.clear();
  g.device = device;
  g.pool = detail::new_memory_pool();
  const detail::CaptureState st{device, g.pool, &g.before_replay, device.is_fake() ? &g.recorded : nullptr};

  if (device.is_fake()) {
    try {
      CaptureSession session(st, &g.recorded);
      g.checks = detail::begin_deferred_capture();
      work();
    } catch (...) {
      g.clear();
      throw;
    }
    g.captured = true;
    return;
  }
#ifdef EMBER_WITH_CUDA
  const int dev = checked_device(device.index, op);
  DeviceGuard dguard(dev);
  const Stream user = Stream::current(dev);
  const Stream side = side_stream(dev);
  const auto side_s = static_cast<cudaStream_t>(side.handle());
  order_after(user, side);  // the capture starts after the work queued so far
  cudaError_t end_err = cudaSuccess;
  {
    StreamGuard sguard(side);
    std::exception_ptr failure;
    EMBER_CUDA_CHECK(cudaStreamBeginCapture(side_s, cudaStreamCaptureModeThreadLocal));
    try {
      CaptureSession session(st, nullptr);
      g.checks = detail::begin_deferred_capture();
      work();
    } catch (...) {
      failure = std::current_exception();
    }
    cudaGraph_t graph = nullptr;
    end_err = cudaStreamEndCapture(side_s, &graph);
    g.graph = graph;
    if (failure) {
      cudaGetLastError();
      g.clear();
      std::rethrow_exception(failure);
    }
  }
  if (end_err != cudaSuccess || g.graph == nullptr) {
    cudaGetLastError();
    g.clear();
    EMBER_FAIL(op, "the capture on cuda:", dev, " failed (", cudaGetErrorName(end_err),
               "): a call the graph cannot hold ran inside the work (a host synchronisation or a copy from "
               "pageable host memory outside ember's checks, or work from another thread)");
  }
  cudaError_t inst = cudaGraphInstantiate(&g.exec, g.graph, 0);
  if (inst != cudaSuccess) {
    cudaGetLastError();
    g.clear();
    EMBER_FAIL(op, "cudaGraphInstantiate on cuda:", dev, " failed: ", cudaGetErrorName(inst));
  }
  order_after(side, user);  // later work on the user's stream follows the capture
  g.captured = true;
#else
  EMBER_FAIL(op, "capture on ", device, ": this build of ember has no CUDA backend (configure with EMBER_CUDA=ON)");
#endif
}

void Graph::replay() {
  const char* op = "cuda::Graph.replay";
  EMBER_CHECK(captured(), op, "nothing captured (capture() first, or it failed)");
  EMBER_CHECK(!is_capturing(), op, "a replay inside a capture");
  Impl& g = *impl_;
  for (auto& hook : g.before_replay) hook();
  if (g.device.is_fake()) {
    for (auto& k : g.recorded) k();
  } else {
#ifdef EMBER_WITH_CUDA
    DeviceGuard dguard(g.device.index);
    EMBER_CUDA_CHECK(cudaGraphLaunch(g.exec, current_stream(g.device.index)));
#endif
  }
  if (g.checks) detail::requeue_deferred(*g.checks);
}

// --- StepGraph ---------------------------------------------------------------------------------

StepGraph::StepGraph(Device device, std::function<void()> step, StepGraphOptions options)
    : device_(device), step_(std::move(step)), options_(std::move(options)) {
  const char* op = "cuda::StepGraph";
  EMBER_CHECK(device.is_cuda() || device.is_fake(), op, "a captured step runs on cuda:N (or the stand-in fake:N), got ",
              device, "; run the step eagerly on this device");
  EMBER_CHECK(static_cast<bool>(step_), op, "no step function");
  EMBER_CHECK(options_.warmup_steps >= 0, op, "warmup_steps must be >= 0, got ", options_.warmup_steps);
  for (size_t i = 0; i < options_.static_inputs.size(); ++i)
    EMBER_CHECK(options_.static_inputs[i] != nullptr, op, "static input ", i, " is a null pointer");
}

void StepGraph::run() {
  const char* op = "cuda::StepGraph.run";
  for (size_t i = 0; i < options_.static_inputs.size(); ++i) {  // may be made after the StepGraph
    const Tensor& t = *options_.static_inputs[i];
    EMBER_CHECK(t.defined(), op, "static input ", i, " is an undefined tensor");
    EMBER_CHECK(t.device() == device_, op, "static input ", i, " is on ", t.device(), ", the step runs on ", device_);
  }
  ++runs_;
  if (!graph_.captured()) {
    if (runs_ <= options_.warmup_steps) {
#ifdef EMBER_WITH_CUDA
      if (device_.is_cuda()) {
        const Stream user = Stream::current(device_.index), side = side_stream(device_.index);
        order_after(user, side);
        {
          StreamGuard on_side(side);
          step_();
        }
        order_after(side, user);
        return;
      }
#endif
      step_();
      return;
    }
    signature_.clear();
    for (const Tensor* t : options_.static_inputs) signature_.push_back({t->data_ptr(), t->shape(), t->dtype()});
    graph_.capture(device_, step_);
  } else {
    for (size_t i = 0; i < options_.static_inputs.size(); ++i) {
      const Tensor& t = *options_.static_inputs[i];
      const InputSignature& s = signature_[i];
      EMBER_CHECK(t.shape() == s.shape && t.dtype() == s.dtype, op, "static input ", i, " is ", shape_str(t.shape()),
                  " ", dtype_name(t.dtype()), " but the step was captured with ", shape_str(s.shape), " ",
                  dtype_name(s.dtype), ": a graph replays fixed shapes (make a new StepGraph for this shape)");
      EMBER_CHECK(t.data_ptr() == s.data, op, "static input ", i,
                  " now lives in other memory than at capture (it was reassigned, not filled): fill it with "
                  "copy_() instead, the graph reads the memory it was captured with");
    }
  }
  graph_.replay();
  ++replays_;
}

}  // namespace ember::cuda
