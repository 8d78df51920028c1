// ember-conv-gpu-bench: G2_conv1d (WORKLOADS.md) — ember's conv1d kernels against cuDNN.
//
//   ember-conv-gpu-bench [any --benchmark_* flag, e.g. --benchmark_filter=G2_conv1d/bf16]
//
// Shapes: x (N=64, C_in=256, L=1024), w (C_out=256, 256, k), k in {3, 5}, padding k/2, stride 1,
// no bias; f32 and bf16 (f32 accumulation in both libraries). cuDNN runs the same convolution
// as a 2-D one with height 1: x (N, C, 1, L), w (C_out, C_in, 1, k), padding (0, k/2). Its
// algorithm for each pass is the fastest that cudnnFind*Algorithm measures, restricted for f32
// to FMA math (no TF32: ember's f32 kernels do not use it either); bf16 may use tensor cores.
//
// Cases G2_conv1d/<dtype>/k<k>/<pass>/<library>, pass in
//   fwd         y  = conv1d(x, w)                    cudnnConvolutionForward
//   bwd_data    dx = conv1d_backward_input(dy, w)    cudnnConvolutionBackwardData
//   bwd_filter  dw = conv1d_backward_weight(dy, x)   cudnnConvolutionBackwardFilter
//   all         the three in a row (a training step's convolution work)
// Counters: TFLOP/s (2 N C_out C_in k L_out per pass); for ember, vs_cudnn = ember time /
// cuDNN time (below 1 means ember is faster; present when the cuDNN case of the same
// configuration ran first, as it does in the default order) and rel_err = ||ember - cuDNN|| /
// ||cuDNN|| of the pass's result.
//
// Every figure is device time from CUDA events around one call, after warm-up calls
// (UseManualTime). ember's outputs come from its caching allocator, inside the timed region.
// Without a GPU every case reports "no GPU" and is skipped.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "ember/ember.h"
#include "cudnn_bench_util.h"
#include "gpu_bench_util.h"
#include "ember/ops/conv.h"

#ifndef EMBER_BENCH_COMMIT
#define EMBER_BENCH_COMMIT "unknown"
#endif

