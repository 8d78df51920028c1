// The profiler's state, shared by its recording (profiler.cpp) and its reports (report.cpp).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "ember/ops/observe.h"
#include "ember/profiler.h"
#include "profiler/device_timer.h"

namespace ember {

struct Profiler::Impl {
  using Clock = std::chrono::steady_clock;

  ProfilerOptions options;
  std::thread::id thread = std::this_thread::get_id();
  Clock::time_point t0 = Clock::now();
  bool running = true;
  bool recording = false;  // attached to this thread's observer (after skip_steps)
  int skipped = 0;         // step() calls while waiting out skip_steps
  bool gathered = false;   // device times read (stop() ran)
  int64_t stop_ns = -1;

  std::vector<ProfileEvent> events;
  struct OpFrame {
    const OpCall* call;  // the same object in before() and after() (the op path keeps it)
    int index;
    uint64_t bytes0;
    bool device_known;  // from an input; else the first output's device, in after()
    int64_t child_ns = 0;
    uint64_t child_bytes = 0;
  };
  struct KernelFrame {
    const KernelCall* call;  // likewise
    int index;
    uint64_t bytes0;
    bool timed;
  };
  std::vector<OpFrame> ops_open;
  std::vector<KernelFrame> kernels_open;
  int64_t step_start_ns = 0;
  int steps = 0;
  int64_t steps_end_ns = -1;  // the last step boundary (the table covers the steps only)
  size_t events_at_step_start = 0;
  profiler_detail::DeviceTimer timer;

  int64_t now_ns() const { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count(); }

  // Recording (profiler.cpp).
  void op_before(const OpCall& call);
  void op_after(const OpCall& call);
  void kernel_before(const KernelCall& call);
  void kernel_after(const KernelCall& call);
  void close_kernels_above(int64_t events_floor, int64_t now);  // those begun after event `events_floor`
  void gather(bool wait);
  void finish();

  // Reports (report.cpp).
  std::vector<ProfileRow> rows() const;
  std::string table(int rows) const;
  void write_chrome_trace(const std::string& path) const;
  double wall_ms() const;
  double steps_ms() const;  // what the table's shares are of: the steps, or all of it without step()
};

}  // namespace ember
