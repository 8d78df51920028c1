// ember-kernels: Google Benchmark cases for single CPU primitives (f32, no autograd).
//
//   ember-kernels [--threads N] [any --benchmark_* flag, e.g. --benchmark_filter=matmul]
//
// matmul reports GFLOP/s (2·n³ per call); elementwise ops, the sum reduction and softmax
// report bytes/s (every input element read once, every output element written once). Each
// call allocates its output, as ops do in training, so that cost is part of the figure.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench_util.h"
#include "ember/ember.h"

namespace {

using ember::Tensor;

Tensor random_f32(const ember::Shape& shape, uint64_t seed) {
  ember::Generator gen(seed);
  return ember::randn(shape, {}, &gen);
}

void BM_matmul(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor a = random_f32({n, n}, 1), b = random_f32({n, n}, 2);  // (n, n) each
  for (auto _ : state) {
    Tensor c = ember::matmul(a, b);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  // Shown as "GFLOP=58.8/s": GFLOP per call, as a rate.
  state.counters["GFLOP"] = benchmark::Counter(2.0 * double(n) * double(n) * double(n) / 1e9,
                                               benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_matmul)->Arg(256)->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();

// Elementwise cases: the op, how many inputs it reads.
template <int kInputs, Tensor (*Op)(const Tensor&, const Tensor&)>
void BM_binary(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor a = random_f32({n}, 3), b = random_f32({n}, 4);
  for (auto _ : state) {
    Tensor c = Op(a, b);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * n * 4 * (kInputs + 1));
}

template <Tensor (*Op)(const Tensor&)>
void BM_unary(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor a = random_f32({n}, 5);
  for (auto _ : state) {
    Tensor c = Op(a);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * n * 4 * 2);
}

Tensor add_ab(const Tensor& a, const Tensor& b) { return ember::add(a, b); }
Tensor mul_ab(const Tensor& a, const Tensor& b) { return ember::mul(a, b); }
Tensor exp_a(const Tensor& a) { return ember::exp(a); }
Tensor relu_a(const Tensor& a) { return ember::relu(a); }

constexpr int64_t k1M = int64_t(1) << 20, k16M = int64_t(1) << 24;
BENCHMARK(BM_binary<2, add_ab>)->Name("add")->Arg(k1M)->Arg(k16M)->UseRealTime();
BENCHMARK(BM_binary<2, mul_ab>)->Name("mul")->Arg(k1M)->Arg(k16M)->UseRealTime();
BENCHMARK(BM_unary<exp_a>)->Name("exp")->Arg(k1M)->Arg(k16M)->UseRealTime();
BENCHMARK(BM_unary<relu_a>)->Name("relu")->Arg(k1M)->Arg(k16M)->UseRealTime();

// Row-wise over (1024, 4096): sum reads the matrix and writes 1024 values; softmax reads and
// writes the matrix.
void BM_sum_rows(benchmark::State& state) {
  Tensor x = random_f32({1024, 4096}, 6);  // (rows, cols)
  for (auto _ : state) {
    Tensor s = ember::sum(x, {1});  // (rows)
    benchmark::DoNotOptimize(s.data_ptr());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * (1024 * 4096 + 1024) * 4);
}
BENCHMARK(BM_sum_rows)->Name("sum/1024x4096/dim1")->UseRealTime();

// Sums over (4096, 4096): dim 1 reduces rows, dim 0 reduces columns (the bias-gradient
// path); and a full sum of 10^7 elements (one long row). All read the input once.
void BM_sum_4096(benchmark::State& state) {
  const int64_t dim = state.range(0);
  Tensor x = random_f32({4096, 4096}, 8);  // (rows, cols)
  for (auto _ : state) {
    Tensor s = ember::sum(x, {dim});  // (4096)
    benchmark::DoNotOptimize(s.data_ptr());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * (4096 * 4096 + 4096) * 4);
}
BENCHMARK(BM_sum_4096)->Name("sum/4096x4096/dim")->Arg(0)->Arg(1)->UseRealTime();

void BM_sum_all(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor x = random_f32({n}, 9);
  for (auto _ : state) {
    Tensor s = ember::sum(x, {0});  // ()
    benchmark::DoNotOptimize(s.data_ptr());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * n * 4);
}
BENCHMARK(BM_sum_all)->Name("sum/all")->Arg(10000000)->UseRealTime();

void BM_softmax_rows(benchmark::State& state) {
  Tensor x = random_f32({1024, 4096}, 7);  // (rows, cols)
  for (auto _ : state) {
    Tensor s = ember::softmax(x, 1);  // (rows, cols)
    benchmark::DoNotOptimize(s.data_ptr());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * 2 * 1024 * 4096 * 4);
}
BENCHMARK(BM_softmax_rows)->Name("softmax/1024x4096/dim1")->UseRealTime();

}  // namespace

// Like BENCHMARK_MAIN, plus --threads N (default 2) taken out before Google Benchmark sees the
// arguments.
int main(int argc, char** argv) {
  int threads = bench::kDefaultThreads;
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--threads") == 0) {
      threads = bench::parse_positive("--threads", i + 1 < argc ? argv[i + 1] : nullptr);
      ++i;
    } else if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      threads = bench::parse_positive("--threads", argv[i] + 10);
    } else {
      rest.push_back(argv[i]);
    }
  }
  omp_set_num_threads(threads);
  int n = static_cast<int>(rest.size());
  rest.push_back(nullptr);
  benchmark::Initialize(&n, rest.data());
  if (benchmark::ReportUnrecognizedArguments(n, rest.data())) return 1;
  benchmark::AddCustomContext("threads", std::to_string(threads));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
