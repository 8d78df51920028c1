// ember-lstm_gpu_bench: G3_lstm (WORKLOADS.md) — ember's LSTM layer against cuDNN's.
//
//   ember-lstm_gpu_bench [any --benchmark_* flag, e.g. --benchmark_filter=G3_lstm/bf16]
//
// One LSTM layer, input 512, hidden 512, T = 128, batch N in {8, 64}, sequence-major x (T, N, 512),
// zero initial states; f32 and bf16 (f32 accumulation in both libraries; f32 without TF32 in
// both: ember's f32 GEMMs do not use it, cuDNN gets CUDNN_FMA_MATH; bf16 may use tensor cores).
// cuDNN 9 through the v8 RNN API: cudnnSetRNNDescriptor_v8, cudnnRNNForward (training mode),
// cudnnRNNBackwardData_v8, cudnnRNNBackwardWeights_v8 (the weight gradient buffer is zeroed
// inside the timed region, as the ADD mode needs). Both libraries hold the same weights:
// ember's parameters are copied into cuDNN's weight space (gate order i, f, g, o in both).
//
// Cases G3_lstm/<dtype>/N<batch>/<pass>/<library>, pass in
//   fwd      training-mode forward (ember records its graph and keeps the workspace)
//   fwd_bwd  forward + backward: input, state and all weight gradients
// Counters: TFLOP/s (forward 2 T N 4H (I + H), backward twice that); for ember, vs_cudnn =
// ember time / cuDNN time (present when the cuDNN case ran first, the default order) and
// rel_err = ||ember - cuDNN|| / ||cuDNN|| of y (fwd) or dx (fwd_bwd).
// Without a GPU every case reports "no GPU" and is skipped.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>
#include <cudnn.h>

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

#ifndef EMBER_BENCH_COMMIT
#define EMBER_BENCH_COMMIT "unknown"
#endif

namespace {

using ember::DType;
using ember::Tensor;
using ember_bench::guarded;
using ember_bench::ScopedEnv;
using ember_bench::time_on_device;


constexpr int64_t kT = 128, kI = 512, kH = 512;

enum class Pass { fwd, fwd_bwd };
const char* pass_name(Pass p) { return p == Pass::fwd ? "fwd" : "fwd_bwd"; }

double pass_flops(int64_t n, Pass p) {
  const double fwd = 2.0 * kT * n * 4 * kH * (kI + kH);
  return p == Pass::fwd ? fwd : 3 * fwd;
}

cudaStream_t current_stream() { return static_cast<cudaStream_t>(ember::cuda::Stream::current().handle()); }

cudnnHandle_t cudnn_handle() {
  static cudnnHandle_t h = [] {
    cudnnHandle_t made = nullptr;
    BENCH_CUDNN(cudnnCreate(&made));
    return made;
  }();
  BENCH_CUDNN(cudnnSetStream(h, current_stream()));
  return h;
}

// Device memory from ember's caching allocator, as a flat tensor of dtype dt.
Tensor device_bytes(size_t bytes, DType dt) {
  const int64_t n = static_cast<int64_t>((bytes + ember::dtype_size(dt) - 1) / ember::dtype_size(dt));
  return ember::zeros({std::max<int64_t>(n, 1)}, ember::TensorOptions(dt).with_device(ember::Device::cuda()));
}

// One configuration: the ember layer, its inputs, and a cuDNN LSTM holding the same weights.
struct Setup {
  std::shared_ptr<ember::nn::LSTM> model;
  Tensor x, gy;  // (T, N, I), (T, N, H)
  // cuDNN
  cudnnRNNDescriptor_t rnn = nullptr;
  cudnnDropoutDescriptor_t drop = nullptr;
  cudnnRNNDataDescriptor_t xd = nullptr, yd = nullptr;
  cudnnTensorDescriptor_t hd = nullptr;
  Tensor drop_states, seq_lengths, wspace, dwspace, work, reserve, y, dx;
  size_t wbytes = 0, work_bytes = 0, reserve_bytes = 0;

