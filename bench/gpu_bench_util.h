// Shared by the Google Benchmark GPU binaries: device timing with CUDA events and the guard
// that turns "no GPU" and library errors into skipped cases.
#pragma once
#include <benchmark/benchmark.h>

#include <exception>
#include <functional>

#include "ember/cuda.h"

namespace ember_bench {

constexpr int kWarmup = 3;

// Runs fn kWarmup times, then once per benchmark iteration between two events on the current
// stream (reported as manual time); returns the summed device seconds.
inline double time_on_device(benchmark::State& state, const std::function<void()>& fn) {
  for (int i = 0; i < kWarmup; ++i) fn();
  ember::cuda::synchronize();
  ember::cuda::Event start, stop;
  double total = 0;
  for (auto _ : state) {
    start.record();
    fn();
    stop.record();
    stop.synchronize();
    const double s = start.elapsed_ms(stop) / 1e3;
    state.SetIterationTime(s);
    total += s;
  }
  return total;
}

// Skips without a GPU; reports library errors as skips rather than aborting the run.
inline void guarded(benchmark::State& state, const std::function<void()>& body) {
  if (!ember::cuda::is_available()) {
    state.SkipWithError("no GPU");
    return;
  }
  try {
    body();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

}  // namespace ember_bench
