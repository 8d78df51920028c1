// Random numbers: Philox known answers, reproducibility for a seed, statistics of 100k draws,
// bernoulli, randint, dropout.
#include <doctest/doctest.h>

#include <cmath>
#include <set>

#include "test_util.h"

using namespace ember;
using ember_test::check_tensor;
using ember_test::vals;

namespace {
struct Moments {
  double mean = 0, var = 0, lo = INFINITY, hi = -INFINITY;
};
Moments moments(const Tensor& t) {
  std::vector<double> v = vals(t);
  Moments m;
  for (double x : v) {
    m.mean += x;
    m.lo = std::min(m.lo, x);
    m.hi = std::max(m.hi, x);
  }
  m.mean /= static_cast<double>(v.size());
  for (double x : v) m.var += (x - m.mean) * (x - m.mean);
  m.var /= static_cast<double>(v.size() - 1);
  return m;
}
constexpr int64_t kDraws = 100000;
}  // namespace

TEST_SUITE("random") {
  TEST_CASE("philox4x32-10 known answers (Random123)") {
    auto z = philox4x32(0, 0, 0);
    CHECK(z[0] == 0x6627e8d5u);
    CHECK(z[1] == 0xe169c58du);
    CHECK(z[2] == 0xbc57ac4cu);
    CHECK(z[3] == 0x9b00dbd8u);
    auto f = philox4x32(~0ULL, ~0ULL, ~0ULL);
    CHECK(f[0] == 0x408f276du);
    CHECK(f[1] == 0x41c83b0eu);
    CHECK(f[2] == 0xa20bc7c6u);
    CHECK(f[3] == 0x6d5451fdu);
    // counter words (243f6a88, 85a308d3, 13198a2e, 03707344), key words (a4093822, 299f31d0),
    // low word first in each 64-bit argument
    auto p = philox4x32(0x85a308d3243f6a88ULL, 0x0370734413198a2eULL, 0x299f31d0a4093822ULL);
    CHECK(p[0] == 0xd16cfe09u);
    CHECK(p[1] == 0x94fdccebu);
    CHECK(p[2] == 0x5001e420u);
    CHECK(p[3] == 0x24126ea1u);
    CHECK(uniform01(0) == 0.0f);
    CHECK(uniform01(0xffffffffu) < 1.0f);
  }

  TEST_CASE("rand element i comes from block offset + i / 4, lane i % 4") {
    Generator g(42);
    g.set_offset(10);
    Tensor r = rand({9}, DType::f32, &g);
    std::vector<float> v = r.to_vector<float>();
    for (uint64_t i = 0; i < 9; ++i) {
      CAPTURE(i);
      auto block = philox4x32(10 + i / 4, 0, 42);
      CHECK(v[i] == uniform01(block[i % 4]));
    }
    CHECK(g.offset() == 10 + 3);  // 9 elements reserve 3 blocks
  }

  TEST_CASE("generators are reproducible for a seed") {
    Generator a(7), b(7), c(8);
    Tensor ra = randn({50}, DType::f64, &a), rb = randn({50}, DType::f64, &b), rc = randn({50}, DType::f64, &c);
    CHECK(equal(ra, rb));
    CHECK_FALSE(equal(ra, rc));
    Tensor ra2 = randn({50}, DType::f64, &a);  // the generator moved on
    CHECK_FALSE(equal(ra, ra2));
    a.manual_seed(7);
    CHECK(equal(randn({50}, DType::f64, &a), ra));
    CHECK(a.seed() == 7);
    manual_seed(123);
    Tensor d1 = rand({20});
    manual_seed(123);
    Tensor d2 = rand({20});
    CHECK(equal(d1, d2));
    CHECK(default_generator().seed() == 123);
    Generator e(5), f(5);
    CHECK(equal(uniform({30}, -2, 3, DType::f32, &e), uniform({30}, -2, 3, DType::f32, &f)));
    CHECK(equal(randint(0, 10, {30}, DType::i64, &e), randint(0, 10, {30}, DType::i64, &f)));
    CHECK(equal(bernoulli({30}, 0.4, DType::f32, &e), bernoulli({30}, 0.4, DType::f32, &f)));
  }

  TEST_CASE("rand, randn, uniform statistics over 100k draws") {
    Generator g(2024);
    Moments u = moments(rand({kDraws}, DType::f32, &g));
    CHECK(std::fabs(u.mean - 0.5) < 0.005);
    CHECK(std::fabs(u.var - 1.0 / 12) < 0.002);
    CHECK(u.lo >= 0.0);
    CHECK(u.hi < 1.0);
    Moments n = moments(randn({kDraws}, DType::f64, &g));
    CHECK(std::fabs(n.mean) < 0.015);
    CHECK(std::fabs(n.var - 1.0) < 0.02);
    CHECK(n.lo < -3.0);  // tails exist
    CHECK(n.hi > 3.0);
    Moments w = moments(uniform({kDraws}, -2.0, 6.0, DType::f64, &g));
    CHECK(std::fabs(w.mean - 2.0) < 0.04);
    CHECK(std::fabs(w.var - 64.0 / 12) < 0.1);
    CHECK(w.lo >= -2.0);
    CHECK(w.hi < 6.0);
    Moments h = moments(randn({kDraws}, DType::bf16, &g));
    CHECK(std::fabs(h.mean) < 0.015);
    CHECK(std::fabs(h.var - 1.0) < 0.03);
    // odd sizes that do not fill the last Philox block still draw fresh numbers
    Tensor odd = rand({13}, DType::f64, &g);
    std::set<double> distinct;
    for (double v : vals(odd)) distinct.insert(v);
    CHECK(distinct.size() == 13);
  }

  TEST_CASE("bernoulli rate") {
    Generator g(11);
    for (double p : {0.1, 0.5, 0.85}) {
      CAPTURE(p);
      Tensor b = bernoulli({kDraws}, p, DType::f32, &g);
      Moments m = moments(b);
      CHECK(std::fabs(m.mean - p) < 0.01);
      CHECK(m.lo == 0.0);
      CHECK(m.hi == 1.0);
      for (double v : vals(b)) {
        if (v != 0.0 && v != 1.0) {
          FAIL_CHECK("bernoulli drew " << v);
          break;
        }
      }
    }
    CHECK(moments(bernoulli({1000}, 0.0, DType::f32, &g)).hi == 0.0);
    CHECK(moments(bernoulli({1000}, 1.0, DType::f32, &g)).lo == 1.0);
  }

  TEST_CASE("randint range") {
    Generator g(12);
    Tensor r = randint(-3, 4, {kDraws}, DType::i64, &g);
    CHECK(r.dtype() == DType::i64);
    std::vector<int64_t> v = r.to_vector<int64_t>();
    std::vector<int64_t> counts(7, 0);
    bool in_range = true;
    for (int64_t x : v) {
      if (x < -3 || x >= 4) in_range = false;
      else ++counts[x + 3];
    }
    CHECK(in_range);
    for (int64_t c : counts) CHECK(std::fabs(c / double(kDraws) - 1.0 / 7) < 0.01);
    Tensor r32 = randint(0, 5, {100}, DType::i32, &g);
    CHECK(r32.dtype() == DType::i32);
    for (int32_t x : r32.to_vector<int32_t>()) CHECK((x >= 0 && x < 5));
  }

  TEST_CASE("dropout scaling and mask rate") {
    Generator g(13);
    const double p = 0.25;
    Tensor x = full({kDraws}, 2.0);
    Tensor y = dropout(x, p, true, &g);
    CHECK(y.shape() == x.shape());
    CHECK(y.dtype() == DType::f32);
    int64_t zeros_n = 0;
    bool values_ok = true;
    for (double v : vals(y)) {
      if (v == 0.0) ++zeros_n;
      else if (std::fabs(v - 2.0 / (1 - p)) > 1e-5) values_ok = false;
    }
    CHECK(values_ok);  // survivors scaled by 1 / (1 - p)
    CHECK(std::fabs(zeros_n / double(kDraws) - p) < 0.01);
    CHECK(std::fabs(moments(y).mean - 2.0) < 0.03);  // expectation preserved
    // same generator state -> same mask
    Generator g1(99), g2(99);
    CHECK(equal(dropout(x, 0.5, true, &g1), dropout(x, 0.5, true, &g2)));
    // identity when not training or p == 0
    Tensor small = tensor({1.5, -2, 3});
    check_tensor(dropout(small, 0.5, false), {3}, {1.5, -2, 3});
    check_tensor(dropout(small, 0.0, true, &g), {3}, {1.5, -2, 3});
    // p == 1 drops everything (PyTorch)
    check_tensor(dropout(small, 1.0, true, &g), {3}, {0, 0, 0});
  }
}
