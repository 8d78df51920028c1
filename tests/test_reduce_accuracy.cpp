// Accuracy of float sums, mean and var against a reference summed in f64 (the input widened to
// f64 first, so the reference sees exactly the values the float sum saw). The error bound is
// relative to sum |x|, the natural scale of a summation error: 1e-7 for f32 output (one
// rounding of the result is ~6e-8). The old CPU backend added 1024-element blocks in float
// and failed it by 100x on constant inputs (the same rounding error in every block: a sum of
// 10^7 copies of 0.1f was off by 9.7). Sizes cover both layouts of each backend (rows and
// columns), odd and prime lengths around the CPU's 64-element steps and the CUDA warp/block
// and split-row limits, sums over non-last dims, and f16/bf16 inputs. The device case runs on
// cuda:0, or on the stand-in device fake:0 without a GPU (ember_test::test_device()).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "test_util.h"

using namespace ember;
using ember_test::vals;

namespace {

constexpr double kF32Bound = 1e-7;  // |got - ref| / sum |x| for f32 sums
using Case = std::pair<Tensor, Shape>;  // input, dims to reduce

Tensor random_normal(const Shape& shape, uint64_t seed) {
  Generator gen(seed);
  return randn(shape, {}, &gen);
}

// Worst |got - ref| / (rtol * |ref| + kF32Bound * op(|x|)) over the outputs of a reduction
// `op` (sum or mean) of x over dims, where ref is the same reduction of x widened to f64
// (computed on the CPU) and rtol allows for the rounding of a low-precision result: <= 1 passes.
template <class Op>
double error_ratio(const Tensor& x, const Shape& dims, Op op, double rtol = 0) {
  const Tensor got = op(x, dims).to(Device::cpu());
  const Tensor x64 = to_dtype(x.to(Device::cpu()), DType::f64);
  const std::vector<double> g = vals(got), ref = vals(op(x64, dims)), mag = vals(op(abs(x64), dims));
  REQUIRE(g.size() == ref.size());
  double worst = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const double scale = rtol * std::fabs(ref[i]) + kF32Bound * std::max(mag[i], 1e-30);
    worst = std::max(worst, std::fabs(g[i] - ref[i]) / scale);
  }
  return worst;
}

Tensor sum_of(const Tensor& x, const Shape& dims) { return sum(x, dims); }
double sum_ratio(const Tensor& x, const Shape& dims, double rtol = 0) { return error_ratio(x, dims, sum_of, rtol); }

std::string dims_str(const Tensor& x, const Shape& dims) {
  return shape_str(x.shape()) + " " + dtype_name(x.dtype()) + " over " + shape_str(dims);
}

// The sums every device must get right: long constant rows and columns, odd and prime row
// lengths, narrow and wide column sums, non-last dims, a transposed view.
void check_f32_sums(Device dev) {
  const Tensor c = full({3000, 4000}, 0.1, TensorOptions().with_device(dev));
  for (const Shape& dims : {Shape{0}, Shape{1}, Shape{}}) {
    INFO(dims_str(c, dims));
    CHECK(sum_ratio(c, dims) <= 1);
  }
  uint64_t seed = 1;
  for (int64_t n : {1, 7, 63, 64, 65, 1023, 1025, 100003}) {
    const Tensor rows = random_normal({3, n}, seed++).to(dev);  // (3, n)
    const Tensor cols = random_normal({n, 3}, seed++).to(dev);  // (n, 3)
    for (const auto& [x, dims] : std::vector<Case>{{rows, {1}}, {rows, {}}, {cols, {0}}, {cols, {1}}}) {
      INFO(dims_str(x, dims));
      CHECK(sum_ratio(x, dims) <= 1);
    }
    if (n <= 1025) {
      const Tensor wide = random_normal({n, 1000}, seed++).to(dev);  // (n, 1000)
      INFO(dims_str(wide, {0}));
      CHECK(sum_ratio(wide, {0}) <= 1);
    }
  }
  const Tensor x3 = random_normal({37, 1025, 5}, seed++).to(dev);  // (37, 1025, 5)
  for (const Shape& dims : {Shape{1}, Shape{0, 2}, Shape{0, 1}, Shape{2}}) {
    INFO(dims_str(x3, dims));
    CHECK(sum_ratio(x3, dims) <= 1);
  }
  const Tensor t = transpose(random_normal({513, 2049}, seed++).to(dev), 0, 1);  // (2049, 513) view
  for (const Shape& dims : {Shape{0}, Shape{1}}) {
    INFO("transposed " << dims_str(t, dims));
    CHECK(sum_ratio(t, dims) <= 1);
  }
}