  Setup(DType dt, int64_t n) {
    ember::Generator gen(1234 + static_cast<uint64_t>(n));
    ember::nn::RNNOptions o;
    o.input_size = kI;
    o.hidden_size = kH;
    model = std::make_shared<ember::nn::LSTM>(o, &gen);
    model->to(dt);
    model->to(ember::Device::cuda());
    const auto on = ember::TensorOptions(DType::f32).with_device(ember::Device::cuda());
    x = ember::randn({kT, n, kI}, on, &gen).to(dt);
    gy = ember::randn({kT, n, kH}, on, &gen).to(dt);

    const cudnnDataType_t data = dt == DType::bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    cudnnHandle_t h = cudnn_handle();
    BENCH_CUDNN(cudnnCreateDropoutDescriptor(&drop));
    size_t state_bytes = 0;
    BENCH_CUDNN(cudnnDropoutGetStatesSize(h, &state_bytes));
    drop_states = device_bytes(state_bytes, DType::f32);
    BENCH_CUDNN(cudnnSetDropoutDescriptor(drop, h, 0.0f, drop_states.data_ptr(), state_bytes, 0));
    BENCH_CUDNN(cudnnCreateRNNDescriptor(&rnn));
    BENCH_CUDNN(cudnnSetRNNDescriptor_v8(rnn, CUDNN_RNN_ALGO_STANDARD, CUDNN_LSTM, CUDNN_RNN_DOUBLE_BIAS,
                                         CUDNN_UNIDIRECTIONAL, CUDNN_LINEAR_INPUT, data, CUDNN_DATA_FLOAT,
                                         dt == DType::f32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH, kI, kH, kH, 1,
                                         drop, CUDNN_RNN_PADDED_IO_DISABLED));
    const std::vector<int> lens(static_cast<size_t>(n), static_cast<int>(kT));
    BENCH_CUDNN(cudnnCreateRNNDataDescriptor(&xd));
    BENCH_CUDNN(cudnnCreateRNNDataDescriptor(&yd));
    BENCH_CUDNN(cudnnSetRNNDataDescriptor(xd, data, CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_UNPACKED, kT, static_cast<int>(n),
                                          kI, lens.data(), nullptr));
    BENCH_CUDNN(cudnnSetRNNDataDescriptor(yd, data, CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_UNPACKED, kT, static_cast<int>(n),
                                          kH, lens.data(), nullptr));
    BENCH_CUDNN(cudnnCreateTensorDescriptor(&hd));
    const int dims[3] = {1, static_cast<int>(n), static_cast<int>(kH)};
    const int strides[3] = {static_cast<int>(n * kH), static_cast<int>(kH), 1};
    BENCH_CUDNN(cudnnSetTensorNdDescriptor(hd, data, 3, dims, strides));
    seq_lengths = ember::full({n}, static_cast<double>(kT), ember::TensorOptions(DType::i32)).to(ember::Device::cuda());
    BENCH_CUDNN(cudnnGetRNNWeightSpaceSize(h, rnn, &wbytes));
    wspace = device_bytes(wbytes, dt);
    dwspace = device_bytes(wbytes, dt);
    BENCH_CUDNN(cudnnGetRNNTempSpaceSizes(h, rnn, CUDNN_FWD_MODE_TRAINING, xd, &work_bytes, &reserve_bytes));
    work = device_bytes(work_bytes, DType::f32);
    reserve = device_bytes(reserve_bytes, DType::f32);
    y = ember::empty({kT, n, kH}, ember::TensorOptions(dt).with_device(ember::Device::cuda()));
    dx = ember::empty({kT, n, kI}, ember::TensorOptions(dt).with_device(ember::Device::cuda()));
    copy_weights(h, dt);
  }
  ~Setup() {
    cudnnDestroyTensorDescriptor(hd);
    cudnnDestroyRNNDataDescriptor(yd);
    cudnnDestroyRNNDataDescriptor(xd);
    cudnnDestroyRNNDescriptor(rnn);
    cudnnDestroyDropoutDescriptor(drop);
  }
  Setup(const Setup&) = delete;
  Setup& operator=(const Setup&) = delete;

