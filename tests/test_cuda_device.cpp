// The device under test (cuda:0 on a GPU machine, the stand-in fake:0 everywhere else;
// ember_test::test_device(), tests/device_util.h), beyond the op table of test_cuda.cpp:
// without a GPU, CUDA requests raise a clear ember::Error; Module::to(cpu) keeps its
// parameters; copies between the CPU and the device are exact in every dtype and layout;
// creation ops match the CPU; an op given CPU and device operands names both devices; an absurd
// allocation fails cleanly; and the stand-in's own identity, poisoning and capacity.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "device_util.h"
#include "test_util.h"

using namespace ember;
using namespace ember_test::device;
namespace ecuda = ember::cuda;

TEST_SUITE("cuda_device") {
  // Always runs: without a GPU (CI, or a CPU-only build) a CUDA request must raise a clear
  // ember::Error, never crash; with one, so must a device index past the last.
  TEST_CASE("without a GPU, CUDA tensors raise a clear ember::Error") {
    if (!ecuda::is_available()) {
      const std::string built = ecuda::built_with_cuda() ? "built" : "not built";
      MESSAGE("no CUDA GPU available (this build: CUDA backend " << built
                                                                  << "): the cases that need one report themselves skipped");
      CHECK(ecuda::device_count() == 0);
      Tensor x = randn({3, 4});
      const std::vector<std::function<void()>> attempts = {
          [] { (void)zeros({3, 4}, on(Device::cuda(0))); },
          [&] { (void)x.to(Device::cuda()); },
          [&] { (void)to_device(x, Device::cuda(0)); },
          [] { (void)empty({5}, on(Device::cuda(1))); },
          [] { (void)ecuda::memory_stats(0); },
          [] { ecuda::synchronize(); },
          [&] { (void)ecuda::pin_memory(x); },
      };
      for (size_t i = 0; i < attempts.size(); ++i) {
        std::string msg;
        bool ember_error = false;
        try {
          attempts[i]();
        } catch (const ember::Error& e) {
          ember_error = true;
          msg = e.what();
        } catch (const std::exception& e) {
          msg = std::string("non-ember exception: ") + e.what();
        }
        CHECK_MESSAGE(ember_error, "attempt " << i << ": expected ember::Error, got " << (msg.empty() ? "nothing" : msg));
        CHECK_MESSAGE(lower(msg).find("cuda") != std::string::npos, "attempt " << i << ": message does not mention CUDA: " << msg);
      }
      // The model stays usable on the CPU after a failed move.
      nn::Linear lin(4, 3);
      CHECK_THROWS_AS(lin.to(Device::cuda()), ember::Error);
      CHECK(lin.weight.device().is_cpu());
      CHECK(lin(x).shape() == Shape{3, 3});
    } else {
      const int n = ecuda::device_count();
      CHECK(n >= 1);
      ember_test::check_error([&] { (void)zeros({3}, on(Device::cuda(n))); }, "tensor on a missing device",
                              {"cuda:" + std::to_string(n)});
    }
  }

  TEST_CASE("Module::to(cpu) keeps the same parameter objects") {
    Generator g(3);
    nn::Linear lin(5, 3, true, &g);
    const auto w_impl = lin.weight.impl_ptr();
    const auto w_storage = lin.weight.impl().storage;
    Tensor w = lin.parameters()[0];
    w.set_grad(ones_like(w));
    CHECK(&lin.to(Device::cpu()) == &lin);
    CHECK(lin.weight.impl_ptr() == w_impl);
    CHECK(lin.weight.impl().storage == w_storage);  // already there: no copy
    CHECK(w.grad().defined());                      // and the gradient stays
    CHECK(lin.weight.requires_grad());
  }

  TEST_CASE("copies between CPU and CUDA are exact in every dtype and layout") {
    PoisonGuard poison;
    Generator g(17);
    for (DType dt : {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i32, DType::i64, DType::boolean}) {
      const Tensor x = as_dtype(randn({37, 53}, DType::f64, &g), dt);
      const std::string name = dtype_name(dt);
      check_same(name + " round trip", x.to(kCuda).to(kCpu), x);
      check_same(name + " from a transposed CPU view", x.t().to(kCuda).to(kCpu), x.t());
      check_same(name + " from a sliced CPU view", slice(x, 1, 1, 50, 3).to(kCuda).to(kCpu), slice(x, 1, 1, 50, 3));
      const Tensor d = x.to(kCuda);
      CHECK(d.device() == kCuda);
      CHECK(d.is_contiguous());
      check_same(name + " from a transposed CUDA view", d.t().to(kCpu), x.t());
      check_same(name + " from a sliced CUDA view", slice(d, 0, 2, 37, 5).to(kCpu), slice(x, 0, 2, 37, 5));
      check_same(name + " CUDA to CUDA", d.to(kCuda).to(kCpu), x);
      // copy_ crosses devices in both directions, into strided destinations too
      check_same(name + " copy_ from the CPU into a transposed device view", [&] {
        Tensor y = zeros({53, 37}, on(kCuda, dt));
        y.t().copy_(x);
        return y.t();
      }(), x);
      check_same(name + " copy_ from a sliced device view into a CPU tensor", [&] {
        Tensor y = zeros({7, 53}, dt);
        y.copy_(slice(d, 0, 2, 37, 5));
        return y;
      }(), slice(x, 0, 2, 37, 5));
      if (dt != DType::boolean)
        check_same(name + " copy_ converting f64 CPU into a device tensor", [&] {
          Tensor y = zeros({37, 53}, on(kCuda, dt));
          y.copy_(to_dtype(x, DType::f64));
          return y;
        }(), x);
      if (kCuda.is_fake())  // two devices of one kind: a cross-device copy like any other
        check_same(name + " fake:0 to fake:1, transposed", d.t().to(Device::fake(1)).to(kCpu), x.t());
      CHECK(d.to(kCuda).is_same(d));  // already there: the same tensor
      check_same(name + " clone on CUDA", d.clone().to(kCpu), x);
      check_same(name + " broadcast CPU source into a CUDA tensor", [&] {
        Tensor y = zeros({4, 53}, on(kCuda, dt));
        y.copy_(select(x, 0, 3));
        return y;
      }(), expand(select(x, 0, 3), {4, 53}).contiguous());
    }
  }

  TEST_CASE("creation ops on CUDA match the CPU") {
    PoisonGuard poison;
    for (DType dt : {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i32, DType::i64}) {
      const std::string n = dtype_name(dt);
      check_same(n + " zeros", zeros({7, 13}, on(kCuda, dt)), zeros({7, 13}, dt));
      check_same(n + " ones", ones({1031}, on(kCuda, dt)), ones({1031}, dt));
      check_same(n + " full", full({3, 5, 7}, -3.0, on(kCuda, dt)), full({3, 5, 7}, -3.0, dt));
      check_same(n + " scalar_tensor", scalar_tensor(2.0, on(kCuda, dt)), scalar_tensor(2.0, dt));
      check_same(n + " arange", arange(-5, 17, 2, on(kCuda, dt)), arange(-5, 17, 2, dt));
      check_same(n + " from_vector", from_vector<double>({1, -2, 3, 4, -5, 6}, {2, 3}, on(kCuda, dt)),
                 from_vector<double>({1, -2, 3, 4, -5, 6}, {2, 3}, dt));
      const Tensor d = full({4, 3}, 1.5, on(kCuda, dt));
      check_same(n + " zeros_like", zeros_like(d), zeros({4, 3}, dt));
      check_same(n + " ones_like", ones_like(d), ones({4, 3}, dt));
      CHECK(empty_like(d).device() == kCuda);
    }
    check_matches("linspace", linspace(-1.0, 2.0, 1001, on(kCuda)), linspace(-1.0, 2.0, 1001), base_tol(DType::f32));
    check_same("tensor literal", tensor({{1.0, 2.5}, {-3.0, 4.0}}, on(kCuda)), tensor({{1.0, 2.5}, {-3.0, 4.0}}));
    check_same("bool from_vector", from_vector<bool>({true, false, true}, {3}, on(kCuda, DType::boolean)),
               from_vector<bool>({true, false, true}, {3}, DType::boolean));
    // comparison helpers accept CUDA tensors
    const Tensor a = randn({7, 13}, on(kCuda));
    CHECK(equal(a, a.clone()));
    CHECK(allclose(a, a + 1e-9));
    CHECK_FALSE(allclose(a, a + 1.0));
  }

  // The bug class the stand-in exists to catch: an op given one CPU and one device tensor
  // throws an ember::Error naming both devices (on a GPU machine: cpu and cuda:0; in CI: cpu
  // and fake:0).
  TEST_CASE("mixing CPU and device operands raises a clear error naming both devices") {
    PoisonGuard poison;
    const std::string dev = kCuda.str();
    const Tensor c = randn({3, 4}), d = randn({3, 4}, on(kCuda));
    CHECK_EMBER_ERROR(add(c, d), "cpu", dev);
    CHECK_EMBER_ERROR(matmul(d, c.t()), "cpu", dev);
    CHECK_EMBER_ERROR(cat({c, d}, 0), "cpu", dev);
    CHECK_EMBER_ERROR(where(gt(c, scalar_tensor(0.0)), d, d), "where", "cpu", dev);
    CHECK_EMBER_ERROR(gather(d, 1, from_vector<int64_t>({0, 1, 2}, {3, 1})), "gather", "cpu", dev);
    CHECK_EMBER_ERROR(nn::cross_entropy(d, from_vector<int64_t>({0, 1, 2}, {3})), "cpu", dev);
    CHECK_EMBER_ERROR(layer_norm(d, {4}, ones({4}), Tensor()), "cpu", dev);
    // out of range: deferred on a device (no host read in the op), reported at the next check
    (void)index_select(d, 0, from_vector<int64_t>({0, 9}, {2}).to(kCuda));
    CHECK(pending_deferred_checks() == 1);
    CHECK_THROWS_WITH_AS(check_deferred_errors(), doctest::Contains("[index_select] index out of range [0, 3)"), Error);
    // a module on the device given a CPU batch
    nn::Linear lin(4, 2);
    lin.to(kCuda);
    CHECK_EMBER_ERROR(lin(c), "cpu", dev);
    // two devices of one kind are two devices
    if (kCuda.is_fake()) CHECK_EMBER_ERROR(add(d, randn({3, 4}, on(Device::fake(1)))), "fake:0", "fake:1");
    // a 0-d CPU tensor acts as a scalar next to a device tensor
    check_matches("0-d CPU scalar operand", d * scalar_tensor(2.0), d.to(kCpu) * 2.0, base_tol(DType::f32));
  }

  TEST_CASE("an absurd allocation throws ember::Error naming the size and the device; the device stays usable") {
    PoisonGuard poison;
    // What the device under test reports as in use (the CUDA caching allocator, or the
    // stand-in's own accounting).
    auto in_use = [] { return kCuda.is_cuda() ? ecuda::memory_stats(kCuda.index).allocated : fake::memory_stats(kCuda.index).allocated; };
    const size_t before = in_use();
    // 2^40 f32 = 4 TiB = 4398046511104 bytes
    CHECK_EMBER_ERROR(zeros({int64_t{1} << 40}, on(kCuda)), "4398046511104", kCuda.str());
    CHECK(in_use() == before);
    const Tensor ok = full({1000}, 2.0, on(kCuda));
    CHECK(in_use() > before);
    CHECK(sum(ok).item<double>() == 2000.0);
  }

  TEST_CASE("the stand-in device: its own identity, host memory, poisoned allocations, capacity") {
    const Device f0 = Device::fake(0), f1 = Device("fake:1");
    CHECK(Device("fake") == f0);
    CHECK(f1.str() == "fake:1");
    CHECK(f0.is_fake());
    CHECK(f0.is_host_memory());
    CHECK_FALSE(f0 == Device::cpu());
    // every fresh allocation is filled with 0xFF bytes: NaN in every float element
    const Tensor e = empty({5, 3}, on(f0));
    for (double v : host_f64(e)) CHECK(std::isnan(v));
    // the accounting follows tensors' lifetimes
    const fake::MemoryStats s0 = fake::memory_stats(1);
    {
      const Tensor t = zeros({1000}, on(f1, DType::f64));
      const fake::MemoryStats s1 = fake::memory_stats(1);
      CHECK(s1.allocated == s0.allocated + 8000);
      CHECK(s1.peak_allocated >= s1.allocated);
      CHECK(s1.allocations == s0.allocations + 1);
    }
    CHECK(fake::memory_stats(1).allocated == s0.allocated);
    // a capacity: out of memory is an ember::Error naming the device and the size
    fake::set_capacity(1 << 20);
    CHECK_EMBER_ERROR(zeros({1 << 19}, on(f1)), "fake:1", "2097152", "out of memory");
    const Tensor small = ones({1000}, on(f1));  // still usable
    fake::set_capacity(0);
    CHECK(sum(small).item<double>() == 1000.0);
    CHECK_EMBER_ERROR(Device("fake:x"), "fake:N");
    CHECK_EMBER_ERROR(fake::memory_stats(-1), "fake");
  }
}
