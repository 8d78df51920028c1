// Shared by the Google Benchmark GPU binaries: device timing with CUDA events, the guard that
// turns "no GPU" and library errors into skipped cases, the run's context lines (commit,
// device, driver) and main().
#pragma once
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>

#include "ember/cuda.h"

// Throws std::runtime_error naming the statement when a CUDA runtime call fails (inside a
// guarded case that becomes a skip with that message).
#define BENCH_CUDA(stmt)                                                                                   \
  do {                                                                                                     \
    cudaError_t e_ = (stmt);                                                                               \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#stmt) + ": " + cudaGetErrorString(e_));   \
  } while (0)

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

// Sets an environment variable for one case (the kernel switches EMBER_ATTENTION_KERNEL and
// EMBER_RNN_KERNEL are read at every call) and restores what was there before.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_.c_str(), old_.c_str(), 1);
    else unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, old_;
  bool had_ = false;
};

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

// Context lines of the report: commit, and device, driver and runtime versions when a GPU is
// there. `extra` adds the peer library's own lines (cuDNN or cuBLAS version).
inline void add_device_context(const char* commit, const std::function<void()>& extra = {}) {
  benchmark::AddCustomContext("commit", commit);
  if (extra) extra();
  if (!ember::cuda::is_available()) {
    benchmark::AddCustomContext("device", "none (every case is skipped)");
    return;
  }
  cudaDeviceProp prop{};
  int driver = 0, runtime = 0;
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) benchmark::AddCustomContext("device", prop.name);
  if (cudaDriverGetVersion(&driver) == cudaSuccess) benchmark::AddCustomContext("cuda_driver", std::to_string(driver));
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess)
    benchmark::AddCustomContext("cuda_runtime", std::to_string(runtime));
}

// The body of every GPU bench's main(): flags, context (a failure there is printed, not fatal),
// the cases register_all() adds, the run.
inline int run_main(int argc, char** argv, const char* name, const std::function<void()>& context,
                    const std::function<void()>& register_all) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  try {
    context();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
  }
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace ember_bench
