// The GEMM back-end decisions behind cuda::GemmBackend::fastest (src/cuda/gemm_select.h) and the
// GEMM settings of ember/cuda.h. Host logic: no GPU needed. The timing itself, and the kernels,
// are covered by the cuda_runtime suite on a GPU.
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "cuda/gemm_select.h"
#include "ember/core/error.h"
#include "ember/cuda.h"

using namespace ember;
namespace ecuda = ember::cuda;

TEST_SUITE("gemm_select") {
  TEST_CASE("shape classes round sizes up to powers of two and keep everything else") {
    CHECK(ecuda::ceil_log2(1) == 0);
    CHECK(ecuda::ceil_log2(2) == 1);
    CHECK(ecuda::ceil_log2(3) == 2);
    CHECK(ecuda::ceil_log2(4096) == 12);
    CHECK(ecuda::ceil_log2(4097) == 13);
    const auto k = [](int64_t m, int64_t n, int64_t kk) {
      return ecuda::gemm_key(0, DType::bf16, true, false, 1, m, n, kk, false, false);
    };
    CHECK(k(3000, 768, 1000) == k(4096, 1024, 1024));
    CHECK(k(4096, 1024, 1024) != k(4097, 1024, 1024));
    const ecuda::GemmKey base = k(512, 512, 512);
    CHECK(ecuda::gemm_key(1, DType::bf16, true, false, 1, 512, 512, 512, false, false) != base);  // device
    CHECK(ecuda::gemm_key(0, DType::f16, true, false, 1, 512, 512, 512, false, false) != base);   // dtype
    CHECK(ecuda::gemm_key(0, DType::bf16, false, false, 1, 512, 512, 512, false, false) != base);  // a layout
    CHECK(ecuda::gemm_key(0, DType::bf16, true, true, 1, 512, 512, 512, false, false) != base);    // b layout
    CHECK(ecuda::gemm_key(0, DType::bf16, true, false, 4, 512, 512, 512, false, false) != base);   // batched
    CHECK(ecuda::gemm_key(0, DType::bf16, true, false, 1, 512, 512, 512, true, false) != base);    // bias
    // TF32 matters for f32 only.
    CHECK(ecuda::gemm_key(0, DType::bf16, true, false, 1, 512, 512, 512, false, true) == base);
    CHECK(ecuda::gemm_key(0, DType::f32, true, false, 1, 512, 512, 512, false, true) !=
          ecuda::gemm_key(0, DType::f32, true, false, 1, 512, 512, 512, false, false));
  }

  TEST_CASE("each class is timed once, the faster back end kept, ties to cuBLAS") {
    ecuda::GemmChooser chooser;
    std::vector<ecuda::GemmBackend> timed;
    double ember_ms = 1.0, cublas_ms = 2.0;
    auto timer = [&](ecuda::GemmBackend b) {
      timed.push_back(b);
      return b == ecuda::GemmBackend::ember ? ember_ms : cublas_ms;
    };
    const ecuda::GemmKey a = ecuda::gemm_key(0, DType::bf16, true, false, 1, 4096, 4096, 4096, false, false);
    CHECK(chooser.choose(a, timer) == ecuda::GemmBackend::ember);
    CHECK(timed.size() == 2);
    // Cached: no timing, same answer, even though the timings would now say otherwise.
    cublas_ms = 0.5;
    CHECK(chooser.choose(a, timer) == ecuda::GemmBackend::ember);
    CHECK(timed.size() == 2);
    ecuda::GemmBackend seen;
    REQUIRE(chooser.lookup(a, &seen));
    CHECK(seen == ecuda::GemmBackend::ember);
    // A new class is timed anew.
    const ecuda::GemmKey b = ecuda::gemm_key(0, DType::bf16, true, true, 1, 4096, 4096, 4096, false, false);
    CHECK_FALSE(chooser.lookup(b, &seen));
    CHECK(chooser.choose(b, timer) == ecuda::GemmBackend::cublas);
    CHECK(timed.size() == 4);
    CHECK(chooser.size() == 2);
    // Equal times: cuBLAS.
    const ecuda::GemmKey c = ecuda::gemm_key(0, DType::f16, true, true, 1, 64, 64, 64, false, false);
    ember_ms = cublas_ms = 1.0;
    CHECK(chooser.choose(c, timer) == ecuda::GemmBackend::cublas);
    chooser.clear();
    CHECK(chooser.size() == 0);
    CHECK_FALSE(chooser.lookup(a, &seen));
  }

  TEST_CASE("a failing timing leaves no decision behind") {
    ecuda::GemmChooser chooser;
    const ecuda::GemmKey a = ecuda::gemm_key(0, DType::bf16, true, false, 1, 64, 64, 64, false, false);
    CHECK_THROWS_AS(chooser.choose(a, [](ecuda::GemmBackend) -> double { throw Error("test", "boom"); }), Error);
    CHECK(chooser.size() == 0);
  }

  TEST_CASE("GEMM settings: defaults, round trips and bad values") {
    if (std::getenv("EMBER_GEMM") == nullptr) CHECK(ecuda::gemm_backend() == ecuda::GemmBackend::fastest);
    if (!ecuda::built_with_cuda()) {
      // A build without CUDA says so instead of pretending.
      CHECK_THROWS_AS(ecuda::set_allow_tf32(true), Error);
      CHECK(std::string(ecuda::last_gemm_kernel()) == "none");
      return;
    }
    const bool tf32 = ecuda::allow_tf32();
    if (std::getenv("EMBER_ALLOW_TF32") == nullptr) CHECK_FALSE(tf32);
    ecuda::set_allow_tf32(true);
    CHECK(ecuda::allow_tf32());
    ecuda::set_allow_tf32(tf32);
    const int tile = ecuda::gemm_sm90_tile();
    for (int t : {0, 128, 256, -1}) {
      ecuda::set_gemm_sm90_tile(t);
      CHECK(ecuda::gemm_sm90_tile() == t);
    }
    CHECK_THROWS_WITH_AS(ecuda::set_gemm_sm90_tile(64), doctest::Contains("128 or 256, got 64"), Error);
    ecuda::set_gemm_sm90_tile(tile);
  }
}
