// --profile FILE: the bundled examples profile their training loop with ember::Profiler
// (docs/profiler.md). The trace is a Chrome trace JSON file (open it in https://ui.perfetto.dev
// or chrome://tracing); the top-ops table prints when the profiler stops.
#pragma once
#include <cstdio>
#include <memory>
#include <string>

#include "ember/dist.h"
#include "ember/profiler.h"

namespace example {

// The trace file of this process: FILE itself, or FILE with ".rank<N>" before its extension on
// ranks other than 0 of a --dist job (each rank records its own ops).
inline std::string profile_path(const std::string& path) {
  const int rank = ember::dist::rank();
  if (rank == 0) return path;
  const size_t slash = path.find_last_of('/');
  const size_t dot = path.find_last_of('.');
  const bool has_ext = dot != std::string::npos && (slash == std::string::npos || dot > slash);
  const std::string tag = ".rank" + std::to_string(rank);
  return has_ext ? path.substr(0, dot) + tag + path.substr(dot) : path + tag;
}

// A profiler for the training loop: call step() once per training step and stop() after the
// loop (an unwritable path is an ember::Error there; the destructor only prints errors). It
// records steps skip + 1 to skip + steps (the first ones warm up: first-touch allocations, GEMM
// autotuning; a whole long run would make a trace of gigabytes), then writes the trace and
// prints the table (rank 0) by itself. Null when `path` is "" (no --profile).
inline std::unique_ptr<ember::Profiler> start_profile(const std::string& path, int skip = 2, int steps = 20) {
  if (path.empty()) return nullptr;
  ember::ProfilerOptions o;
  o.trace_path = profile_path(path);
  o.print_table = ember::dist::rank() == 0;
  o.skip_steps = skip;
  o.max_steps = steps;
  if (o.print_table) {
    std::printf("profiling training steps %d to %d; the trace goes to %s\n", skip + 1, skip + steps,
                o.trace_path.c_str());
    std::fflush(stdout);
  }
  return std::make_unique<ember::Profiler>(o);
}

}  // namespace example
