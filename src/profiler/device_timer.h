// CUDA time of kernel launches without a synchronisation per launch: two events bracket each
// launch on the current stream, and are read later (poll), when they have completed. Events
// come from a process-wide pool per device and go back to it once read, so a long profiled run
// keeps only the launches not yet complete in flight. Without the CUDA backend every call is a
// no-op and begin() returns -1.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "ember/core/device.h"

namespace ember::profiler_detail {

class DeviceTimer {
 public:
  DeviceTimer();
  ~DeviceTimer();  // returns the events of unread launches to the pool
  DeviceTimer(const DeviceTimer&) = delete;
  DeviceTimer& operator=(const DeviceTimer&) = delete;

  // Records the start of a launch on `device`'s current stream; `tag` comes back from poll.
  // host_ns: the caller's clock now (aligns the device timeline with the host's at the first
  // launch on each device). Returns false when no event could be recorded (no timing then).
  bool begin(Device device, int64_t tag, int64_t host_ns);
  // Records the end of the launch begun last with `tag`.
  void end(int64_t tag);
  // Reads the launches whose end has completed (all of them, waiting, when `wait`):
  // done(tag, start_ms, ms) with start_ms on the host clock's scale (ms since its zero).
  void poll(bool wait, const std::function<void(int64_t tag, double start_ms, double ms)>& done);
  size_t pending() const { return pending_.size(); }

 private:
  struct Launch {
    void* start = nullptr;  // cudaEvent_t
    void* stop = nullptr;
    int device = 0;
    int64_t tag = 0;
    bool ended = false;
  };
  struct Base {
    int device = -1;
    void* event = nullptr;
    double host_ms = 0;
  };
  const Base* base_for(int device, int64_t host_ns);

  std::vector<Launch> pending_;
  std::vector<Base> bases_;
};

}  // namespace ember::profiler_detail
