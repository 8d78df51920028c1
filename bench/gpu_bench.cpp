// ember-gpu-bench: Google Benchmark cases for one GPU (WORKLOADS.md).
//
//   ember-gpu-bench [any --benchmark_* flag, e.g. --benchmark_filter=G1_gemm/bf16]
//
// G1_gemm: ember's hand-written GEMM against cuBLAS, bf16 in / f32 accumulate (bf16 out) and
// f32 (no TF32; the one TF32 case says so in its name), M=N=K in {1024, 4096, 8192} and the
// linear-layer shapes x (8192, in) @ W^T with W (out, in): 768->3072 and 3072->768. The ember
// case runs ember::matmul with the ember GEMM backend (its output allocation, served by the
// caching allocator, is part of the figure); the cuBLAS case calls cublasGemmEx directly on the
// same operands. Counters: TFLOP/s (2 M N K per call); for ember, vs_cublas = ember time /
// cuBLAS time (below 1 means ember is faster; present when the cuBLAS case of the same shape
// ran first, as it does in the default order) and rel_err, ||ember - cuBLAS|| / ||cuBLAS||.
//
// Memory-bound: device-to-device copy (cudaMemcpyAsync) of 256 MB, ember::add of two 64M-element
// f32 tensors, ember::sum over rows and ember::softmax over rows of (16384, 4096) f32. Counters:
// GB/s (every input byte read once, every output byte written once) and of_copy, that rate as a
// fraction of the measured copy bandwidth (read + write).
//
// Every figure is device time from CUDA events around one call, after warm-up calls
// (UseManualTime). Without a GPU every case reports "no GPU" and is skipped.
#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "ember/ember.h"
#include "gpu_bench_util.h"

#ifndef EMBER_BENCH_COMMIT
#define EMBER_BENCH_COMMIT "unknown"
#endif

