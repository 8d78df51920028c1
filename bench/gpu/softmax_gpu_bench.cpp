// ember-softmax_gpu_bench: G5_softmax (WORKLOADS.md) — a 100000-class output layer on one GPU.
//
//   ember-softmax_gpu_bench [any --benchmark_* flag, e.g. --benchmark_filter=G5_softmax/logsoftmax]
//
// Shapes: batch N = 4096, hidden D = 512, C = 100000 classes, f32. Cases:
//   G5_softmax/logsoftmax_nll/ember   nn::cross_entropy(logits, y) forward: ember's fused
//                                      log-softmax + NLL (kernels/loss.cu) on logits (N, C)
//   G5_softmax/logsoftmax/cudnn       cudnnSoftmaxForward(CUDNN_SOFTMAX_LOG, per instance) on the
//                                      same logits, writing (N, C) log-probabilities (no NLL: the
//                                      gather is negligible next to the (N, C) pass)
//   G5_softmax/full_train/ember       Linear 512 -> 100000 + cross-entropy, forward + backward
//   G5_softmax/hsoftmax_train/ember   HierarchicalSoftmax(512, balanced binary tree) forward +
//                                      backward (kernels/hsoftmax.cu)
// Counters: for the hierarchical case, vs_full = its time / the full-softmax case's time (set
// when the full case ran first, as in the default order).
//
// Every figure is device time from CUDA events around one call after warm-up calls
// (UseManualTime). Without a GPU every case reports "no GPU" and is skipped.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "ember/ember.h"
#include "ember/nn/hsoftmax.h"
#include "cudnn_bench_util.h"
#include "gpu_bench_util.h"

#ifndef EMBER_BENCH_COMMIT
#define EMBER_BENCH_COMMIT "unknown"
#endif

namespace {

using ember::DType;
using ember::Tensor;
using ember_bench::guarded;
using ember_bench::time_on_device;


constexpr int64_t kN = 4096, kD = 512, kC = 100000;

cudaStream_t current_stream() { return static_cast<cudaStream_t>(ember::cuda::Stream::current().handle()); }

ember::TensorOptions on_gpu(DType dt = DType::f32) { return ember::TensorOptions(dt).with_device(ember::Device::cuda()); }

// Logits (N, C) and labels (N), made once on the device.
struct Logits {
  Tensor z, y;
};
const Logits& logits() {
  static const Logits l = [] {
    ember::Generator gen(1234);
    return Logits{ember::randn({kN, kC}, on_gpu(), &gen), ember::randint(0, kC, {kN}, on_gpu(DType::i64), &gen)};
  }();
  return l;
}

double g_full_seconds = 0;  // per-iteration time of full_train, for vs_full

void ember_logsoftmax_nll(benchmark::State& st) {
  guarded(st, [&] {
    const Logits& l = logits();
    ember::NoGradGuard no_grad;
    time_on_device(st, [&] { ember::nn::cross_entropy(l.z, l.y); });
  });
}

void cudnn_logsoftmax(benchmark::State& st) {
  guarded(st, [&] {
    const Logits& l = logits();
    Tensor out = ember::empty({kN, kC}, on_gpu());
    cudnnHandle_t h = nullptr;
    BENCH_CUDNN(cudnnCreate(&h));
    std::unique_ptr<cudnnContext, void (*)(cudnnHandle_t)> hold(h, [](cudnnHandle_t p) { cudnnDestroy(p); });
    BENCH_CUDNN(cudnnSetStream(h, current_stream()));
    cudnnTensorDescriptor_t desc = nullptr;
    BENCH_CUDNN(cudnnCreateTensorDescriptor(&desc));
    std::unique_ptr<cudnnTensorStruct, void (*)(cudnnTensorDescriptor_t)> hold_desc(
        desc, [](cudnnTensorDescriptor_t p) { cudnnDestroyTensorDescriptor(p); });
    // (N, C, 1, 1) NCHW: softmax per instance over C.
    BENCH_CUDNN(cudnnSetTensor4dDescriptor(desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, static_cast<int>(kN),
                                           static_cast<int>(kC), 1, 1));
    const float one = 1.0f, zero = 0.0f;
    time_on_device(st, [&] {
      BENCH_CUDNN(cudnnSoftmaxForward(h, CUDNN_SOFTMAX_LOG, CUDNN_SOFTMAX_MODE_INSTANCE, &one, desc, l.z.data_ptr(),
                                      &zero, desc, out.data_ptr()));
    });
  });
}

void full_train(benchmark::State& st) {
  guarded(st, [&] {
    ember::Generator gen(99);
    ember::nn::Linear fc(kD, kC, true, &gen);
    fc.to(ember::Device::cuda());
    const Tensor h = ember::randn({kN, kD}, on_gpu(), &gen);
    const Tensor y = ember::randint(0, kC, {kN}, on_gpu(DType::i64), &gen);
    const double total = time_on_device(st, [&] {
      ember::nn::cross_entropy(fc.forward(h), y).backward();
      fc.zero_grad();
    });
    if (st.iterations() > 0) g_full_seconds = total / static_cast<double>(st.iterations());
  });
}

void hsoftmax_train(benchmark::State& st) {
  guarded(st, [&] {
    ember::Generator gen(99);
    ember::nn::HierarchicalSoftmax hsm(kD, ember::nn::ClassTree::balanced(kC), true, &gen);
    hsm.to(ember::Device::cuda());
    const Tensor h = ember::randn({kN, kD}, on_gpu(), &gen);
    const Tensor y = ember::randint(0, kC, {kN}, on_gpu(DType::i64), &gen);
    const double total = time_on_device(st, [&] {
      hsm(h, y).backward();
      hsm.zero_grad();
    });
    if (st.iterations() > 0 && g_full_seconds > 0)
      st.counters["vs_full"] = total / static_cast<double>(st.iterations()) / g_full_seconds;
  });
}

void register_all() {
  auto reg = [](const char* name, void (*fn)(benchmark::State&)) {
    benchmark::RegisterBenchmark(name, fn)->UseManualTime()->Unit(benchmark::kMillisecond);
  };
  reg("G5_softmax/logsoftmax_nll/ember", ember_logsoftmax_nll);
  reg("G5_softmax/logsoftmax/cudnn", cudnn_logsoftmax);
  reg("G5_softmax/full_train/ember", full_train);
  reg("G5_softmax/hsoftmax_train/ember", hsoftmax_train);
}

void add_device_context() {
  ember_bench::add_device_context(EMBER_BENCH_COMMIT, [] {
    benchmark::AddCustomContext("cudnn", std::to_string(cudnnGetVersion()));
  });
}

}  // namespace

int main(int argc, char** argv) {
  return ember_bench::run_main(argc, argv, "ember-softmax_gpu_bench", add_device_context, register_all);
}