// f16/bf16 results round to their own precision: allow one unit in the last place of the
// result (the f32 sum is rounded once more on the way out).
void check_half_sums(Device dev) {
  for (const auto& [dt, ulp] : std::vector<std::pair<DType, double>>{{DType::f16, 0x1p-10}, {DType::bf16, 0x1p-7}}) {
    const Tensor c = full({4096, 33}, 0.1, TensorOptions(dt).with_device(dev));
    const Tensor r = to_dtype(random_normal({5, 100003}, 40), dt).to(dev);
    const Tensor w = to_dtype(random_normal({1025, 37}, 41), dt).to(dev);
    for (const auto& [x, dims] : std::vector<Case>{{c, {0}}, {c, {}}, {r, {1}}, {r, {0}}, {w, {0}}, {w, {1}}}) {
      INFO(dims_str(x, dims));
      CHECK(sum_ratio(x, dims, ulp) <= 1);
    }
  }
}

}  // namespace

TEST_SUITE("reduce_accuracy") {
  TEST_CASE("a sum and a mean of 10^7 copies of 0.1f are correctly rounded") {
    const Tensor x = full({10000000}, 0.1);
    const double exact = 1e7 * static_cast<double>(0.1f);
    const double s = vals(sum(x))[0], m = vals(mean(x))[0];
    INFO("sum " << s << ", exact " << exact);
    CHECK(std::fabs(s - exact) <= kF32Bound * exact);
    CHECK(std::fabs(m - exact / 1e7) <= kF32Bound * exact / 1e7);
    // The same data as a column of a (10^7, 1) matrix and as 10 rows of 10^6.
    CHECK(sum_ratio(x.view({10000000, 1}), {0}) <= 1);
    CHECK(sum_ratio(x.view({10, 1000000}), {1}) <= 1);
  }

  TEST_CASE("f32 sums of constant and random data, rows, columns and non-last dims") { check_f32_sums(Device::cpu()); }

  TEST_CASE("mean and var of long rows and columns") {
    const Tensor x = add(random_normal({2000, 1501}, 50), scalar_tensor(3.0));  // (2000, 1501), mean 3
    for (const Shape& dims : {Shape{0}, Shape{1}, Shape{}}) {
      INFO(dims_str(x, dims));
      CHECK(error_ratio(x, dims, [](const Tensor& t, const Shape& d) { return mean(t, d); }) <= 1);
      // var's error is relative to the variance (1 here), not to sum |x|: bound it directly.
      const auto v = vals(var(x, dims)), ref = vals(var(to_dtype(x, DType::f64), dims));
      double worst = 0;
      for (size_t i = 0; i < v.size(); ++i) worst = std::max(worst, std::fabs(v[i] - ref[i]) / std::fabs(ref[i]));
      CHECK(worst <= 2e-6);
    }
  }

  TEST_CASE("f16 and bf16 sums round once from an accurate sum") { check_half_sums(Device::cpu()); }

  TEST_CASE("softmax and log_softmax of a long row") {
    const Tensor x = random_normal({2, 1000003}, 60);  // (2, 1000003)
    // Each probability carries exp's own few-ulp error, which averages out in a sum; an
    // inaccurate normaliser shifts every one of them the same way.
    for (double total : vals(sum(to_dtype(softmax(x, 1), DType::f64), {1}))) CHECK(std::fabs(total - 1) <= 2e-7);
    const auto l = vals(log_softmax(x, 1)), l_ref = vals(log_softmax(to_dtype(x, DType::f64), 1));
    double worst = 0;
    for (size_t i = 0; i < l.size(); ++i) worst = std::max(worst, std::fabs(l[i] - l_ref[i]) / std::fabs(l_ref[i]));
    CHECK(worst <= 5e-7);
  }

  TEST_CASE("the same sums on the test device") {
    const Device dev = ember_test::test_device();
    const Tensor x = full({10000000}, 0.1, TensorOptions().with_device(dev));
    CHECK(sum_ratio(x, {}) <= 1);
    CHECK(error_ratio(x, {}, [](const Tensor& t, const Shape& d) { return mean(t, d); }) <= 1);
    CHECK(sum_ratio(x.view({2500, 4000}), {0}) <= 1);
    CHECK(sum_ratio(x.view({4, 2500000}), {1}) <= 1);
    check_f32_sums(dev);
    check_half_sums(dev);
  }
}