namespace {

using ember_bench::guarded;
using ember_bench::kWarmup;
using ember_bench::time_on_device;

using ember::DType;
using ember::Tensor;

#define BENCH_CUBLAS(stmt)                                                                      \
  do {                                                                                          \
    cublasStatus_t s_ = (stmt);                                                                 \
    if (s_ != CUBLAS_STATUS_SUCCESS)                                                            \
      throw std::runtime_error(std::string(#stmt) + ": " + cublasGetStatusString(s_));          \
  } while (0)


cudaStream_t current_stream() { return static_cast<cudaStream_t>(ember::cuda::Stream::current().handle()); }

ember::TensorOptions on_gpu(DType t = DType::f32) { return ember::TensorOptions(t).with_device(ember::Device::cuda()); }

// Normal random values made on the device (never zeros: they can hide unwritten outputs and run
// faster than real data).
Tensor random_gpu(const ember::Shape& shape, DType t, uint64_t seed) {
  ember::Generator gen(seed);
  Tensor x = ember::randn(shape, on_gpu(), &gen);
  return t == DType::f32 ? x : x.to(t);
}

// ---- G1_gemm --------------------------------------------------------------------------------

struct GemmShape {
  std::string name;  // "square_4096", "linear_768_3072"
  int64_t M, N, K;
  bool b_transposed;  // B is W^T for W (N, K) contiguous: a column-major operand, as in Linear
};

std::vector<GemmShape> gemm_shapes() {
  return {{"square_1024", 1024, 1024, 1024, false},
          {"square_4096", 4096, 4096, 4096, false},
          {"square_8192", 8192, 8192, 8192, false},
          {"linear_768_3072", 8192, 3072, 768, true},
          {"linear_3072_768", 8192, 768, 3072, true}};
}

struct GemmOperands {
  Tensor a, b;  // (M, K), (K, N)
};
GemmOperands make_operands(const GemmShape& s, DType t) {
  GemmOperands o;
  o.a = random_gpu({s.M, s.K}, t, 11);
  o.b = s.b_transposed ? random_gpu({s.N, s.K}, t, 12).t() : random_gpu({s.K, s.N}, t, 12);
  return o;
}

cublasHandle_t peer_handle() {
  static cublasHandle_t h = [] {
    cublasHandle_t x = nullptr;
    BENCH_CUBLAS(cublasCreate(&x));
    return x;
  }();
  return h;
}

// out (M, N) row-major = a @ b through cublasGemmEx: column-major C^T = B^T A^T.
void cublas_matmul(const GemmOperands& o, const Tensor& out, bool tf32) {
  const int64_t M = o.a.size(0), K = o.a.size(1), N = o.b.size(1);
  const bool half = o.a.dtype() == DType::bf16;
  const cudaDataType_t type = half ? CUDA_R_16BF : CUDA_R_32F;
  const cublasComputeType_t compute = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const bool b_row = o.b.stride(1) == 1;  // else column-major: a transposed (N, K) tensor
  const int ldb = static_cast<int>(b_row ? o.b.stride(0) : o.b.stride(1));
  const float alpha = 1.f, beta = 0.f;
  cublasHandle_t h = peer_handle();
  BENCH_CUBLAS(cublasSetStream(h, current_stream()));
  BENCH_CUBLAS(cublasGemmEx(h, b_row ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N),
                            static_cast<int>(M), static_cast<int>(K), &alpha, o.b.data_ptr(), type, ldb,
                            o.a.data_ptr(), type, static_cast<int>(o.a.stride(0)), &beta, out.data_ptr(), type,
                            static_cast<int>(N), compute, CUBLAS_GEMM_DEFAULT));
}

double flops(const GemmShape& s) { return 2.0 * double(s.M) * double(s.N) * double(s.K); }

// Seconds per call of the cuBLAS case, by "dtype/shape", for the ember case's ratio.
std::map<std::string, double>& cublas_seconds() {
  static std::map<std::string, double> m;
  return m;
}

void gemm_cublas_case(benchmark::State& state, GemmShape s, DType t, bool tf32) {
  guarded(state, [&] {
    GemmOperands o = make_operands(s, t);
    Tensor out = ember::empty({s.M, s.N}, on_gpu(t));
    const double total = time_on_device(state, [&] { cublas_matmul(o, out, tf32); });
    const double per_call = total / double(state.iterations());
    state.counters["TFLOP/s"] = flops(s) / per_call / 1e12;
    if (!tf32) cublas_seconds()[std::string(ember::dtype_name(t)) + "/" + s.name] = per_call;
  });
}

// ||x - y|| / ||y||, summed in f64 on the host (a check, not part of the timing).
double rel_err(const Tensor& x, const Tensor& y) {
  std::vector<float> a = x.to(DType::f32).to(ember::Device::cpu()).to_vector<float>();
  std::vector<float> b = y.to(DType::f32).to(ember::Device::cpu()).to_vector<float>();
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

// One of ember's GEMM paths through ember::matmul: `backend` ember (with the Hopper kernel's
// tile setting `sm90_tile`: -1 automatic, 0 off = the mma.sync kernel, 128/256 fixed) or
// fastest (the default back-end choice, which may pick cuBLAS). The kernel that ran is reported
// as a label.
void gemm_ember_case(benchmark::State& state, GemmShape s, DType t,
                     ember::cuda::GemmBackend backend = ember::cuda::GemmBackend::ember, int sm90_tile = -1) {
  guarded(state, [&] {
    const ember::cuda::GemmBackend prev = ember::cuda::gemm_backend();
    const int prev_tile = ember::cuda::gemm_sm90_tile();
    ember::cuda::set_gemm_backend(backend);
    ember::cuda::set_gemm_sm90_tile(sm90_tile);
    struct Restore {
      ember::cuda::GemmBackend b;
      int tile;
      ~Restore() {
        ember::cuda::set_gemm_backend(b);
        ember::cuda::set_gemm_sm90_tile(tile);
      }
    } restore{prev, prev_tile};
    GemmOperands o = make_operands(s, t);
    Tensor c;
    const double total = time_on_device(state, [&] { c = ember::matmul(o.a, o.b); });
    const double per_call = total / double(state.iterations());
    state.counters["TFLOP/s"] = flops(s) / per_call / 1e12;
    auto it = cublas_seconds().find(std::string(ember::dtype_name(t)) + "/" + s.name);
    if (it != cublas_seconds().end()) state.counters["vs_cublas"] = per_call / it->second;
    Tensor ref = ember::empty({s.M, s.N}, on_gpu(t));
    cublas_matmul(o, ref, false);
    state.counters["rel_err"] = rel_err(c, ref);
    c = ember::matmul(o.a, o.b);
    state.SetLabel(ember::cuda::last_gemm_kernel());
  });
}

// ---- memory-bound ---------------------------------------------------------------------------

constexpr int64_t k64M = int64_t(1) << 26;  // 64M f32 = 256 MB
constexpr int64_t kRows = 16384, kCols = 4096;  // (rows, cols) = 64M elements

// Device-to-device copy bandwidth (bytes read + written per second), measured once.
double copy_bytes_per_s() {
  static double rate = [] {
    Tensor src = random_gpu({k64M}, DType::f32, 21), dst = ember::empty({k64M}, on_gpu());
    const size_t bytes = size_t(k64M) * 4;
    for (int i = 0; i < kWarmup; ++i)
      BENCH_CUDA(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), bytes, cudaMemcpyDeviceToDevice, current_stream()));
    ember::cuda::Event start, stop;
    std::vector<double> ms;
    for (int i = 0; i < 20; ++i) {
      start.record();
      BENCH_CUDA(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), bytes, cudaMemcpyDeviceToDevice, current_stream()));
      stop.record();
      stop.synchronize();
      ms.push_back(start.elapsed_ms(stop));
    }
    std::sort(ms.begin(), ms.end());
    return 2.0 * double(bytes) / (ms[ms.size() / 2] / 1e3);
  }();
  return rate;
}

void report_bandwidth(benchmark::State& state, double bytes_per_call, double total_s) {
  const double rate = bytes_per_call * double(state.iterations()) / total_s;
  state.counters["GB/s"] = rate / 1e9;
  state.counters["of_copy"] = rate / copy_bytes_per_s();
}

