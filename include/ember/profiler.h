// The profiler: an RAII scope that records every op and kernel this thread runs.
//
//   {
//     ember::Profiler prof({.trace_path = "step.json"});
//     for (...) { train_step(); prof.step(); }
//   }  // stop(): device times gathered, the trace written, the top-ops table printed
//
// It watches the one op-call path (ember/ops/observe.h): each op call, at every depth and in
// backward formulas, with its input shapes and dtypes, its device, its host time (steady
// clock), the bytes Storage allocated while it ran, and each primitive's kernel call under it.
// On CUDA each kernel launch is bracketed by two pooled cudaEvents on the current stream; they
// are read at step() (those already complete) and stop() (one wait), never with a sync per op.
// With NVTX (CUDA builds) each op is also an NVTX range, for Nsight Systems.
//
// Times are "self" times in the table: an op's time minus the time of the ops it called, so
// nested ops (linear's reshape, backward formulas) are never counted twice. docs/profiler.md.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ember/core/device.h"
#include "ember/core/dtype.h"
#include "ember/core/shape.h"

namespace ember {

struct ProfilerOptions {
  std::string trace_path;   // Chrome trace JSON written when the scope ends ("" = none)
  bool print_table = true;  // top-ops table to stdout when the scope ends
  int table_rows = 20;
  bool record_shapes = true;  // input shapes/dtypes per event
  bool nvtx = true;           // NVTX ranges when built with CUDA and NVTX is present
  // A window of a long run (counted in step() calls): record nothing until `skip_steps` steps
  // have passed (warm-up: first-touch allocations, GEMM autotuning), then stop by itself (trace
  // written, table printed) after `max_steps` recorded steps (0 = until stop()).
  int skip_steps = 0;
  int max_steps = 0;
};

// One recorded interval. Host times are nanoseconds since the profiler started.
struct ProfileEvent {
  enum class Kind : uint8_t { op, kernel, step };
  Kind kind = Kind::op;
  const char* name = "";     // the op's (ember/ops/op_def.h), the primitive's, "step" or "after the last step"
  int depth = 0;             // op: OpCall::depth; kernel: its op's + 1 (0 outside ops); step: its number
  bool in_backward = false;  // run by a backward formula
  bool threw = false;        // op: it raised (no outputs)
  Device device;             // op: its first tensor's device (input, else output); kernel: where it ran
  int parent = -1;           // index of the innermost op open when this began (-1: none)
  int64_t start_ns = 0;
  int64_t end_ns = 0;
  int64_t self_ns = 0;          // end - start minus the ops (not kernels) directly under it
  uint64_t bytes = 0;           // allocated while it ran, nested ops included
  uint64_t self_bytes = 0;      // minus those of the ops under it
  double device_ms = -1;        // CUDA time of its kernels (nested ones included); -1: not on CUDA
  double self_device_ms = -1;   // of its own kernels only
  double device_start_ms = -1;  // kernel: on the device's timeline, ms since the profiler started
  std::vector<Shape> shapes;    // op: input shapes (record_shapes); an absent optional input is {-1}
  std::vector<DType> dtypes;    // the matching dtypes
};

// One row of the top-ops table: an op name (backward calls apart, suffixed " (backward)").
struct ProfileRow {
  std::string name;
  int64_t calls = 0;
  double total_ms = 0;  // self device time on CUDA, self host time elsewhere
  double host_ms = 0;   // self host time
  double mean_us = 0;   // total_ms / calls, in microseconds
  double share = 0;     // total_ms / the steps' wall time, in percent
  uint64_t bytes = 0;   // self bytes allocated
  bool device_timed = false;
};

class Profiler {
 public:
  explicit Profiler(ProfilerOptions options = {});
  ~Profiler();  // stop() if still running (errors are printed to stderr, not thrown)
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  // Marks a training-step boundary: closes the current "step" span and opens the next (after
  // max_steps it stops the profiler, and throws what stop() throws).
  void step();
  void stop();             // stops recording, gathers device times, writes the trace and prints the table
  bool running() const;    // not stopped yet (recording, or waiting out skip_steps)
  bool recording() const;  // seeing ops now

  std::string table(int rows = 20) const;  // the top-ops table as text
  // Every row, by total time, largest first. Once step() was called, the table covers the steps
  // (start to the last step()); what ran after it is in the trace only.
  std::vector<ProfileRow> rows() const;
  // Writes the Chrome trace (Perfetto / chrome://tracing JSON) to `path` atomically (a temporary
  // file renamed over it). Throws ember::Error naming the path when it cannot be written.
  void write_chrome_trace(const std::string& path) const;

  // Ops and kernel calls in the order they began; each step span where it closed. Device times
  // are filled in by stop().
  const std::vector<ProfileEvent>& events() const;
  int64_t count(const std::string& op_name) const;  // op events of that name
  double wall_ms() const;                           // from the start to stop() (or now)
  int steps() const;                                // completed step spans

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ember
