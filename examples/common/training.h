// The training-loop pieces every bundled example needs the same way: the device it may use,
// the data order of an epoch, and what a checkpoint carries besides tensors (the run's identity,
// the curves so far). Header-only; errors are ember::Error naming the program.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <iostream>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "cli.h"
#include "ember/core/generator.h"
#include "ember/cuda.h"
#include "ember/ops/ops.h"

namespace example {

// The device `requested` names ("cpu", "cuda", "cuda:N", "fake"), "cuda" meaning this rank's GPU
// under --dist (rank_device); an error when it names a GPU this machine does not have.
inline ember::Device usable_device(const char* prog, const std::string& requested) {
  const ember::Device d = rank_device(requested);
  if (!d.is_cuda()) return d;
  EMBER_CHECK(ember::cuda::is_available(), prog, "no CUDA GPU is available (this build: CUDA backend ",
              ember::cuda::built_with_cuda() ? "built" : "not built", "); run with --device cpu");
  EMBER_CHECK(d.index < ember::cuda::device_count(), prog, "no CUDA device ", d.str(), ": ",
              ember::cuda::device_count(), " visible; run with --device cuda:0 or cpu");
  return d;
}

// The body of an example's main(): parse the flags, print usage for --help, check the device,
// run. Any exception ends the program with "error: [...] ..." on stderr and exit status 1,
// after what the run printed so far (stdout flushed first, so the two streams keep their order).
template <class Parse, class Usage, class Run>
int run_main(const char* prog, int argc, char** argv, Parse parse, Usage usage, Run run) {
  try {
    const auto args = parse(argc, argv);
    if (args.help) {
      usage(std::cout);
      return 0;
    }
    return run(args, usable_device(prog, args.device));
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}

// A permutation of 0..n-1 drawn from gen (sorting n uniform keys; ties keep index order), so an
// epoch's data order is the generator's (seed, offset): what a checkpoint restores.
inline std::vector<int64_t> shuffled_order(int64_t n, ember::Generator& gen) {
  const std::vector<float> keys = ember::rand({n}, {}, &gen).to_vector<float>();
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return keys[a] < keys[b]; });
  return order;
}

// Numbers as checkpoint text ("0.5,0.25", exact to the last bit) and back.
inline std::string format_numbers(const std::vector<double>& v) {
  std::string s;
  for (double x : v) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", x);
    if (!s.empty()) s.push_back(',');
    s.append(buf);
  }
  return s;
}
inline std::vector<double> parse_numbers(const char* prog, const std::string& text, const std::string& what) {
  std::vector<double> v;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, end - start);
    size_t used = 0;
    double x = 0;
    try {
      x = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    EMBER_CHECK(used == item.size() && !item.empty(), prog, what, " holds \"", item.substr(0, 30),
                "\", not a number");
    v.push_back(x);
    start = end + 1;
  }
  return v;
}

// Resuming: every entry of `identity` (what the run's flags and data must agree on) has to
// equal the one the checkpoint at `path` was written with; `hint` says which flags to repeat.
inline void check_run_identity(const char* prog, const std::string& path,
                               const std::map<std::string, std::string>& saved,
                               const std::map<std::string, std::string>& identity, const std::string& hint) {
  for (const auto& [key, want] : identity) {
    const auto it = saved.find(key);
    EMBER_CHECK(it != saved.end() && it->second == want, prog, path, " was written by a run with ", key, " = ",
                it == saved.end() ? "?" : it->second, ", this run has ", want, ": ", hint);
  }
}

}  // namespace example