namespace {

using ember_bench::guarded;
using ember_bench::kWarmup;
using ember_bench::time_on_device;

using ember::DType;
using ember::Tensor;


constexpr int64_t kN = 64, kC = 256, kL = 1024;

enum class Pass { fwd, bwd_data, bwd_filter, all };
const char* pass_name(Pass p) {
  switch (p) {
    case Pass::fwd: return "fwd";
    case Pass::bwd_data: return "bwd_data";
    case Pass::bwd_filter: return "bwd_filter";
    case Pass::all: return "all";
  }
  return "?";
}

cudaStream_t current_stream() { return static_cast<cudaStream_t>(ember::cuda::Stream::current().handle()); }

double pass_flops(int64_t k, Pass p) {
  const double one = 2.0 * kN * kC * kC * static_cast<double>(k) * kL;  // L_out == L (padding k/2, odd k)
  return p == Pass::all ? 3 * one : one;
}

// --- operands, shared by both libraries -------------------------------------------------------

struct Operands {
  Tensor x, w, gy;  // (N, C, L), (C, C, k), (N, C, L_out); contiguous, on the GPU
};

const Operands& operands(DType dt, int64_t k) {
  static std::map<std::pair<int, int64_t>, Operands> cache;
  auto key = std::make_pair(static_cast<int>(dt), k);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  ember::Generator gen(1234 + static_cast<uint64_t>(k));
  auto draw = [&](const ember::Shape& s) {
    // Normal values made on the device, never zeros (they could hide unwritten outputs).
    Tensor t = ember::randn(s, ember::TensorOptions(DType::f32).with_device(ember::Device::cuda()), &gen);
    return dt == DType::f32 ? t : t.to(dt);
  };
  Operands o;
  o.x = draw({kN, kC, kL});
  o.w = draw({kC, kC, k});
  o.gy = draw({kN, kC, kL});
  return cache.emplace(key, o).first->second;
}

// --- ember ------------------------------------------------------------------------------------

Tensor ember_pass(Pass p, const Operands& o, int64_t k) {
  const int64_t pad = k / 2;
  switch (p) {
    case Pass::fwd: return ember::conv1d(o.x, o.w, Tensor(), 1, pad);
    case Pass::bwd_data: return ember::conv1d_backward_input(o.gy, o.w, kL, 1, pad);
    case Pass::bwd_filter: return ember::conv1d_backward_weight(o.gy, o.x, k, 1, pad);
    case Pass::all: break;
  }
  ember::conv1d(o.x, o.w, Tensor(), 1, pad);
  ember::conv1d_backward_input(o.gy, o.w, kL, 1, pad);
  return ember::conv1d_backward_weight(o.gy, o.x, k, 1, pad);
}

// --- cuDNN ------------------------------------------------------------------------------------

cudnnHandle_t cudnn_handle() {
  static cudnnHandle_t h = [] {
    cudnnHandle_t made = nullptr;
    BENCH_CUDNN(cudnnCreate(&made));
    return made;
  }();
  BENCH_CUDNN(cudnnSetStream(h, current_stream()));
  return h;
}

struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  void reserve(size_t n) {
    if (n <= bytes) return;
    if (ptr) BENCH_CUDA(cudaFree(ptr));
    ptr = nullptr;
    BENCH_CUDA(cudaMalloc(&ptr, n));
    bytes = n;
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
};

// One configuration's descriptors and measured-fastest algorithms.
class CudnnConv {
 public:
  CudnnConv(DType dt, int64_t k) {
    const cudnnDataType_t data = dt == DType::bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    BENCH_CUDNN(cudnnCreateTensorDescriptor(&x_));
    BENCH_CUDNN(cudnnCreateTensorDescriptor(&y_));
    BENCH_CUDNN(cudnnCreateFilterDescriptor(&w_));
    BENCH_CUDNN(cudnnCreateConvolutionDescriptor(&conv_));
    BENCH_CUDNN(cudnnSetTensor4dDescriptor(x_, CUDNN_TENSOR_NCHW, data, kN, kC, 1, kL));
    BENCH_CUDNN(cudnnSetTensor4dDescriptor(y_, CUDNN_TENSOR_NCHW, data, kN, kC, 1, kL));
    BENCH_CUDNN(cudnnSetFilter4dDescriptor(w_, data, CUDNN_TENSOR_NCHW, kC, kC, 1, static_cast<int>(k)));
    BENCH_CUDNN(cudnnSetConvolution2dDescriptor(conv_, 0, static_cast<int>(k / 2), 1, 1, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    // f32: FMA only (no TF32), as ember's f32 kernels. bf16: tensor cores allowed.
    const bool fma_only = dt == DType::f32;
    BENCH_CUDNN(cudnnSetConvolutionMathType(conv_, fma_only ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));
    cudnnHandle_t h = cudnn_handle();
    auto allowed = [&](cudnnMathType_t m) { return !fma_only || m != CUDNN_TENSOR_OP_MATH; };
    int n = 0;
    {
      std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
      BENCH_CUDNN(cudnnFindConvolutionForwardAlgorithm(h, x_, w_, conv_, y_, static_cast<int>(perf.size()), &n, perf.data()));
      fwd_ = pick(perf, n, allowed, "forward", fwd_math_, fwd_ws_);
    }
    {
      std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT);
      BENCH_CUDNN(cudnnFindConvolutionBackwardDataAlgorithm(h, w_, y_, conv_, x_, static_cast<int>(perf.size()), &n,
                                                            perf.data()));
      data_ = pick(perf, n, allowed, "backward data", data_math_, data_ws_);
    }
    {
      std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT);
      BENCH_CUDNN(cudnnFindConvolutionBackwardFilterAlgorithm(h, x_, y_, conv_, w_, static_cast<int>(perf.size()), &n,
                                                              perf.data()));
      filter_ = pick(perf, n, allowed, "backward filter", filter_math_, filter_ws_);
    }
    ws_.reserve(std::max({fwd_ws_, data_ws_, filter_ws_, size_t{1}}));
  }
  ~CudnnConv() {
    cudnnDestroyConvolutionDescriptor(conv_);
    cudnnDestroyFilterDescriptor(w_);
    cudnnDestroyTensorDescriptor(y_);
    cudnnDestroyTensorDescriptor(x_);
  }
  CudnnConv(const CudnnConv&) = delete;
  CudnnConv& operator=(const CudnnConv&) = delete;

