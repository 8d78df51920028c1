#include "profiler/device_timer.h"

#ifdef EMBER_WITH_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <mutex>

#include "cuda/runtime.h"
#endif

namespace ember::profiler_detail {

#ifdef EMBER_WITH_CUDA
namespace {

// Timing events by device, shared by every profiler of the process; never destroyed (like the
// streams of cuda::Stream::create), so a profiler that ends at exit has nothing to tear down.
struct EventPool {
  std::mutex mu;
  std::map<int, std::vector<cudaEvent_t>> free;
};
EventPool& pool() {
  static EventPool* p = new EventPool;
  return *p;
}

cudaEvent_t take(int device) {
  EventPool& p = pool();
  {
    std::lock_guard<std::mutex> lock(p.mu);
    std::vector<cudaEvent_t>& f = p.free[device];
    if (!f.empty()) {
      cudaEvent_t e = f.back();
      f.pop_back();
      return e;
    }
  }
  int prev = 0;
  if (cudaGetDevice(&prev) != cudaSuccess) prev = device;
  if (prev != device) cudaSetDevice(device);
  cudaEvent_t e = nullptr;
  if (cudaEventCreate(&e) != cudaSuccess) {
    (void)cudaGetLastError();  // ours: keep it out of the next launch check
    e = nullptr;
  }
  if (prev != device) cudaSetDevice(prev);
  return e;
}

void give(int device, void* e) {
  if (e == nullptr) return;
  EventPool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  p.free[device].push_back(static_cast<cudaEvent_t>(e));
}

bool record(void* e, int device) {
  if (cudaEventRecord(static_cast<cudaEvent_t>(e), cuda::current_stream(device)) == cudaSuccess) return true;
  (void)cudaGetLastError();
  return false;
}

// Whether `device`'s current stream is capturing a CUDA graph: then its launches are not timed
// (a capture records no work to time, and querying an event could invalidate the capture).
bool capturing(int device) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(cuda::current_stream(device), &st) != cudaSuccess) {
    (void)cudaGetLastError();
    return true;  // unknown: leave the stream alone
  }
  return st != cudaStreamCaptureStatusNone;
}

}  // namespace

DeviceTimer::DeviceTimer() = default;

DeviceTimer::~DeviceTimer() {
  for (Launch& l : pending_) {
    // An unread event may still be pending on its stream; re-recording it later is allowed.
    give(l.device, l.start);
    give(l.device, l.stop);
  }
  for (Base& b : bases_) give(b.device, b.event);
}

const DeviceTimer::Base* DeviceTimer::base_for(int device, int64_t host_ns) {
  for (const Base& b : bases_)
    if (b.device == device) return &b;
  Base b{device, take(device), static_cast<double>(host_ns) * 1e-6};
  if (b.event == nullptr) return nullptr;
  if (!record(b.event, device)) {
    give(device, b.event);
    return nullptr;
  }
  bases_.push_back(b);
  return &bases_.back();
}

bool DeviceTimer::begin(Device device, int64_t tag, int64_t host_ns) {
  if (!device.is_cuda() || capturing(device.index)) return false;
  if (base_for(device.index, host_ns) == nullptr) return false;
  Launch l{take(device.index), nullptr, device.index, tag, false};
  if (l.start == nullptr) return false;
  l.stop = take(device.index);
  if (l.stop == nullptr || !record(l.start, device.index)) {
    give(device.index, l.start);
    give(device.index, l.stop);
    return false;
  }
  pending_.push_back(l);
  return true;
}

void DeviceTimer::end(int64_t tag) {
  for (auto it = pending_.rbegin(); it != pending_.rend(); ++it) {
    if (it->tag != tag || it->ended) continue;
    it->ended = record(it->stop, it->device);
    return;
  }
}

void DeviceTimer::poll(bool wait, const std::function<void(int64_t, double, double)>& done) {
  if (pending_.empty()) return;
  for (const Base& b : bases_)
    if (capturing(b.device)) return;  // read them after the capture ends
  std::vector<Launch> keep;
  // Launches on a device's stream complete in order: after the first one not done yet, the
  // later ones on that device wait for the next poll without a query each.
  std::vector<int> busy;
  for (Launch& l : pending_) {
    if (!wait && std::find(busy.begin(), busy.end(), l.device) != busy.end()) {
      keep.push_back(l);
      continue;
    }
    if (!l.ended) {  // its kernel threw before the end was recorded: no time, events back
      if (wait) {
        give(l.device, l.start);
        give(l.device, l.stop);
      } else {
        keep.push_back(l);
      }
      continue;
    }
    auto stop = static_cast<cudaEvent_t>(l.stop);
    cudaError_t st = wait ? cudaEventSynchronize(stop) : cudaEventQuery(stop);
    if (st == cudaErrorNotReady) {
      busy.push_back(l.device);
      keep.push_back(l);
      continue;
    }
    float ms = 0, from_base = 0;
    const Base* base = nullptr;
    for (const Base& b : bases_)
      if (b.device == l.device) base = &b;
    const bool ok =
        st == cudaSuccess && cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(l.start), stop) == cudaSuccess &&
        base != nullptr &&
        cudaEventElapsedTime(&from_base, static_cast<cudaEvent_t>(base->event), static_cast<cudaEvent_t>(l.start)) ==
            cudaSuccess;
    if (ok) {
      done(l.tag, base->host_ms + from_base, ms);
    } else {
      (void)cudaGetLastError();
    }
    give(l.device, l.start);
    give(l.device, l.stop);
  }
  pending_.swap(keep);
}

#else  // no CUDA backend: nothing runs on a GPU, nothing to time

DeviceTimer::DeviceTimer() = default;
DeviceTimer::~DeviceTimer() = default;
const DeviceTimer::Base* DeviceTimer::base_for(int, int64_t) { return nullptr; }
bool DeviceTimer::begin(Device, int64_t, int64_t) { return false; }
void DeviceTimer::end(int64_t) {}
void DeviceTimer::poll(bool, const std::function<void(int64_t, double, double)>&) {}

#endif

}  // namespace ember::profiler_detail
