// Graph capture as the rest of the library sees it (ember/cuda_graph.h): which device this
// thread is capturing work on, the graph's private memory pool, the hooks a captured object
// needs to run before every replay, and the check that refuses what a graph cannot hold. In
// core so that the copy path, both device allocators, the CUDA runtime wrappers, the deferred
// checks, the generator, the optimizers and the GradScaler all ask the same question.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "ember/core/device.h"

namespace ember::detail {

struct CaptureState {
  Device device;
  uint64_t pool = 0;                                // the graph's private memory pool
  std::vector<std::function<void()>>* before_replay = nullptr;  // hooks (Graph-owned)
  // The stand-in device's record (null on CUDA): what a replay runs, in order. Besides the
  // kernels, host-side work that must happen at that point of every replay goes here (a
  // collective over MPI: src/dist/dist.cpp).
  std::vector<std::function<void()>>* record = nullptr;
};

// What this thread is capturing, or null.
const CaptureState* capture_state();
inline std::optional<Device> capture_device() {
  const CaptureState* s = capture_state();
  return s ? std::optional<Device>(s->device) : std::nullopt;
}

// Marks this thread as capturing while alive (captures do not nest: an error).
class CaptureScope {
 public:
  explicit CaptureScope(CaptureState state);
  ~CaptureScope();
  CaptureScope(const CaptureScope&) = delete;
  CaptureScope& operator=(const CaptureScope&) = delete;
};

// Throws ember::Error (op `op`) when this thread is capturing: `what` says what was attempted.
void check_not_capturing(const char* op, const char* what);

// Registers `hook` to run on the host before every replay of the graph being captured (an
// optimizer writes the step's hyper-parameters into device memory the captured kernel reads).
// Only while capturing.
void on_replay(std::function<void()> hook);

// Private memory pools: a block allocated while this thread captures belongs to the pool of
// its graph, and freeing it keeps it out of the allocator's hands until the pool is released,
// because every replay writes it again. The stand-in allocator's side of it (the CUDA caching
// allocator has its own, src/cuda/allocator.cpp).
uint64_t new_memory_pool();
void release_fake_pool(uint64_t pool);

}  // namespace ember::detail