  void fwd(const Tensor& x, const Tensor& w, const Tensor& y) {
    const float one = 1, zero = 0;
    BENCH_CUDNN(cudnnSetConvolutionMathType(conv_, fwd_math_));
    BENCH_CUDNN(cudnnConvolutionForward(cudnn_handle(), &one, x_, x.data_ptr(), w_, w.data_ptr(), conv_, fwd_, ws_.ptr,
                                        ws_.bytes, &zero, y_, y.data_ptr()));
  }
  void bwd_data(const Tensor& gy, const Tensor& w, const Tensor& dx) {
    const float one = 1, zero = 0;
    BENCH_CUDNN(cudnnSetConvolutionMathType(conv_, data_math_));
    BENCH_CUDNN(cudnnConvolutionBackwardData(cudnn_handle(), &one, w_, w.data_ptr(), y_, gy.data_ptr(), conv_, data_,
                                             ws_.ptr, ws_.bytes, &zero, x_, dx.data_ptr()));
  }
  void bwd_filter(const Tensor& gy, const Tensor& x, const Tensor& dw) {
    const float one = 1, zero = 0;
    BENCH_CUDNN(cudnnSetConvolutionMathType(conv_, filter_math_));
    BENCH_CUDNN(cudnnConvolutionBackwardFilter(cudnn_handle(), &one, x_, x.data_ptr(), y_, gy.data_ptr(), conv_,
                                               filter_, ws_.ptr, ws_.bytes, &zero, w_, dw.data_ptr()));
  }
  std::string algos() const {
    return "fwd algo " + std::to_string(static_cast<int>(fwd_)) + ", bwd_data algo " +
           std::to_string(static_cast<int>(data_)) + ", bwd_filter algo " + std::to_string(static_cast<int>(filter_));
  }

 private:
  template <class Perf, class Allowed>
  static auto pick(const std::vector<Perf>& perf, int n, Allowed allowed, const char* what, cudnnMathType_t& math,
                   size_t& ws) -> decltype(perf[0].algo) {
    for (int i = 0; i < n; ++i)  // sorted fastest first
      if (perf[i].status == CUDNN_STATUS_SUCCESS && allowed(perf[i].mathType)) {
        math = perf[i].mathType;
        ws = perf[i].memory;
        return perf[i].algo;
      }
    throw std::runtime_error(std::string("cuDNN found no usable ") + what + " algorithm");
  }

