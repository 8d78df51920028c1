// The CUDA runtime as such: the two GEMM backends, the caching allocator's statistics and
// cache, page-locked memory and asynchronous copies, streams, events and device guards. These
// exercise the CUDA driver itself, so they need a GPU and report themselves skipped without
// one. Everything that is about placing tensors on a device (parity with the CPU, copies,
// gradients, modules) is in the `cuda`, `cuda_device` and `cuda_train` suites
// (tests/test_cuda*.cpp), which run on the stand-in device when there is no GPU.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "device_util.h"

using namespace ember;
using namespace ember_test::device;

namespace {
bool no_gpu() { return !ecuda::is_available(); }
}  // namespace

TEST_SUITE("cuda_runtime") {
  TEST_CASE("the two GEMM backends agree" * doctest::skip(no_gpu())) {
    PoisonGuard poison;
    const std::vector<std::vector<Shape>> shapes = {{{37, 53}, {53, 29}}, {{257, 129}, {129, 65}}, {{4, 257, 129}, {4, 129, 65}}};
    for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
      for (const auto& s : shapes) {
        Leaves l = make_leaves(s, dt, 99, false);
        Tensor a = l.dev[0], bt = contiguous(l.dev[1].transpose(-2, -1)).transpose(-2, -1);  // b column-major
        Tensor by_ember, by_cublas;
        {
          GemmGuard gemm(ecuda::GemmBackend::ember);
          by_ember = matmul(a, bt);
        }
        {
          GemmGuard gemm(ecuda::GemmBackend::cublas);
          by_cublas = matmul(a, bt);
        }
        Tol tol = base_tol(dt);
        const double k = static_cast<double>(s[0].back());
        tol.atol += tol.rtol * std::sqrt(k);
        tol.rtol *= 4;
        const std::string ctx = std::string(dtype_name(dt)) + " " + shape_str(s[0]) + " @ " + shape_str(s[1]);
        check_matches(ctx + ": ember vs cublas", by_ember, by_cublas, tol);
        check_matches(ctx + ": cublas vs CPU", by_cublas, matmul(l.cpu[0], l.cpu[1]), tol);
      }
    }
  }

  TEST_CASE("caching allocator: statistics, cache reuse, empty_cache" * doctest::skip(no_gpu())) {
    PoisonGuard poison;
    ecuda::synchronize();
    ecuda::empty_cache();
    const ecuda::MemoryStats s0 = ecuda::memory_stats(0);
    const int64_t n = (int64_t{3} << 20) / 4 + 13;  // a little over 3 MiB of f32
    const size_t nbytes = static_cast<size_t>(n) * 4;
    {
      Tensor t = empty({n}, on(kCuda));
      const ecuda::MemoryStats s1 = ecuda::memory_stats(0);
      CHECK(s1.allocated >= s0.allocated + nbytes);
      CHECK(s1.reserved >= s1.allocated);
      CHECK(s1.peak_allocated >= s1.allocated);
      CHECK(s1.allocations > s0.allocations);
    }
    const ecuda::MemoryStats s2 = ecuda::memory_stats(0);
    CHECK(s2.allocated == s0.allocated);   // back down
    CHECK(s2.reserved >= s2.allocated + nbytes);  // the block stays cached
    {
      Tensor t = empty({n}, on(kCuda));  // the same size again: from the cache
      const ecuda::MemoryStats s3 = ecuda::memory_stats(0);
      CHECK(s3.cache_hits > s2.cache_hits);
      CHECK(s3.reserved == s2.reserved);
    }
    ecuda::empty_cache();
    const ecuda::MemoryStats s4 = ecuda::memory_stats(0);
    CHECK(s4.reserved < s2.reserved);
    CHECK(s4.allocated == s0.allocated);
    ecuda::reset_peak_stats(0);
    const ecuda::MemoryStats s5 = ecuda::memory_stats(0);
    CHECK(s5.peak_allocated == s5.allocated);
    // many small tensors: allocated returns to where it was
    {
      std::vector<Tensor> ts;
      for (int i = 1; i <= 100; ++i) ts.push_back(full({i * 7}, 1.0, on(kCuda)));
      CHECK(ecuda::memory_stats(0).allocated > s5.allocated);
    }
    CHECK(ecuda::memory_stats(0).allocated == s5.allocated);
    CHECK_EMBER_ERROR(ecuda::memory_stats(ecuda::device_count()), "cuda");
  }

  TEST_CASE("pinned memory and copy_async round trip" * doctest::skip(no_gpu())) {
    PoisonGuard poison;
    Generator g(31);
    const Tensor x = randn({1031, 7}, DType::f32, &g);
    const Tensor p = ecuda::pin_memory(x);
    CHECK(ecuda::is_pinned(p));
    CHECK_FALSE(ecuda::is_pinned(x));
    CHECK(p.device().is_cpu());
    check_same("pinned copy", p, x);
    const Tensor d = empty(x.shape(), on(kCuda));
    const Tensor back = ecuda::pin_memory(zeros_like(x));
    ecuda::copy_async(p, d);
    ecuda::copy_async(d, back);
    ecuda::Stream::current().synchronize();
    check_same("pinned -> cuda -> pinned", back, x);
    // on a side stream, with a kernel in between
    const ecuda::Stream s = ecuda::Stream::create();
    const Tensor back2 = ecuda::pin_memory(zeros_like(x));
    {
      ecuda::StreamGuard guard(s);
      const Tensor d2 = empty(x.shape(), on(kCuda));
      ecuda::copy_async(p, d2);
      ecuda::copy_async(d2 * 2.0, back2);
    }
    s.synchronize();
    check_same("side stream round trip", back2, x * 2.0);
    // a pageable host tensor works too (the copy is then synchronous)
    const Tensor plain = zeros_like(x);
    ecuda::copy_async(d, plain);
    ecuda::synchronize();
    check_same("pageable destination", plain, x);
    CHECK_EMBER_ERROR(ecuda::copy_async(p, empty({3}, on(kCuda))), "copy_async");
    CHECK_EMBER_ERROR(ecuda::copy_async(x.t(), d.t()), "copy_async");
    CHECK_EMBER_ERROR(ecuda::pin_memory(d), "pin_memory");
  }

  TEST_CASE("streams, events and device guards" * doctest::skip(no_gpu())) {
    PoisonGuard poison;
    CHECK(ecuda::built_with_cuda());
    CHECK(ecuda::device_count() >= 1);
    const ecuda::Stream def = ecuda::Stream::current();
    const ecuda::Stream s = ecuda::Stream::create();
    CHECK(s.handle() != nullptr);
    CHECK(s.device() == 0);
    Generator g(41);
    const Tensor a = randn({257, 129}, DType::f32, &g), b = randn({129, 65}, DType::f32, &g);
    Tensor c;
    float ms = -1;
    {
      ecuda::StreamGuard guard(s);
      CHECK(ecuda::Stream::current().handle() == s.handle());
      ecuda::Event start, stop;
      start.record();
      c = matmul(a.to(kCuda), b.to(kCuda));
      stop.record();
      stop.synchronize();
      ms = start.elapsed_ms(stop);
    }
    CHECK(ecuda::Stream::current().handle() == def.handle());
    CHECK(ms >= 0.0f);
    Tol tol = base_tol(DType::f32);
    tol.atol += tol.rtol * std::sqrt(129.0);
    tol.rtol *= 4;
    check_matches("matmul on a side stream", c, matmul(a, b), tol);
    {
      ecuda::DeviceGuard dg(0);
      CHECK(sum(ones({10}, on(kCuda))).item<double>() == 10.0);
    }
    const int n = ecuda::device_count();
    CHECK_EMBER_ERROR([&] { ecuda::DeviceGuard dg(n); }(), "cuda");
    CHECK_EMBER_ERROR(ecuda::Stream::create(n), "cuda");
    ecuda::synchronize();
    ecuda::synchronize(0);
  }
}
