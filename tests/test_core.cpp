// core: dtypes and promotion, 16-bit float conversions, devices, shapes, tensor metadata,
// printing.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <sstream>

#include "test_util.h"

using namespace ember;
using ember_test::check_tensor;
using ember_test::contains;
using ember_test::vals;

TEST_SUITE("core") {
  TEST_CASE("dtype sizes, names and predicates") {
    CHECK(dtype_size(DType::f32) == 4);
    CHECK(dtype_size(DType::f64) == 8);
    CHECK(dtype_size(DType::f16) == 2);
    CHECK(dtype_size(DType::bf16) == 2);
    CHECK(dtype_size(DType::i32) == 4);
    CHECK(dtype_size(DType::i64) == 8);
    CHECK(dtype_size(DType::boolean) == 1);
    for (DType t : {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i32, DType::i64, DType::boolean}) {
      CAPTURE(static_cast<int>(t));
      REQUIRE(dtype_name(t) != nullptr);
      CHECK(std::strlen(dtype_name(t)) > 0);
    }
    CHECK(std::string(dtype_name(DType::f32)) == "f32");  // the name error messages use
    CHECK(is_floating(DType::bf16));
    CHECK_FALSE(is_floating(DType::i32));
    CHECK(compute_dtype(DType::f16) == DType::f32);
    CHECK(compute_dtype(DType::f64) == DType::f64);
  }

  TEST_CASE("type promotion table") {
    CHECK(promote_types(DType::i32, DType::f32) == DType::f32);
    CHECK(promote_types(DType::f32, DType::i64) == DType::f32);
    CHECK(promote_types(DType::i64, DType::i32) == DType::i64);
    CHECK(promote_types(DType::f16, DType::bf16) == DType::f32);
    CHECK(promote_types(DType::bf16, DType::f16) == DType::f32);
    CHECK(promote_types(DType::f16, DType::f16) == DType::f16);
    CHECK(promote_types(DType::f16, DType::f32) == DType::f32);
    CHECK(promote_types(DType::bf16, DType::f64) == DType::f64);
    CHECK(promote_types(DType::f32, DType::f64) == DType::f64);
    CHECK(promote_types(DType::boolean, DType::boolean) == DType::boolean);
    CHECK(promote_types(DType::boolean, DType::i32) == DType::i32);
    CHECK(promote_types(DType::boolean, DType::f16) == DType::f16);
    CHECK(promote_types(DType::i32, DType::f16) == DType::f16);  // PyTorch: int with half -> half
  }

  TEST_CASE("f16 and bf16 conversions") {
    CHECK(to_half(1.0f).bits == 0x3C00);
    CHECK(to_half(-2.0f).bits == 0xC000);
    CHECK(to_half(65504.0f).bits == 0x7BFF);
    CHECK(to_float(Half{0x3C00}) == 1.0f);
    CHECK(to_float(Half{0x3555}) == doctest::Approx(0.33325195f).epsilon(1e-7));
    CHECK(to_bfloat16(1.0f).bits == 0x3F80);
    CHECK(to_bfloat16(-2.0f).bits == 0xC000);
    CHECK(to_float(BFloat16{0x3F80}) == 1.0f);
    // round to nearest even
    CHECK(to_half(1.0f + std::ldexp(1.0f, -11)).bits == 0x3C00);               // tie -> even
    CHECK(to_half(1.0f + 3 * std::ldexp(1.0f, -11)).bits == 0x3C02);           // tie -> even (up)
    CHECK(to_bfloat16(1.0f + std::ldexp(1.0f, -8)).bits == 0x3F80);           // tie -> even
    CHECK(to_bfloat16(1.0f + 3 * std::ldexp(1.0f, -8)).bits == 0x3F82);       // tie -> even (up)
    CHECK(std::isinf(to_float(to_half(1e6f))));                                 // overflow -> inf
    CHECK(std::isnan(to_float(to_half(NAN))));
    CHECK(std::isnan(to_float(to_bfloat16(NAN))));
    // representable values survive the round trip exactly
    for (float v : {0.5f, -2.0f, 1024.0f, 0.09375f, 65504.0f, std::ldexp(-1.0f, -14), 3.140625f})
      CHECK(to_float(to_half(v)) == v);
    for (float v : {1.0f, -3.5f, 0.15625f, 256.0f, std::ldexp(1.0f, 100)})
      CHECK(to_float(to_bfloat16(v)) == v);
  }

  TEST_CASE("f16/bf16 tensors round-trip representable values") {
    std::vector<double> h = {0.5, -2.0, 1024.0, 0.09375, 65504.0, 3.140625};
    Tensor t = from_vector<double>(h, {6});
    Tensor r = to_dtype(to_dtype(t, DType::f16), DType::f32);
    CHECK(to_dtype(t, DType::f16).dtype() == DType::f16);
    check_tensor(r, {6}, h, 0, 0);
    std::vector<double> b = {1.0, -3.5, 0.15625, 256.0, std::ldexp(1.0, 100), -0.0078125};
    Tensor tb = from_vector<double>(b, {2, 3});
    check_tensor(to_dtype(to_dtype(tb, DType::bf16), DType::f64), {2, 3}, b, 0, 0);
    // and a value that is not representable rounds to the nearest one
    Tensor third = to_dtype(to_dtype(tensor({1.0 / 3.0}), DType::bf16), DType::f32);
    CHECK(vals(third)[0] == doctest::Approx(0.333984375).epsilon(1e-9));
  }

  TEST_CASE("device parsing and names") {
    CHECK(Device("cpu") == Device::cpu());
    CHECK(Device("cuda") == Device::cuda(0));
    CHECK(Device("cuda:1") == Device::cuda(1));
    CHECK(Device::cpu().str() == "cpu");
    CHECK(Device::cuda(1).str() == "cuda:1");
    CHECK(Device::cuda(1).is_cuda());
    CHECK_FALSE(Device::cuda(0) == Device::cuda(1));
    std::ostringstream os;
    os << Device::cuda(2);
    CHECK(os.str() == "cuda:2");
  }

  TEST_CASE("shape helpers") {
    CHECK(numel_of({2, 3, 4}) == 24);
    CHECK(numel_of({}) == 1);
    CHECK(numel_of({3, 0}) == 0);
    CHECK(contiguous_strides({2, 3, 4}) == Shape{12, 4, 1});
    CHECK(shape_str({2, 3}) == "(2, 3)");
    CHECK(shape_str({}) == "()");
    CHECK(broadcast_shapes({3, 1, 5}, {4, 5}, "t") == Shape{3, 4, 5});
    CHECK(broadcast_shapes({}, {2, 2}, "t") == Shape{2, 2});
    CHECK(broadcast_shapes({1}, {7}, "t") == Shape{7});
    CHECK(wrap_dim(-1, 3, "t") == 2);
    CHECK(wrap_dim(0, 3, "t") == 0);
    CHECK_THROWS_AS(wrap_dim(3, 3, "t"), Error);
    CHECK_THROWS_AS(wrap_dim(-4, 3, "t"), Error);
    CHECK_THROWS_AS(broadcast_shapes({2, 3}, {4, 3}, "t"), Error);
  }

  TEST_CASE("tensor metadata") {
    Tensor x = zeros({2, 3, 4});
    CHECK(x.defined());
    CHECK_FALSE(Tensor().defined());
    CHECK(x.dim() == 3);
    CHECK(x.numel() == 24);
    CHECK(x.size(-1) == 4);
    CHECK(x.strides() == Shape{12, 4, 1});
    CHECK(x.stride(0) == 12);
    CHECK(x.is_contiguous());
    CHECK(x.dtype() == DType::f32);
    CHECK(x.device() == Device::cpu());
    CHECK(x.element_size() == 4);
    CHECK_FALSE(x.requires_grad());
    CHECK(x.is_leaf());
    Tensor y = x;  // handles share everything
    CHECK(y.is_same(x));
    CHECK_FALSE(x.transpose(0, 2).is_contiguous());
    CHECK(contains(x.str(), "(2, 3, 4)"));
    CHECK(contains(x.str(), "f32"));
    CHECK(zeros({2}, DType::i32).dtype() == DType::i32);
    Tensor g = zeros({2}, TensorOptions(DType::f64).with_requires_grad(true));
    CHECK(g.requires_grad());
    CHECK(g.is_leaf());
  }

  TEST_CASE("storage is 64-byte aligned on the CPU") {
    for (int64_t n : {1, 3, 17, 1000}) {
      Tensor t = empty({n});
      CHECK(reinterpret_cast<uintptr_t>(t.impl().storage->data()) % 64 == 0);
      CHECK(t.impl().storage->nbytes() >= static_cast<size_t>(n) * 4);
    }
  }

  TEST_CASE("the CPU caching allocator reuses large freed blocks, up to its limit") {
    const size_t old_limit = cpu_cache_stats().limit_bytes;  // 0 under AddressSanitizer
    cpu_set_cache_limit(size_t(64) << 20);
    cpu_empty_cache();
    CHECK(cpu_cache_stats().cached_bytes == 0);
    const void* first = nullptr;
    {
      Tensor big = empty({300000});  // 1.2 MB: a cached size class
      first = big.impl().storage->data();
      CHECK(reinterpret_cast<uintptr_t>(first) % 64 == 0);
    }
    CpuCacheStats s = cpu_cache_stats();
    CHECK(s.cached_bytes >= 1200000);
    CHECK(s.cached_bytes < 1200000 * 9 / 8 + 64);  // the size class adds at most 1/8
    {
      Tensor again = empty({299000});  // same size class: the same block comes back
      CHECK(again.impl().storage->data() == first);
      CHECK(cpu_cache_stats().hits == s.hits + 1);
      CHECK(cpu_cache_stats().cached_bytes == 0);  // the one cached block is in use again
      Tensor other = empty({600000});  // a different class: from the system
      CHECK(other.impl().storage->data() != first);
    }
    {
      Tensor small = empty({100});  // small blocks are never cached
    }
    CHECK(cpu_cache_stats().cached_bytes >= 3600000);
    cpu_set_cache_limit(0);  // below what is cached: empties it, and nothing is kept after
    CHECK(cpu_cache_stats().cached_bytes == 0);
    { Tensor big = empty({300000}); }
    CHECK(cpu_cache_stats().cached_bytes == 0);
    cpu_set_cache_limit(old_limit);
  }

  TEST_CASE("set_flush_denormal flushes denormal f32 results to zero in every CPU thread") {
    const bool before = cpu::flush_denormal();
    if (!cpu::set_flush_denormal(false)) return;  // no such control on this CPU
    CHECK_FALSE(cpu::flush_denormal());
    // 1e-30 * 1e-10 = 1e-40 is a denormal f32. 2^17 elements: the multiply runs on every thread.
    Tensor a = full({1 << 17}, 1e-30), b = full({1 << 17}, 1e-10);
    CHECK(sum(a * b).item<double>() > 0);
    CHECK(cpu::set_flush_denormal(true));
    CHECK(cpu::flush_denormal());
    CHECK(sum(a * b).item<double>() == 0);
    CHECK(sum(a * full({1 << 17}, 1e-3)).item<double>() > 0);  // normal results are unaffected
    cpu::set_flush_denormal(before);
    CHECK(cpu::flush_denormal() == before);
  }

  TEST_CASE("cpu::set_num_threads sets the OpenMP team size and rejects 0") {
    const int n = cpu::num_threads();
    cpu::set_num_threads(1);
    CHECK(cpu::num_threads() == 1);
    cpu::set_num_threads(n);
    CHECK(cpu::num_threads() == n);
    CHECK_EMBER_ERROR(cpu::set_num_threads(0), "[set_num_threads]", "0");
  }

  TEST_CASE("printing shows the values") {
    Tensor t = tensor({1.5, 2.25, -3.0});
    std::ostringstream os;
    os << t;
    std::string s = os.str();
    CHECK(contains(s, "1.5"));
    CHECK(contains(s, "2.25"));
    CHECK(contains(s, "-3"));
    Tensor m = tensor({{7.0, 8.0}, {9.0, 10.5}});
    std::ostringstream om;
    om << m;
    for (const char* v : {"7", "8", "9", "10.5"}) CHECK(contains(om.str(), v));
    std::ostringstream oi;
    oi << arange(0, 4);
    for (const char* v : {"0", "1", "2", "3"}) CHECK(contains(oi.str(), v));
    std::ostringstream ob;  // printing a non-contiguous view prints its logical values
    ob << m.t();
    CHECK(contains(ob.str(), "10.5"));
  }

  TEST_CASE("data<T> and item") {
    Tensor t = tensor({4.0, 5.0, 6.0});
    float* p = t.data<float>();
    CHECK(p[1] == 5.0f);
    CHECK(t.data_ptr() == static_cast<void*>(p));
    CHECK(tensor({3.5}).item<float>() == 3.5f);
    CHECK(tensor({3.5}).item<double>() == 3.5);
    CHECK(scalar_tensor(7.0, DType::i64).item<int64_t>() == 7);
    CHECK(scalar_tensor(2.5).item<double>() == 2.5);  // converts
    CHECK(full({1, 1}, 2.0).item<float>() == 2.0f);  // any one-element shape
    CHECK(t.to_vector<float>() == std::vector<float>{4.0f, 5.0f, 6.0f});
    CHECK(t.select(0, 2).item<float>() == 6.0f);
  }
}
