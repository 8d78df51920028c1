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

  // The Hopper kernel (kernels/sm90/) against the CPU: both 16-bit types, the four operand
  // layouts, both tile widths, partial tiles in M, N and K, K = 1 and products smaller than a
  // tile (operands in padded storage so their leading dimensions stay 16-byte multiples),
  // batches, a bias, and operands it must refuse (odd leading dimension, broadcast batch).
  TEST_CASE("the sm_90a GEMM matches the CPU, and what it refuses falls back" * doctest::skip(no_gpu())) {
    PoisonGuard poison;
    GemmGuard gemm(ecuda::GemmBackend::ember);
    const int tile_before = ecuda::gemm_sm90_tile();
    const bool hopper = ecuda::compute_capability() == 90;
    if (!hopper) MESSAGE("not a compute capability 9.0 device: only the fallbacks are checked");
    struct Case {
      int64_t b, m, n, k;
    };
    const std::vector<Case> cases = {{1, 200, 320, 136}, {2, 131, 259, 72}, {1, 5, 3, 16}, {1, 64, 64, 1},
                                     {3, 128, 128, 64}, {1, 512, 512, 512}};
    // A (b, rows, cols) operand in storage whose last dim is padded to a multiple of 8.
    auto padded = [](const Tensor& x) {
      const int64_t cols = x.size(2), pad = (cols + 7) / 8 * 8;
      Tensor store = zeros({x.size(0), x.size(1), pad}, TensorOptions(x.dtype()).with_device(x.device()));
      Tensor view = slice(store, 2, 0, cols);
      view.copy_(x);
      return view;
    };
    for (DType dt : {DType::bf16, DType::f16}) {
      for (int tile : {128, 256}) {
        ecuda::set_gemm_sm90_tile(tile);
        for (const Case& c : cases) {
          for (bool a_row : {true, false}) {
            for (bool b_row : {true, false}) {
              Leaves l = make_leaves({{c.b, c.m, c.k}, {c.b, c.k, c.n}}, dt, 7, false);
              // Column-major operands: transposed views of padded (b, cols, rows) storage.
              Tensor a = a_row ? padded(l.dev[0]) : padded(contiguous(l.dev[0].transpose(1, 2))).transpose(1, 2);
              Tensor b = b_row ? padded(l.dev[1]) : padded(contiguous(l.dev[1].transpose(1, 2))).transpose(1, 2);
              Tensor got = bmm(a, b);
              const std::string ran = ecuda::last_gemm_kernel();
              const std::string ctx = std::string(dtype_name(dt)) + " tile " + std::to_string(tile) + " (" +
                                      std::to_string(c.b) + ", " + std::to_string(c.m) + ", " + std::to_string(c.k) +
                                      ") @ (" + std::to_string(c.k) + ", " + std::to_string(c.n) + ") a " +
                                      (a_row ? "row" : "col") + " b " + (b_row ? "row" : "col");
              if (hopper) CHECK_MESSAGE(ran == "wgmma", ctx << " ran " << ran);
              Tol tol = base_tol(dt);
              tol.atol += tol.rtol * std::sqrt(static_cast<double>(c.k));
              tol.rtol *= 4;
              check_matches(ctx, got, bmm(l.cpu[0], l.cpu[1]), tol);
            }
          }
        }
      }
      // With a bias (Linear's fused epilogue), x @ W^T: both operands K-major.
      {
        Leaves l = make_leaves({{300, 96}, {136, 96}, {136}}, dt, 8, false);
        Tensor got = linear(l.dev[0], l.dev[1], l.dev[2]);
        if (hopper) CHECK(std::string(ecuda::last_gemm_kernel()) == "wgmma");
        Tol tol = base_tol(dt);
        tol.atol += tol.rtol * std::sqrt(96.0);
        tol.rtol *= 4;
        check_matches(std::string(dtype_name(dt)) + " linear with bias", got, linear(l.cpu[0], l.cpu[1], l.cpu[2]), tol);
      }
      // Refused: a leading dimension of 53 elements (not 16-byte aligned) and a broadcast batch.
      {
        Leaves l = make_leaves({{2, 37, 53}, {2, 53, 29}, {1, 53, 32}}, dt, 9, false);
        Tensor got = bmm(l.dev[0], l.dev[1]);
        CHECK(std::string(ecuda::last_gemm_kernel()) != "wgmma");
        check_matches(std::string(dtype_name(dt)) + " odd leading dimension", got, bmm(l.cpu[0], l.cpu[1]),
                      base_tol(dt));
        Tensor a = padded(contiguous(slice(l.dev[0], 2, 0, 48)));
        Tensor got_b = bmm(contiguous(a), slice(l.dev[2], 1, 0, 48).expand({2, 48, 32}));
        CHECK(std::string(ecuda::last_gemm_kernel()) != "wgmma");
        check_matches(std::string(dtype_name(dt)) + " broadcast batch", got_b,
                      bmm(contiguous(slice(l.cpu[0], 2, 0, 48)), slice(l.cpu[2], 1, 0, 48).expand({2, 48, 32})),
                      base_tol(dt));
      }
    }
    // Turned off: the mma.sync kernel takes the same product.
    ecuda::set_gemm_sm90_tile(0);
    Leaves l = make_leaves({{1, 128, 64}, {1, 64, 128}}, DType::bf16, 10, false);
    Tensor got = bmm(l.dev[0], l.dev[1]);
    CHECK(std::string(ecuda::last_gemm_kernel()) == "mma");
    check_matches("sm90 off", got, bmm(l.cpu[0], l.cpu[1]), base_tol(DType::bf16));
    ecuda::set_gemm_sm90_tile(tile_before);
  }

  // GemmBackend::fastest on a real device: a new class of product is timed once (one new
  // decision), the answer is right whichever back end won, and the same class is not timed again.
  TEST_CASE("the fastest-backend choice times each class once and stays correct" * doctest::skip(no_gpu())) {
    GemmGuard gemm(ecuda::GemmBackend::fastest);
    ecuda::reset_gemm_choices();
    for (DType dt : {DType::f32, DType::bf16}) {
      Leaves l = make_leaves({{192, 320}, {320, 96}}, dt, 11, false);
      const size_t before = ecuda::gemm_choice_count();
      Tensor first = matmul(l.dev[0], l.dev[1]);
      CHECK(ecuda::gemm_choice_count() == before + 1);
      Tensor again = matmul(l.dev[0], l.dev[1]);
      CHECK(ecuda::gemm_choice_count() == before + 1);
      Tol tol = base_tol(dt);
      tol.atol += tol.rtol * std::sqrt(320.0);
      check_matches(std::string(dtype_name(dt)) + " fastest", first, matmul(l.cpu[0], l.cpu[1]), tol);
      check_matches(std::string(dtype_name(dt)) + " fastest again", again, first, {0, 0});
    }
    // TF32 is a different class for f32 and stays within its documented error.
    const bool tf32 = ecuda::allow_tf32();
    ecuda::set_allow_tf32(true);
    Leaves l = make_leaves({{192, 320}, {320, 96}}, DType::f32, 12, false);
    const size_t before = ecuda::gemm_choice_count();
    Tensor got = matmul(l.dev[0], l.dev[1]);
    CHECK(ecuda::gemm_choice_count() == before + 1);
    check_matches("f32 with TF32", got, matmul(l.cpu[0], l.cpu[1]), {1e-2, 0.1});
    ecuda::set_allow_tf32(tf32);
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