  cudnnTensorDescriptor_t x_ = nullptr, y_ = nullptr;
  cudnnFilterDescriptor_t w_ = nullptr;
  cudnnConvolutionDescriptor_t conv_ = nullptr;
  cudnnConvolutionFwdAlgo_t fwd_{};
  cudnnConvolutionBwdDataAlgo_t data_{};
  cudnnConvolutionBwdFilterAlgo_t filter_{};
  cudnnMathType_t fwd_math_{}, data_math_{}, filter_math_{};
  size_t fwd_ws_ = 0, data_ws_ = 0, filter_ws_ = 0;
  DeviceBuffer ws_;
};

CudnnConv& cudnn_conv(DType dt, int64_t k) {
  static std::map<std::pair<int, int64_t>, std::unique_ptr<CudnnConv>> cache;
  auto key = std::make_pair(static_cast<int>(dt), k);
  auto& slot = cache[key];
  if (!slot) slot = std::make_unique<CudnnConv>(dt, k);
  return *slot;
}

struct CudnnOutputs {
  Tensor y, dx, dw;
};
CudnnOutputs& cudnn_outputs(DType dt, int64_t k) {
  static std::map<std::pair<int, int64_t>, CudnnOutputs> cache;
  auto key = std::make_pair(static_cast<int>(dt), k);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const auto on = ember::TensorOptions(dt).with_device(ember::Device::cuda());
  CudnnOutputs o{ember::empty({kN, kC, kL}, on), ember::empty({kN, kC, kL}, on), ember::empty({kC, kC, k}, on)};
  return cache.emplace(key, o).first->second;
}

// Runs pass p through cuDNN and returns the tensor that pass wrote.
Tensor cudnn_pass(Pass p, DType dt, int64_t k) {
  const Operands& o = operands(dt, k);
  CudnnConv& c = cudnn_conv(dt, k);
  CudnnOutputs& out = cudnn_outputs(dt, k);
  switch (p) {
    case Pass::fwd: c.fwd(o.x, o.w, out.y); return out.y;
    case Pass::bwd_data: c.bwd_data(o.gy, o.w, out.dx); return out.dx;
    case Pass::bwd_filter: c.bwd_filter(o.gy, o.x, out.dw); return out.dw;
    case Pass::all: break;
  }
  c.fwd(o.x, o.w, out.y);
  c.bwd_data(o.gy, o.w, out.dx);
  c.bwd_filter(o.gy, o.x, out.dw);
  return out.dw;
}

// ||a - b|| / ||b||, in f32.
double rel_err(const Tensor& a, const Tensor& b) {
  Tensor af = a.to(DType::f32), bf = b.to(DType::f32);
  Tensor d = ember::sub(af, bf);
  const double num = std::sqrt(ember::sum(ember::mul(d, d)).item<double>());
  const double den = std::sqrt(ember::sum(ember::mul(bf, bf)).item<double>());
  return den > 0 ? num / den : num;
}

using Key = std::tuple<int, int64_t, int>;  // dtype, k, pass
std::map<Key, double>& cudnn_seconds() {
  static std::map<Key, double> m;
  return m;
}

void cudnn_case(benchmark::State& state, DType dt, int64_t k, Pass p) {
  guarded(state, [&] {
    ember::NoGradGuard no_grad;
    cudnn_pass(p, dt, k);  // builds descriptors and runs the algorithm search outside the timing
    const double s = time_on_device(state, [&] { cudnn_pass(p, dt, k); });
    const double per_call = s / static_cast<double>(state.iterations());
    cudnn_seconds()[Key{static_cast<int>(dt), k, static_cast<int>(p)}] = per_call;
    state.counters["TFLOP/s"] = pass_flops(k, p) / per_call / 1e12;
    state.SetLabel(cudnn_conv(dt, k).algos());
  });
}

void ember_case(benchmark::State& state, DType dt, int64_t k, Pass p) {
  guarded(state, [&] {
    ember::NoGradGuard no_grad;
    const Operands& o = operands(dt, k);
    const double s = time_on_device(state, [&] { ember_pass(p, o, k); });
    const double per_call = s / static_cast<double>(state.iterations());
    state.counters["TFLOP/s"] = pass_flops(k, p) / per_call / 1e12;
    auto it = cudnn_seconds().find(Key{static_cast<int>(dt), k, static_cast<int>(p)});
    if (it != cudnn_seconds().end()) state.counters["vs_cudnn"] = per_call / it->second;
    if (p != Pass::all) state.counters["rel_err"] = rel_err(ember_pass(p, o, k), cudnn_pass(p, dt, k));
  });
}

void register_all() {
  auto reg = [](const std::string& name, std::function<void(benchmark::State&)> fn) {
    benchmark::RegisterBenchmark(name.c_str(), fn)->UseManualTime()->Unit(benchmark::kMillisecond);
  };
  for (DType dt : {DType::f32, DType::bf16})
    for (int64_t k : {3, 5})
      for (Pass p : {Pass::fwd, Pass::bwd_data, Pass::bwd_filter, Pass::all}) {
        const std::string base = std::string("G2_conv1d/") + ember::dtype_name(dt) + "/k" + std::to_string(k) + "/" +
                                 pass_name(p);
        reg(base + "/cudnn", [=](benchmark::State& st) { cudnn_case(st, dt, k, p); });
        reg(base + "/ember", [=](benchmark::State& st) { ember_case(st, dt, k, p); });
      }
}

void add_device_context() {
  ember_bench::add_device_context(EMBER_BENCH_COMMIT, [] {
    benchmark::AddCustomContext("cudnn", std::to_string(cudnnGetVersion()));
  });
}

}  // namespace

int main(int argc, char** argv) {
  return ember_bench::run_main(argc, argv, "ember-conv-gpu-bench", add_device_context, register_all);
}
