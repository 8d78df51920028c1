// ember-quant-bench: a dynamic-int8 Linear (QuantizedLinear: quantise the activations, int8 GEMM,
// dequantise + bias) against the f32 Linear it came from, on the CPU, inference (no autograd).
// With --device cuda (or the stand-in fake) the peer is the bf16 Linear on that device, the
// GPU form of a trained model, and the batch defaults to 8192 (the target is large batches).
//
//   ember-quant-bench [--threads N] [--batch B] [--reps R] [--isa scalar|avx2|avx512_vnni] [--device D]
//
// One line per shape: the median and fastest wall time of R calls of each (after warm-up; f32 and
// int8 interleaved over three rounds, the best round kept) and the speedups, then a `result:` line
// with the geometric mean of the median speedups. docs/perf/quantization.md has the figures.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/int8_gemm.h"
#include "ember/ember.h"
#include "ember/nn/quantized.h"

namespace {

// Median and fastest wall time of `reps` calls, after warm-up.
struct Times {
  double median, min;
};
template <class F>
Times time_ms(int reps, F&& f) {
  for (int i = 0; i < 3; ++i) f();  // warm-up: allocator, caches, thread pool
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return {t[t.size() / 2], t.front()};
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, reps = 50;
  int64_t batch = -1;
  std::string isa, device = "cpu";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--threads")
      threads = std::atoi(argv[i + 1]);
    else if (a == "--batch")
      batch = std::atoll(argv[i + 1]);
    else if (a == "--reps")
      reps = std::atoi(argv[i + 1]);
    else if (a == "--isa")
      isa = argv[i + 1];
    else if (a == "--device")
      device = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: %s [--threads N] [--batch B] [--reps R] [--isa scalar|avx2|avx512_vnni] [--device D]\n", argv[0]);
      return 2;
    }
  }
  omp_set_num_threads(threads);
  const ember::Device dev(device);
  const bool on_device = !dev.is_cpu();
  if (batch < 0) batch = on_device ? 8192 : 64;
  // A device call returns before its kernels finish: wait for them inside the timed call.
  auto sync = [&] {
    if (dev.is_cuda()) ember::cuda::synchronize(dev.index);
  };
  const char* peer = on_device ? "bf16" : "f32";
  using ember::cpu::Int8Isa;
  if (isa == "scalar")
    ember::cpu::set_int8_isa(Int8Isa::scalar);
  else if (isa == "avx2")
    ember::cpu::set_int8_isa(Int8Isa::avx2);
  else if (isa == "avx512_vnni")
    ember::cpu::set_int8_isa(Int8Isa::avx512_vnni);
  std::printf("# %s, threads %d, batch %lld, %d reps (median), int8 path %s, peer %s Linear\n", dev.str().c_str(),
              threads, static_cast<long long>(batch), reps,
              dev.is_cuda() ? "dp4a (CUDA)" : ember::cpu::int8_isa_name(ember::cpu::int8_isa()), peer);
  struct Shape {
    int64_t in, out;
  };
  const std::vector<Shape> shapes = {{1024, 1024}, {4096, 1024}, {768, 3072}};
  ember::NoGradGuard ng;
  double log_sum = 0;
  for (const Shape& s : shapes) {
    ember::Generator gen(1);
    ember::nn::Linear lin(s.in, s.out, true, &gen);
    auto q = ember::nn::QuantizedLinear::from_float(lin);
    ember::Tensor x = ember::randn({batch, s.in}, {}, &gen), xp = x;
    if (on_device) {
      q->to(dev);
      lin.to(dev);
      lin.to(ember::DType::bf16);
      x = x.to(dev);
      xp = ember::to_dtype(x, ember::DType::bf16);
    }
    // Interleaved in rounds, so that a burst of load on a shared machine hits both alike.
    Times f32{1e30, 1e30}, i8{1e30, 1e30};
    for (int round = 0; round < 3; ++round) {
      const Times a = time_ms(reps, [&] {
        (void)lin.forward(xp);
        sync();
      });
      const Times b = time_ms(reps, [&] {
        (void)q->forward(x);
        sync();
      });
      f32 = {std::min(f32.median, a.median), std::min(f32.min, a.min)};
      i8 = {std::min(i8.median, b.median), std::min(i8.min, b.min)};
    }
    const double gop = 2.0 * double(batch) * double(s.in) * double(s.out) / 1e6;
    std::printf(
        "linear %5lld->%-5lld batch %lld: %s median %8.3f ms (min %8.3f, %6.1f GFLOP/s)  int8 median %8.3f ms (min "
        "%8.3f, "
        "%6.1f GOP/s)  speedup median %.2fx, min %.2fx\n",
        static_cast<long long>(s.in), static_cast<long long>(s.out), static_cast<long long>(batch), peer, f32.median,
        f32.min,
        gop / f32.min, i8.median, i8.min, gop / i8.min, f32.median / i8.median, f32.min / i8.min);
    const double f32v = f32.median, i8v = i8.median;
    log_sum += std::log(f32v / i8v);
  }
  std::printf("result: device=%s peer=%s threads=%d batch=%lld int8_path=%s geomean_speedup=%.2f\n",
              dev.str().c_str(), peer, threads, static_cast<long long>(batch),
              dev.is_cuda() ? "dp4a" : ember::cpu::int8_isa_name(ember::cpu::int8_isa()),
              std::exp(log_sum / double(shapes.size())));
  return 0;
}