  // linLayerID 0..3: W_ih and b_ih blocks of gates i, f, g, o; 4..7: W_hh and b_hh blocks.
  void copy_weights(cudnnHandle_t h, DType dt) {
    const auto& w = model->weights(0, 0);
    cudnnTensorDescriptor_t md = nullptr, bd = nullptr;
    BENCH_CUDNN(cudnnCreateTensorDescriptor(&md));
    BENCH_CUDNN(cudnnCreateTensorDescriptor(&bd));
    const size_t es = ember::dtype_size(dt);
    for (int id = 0; id < 8; ++id) {
      void* m = nullptr;
      void* b = nullptr;
      BENCH_CUDNN(cudnnGetRNNWeightParams(h, rnn, 0, wbytes, wspace.data_ptr(), id, md, &m, bd, &b));
      const int64_t g = id % 4, cols = id < 4 ? kI : kH;
      const Tensor& wm = id < 4 ? w.w_ih : w.w_hh;
      const Tensor& bv = id < 4 ? w.b_ih : w.b_hh;
      BENCH_CUDA(cudaMemcpy(m, static_cast<const char*>(wm.data_ptr()) + g * kH * cols * es, kH * cols * es,
                            cudaMemcpyDeviceToDevice));
      BENCH_CUDA(cudaMemcpy(b, static_cast<const char*>(bv.data_ptr()) + g * kH * es, kH * es,
                            cudaMemcpyDeviceToDevice));
    }
    cudnnDestroyTensorDescriptor(bd);
    cudnnDestroyTensorDescriptor(md);
  }

  void cudnn_run(Pass p) {
    cudnnHandle_t h = cudnn_handle();
    const int32_t* sl = static_cast<const int32_t*>(seq_lengths.data_ptr());
    BENCH_CUDNN(cudnnRNNForward(h, rnn, CUDNN_FWD_MODE_TRAINING, sl, xd, x.data_ptr(), yd, y.data_ptr(), hd, nullptr,
                                nullptr, hd, nullptr, nullptr, wbytes, wspace.data_ptr(), work_bytes, work.data_ptr(),
                                reserve_bytes, reserve.data_ptr()));
    if (p == Pass::fwd) return;
    BENCH_CUDNN(cudnnRNNBackwardData_v8(h, rnn, sl, yd, y.data_ptr(), gy.data_ptr(), xd, dx.data_ptr(), hd, nullptr,
                                        nullptr, nullptr, hd, nullptr, nullptr, nullptr, wbytes, wspace.data_ptr(),
                                        work_bytes, work.data_ptr(), reserve_bytes, reserve.data_ptr()));
    BENCH_CUDA(cudaMemsetAsync(dwspace.data_ptr(), 0, wbytes, current_stream()));
    BENCH_CUDNN(cudnnRNNBackwardWeights_v8(h, rnn, CUDNN_WGRAD_MODE_ADD, sl, xd, x.data_ptr(), hd, nullptr, yd,
                                           y.data_ptr(), wbytes, dwspace.data_ptr(), work_bytes, work.data_ptr(),
                                           reserve_bytes, reserve.data_ptr()));
  }

