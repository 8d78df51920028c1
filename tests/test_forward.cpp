// Forward values: creation, elementwise math against <cmath>, broadcasting, type promotion,
// reductions, softmax, matmul against a naive loop, indexing, joining, views, in-place ops.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <tuple>

#include "test_util.h"

using namespace ember;
using ember_test::check_close;
using ember_test::check_tensor;
using ember_test::vals;

namespace {
Tensor iota(const Shape& s, DType t = DType::f64) {  // 0, 1, 2, ... in shape s
  return reshape(arange(0, static_cast<double>(numel_of(s)), 1.0, t), s);
}
}  // namespace

TEST_SUITE("forward") {
  TEST_CASE("creation") {
    Tensor a = tensor({1, 2, 3});
    CHECK(a.dtype() == DType::f32);
    check_tensor(a, {3}, {1, 2, 3});
    check_tensor(tensor({{1, 2, 3}, {4, 5, 6}}), {2, 3}, {1, 2, 3, 4, 5, 6});
    CHECK(tensor({1, 2}, DType::f64).dtype() == DType::f64);
    check_tensor(zeros({2, 2}), {2, 2}, {0, 0, 0, 0});
    check_tensor(ones({3}, DType::i32), {3}, {1, 1, 1});
    check_tensor(full({2, 1}, 3.5), {2, 1}, {3.5, 3.5});
    check_tensor(scalar_tensor(-4.25), {}, {-4.25});
    Tensor ar = arange(0, 5);
    CHECK(ar.dtype() == DType::i64);
    check_tensor(ar, {5}, {0, 1, 2, 3, 4});
    check_tensor(arange(1, 2, 0.25, DType::f32), {4}, {1, 1.25, 1.5, 1.75});
    check_tensor(arange(5, 0, -2), {3}, {5, 3, 1});
    check_tensor(linspace(0, 1, 5), {5}, {0, 0.25, 0.5, 0.75, 1});
    check_tensor(linspace(-1, 1, 1), {1}, {-1});
    Tensor fv = from_vector<float>({1.5f, 2.5f, 3.5f, 4.5f}, {2, 2});
    CHECK(fv.dtype() == DType::f32);
    check_tensor(fv, {2, 2}, {1.5, 2.5, 3.5, 4.5});
    CHECK(from_vector<int32_t>({1, 2}, {2}).dtype() == DType::i32);
    check_tensor(from_vector<int64_t>({7, 8, 9}, {3}, DType::f64), {3}, {7, 8, 9});
    Tensor z = zeros_like(fv), o = ones_like(fv), e = empty_like(fv);
    CHECK(z.shape() == fv.shape());
    CHECK(e.shape() == fv.shape());
    CHECK(e.dtype() == DType::f32);
    check_tensor(o, {2, 2}, {1, 1, 1, 1});
    CHECK_FALSE(z.impl().storage == fv.impl().storage);
  }

  TEST_CASE("binary elementwise values") {
    Tensor a = tensor({1, 2, 3}), b = tensor({4, 5, 6});
    check_tensor(add(a, b), {3}, {5, 7, 9});
    check_tensor(add(a, b, 2.0), {3}, {9, 12, 15});
    check_tensor(sub(a, b), {3}, {-3, -3, -3});
    check_tensor(mul(a, b), {3}, {4, 10, 18});
    check_tensor(div(a, b), {3}, {0.25, 0.4, 0.5});
    check_tensor(pow(a, b), {3}, {1, 32, 729});
    check_tensor(pow(b, 0.5), {3}, {2, std::sqrt(5.0), std::sqrt(6.0)});
    check_tensor(pow(tensor({-2, -3}), tensor({3, 2})), {2}, {-8, 9});  // negative base, integral exponent
    check_tensor(pow(tensor({-2, 5}), 0.0), {2}, {1, 1});
    check_tensor(pow(tensor({-2, 0.5}), -1.0), {2}, {-0.5, 2});
    check_tensor(maximum(tensor({1, 7, -2}), tensor({3, 5, -1})), {3}, {3, 7, -1});
    check_tensor(minimum(tensor({1, 7, -2}), tensor({3, 5, -1})), {3}, {1, 5, -2});
    check_tensor(a + b, {3}, {5, 7, 9});
    check_tensor(a - b, {3}, {-3, -3, -3});
    check_tensor(a * b, {3}, {4, 10, 18});
    check_tensor(b / a, {3}, {4, 2.5, 2});
    check_tensor(-a, {3}, {-1, -2, -3});
    check_tensor(a + 1.5, {3}, {2.5, 3.5, 4.5});
    check_tensor(a - 1.0, {3}, {0, 1, 2});
    check_tensor(a * 2.0, {3}, {2, 4, 6});
    check_tensor(a / 4.0, {3}, {0.25, 0.5, 0.75});
    check_tensor(1.0 + a, {3}, {2, 3, 4});
    check_tensor(10.0 - a, {3}, {9, 8, 7});
    check_tensor(3.0 * a, {3}, {3, 6, 9});
    check_tensor(6.0 / a, {3}, {6, 3, 2});
  }

  TEST_CASE("unary elementwise values against <cmath>") {
    Generator g(3);
    Tensor x = randn({7, 5}, DType::f64, &g);
    Tensor p = uniform({7, 5}, 0.2, 3.0, DType::f64, &g);
    std::vector<double> xv = vals(x), pv = vals(p);
    struct U {
      const char* name;
      std::function<Tensor(const Tensor&)> op;
      std::function<double(double)> ref;
      bool positive;
    };
    std::vector<U> table = {
        {"neg", [](const Tensor& t) { return neg(t); }, [](double v) { return -v; }, false},
        {"exp", [](const Tensor& t) { return exp(t); }, [](double v) { return std::exp(v); }, false},
        {"log", [](const Tensor& t) { return log(t); }, [](double v) { return std::log(v); }, true},
        {"log1p", [](const Tensor& t) { return log1p(t); }, [](double v) { return std::log1p(v); }, true},
        {"sqrt", [](const Tensor& t) { return sqrt(t); }, [](double v) { return std::sqrt(v); }, true},
        {"rsqrt", [](const Tensor& t) { return rsqrt(t); }, [](double v) { return 1 / std::sqrt(v); }, true},
        {"abs", [](const Tensor& t) { return abs(t); }, [](double v) { return std::fabs(v); }, false},
        {"tanh", [](const Tensor& t) { return tanh(t); }, [](double v) { return std::tanh(v); }, false},
        {"sigmoid", [](const Tensor& t) { return sigmoid(t); }, [](double v) { return 1 / (1 + std::exp(-v)); }, false},
        {"relu", [](const Tensor& t) { return relu(t); }, [](double v) { return v > 0 ? v : 0; }, false},
        {"gelu", [](const Tensor& t) { return gelu(t); },
         [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); }, false},
        {"silu", [](const Tensor& t) { return silu(t); }, [](double v) { return v / (1 + std::exp(-v)); }, false},
        {"clamp", [](const Tensor& t) { return clamp(t, -0.5, 0.8); },
         [](double v) { return std::min(std::max(v, -0.5), 0.8); }, false},
        {"pow3", [](const Tensor& t) { return pow(t, 3.0); }, [](double v) { return v * v * v; }, false},
        {"erf", [](const Tensor& t) { return erf(t); }, [](double v) { return std::erf(v); }, false},
        {"expm1", [](const Tensor& t) { return expm1(t); }, [](double v) { return std::expm1(v); }, false},
        {"softplus", [](const Tensor& t) { return softplus(t); }, [](double v) { return std::log1p(std::exp(v)); }, false},
    };
    for (const U& u : table) {
      CAPTURE(u.name);
      const std::vector<double>& in = u.positive ? pv : xv;
      std::vector<double> want;
      for (double v : in) want.push_back(u.ref(v));
      for (DType dt : {DType::f64, DType::f32}) {
        CAPTURE(dt);
        Tensor t = to_dtype(u.positive ? p : x, dt);
        Tensor out = u.op(t);
        CHECK(out.dtype() == dt);
        check_tensor(out, {7, 5}, want, dt == DType::f64 ? 1e-12 : 1e-5, dt == DType::f64 ? 1e-12 : 1e-6);
      }
    }
    // softplus stays finite where e^x overflows f32 (e^100), and is e^x to rounding far below 0.
    check_tensor(softplus(tensor({100.0, -100.0, 0.0})), {3}, {100.0, std::exp(-100.0), std::log(2.0)}, 1e-6, 1e-30);
    check_tensor(clamp(tensor({-3, 0.5, 3}), std::nullopt, 1.0), {3}, {-3, 0.5, 1});
    check_tensor(clamp(tensor({-3, 0.5, 3}), -1.0, std::nullopt), {3}, {-1, 0.5, 3});
  }

  TEST_CASE("comparisons and logical ops give bool") {
    Tensor a = tensor({1, 2, 3}), b = tensor({3, 2, 1});
    Tensor lt_ = lt(a, b);
    CHECK(lt_.dtype() == DType::boolean);
    check_tensor(lt_, {3}, {1, 0, 0});
    check_tensor(le(a, b), {3}, {1, 1, 0});
    check_tensor(gt(a, b), {3}, {0, 0, 1});
    check_tensor(ge(a, b), {3}, {0, 1, 1});
    check_tensor(eq(a, b), {3}, {0, 1, 0});
    check_tensor(ne(a, b), {3}, {1, 0, 1});
    CHECK(eq(a, b).dtype() == DType::boolean);
    check_tensor(logical_and(lt(a, b), le(a, b)), {3}, {1, 0, 0});
    check_tensor(logical_or(lt(a, b), gt(a, b)), {3}, {1, 0, 1});
    check_tensor(logical_not(eq(a, b)), {3}, {1, 0, 1});
    CHECK(logical_not(eq(a, b)).dtype() == DType::boolean);
    // mixed dtypes compare by value
    check_tensor(eq(tensor({1, 2}, DType::i32), tensor({1, 2.5}, DType::f64)), {2}, {1, 0});
  }

  TEST_CASE("broadcasting shapes") {
    Tensor col = reshape(tensor({1, 2, 3}), {3, 1});
    Tensor row = tensor({10, 20, 30, 40});  // (4)
    check_tensor(col + row, {3, 4}, {11, 21, 31, 41, 12, 22, 32, 42, 13, 23, 33, 43});
    check_tensor(row + col, {3, 4}, {11, 21, 31, 41, 12, 22, 32, 42, 13, 23, 33, 43});
    Tensor x = iota({2, 3, 4});
    Tensor y = add(x, tensor({100, 200, 300, 400}, DType::f64));
    CHECK(y.shape() == Shape{2, 3, 4});
    CHECK(vals(y)[5] == 5 + 200);
    CHECK(mul(x, scalar_tensor(2.0, DType::f64)).shape() == Shape{2, 3, 4});
    CHECK(add(ones({2, 1, 3}), ones({4, 1})).shape() == Shape{2, 4, 3});
    CHECK(add(scalar_tensor(1.0), scalar_tensor(2.0)).shape() == Shape{});
    check_tensor(where(reshape(tensor({1, 0}, DType::boolean), {2, 1}), tensor({1, 2}), tensor({-1, -2})), {2, 2}, {1, 2, -1, -2});
  }

  TEST_CASE("type promotion of ops") {
    Tensor i32 = tensor({1, 2}, DType::i32), i64 = tensor({3, 4}, DType::i64);
    Tensor f32 = tensor({0.5, 0.25}), f64 = tensor({0.5, 0.25}, DType::f64);
    Tensor h = tensor({1, 2}, DType::f16), bh = tensor({3, 4}, DType::bf16);
    Tensor b = tensor({1, 0}, DType::boolean);
    CHECK((i32 + f32).dtype() == DType::f32);
    check_tensor(i32 + f32, {2}, {1.5, 2.25});
    CHECK((i64 + i32).dtype() == DType::i64);
    check_tensor(i64 + i32, {2}, {4, 6});
    CHECK((h + bh).dtype() == DType::f32);
    check_tensor(h + bh, {2}, {4, 6});
    CHECK((h * h).dtype() == DType::f16);
    CHECK((f32 + f64).dtype() == DType::f64);
    CHECK((i32 * i32).dtype() == DType::i32);
    CHECK(div(i32, i32).dtype() == DType::f32);  // true division
    check_tensor(div(tensor({1, 3}, DType::i64), tensor({2, 2}, DType::i64)), {2}, {0.5, 1.5});
    CHECK(lt(i32, f32).dtype() == DType::boolean);
    CHECK(exp(i32).dtype() == DType::f32);  // float-only unary ops promote integers
    check_tensor(sqrt(tensor({4, 9}, DType::i64)), {2}, {2, 3});
    CHECK((i32 + b).dtype() == DType::i32);
    CHECK(neg(i64).dtype() == DType::i64);
    CHECK((i32 + 1.5).dtype() == DType::f32);  // PyTorch: a float scalar makes ints float
    check_tensor(i32 + 1.5, {2}, {2.5, 3.5});
    CHECK((f32 * 2.0).dtype() == DType::f32);  // a scalar does not widen floats
    CHECK((h * 2.0).dtype() == DType::f16);
  }

  TEST_CASE("where and masked_fill") {
    Tensor c = tensor({1, 0, 1}, DType::boolean);
    check_tensor(where(c, tensor({1, 2, 3}), tensor({7, 8, 9})), {3}, {1, 8, 3});
    check_tensor(masked_fill(tensor({1, 2, 3}), c, -5), {3}, {-5, 2, -5});
    check_tensor(masked_fill(tensor({{1, 2}, {3, 4}}), tensor({0, 1}, DType::boolean), 9), {2, 2}, {1, 9, 3, 9});
  }

  TEST_CASE("reductions with keepdim over several dims") {
    Tensor x = iota({2, 3, 4});  // x[i][j][k] = 12 i + 4 j + k
    auto at = [](int i, int j, int k) { return 12.0 * i + 4.0 * j + k; };
    Tensor s = sum(x, {0, 2}, true);
    std::vector<double> want;
    for (int j = 0; j < 3; ++j) {
      double acc = 0;
      for (int i = 0; i < 2; ++i)
        for (int k = 0; k < 4; ++k) acc += at(i, j, k);
      want.push_back(acc);
    }
    check_tensor(s, {1, 3, 1}, want);
    check_tensor(sum(x, {0, 2}), {3}, want);
    check_tensor(sum(x, {2, 0}), {3}, want);  // order of dims does not matter
    check_tensor(sum(x, {-1, -3}, true), {1, 3, 1}, want);
    check_tensor(sum(x), {}, {276});
    check_tensor(x.sum(), {}, {276});
    check_tensor(sum(x, {0, 1, 2}, true), {1, 1, 1}, {276});
    check_tensor(mean(x, {1}), {2, 4}, {4, 5, 6, 7, 16, 17, 18, 19});
    check_tensor(mean(x), {}, {11.5});
    check_tensor(x.mean(), {}, {11.5});
    check_tensor(mean(x, {0, 1}, true), {1, 1, 4}, {10, 11, 12, 13});
    check_tensor(amax(x, {0, 1}), {4}, {20, 21, 22, 23});
    check_tensor(amin(x, {1, 2}, true), {2, 1, 1}, {0, 12});
    Tensor small = tensor({{1, 2, 3}, {4, 5, 6}}, DType::f64);
    check_tensor(prod(small, {1}), {2}, {6, 120});
    check_tensor(prod(small), {}, {720});
    check_tensor(var(small, {1}), {2}, {1, 1});
    check_tensor(var(small, {1}, 0), {2}, {2.0 / 3, 2.0 / 3});
    check_tensor(var(small), {}, {3.5});
    check_tensor(var(small, {0}, 1, true), {1, 3}, {4.5, 4.5, 4.5});
    check_tensor(sum(tensor({1, 2, 3}, DType::i32)), {}, {6});
  }

  TEST_CASE("max/min/argmax/argmin, ties take the first index") {
    Tensor t = tensor({{1, 5, 5, 2}, {7, 0, 7, -1}});
    ValuesIndices m = max(t, 1);
    check_tensor(m.values, {2}, {5, 7});
    CHECK(m.indices.dtype() == DType::i64);
    check_tensor(m.indices, {2}, {1, 0});
    ValuesIndices mk = min(t, 1, true);
    check_tensor(mk.values, {2, 1}, {1, -1});
    check_tensor(mk.indices, {2, 1}, {0, 3});
    check_tensor(max(t, 0).values, {4}, {7, 5, 7, 2});
    check_tensor(max(t), {}, {7});
    check_tensor(min(t), {}, {-1});
    check_tensor(argmax(tensor({1, 3, 3, 2})), {}, {1});
    check_tensor(argmin(tensor({2, 0, 4, 0})), {}, {1});
    check_tensor(argmax(t), {}, {4});  // flattened index
    check_tensor(argmax(t, 1), {2}, {1, 0});
    check_tensor(argmax(t, 0, true), {1, 4}, {1, 0, 1, 0});
    check_tensor(argmin(t, -1), {2}, {0, 3});
    CHECK(argmax(t, 1).dtype() == DType::i64);
  }

  TEST_CASE("softmax rows sum to 1, stable for large inputs") {
    Generator g(17);
    Tensor x = randn({5, 7}, DType::f64, &g) * 3.0;
    Tensor s = softmax(x, 1);
    check_tensor(sum(s, {1}), {5}, std::vector<double>(5, 1.0), 1e-12, 1e-12);
    check_tensor(sum(softmax(x, 0), {0}), {7}, std::vector<double>(7, 1.0), 1e-12, 1e-12);
    check_close(log_softmax(x, 1), log(s), 1e-10, 1e-12);
    for (double v : vals(s)) CHECK((v > 0 && v < 1));
    // large values: no overflow to inf/nan
    Tensor big = tensor({1000, 1001, 1002});
    double e = std::exp(1.0), z = 1 + e + e * e;
    check_tensor(softmax(big, 0), {3}, {1 / z, e / z, e * e / z}, 1e-5, 1e-7);
    check_tensor(log_softmax(big, 0), {3}, {-std::log(z), 1 - std::log(z), 2 - std::log(z)}, 1e-5, 1e-5);
    check_tensor(softmax(tensor({-1000, 0}), 0), {2}, {0, 1});
    Tensor hf = softmax(tensor({1, 2, 3}, DType::f16), 0);
    CHECK(hf.dtype() == DType::f16);
    check_tensor(sum(to_dtype(hf, DType::f32)), {}, {1}, 2e-3, 2e-3);
  }

  TEST_CASE("matmul against a naive triple loop") {
    auto naive = [](const Tensor& a, const Tensor& b) {  // 2-D only, f64
      int64_t n = a.size(0), k = a.size(1), m = b.size(1);
      std::vector<double> av = vals(a), bv = vals(b), out(n * m, 0.0);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < m; ++j) {
          double acc = 0;
          for (int64_t p = 0; p < k; ++p) acc += av[i * k + p] * bv[p * m + j];
          out[i * m + j] = acc;
        }
      return from_vector<double>(out, {n, m});
    };
    Generator g(99);
    for (auto [n, k, m] : {std::tuple{13, 7, 11}, std::tuple{1, 5, 1}, std::tuple{64, 33, 17}, std::tuple{3, 1, 4}}) {
      CAPTURE(n);
      CAPTURE(k);
      CAPTURE(m);
      Tensor a = randn({n, k}, DType::f64, &g), b = randn({k, m}, DType::f64, &g);
      Tensor ref = naive(a, b);
      check_close(matmul(a, b), ref, 1e-12, 1e-12);
      Tensor r32 = matmul(to_dtype(a, DType::f32), to_dtype(b, DType::f32));
      CHECK(r32.dtype() == DType::f32);
      check_close(r32, ref, 1e-4, 1e-4);
      // non-contiguous operands
      Tensor at = contiguous(a.t()).t(), bt = contiguous(b.t()).t();
      check_close(matmul(at, bt), ref, 1e-12, 1e-12);
      check_close(matmul(a, bt), ref, 1e-12, 1e-12);
    }
    // batched with broadcast batch dims: (2, 1, 3, 4) @ (5, 4, 2) -> (2, 5, 3, 2)
    Tensor a = randn({2, 1, 3, 4}, DType::f64, &g), b = randn({5, 4, 2}, DType::f64, &g);
    Tensor c = matmul(a, b);
    REQUIRE(c.shape() == Shape{2, 5, 3, 2});
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 5; ++j) check_close(c.select(0, i).select(0, j), naive(a.select(0, i).select(0, 0), b.select(0, j)), 1e-12, 1e-12);
    // 1-D cases
    Tensor v = tensor({1, 2, 3}, DType::f64), w = tensor({4, 5, 6}, DType::f64);
    check_tensor(matmul(v, w), {}, {32});
    Tensor m2 = tensor({{1, 0, 2}, {0, 1, -1}}, DType::f64);
    check_tensor(matmul(m2, v), {2}, {7, -1});
    check_tensor(matmul(tensor({1, -1}, DType::f64), m2), {3}, {1, -1, 3});
    // bmm
    Tensor x = randn({3, 4, 5}, DType::f64, &g), y = randn({3, 5, 2}, DType::f64, &g);
    Tensor z = bmm(x, y);
    REQUIRE(z.shape() == Shape{3, 4, 2});
    for (int64_t i = 0; i < 3; ++i) check_close(z.select(0, i), naive(x.select(0, i), y.select(0, i)), 1e-12, 1e-12);
  }

  TEST_CASE("large and non-contiguous tensors (threaded paths) against scalar loops") {
    Generator g(31);
    Tensor x = randn({301, 517}, DType::f64, &g);
    std::vector<double> xv = vals(x);
    Tensor xt = x.t();  // (517, 301), non-contiguous
    std::vector<double> want;
    for (int64_t i = 0; i < 517; ++i)
      for (int64_t j = 0; j < 301; ++j) want.push_back(std::exp(xv[j * 517 + i]) * 2.0);
    check_tensor(exp(xt) * 2.0, {517, 301}, want, 1e-12, 1e-12);
    std::vector<double> rows(301, 0.0), cols(517, 0.0);
    for (int64_t i = 0; i < 301; ++i)
      for (int64_t j = 0; j < 517; ++j) {
        rows[i] += xv[i * 517 + j];
        cols[j] += xv[i * 517 + j];
      }
    check_tensor(sum(x, {1}), {301}, rows, 1e-10, 1e-10);
    check_tensor(sum(x, {0}), {517}, cols, 1e-10, 1e-10);
    check_tensor(sum(xt, {0}), {301}, rows, 1e-10, 1e-10);
    Tensor xf = to_dtype(x, DType::f32);
    check_tensor(amax(xf, {0}), {517}, vals(amax(x, {0})), 1e-6, 1e-6);
    check_tensor(softmax(xf, 1).sum(), {}, {301}, 1e-4, 1e-4);
  }

  TEST_CASE("accumulation precision: f32 sums and f16 sums accumulate wide") {
    // one million 0.1f: a naive running f32 sum is off by about 1%
    Tensor big = full({1 << 20}, 0.1);
    check_tensor(sum(big), {}, {0.1f * double(1 << 20)}, 1e-4, 0);
    check_tensor(mean(big), {}, {double(0.1f)}, 1e-4, 0);
    // 10000 ones in f16: an f16 accumulator would stop at 2048
    Tensor h = full({10000}, 1.0, DType::f16);
    Tensor hs = sum(h);
    CHECK(hs.dtype() == DType::f16);
    check_tensor(hs, {}, {10000}, 0, 0);
    check_tensor(mean(full({4096}, 0.5, DType::bf16)), {}, {0.5}, 0, 0);
  }

  TEST_CASE("empty tensors (a zero-size dim)") {
    Tensor e = zeros({0, 3});
    CHECK(e.numel() == 0);
    check_tensor(sum(e, {0}), {3}, {0, 0, 0});
    check_tensor(sum(e), {}, {0});
    check_tensor(prod(e, {0}), {3}, {1, 1, 1});
    check_tensor(e + ones({3}), {0, 3}, {});
    check_tensor(exp(e), {0, 3}, {});
    check_tensor(matmul(e, ones({3, 2})), {0, 2}, {});
    check_tensor(cat({e, ones({1, 3})}, 0), {1, 3}, {1, 1, 1});
    check_tensor(narrow(ones({4}), 0, 4, 0), {0}, {});
    check_tensor(index_select(ones({4, 2}), 0, from_vector<int64_t>({}, {0})), {0, 2}, {});
    CHECK_THROWS_AS(amax(e, {0}), Error);  // no identity for max (PyTorch raises too)
  }

  TEST_CASE("matmul with an empty inner dimension gives zeros") {
    check_tensor(matmul(ones({2, 0}), ones({0, 3})), {2, 3}, {0, 0, 0, 0, 0, 0});
  }

  TEST_CASE("indexing values") {
    Tensor x = tensor({{1, 2, 3}, {4, 5, 6}});
    Tensor idx = from_vector<int64_t>({2, 0, 1, 1}, {2, 2});
    check_tensor(gather(x, 1, idx), {2, 2}, {3, 1, 5, 5});
    check_tensor(gather(x, 0, from_vector<int64_t>({1, 0, 1}, {1, 3})), {1, 3}, {4, 2, 6});
    check_tensor(index_select(x, 1, from_vector<int64_t>({2, 2, 0}, {3})), {2, 3}, {3, 3, 1, 6, 6, 4});
    check_tensor(index_select(x, 0, from_vector<int64_t>({1}, {1})), {1, 3}, {4, 5, 6});
    Tensor w = tensor({{0.5, 1}, {2, 3}, {4, 5}});
    check_tensor(embedding(w, from_vector<int64_t>({2, 0, 2}, {3})), {3, 2}, {4, 5, 0.5, 1, 4, 5});
    check_tensor(embedding(w, from_vector<int64_t>({1, 2}, {2, 1})), {2, 1, 2}, {2, 3, 4, 5});
    check_tensor(embedding(w, from_vector<int32_t>({1}, {1})), {1, 2}, {2, 3});  // i32 indices too
    Tensor base = zeros({2, 4});
    check_tensor(scatter_add(base, 1, from_vector<int64_t>({0, 0, 3, 1, 1, 1}, {2, 3}), tensor({{1, 2, 3}, {4, 5, 6}})),
                 {2, 4}, {3, 0, 0, 3, 0, 15, 0, 0});
    check_tensor(base, {2, 4}, {0, 0, 0, 0, 0, 0, 0, 0});  // out of place
    check_tensor(index_add(ones({3, 2}), 0, from_vector<int64_t>({2, 0, 2}, {3}), tensor({{1, 2}, {3, 4}, {5, 6}}), 2.0),
                 {3, 2}, {7, 9, 1, 1, 13, 17});
    Tensor oh = one_hot(from_vector<int64_t>({2, 0}, {2}), 3);
    CHECK(oh.dtype() == DType::i64);
    check_tensor(oh, {2, 3}, {0, 0, 1, 1, 0, 0});
  }

  TEST_CASE("cat, stack, split, chunk, pad") {
    Tensor a = tensor({{1, 2}, {3, 4}}), b = tensor({{5, 6}});
    check_tensor(cat({a, b}, 0), {3, 2}, {1, 2, 3, 4, 5, 6});
    check_tensor(cat({a, a}, 1), {2, 4}, {1, 2, 1, 2, 3, 4, 3, 4});
    check_tensor(cat({a}, 0), {2, 2}, {1, 2, 3, 4});
    check_tensor(stack({a, a * 10.0}, 0), {2, 2, 2}, {1, 2, 3, 4, 10, 20, 30, 40});
    check_tensor(stack({a, a * 10.0}, 2), {2, 2, 2}, {1, 10, 2, 20, 3, 30, 4, 40});
    Tensor x = iota({7, 2});
    auto s = split(x, 3, 0);
    REQUIRE(s.size() == 3);
    check_tensor(s[2], {1, 2}, {12, 13});
    CHECK(s[0].shape() == Shape{3, 2});
    auto ss = split_sizes(x, {1, 6}, 0);
    REQUIRE(ss.size() == 2);
    check_tensor(ss[0], {1, 2}, {0, 1});
    auto c = chunk(x, 3, 0);
    REQUIRE(c.size() == 3);
    CHECK(c[0].shape() == Shape{3, 2});
    CHECK(c[2].shape() == Shape{1, 2});
    auto c1 = chunk(x, 2, 1);
    REQUIRE(c1.size() == 2);
    check_tensor(c1[1], {7, 1}, {1, 3, 5, 7, 9, 11, 13});
    check_tensor(pad(tensor({1, 2}), {1, 2}), {5}, {0, 1, 2, 0, 0});
    check_tensor(pad(a, {0, 1, 1, 0}, -1), {3, 3}, {-1, -1, -1, 1, 2, -1, 3, 4, -1});
  }

  TEST_CASE("views share storage") {
    Tensor x = zeros({3, 4});
    Tensor row = x.select(0, 1);
    row.fill_(5);
    check_tensor(x, {3, 4}, {0, 0, 0, 0, 5, 5, 5, 5, 0, 0, 0, 0});
    Tensor xt = x.t();
    CHECK(xt.impl().storage == x.impl().storage);
    xt.select(0, 3).fill_(-1);  // column 3 of x
    CHECK(vals(x)[3] == -1);
    CHECK(vals(x)[11] == -1);
    Tensor n = x.narrow(1, 1, 2);
    n.add_(ones({3, 2}));
    CHECK(vals(x)[1] == 1);
    CHECK(vals(x)[5] == 6);
    Tensor v = x.view({12});
    CHECK(v.impl().storage == x.impl().storage);
    v.mul_(2.0);
    CHECK(vals(x)[5] == 12);
    Tensor sl = slice(x, 1, 0, 4, 2);  // columns 0 and 2
    CHECK(sl.shape() == Shape{3, 2});
    sl.zero_();
    check_tensor(x, {3, 4}, {0, 2, 0, -2, 0, 12, 0, -2, 0, 2, 0, -2});
    CHECK(x.unsqueeze(0).impl().storage == x.impl().storage);
    CHECK(x.reshape({2, 6}).impl().storage == x.impl().storage);  // contiguous: reshape is a view
    CHECK(x.permute({1, 0}).impl().storage == x.impl().storage);
    CHECK(x.expand({2, 3, 4}).impl().storage == x.impl().storage);
    CHECK(x.flatten().impl().storage == x.impl().storage);
    CHECK(x.unsqueeze(1).squeeze().impl().storage == x.impl().storage);
    CHECK(x.select(1, 2).offset() == 2);
    CHECK(x.narrow(0, 1, 2).offset() == 4);
    CHECK(x.t().strides() == Shape{1, 4});
    CHECK(x.expand({2, 3, 4}).stride(0) == 0);
  }

  TEST_CASE("contiguous and clone copy") {
    Tensor x = iota({3, 4});
    Tensor xt = x.t();
    Tensor c = xt.contiguous();
    CHECK(c.is_contiguous());
    CHECK_FALSE(c.impl().storage == x.impl().storage);
    check_tensor(c, {4, 3}, {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
    c.fill_(1);
    CHECK(vals(x)[1] == 1);  // untouched (x[0][1] is 1 already)
    CHECK(vals(x)[4] == 4);
    Tensor k = x.clone();
    CHECK_FALSE(k.impl().storage == x.impl().storage);
    k.fill_(-3);
    CHECK(vals(x)[4] == 4);
    Tensor r = reshape(xt, {12});  // not viewable: a copy with the logical order
    check_tensor(r, {12}, {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
    check_tensor(flatten(xt), {12}, {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
    Tensor f = to_dtype(x, DType::f32);
    CHECK(f.dtype() == DType::f32);
    check_tensor(f, {3, 4}, vals(x));
    check_tensor(to_dtype(tensor({1.7, -1.7, 2.5}), DType::i64), {3}, {1, -1, 2});  // truncation
    check_tensor(x.to(DType::i32).to(DType::f64), {3, 4}, vals(x));
  }

  TEST_CASE("in-place ops and the version counter") {
    Tensor x = zeros({2, 3});
    uint64_t v0 = x.version();
    x.fill_(2);
    CHECK(x.version() > v0);
    uint64_t v1 = x.version();
    x.add_(tensor({1, 2, 3}), 0.5);  // broadcast
    CHECK(x.version() > v1);
    check_tensor(x, {2, 3}, {2.5, 3, 3.5, 2.5, 3, 3.5});
    x.mul_(reshape(tensor({2, -1}), {2, 1}));
    check_tensor(x, {2, 3}, {5, 6, 7, -2.5, -3, -3.5});
    x.mul_(2.0);
    check_tensor(x, {2, 3}, {10, 12, 14, -5, -6, -7});
    x.copy_(tensor({7, 8, 9}, DType::i64));  // broadcasts and converts
    check_tensor(x, {2, 3}, {7, 8, 9, 7, 8, 9});
    Tensor view = x.select(0, 0);
    uint64_t v2 = x.version();
    view.zero_();
    CHECK(x.version() > v2);  // the counter lives on the storage
    check_tensor(x, {2, 3}, {0, 0, 0, 7, 8, 9});
    Tensor xt = x.t();
    xt.copy_(tensor({{1, 2}, {3, 4}, {5, 6}}));  // write through a non-contiguous view
    check_tensor(x, {2, 3}, {1, 3, 5, 2, 4, 6});
  }

  TEST_CASE("allclose and equal") {
    Tensor a = tensor({1, 2, 3});
    CHECK(allclose(a, tensor({1, 2, 3 + 1e-6})));
    CHECK_FALSE(allclose(a, tensor({1, 2, 3.1})));
    CHECK(allclose(a, tensor({1.05, 2, 3}), 0.1, 0));
    CHECK_FALSE(allclose(a, tensor({1.05, 2, 3}), 0.01, 0));
    CHECK(allclose(a, tensor({1.05, 2, 3}), 0, 0.06));
    CHECK(allclose(a.to(DType::f64), a));
    CHECK(equal(a, tensor({1, 2, 3})));
    CHECK_FALSE(equal(a, tensor({1, 2, 4})));
    CHECK_FALSE(equal(a, tensor({{1, 2, 3}})));
    CHECK(equal(iota({2, 3}).t(), iota({2, 3}).t().contiguous()));
    CHECK_FALSE(allclose(tensor({NAN}), tensor({NAN})));
  }
}
