// ember-attention_gpu_bench: G4_attention (WORKLOADS.md) — ember's fused attention kernels.
//
//   ember-attention_gpu_bench [any --benchmark_* flag, e.g. --benchmark_filter=T4096]
//
// Shapes: q, k, v (B=8, H=16, T, D) bf16, T in {1024, 4096}, D in {64, 128}, causal and not.
// Cases G4_attention/bf16/T<T>/D<D>/<mask>/<pass>, pass in
//   fwd     sdpa_forward (output and logsumexp)
//   fwdbwd  sdpa_forward then sdpa_backward (dQ, dK, dV)
// Counter TFLOP/s counts 4 B H T^2 D for the forward (two GEMM-shaped products), halved when
// causal, and 2.5 times that for the backward (five products, as FlashAttention counts it).
// After the Google Benchmark table one line per case is printed in the format that
// bench/g4_sdpa_torch.py prints for PyTorch's SDPA on the same shapes:
//   G4 <case> <ms per call> ms <TFLOP/s> TFLOP/s
// cuDNN's SDPA (graph API) is not compared here. Device time from CUDA events around one call
// after warm-up (UseManualTime); outputs come from ember's caching allocator inside the timed
// region. Without a GPU every case reports "no GPU" and is skipped.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <string>
#include <vector>

#include "ember/ember.h"
#include "gpu_bench_util.h"

namespace {

using ember_bench::guarded;
using ember_bench::ScopedEnv;
using ember_bench::time_on_device;

constexpr int64_t kB = 8, kH = 16;

struct Line {
  std::string name;
  double ms, tflops;
};
std::vector<Line>& lines() {
  static std::vector<Line> all;
  return all;
}

void run_case(benchmark::State& state, const std::string& name, int64_t T, int64_t D, bool causal, bool backward,
              double dropout = 0.0) {
  guarded(state, [&] {
    using namespace ember;
    const Device dev = Device::cuda(0);
    Generator g(4);
    const TensorOptions o = TensorOptions(DType::bf16).with_device(dev);
    Tensor q = randn({kB, kH, T, D}, o, &g), k = randn({kB, kH, T, D}, o, &g), v = randn({kB, kH, T, D}, o, &g);
    Tensor up = randn({kB, kH, T, D}, o, &g);
    AttentionOptions opts;
    opts.causal = causal;
    opts.dropout = dropout;
    NoGradGuard no_grad;
    const double seconds = time_on_device(state, [&] {
      AttentionForward f = sdpa_forward(q, k, v, opts);
      if (backward) sdpa_backward(up, q, k, v, f, opts);
    });
    const double fwd = 4.0 * kB * kH * static_cast<double>(T) * static_cast<double>(T) * D * (causal ? 0.5 : 1.0);
    const double flops = backward ? 3.5 * fwd : fwd;
    const double per_call = seconds / static_cast<double>(state.iterations());
    state.counters["TFLOP/s"] = flops / per_call / 1e12;
    lines().push_back({name, per_call * 1e3, flops / per_call / 1e12});
  });
}

void register_all() {
  for (int64_t T : {1024, 4096})
    for (int64_t D : {64, 128})
      for (bool causal : {false, true})
        for (bool backward : {false, true}) {
          const std::string name = "G4_attention/bf16/T" + std::to_string(T) + "/D" + std::to_string(D) + "/" +
                                   (causal ? "causal" : "full") + "/" + (backward ? "fwdbwd" : "fwd");
          benchmark::RegisterBenchmark(name.c_str(),
                                       [=](benchmark::State& s) { run_case(s, name, T, D, causal, backward); })
              ->UseManualTime()
              ->Unit(benchmark::kMillisecond);
        }
  // At T 4096: the SIMT kernels (v1, the kernels before tensor cores) beside the default, and
  // dropout 0.1 inside the fused kernels. These lines are not G4 figures with a peer.
  auto variant = [](const std::string& name, const char* kernel, int64_t D, bool causal, bool backward, double p) {
    benchmark::RegisterBenchmark(name.c_str(),
                                 [=](benchmark::State& s) {
                                   ScopedEnv env("EMBER_ATTENTION_KERNEL", kernel);
                                   run_case(s, name, 4096, D, causal, backward, p);
                                 })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  };
  for (int64_t D : {64, 128})
    for (bool backward : {false, true}) {
      const std::string base = "G4_attention/bf16/T4096/D" + std::to_string(D) + "/causal/" +
                               (backward ? "fwdbwd" : "fwd");
      variant(base + "/ember_v1_simt", "simt", D, true, backward, 0.0);
      variant(base + "/dropout0.1", "mma", D, true, backward, 0.1);
    }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  for (const Line& l : lines()) std::printf("G4 %s %.3f ms %.2f TFLOP/s\n", l.name.c_str(), l.ms, l.tflops);
  return 0;
}