void copy_case(benchmark::State& state) {
  guarded(state, [&] {
    Tensor src = random_gpu({k64M}, DType::f32, 22), dst = ember::empty({k64M}, on_gpu());
    const size_t bytes = size_t(k64M) * 4;
    const double total = time_on_device(state, [&] {
      BENCH_CUDA(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), bytes, cudaMemcpyDeviceToDevice, current_stream()));
    });
    report_bandwidth(state, 2.0 * double(bytes), total);
  });
}

void add_case(benchmark::State& state) {
  guarded(state, [&] {
    Tensor a = random_gpu({k64M}, DType::f32, 23), b = random_gpu({k64M}, DType::f32, 24);
    Tensor c;
    const double total = time_on_device(state, [&] { c = ember::add(a, b); });
    report_bandwidth(state, 3.0 * double(k64M) * 4, total);
  });
}

void sum_rows_case(benchmark::State& state) {
  guarded(state, [&] {
    Tensor x = random_gpu({kRows, kCols}, DType::f32, 25);  // (rows, cols)
    Tensor s;
    const double total = time_on_device(state, [&] { s = ember::sum(x, {1}); });  // (rows)
    report_bandwidth(state, (double(kRows) * kCols + kRows) * 4, total);
  });
}

void softmax_rows_case(benchmark::State& state) {
  guarded(state, [&] {
    Tensor x = random_gpu({kRows, kCols}, DType::f32, 26);  // (rows, cols)
    Tensor y;
    const double total = time_on_device(state, [&] { y = ember::softmax(x, 1); });  // (rows, cols)
    report_bandwidth(state, 2.0 * double(kRows) * kCols * 4, total);
  });
}

void register_all() {
  auto reg = [](const std::string& name, auto fn) {
    benchmark::RegisterBenchmark(name.c_str(), fn)->UseManualTime()->Unit(benchmark::kMillisecond);
  };
  for (const GemmShape& s : gemm_shapes()) {
    // cuBLAS first, so that the ember case that follows can report its ratio.
    reg("G1_gemm/bf16/" + s.name + "/cublas",
        [s](benchmark::State& st) { gemm_cublas_case(st, s, DType::bf16, false); });
    reg("G1_gemm/bf16/" + s.name + "/ember", [s](benchmark::State& st) { gemm_ember_case(st, s, DType::bf16); });
    // The numbered steps of the Hopper kernel (docs/perf/gemm-sm90.md): v1 the mma.sync kernel,
    // v2 wgmma with 128-wide tiles, v3 256-wide tiles; and the default back-end choice.
    using GB = ember::cuda::GemmBackend;
    reg("G1_gemm/bf16/" + s.name + "/ember_v1_mma",
        [s](benchmark::State& st) { gemm_ember_case(st, s, DType::bf16, GB::ember, 0); });
    reg("G1_gemm/bf16/" + s.name + "/ember_v2_wgmma128",
        [s](benchmark::State& st) { gemm_ember_case(st, s, DType::bf16, GB::ember, 128); });
    reg("G1_gemm/bf16/" + s.name + "/ember_v3_wgmma256",
        [s](benchmark::State& st) { gemm_ember_case(st, s, DType::bf16, GB::ember, 256); });
    reg("G1_gemm/bf16/" + s.name + "/default",
        [s](benchmark::State& st) { gemm_ember_case(st, s, DType::bf16, GB::fastest); });
  }
  for (const GemmShape& s : gemm_shapes()) {
    reg("G1_gemm/f32/" + s.name + "/cublas",
        [s](benchmark::State& st) { gemm_cublas_case(st, s, DType::f32, false); });
    reg("G1_gemm/f32/" + s.name + "/cublas_tf32",
        [s](benchmark::State& st) { gemm_cublas_case(st, s, DType::f32, true); });
    reg("G1_gemm/f32/" + s.name + "/ember", [s](benchmark::State& st) { gemm_ember_case(st, s, DType::f32); });
    reg("G1_gemm/f32/" + s.name + "/default", [s](benchmark::State& st) {
      gemm_ember_case(st, s, DType::f32, ember::cuda::GemmBackend::fastest);
    });
  }
  reg("mem/copy_d2d/256MB", copy_case);
  reg("mem/add/f32/64M", add_case);
  reg("mem/sum_rows/f32/16384x4096", sum_rows_case);
  reg("mem/softmax_rows/f32/16384x4096", softmax_rows_case);
}

void add_device_context() {
  ember_bench::add_device_context(EMBER_BENCH_COMMIT, [] {
    int cublas = 0;  // needs a handle, so a GPU
    if (ember::cuda::is_available() && cublasGetVersion(peer_handle(), &cublas) == CUBLAS_STATUS_SUCCESS)
      benchmark::AddCustomContext("cublas", std::to_string(cublas));
  });
}

}  // namespace

int main(int argc, char** argv) {
  return ember_bench::run_main(argc, argv, "ember-gpu-bench", add_device_context, register_all);
}
