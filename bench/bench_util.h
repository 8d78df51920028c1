// What ember-bench and its libtorch peer share, so both measure the same way (WORKLOADS.md):
// a workload is a step function; it runs `warmup` untimed steps, then `steps` timed ones, and
// reports min / median / max wall time per step in milliseconds. Header-only and free of
// ember and torch, so the peer binary does not link ember.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace bench {

struct Stats {
  double min_ms = 0, median_ms = 0, max_ms = 0;
  int steps = 0;
};

// Median of an odd count is the middle value; of an even count, the mean of the two middles.
inline Stats summarize(std::vector<double> ms) {
  Stats s;
  if (ms.empty()) return s;
  std::sort(ms.begin(), ms.end());
  size_t n = ms.size();
  s.min_ms = ms.front();
  s.max_ms = ms.back();
  s.median_ms = (n % 2) ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  s.steps = static_cast<int>(n);
  return s;
}

// Runs step() warmup times untimed, then `steps` times, timing each call on its own.
// CPU work is synchronous, so the wall time of the call is the time of the step.
inline Stats time_steps(const std::function<void()>& step, int warmup, int steps) {
  for (int i = 0; i < warmup; ++i) step();
  std::vector<double> ms;
  ms.reserve(static_cast<size_t>(steps));
  for (int i = 0; i < steps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    step();
    auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return summarize(std::move(ms));
}

// Parses a positive integer flag value; exits with a message on anything else.
inline int parse_positive(const char* flag, const char* value) {
  char* end = nullptr;
  long v = value ? std::strtol(value, &end, 10) : 0;
  if (!value || *end != '\0' || v <= 0 || v > 1000000) {
    std::fprintf(stderr, "%s expects a positive integer, got '%s'\n", flag, value ? value : "");
    std::exit(2);
  }
  return static_cast<int>(v);
}

// A workload: make() builds the model and data once; step() runs one timed training step and
// last_loss() reports the loss of the most recent step (a sanity figure, never timed).
struct Instance {
  std::function<void()> step;
  std::function<double()> last_loss;
  std::function<std::vector<std::string>()> notes;  // optional: extra result lines (a size sweep)
};

// `ranks` > 1: a data-parallel workload, run as that many processes under mpirun (ember-bench
// launches itself; rank 0's step times count). `threads` > 0 pins its thread count per rank
// instead of --threads.
struct Workload {
  std::string name;
  std::string what;
  std::function<Instance()> make;
  int ranks = 1;
  int threads = 0;
};

// Each binary (ember-bench, ember-bench-torch) has its own registry. A workload file registers
// its workloads with a namespace-scope `bench::Register`, so a new family of workloads is a new
// file in bench/workloads/ (ember) and bench/torch_workloads/ (libtorch), picked up by CMake.
inline std::vector<Workload>& registry() {
  static std::vector<Workload> all;
  return all;
}

struct Register {
  Register(std::string name, std::string what, std::function<Instance()> make, int ranks = 1, int threads = 0) {
    registry().push_back({std::move(name), std::move(what), std::move(make), ranks, threads});
  }
};

// The registered workloads in name order (W1_..., W2_..., ...).
inline const std::vector<Workload>& workloads() {
  static const std::vector<Workload> sorted = [] {
    std::vector<Workload> v = registry();
    std::sort(v.begin(), v.end(), [](const Workload& a, const Workload& b) { return a.name < b.name; });
    return v;
  }();
  return sorted;
}

constexpr int kWarmupSteps = 3;
constexpr int kDefaultSteps = 15;
constexpr int kDefaultThreads = 2;
constexpr unsigned kSeed = 1234;

}  // namespace bench
