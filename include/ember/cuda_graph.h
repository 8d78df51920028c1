// CUDA graphs: record a piece of work once, replay it with one launch (docs/cuda.md, "CUDA
// graphs"). A training step of a small model spends most of its time launching kernels and in
// host-side bookkeeping; replaying a captured step skips both.
//
//   Tensor x = zeros({B, T}, ...on cuda), y = ...;      // static inputs: same storage every step
//   Tensor loss;                                        // written by the step
//   cuda::StepGraph graph(device, [&] {
//     opt.zero_grad();
//     loss = criterion(model(x), y);
//     loss.backward();
//     opt.step();
//   }, {.warmup_steps = 3, .static_inputs = {&x, &y}});
//   for (auto& batch : data) {
//     x.copy_(batch.x); y.copy_(batch.y);                // fill the static inputs
//     graph.run();                                      // eager warm-up, then capture, then replay
//     ... loss.item<float>() when you need it (a host read: after run(), never inside the step)
//   }
//
// What a captured step may not do, each an ember::Error naming what it tried, raised when it
// is captured: read a device tensor on the host (item, to_vector, .to(cpu)), copy host memory
// to the device (the replay would read host memory that is gone by then), synchronise a stream,
// event or device, or ask the GradScaler whether to skip (use a step without a scaler, or
// bf16, which needs none). The shapes of the static inputs are fixed: StepGraph checks them
// before every replay and says which one changed. Allocations made while capturing come from a
// pool private to the graph, so nothing outside the graph can be handed memory a replay writes.
//
// The stand-in device fake:N follows the same rules without a GPU: capturing runs the work
// under the capture checks, and a replay runs it again under them, so every error path and the
// step plumbing are tested in CI; the replay's speed exists on CUDA only.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "ember/core/device.h"
#include "ember/core/tensor.h"

namespace ember::cuda {

// Whether this thread is capturing work into a graph now.
bool is_capturing();

class Graph {
 public:
  Graph();
  ~Graph();
  Graph(Graph&&) noexcept;
  Graph& operator=(Graph&&) noexcept;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // Captures what `work` launches on `device` (cuda:N, or the stand-in fake:N) into this graph,
  // replacing any earlier capture. On CUDA the work runs on a side stream that first waits for
  // the current stream (and the current stream waits for it after), and nothing executes
  // during capture: results appear at the first replay. Throws ember::Error, leaving the graph
  // empty, when the work does something a graph cannot hold (see above) or throws itself.
  void capture(Device device, const std::function<void()>& work);
  // Launches the captured work on the current stream of its device.
  void replay();
  bool captured() const;
  Device device() const;  // where it was captured (cpu when empty)
  // Drops the captured work and returns its private memory pool.
  void reset();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct StepGraphOptions {
  int warmup_steps = 3;  // eager runs before capture (lazy state, GEMM choices, caches)
  // The variables the step reads its batch from (they must outlive the StepGraph): before every
  // replay each must still hold the memory, shape and dtype it was captured with, so that a
  // variable reassigned instead of filled is an error, not a replay of stale inputs.
  std::vector<const Tensor*> static_inputs;
};

// A training step run eagerly for `warmup_steps` calls of run(), then captured once, then
// replayed on every later call. The step must read its inputs from static tensors (filled with
// Tensor::copy_ before run()) and leave its results in tensors it captures by reference.
class StepGraph {
 public:
  StepGraph(Device device, std::function<void()> step, StepGraphOptions options = {});
  void run();
  bool captured() const { return graph_.captured(); }
  int64_t runs() const { return runs_; }        // calls of run() so far
  int64_t replays() const { return replays_; }  // of which replays
  Device device() const { return device_; }

 private:
  struct InputSignature {
    const void* data;
    Shape shape;
    DType dtype;
  };
  Device device_;
  std::function<void()> step_;
  StepGraphOptions options_;
  std::vector<InputSignature> signature_;
  Graph graph_;
  int64_t runs_ = 0, replays_ = 0;
};

}  // namespace ember::cuda