  // Returns y (fwd) or dx (fwd_bwd).
  Tensor ember_run(Pass p) {
    model->zero_grad();
    Tensor xi = p == Pass::fwd_bwd ? x.detach().requires_grad_() : x;
    Tensor out = model->forward(xi).output;  // (T, N, H)
    if (p == Pass::fwd) return out;
    out.backward(gy);
    return xi.grad();
  }
};

Setup& setup(DType dt, int64_t n) {
  static std::map<std::pair<int, int64_t>, std::unique_ptr<Setup>> cache;
  auto& slot = cache[{static_cast<int>(dt), n}];
  if (!slot) slot = std::make_unique<Setup>(dt, n);
  return *slot;
}

// ||a - b|| / ||b||, in f32.
double rel_err(const Tensor& a, const Tensor& b) {
  ember::NoGradGuard ng;
  Tensor af = a.to(DType::f32), bf = b.to(DType::f32);
  Tensor d = ember::sub(af, bf);
  const double num = std::sqrt(ember::sum(ember::mul(d, d)).item<double>());
  const double den = std::sqrt(ember::sum(ember::mul(bf, bf)).item<double>());
  return den > 0 ? num / den : num;
}

using Key = std::tuple<int, int64_t, int>;  // dtype, batch, pass
std::map<Key, double>& cudnn_seconds() {
  static std::map<Key, double> m;
  return m;
}

void cudnn_case(benchmark::State& state, DType dt, int64_t n, Pass p) {
  guarded(state, [&] {
    Setup& s = setup(dt, n);
    const double sec = time_on_device(state, [&] { s.cudnn_run(p); });
    const double per_call = sec / static_cast<double>(state.iterations());
    cudnn_seconds()[Key{static_cast<int>(dt), n, static_cast<int>(p)}] = per_call;
    state.counters["TFLOP/s"] = pass_flops(n, p) / per_call / 1e12;
  });
}

void ember_case(benchmark::State& state, DType dt, int64_t n, Pass p) {
  guarded(state, [&] {
    Setup& s = setup(dt, n);
    const double sec = time_on_device(state, [&] { s.ember_run(p); });
    const double per_call = sec / static_cast<double>(state.iterations());
    state.counters["TFLOP/s"] = pass_flops(n, p) / per_call / 1e12;
    auto it = cudnn_seconds().find(Key{static_cast<int>(dt), n, static_cast<int>(p)});
    if (it != cudnn_seconds().end()) state.counters["vs_cudnn"] = per_call / it->second;
    const Tensor mine = s.ember_run(p);
    s.cudnn_run(p);
    state.counters["rel_err"] = rel_err(mine, p == Pass::fwd ? s.y : s.dx);
  });
}

void register_all() {
  auto reg = [](const std::string& name, std::function<void(benchmark::State&)> fn) {
    benchmark::RegisterBenchmark(name.c_str(), fn)->UseManualTime()->Unit(benchmark::kMillisecond);
  };
  for (DType dt : {DType::f32, DType::bf16})
    for (int64_t n : {8, 64})
      for (Pass p : {Pass::fwd, Pass::fwd_bwd}) {
        const std::string base = std::string("G3_lstm/") + ember::dtype_name(dt) + "/N" + std::to_string(n) + "/" +
                                 pass_name(p);
        reg(base + "/cudnn", [=](benchmark::State& st) { cudnn_case(st, dt, n, p); });
        reg(base + "/ember", [=](benchmark::State& st) { ember_case(st, dt, n, p); });
        // The numbered steps at small batch (docs/rnn.md): v1 the per-step GEMM + cell kernels,
        // v2 the persistent kernel forced; "ember" above is the default rule's choice.
        if (n <= 32) {
          reg(base + "/ember_v1_steps", [=](benchmark::State& st) {
            ScopedEnv env("EMBER_RNN_KERNEL", "steps");
            ember_case(st, dt, n, p);
          });
          reg(base + "/ember_v2_persistent", [=](benchmark::State& st) {
            ScopedEnv env("EMBER_RNN_KERNEL", "persistent");
            ember_case(st, dt, n, p);
          });
        }
      }
}

void add_device_context() {
  ember_bench::add_device_context(EMBER_BENCH_COMMIT, [] {
    benchmark::AddCustomContext("cudnn", std::to_string(cudnnGetVersion()));
  });
}

}  // namespace

int main(int argc, char** argv) {
  return ember_bench::run_main(argc, argv, "ember-lstm_gpu_bench", add_device_context, register_all);
}
