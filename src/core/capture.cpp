#include "core/capture.h"

#include <atomic>
#include <utility>

#include "ember/core/error.h"

namespace ember::detail {
namespace {
thread_local std::optional<CaptureState> t_capture;
std::atomic<uint64_t> g_next_pool{1};
}  // namespace

const CaptureState* capture_state() { return t_capture ? &*t_capture : nullptr; }

CaptureScope::CaptureScope(CaptureState state) {
  EMBER_CHECK(!t_capture, "cuda::Graph", "capture on ", state.device, " started while this thread is capturing on ",
              t_capture->device, ": captures do not nest");
  t_capture = std::move(state);
}

CaptureScope::~CaptureScope() { t_capture.reset(); }

void check_not_capturing(const char* op, const char* what) {
  if (!t_capture) [[likely]]
    return;
  EMBER_FAIL(op, what, " while capturing a CUDA graph on ", t_capture->device,
             ": a graph replays device work only; move it out of the captured step (docs/cuda.md, CUDA graphs)");
}

void on_replay(std::function<void()> hook) {
  EMBER_CHECK(t_capture && t_capture->before_replay, "cuda::Graph", "internal: on_replay outside a capture");
  t_capture->before_replay->push_back(std::move(hook));
}

uint64_t new_memory_pool() { return g_next_pool.fetch_add(1); }

}  // namespace ember::detail
