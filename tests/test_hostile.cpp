// Hostile input held to docs/reliability.md: absurd sizes give an ember::Error before anything
// is allocated, non-finite values are caught where the user asks for it (clip_grad_norm_'s
// error_if_nonfinite, anomaly mode), the default generator is safe to share between threads,
// and results are bit-identical at a given thread count.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <set>
#include <thread>
#include <tuple>
#include <vector>

#include "ember/ember.h"
#include "test_util.h"

using namespace ember;

namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Runs f, which must throw ember::Error containing every needle, and CHECKs that no CPU block of
// a cached size class (64 KiB and up) was requested meanwhile: the size was refused before any
// allocator saw it. (The stand-in device's statistics do the same for fake:0.)
void refused(const std::function<void()>& f, const char* what, std::initializer_list<std::string> needles) {
  const CpuCacheStats before = cpu_cache_stats();
  const fake::MemoryStats fake_before = fake::memory_stats(0);
  ember_test::check_error(f, what, needles);
  const CpuCacheStats after = cpu_cache_stats();
  CHECK_MESSAGE(after.hits + after.misses == before.hits + before.misses, what << ": a large CPU block was requested");
  CHECK_MESSAGE(fake::memory_stats(0).peak_allocated == fake_before.peak_allocated,
                what << ": fake:0 allocated more than before");
}
#define CHECK_REFUSED(expr, ...) refused([&] { (void)(expr); }, #expr, {__VA_ARGS__})

Tensor f32_row(int64_t n) { return arange(0, static_cast<double>(n), 1, DType::f32); }

}  // namespace

TEST_SUITE("hostile") {
  // --- sizes ------------------------------------------------------------------------------------
  TEST_CASE("creation ops refuse shapes whose element or byte count overflows") {
    // 2^62 elements fit int64; 2^62 * 4 bytes wrapped to 0 and fill wrote past the allocation.
    CHECK_REFUSED(zeros({int64_t(1) << 31, int64_t(1) << 31}), "[zeros]", "(2147483648, 2147483648)", "overflows");
    CHECK_REFUSED(ones({int64_t(1) << 31, int64_t(1) << 31}), "[ones]", "(2147483648, 2147483648)");
    CHECK_REFUSED(full({int64_t(1) << 62, 2}, 1.0), "[full]", "(4611686018427387904, 2)");
    CHECK_REFUSED(empty({int64_t(1) << 40, int64_t(1) << 40}), "[empty]", "(1099511627776, 1099511627776)");
    CHECK_REFUSED(empty({3, int64_t(1) << 40, int64_t(1) << 40}, DType::f64), "[empty]", "overflows int64");
    CHECK_REFUSED(randn({int64_t(1) << 40, int64_t(1) << 40}), "[randn]", "(1099511627776, 1099511627776)");
    CHECK_REFUSED(rand({int64_t(1) << 62, 4}), "[uniform]");
    CHECK_REFUSED(bernoulli({int64_t(1) << 62, 4}, 0.5), "[bernoulli]");
    CHECK_REFUSED(randint(0, 3, {int64_t(1) << 62, 4}), "[randint]");
    CHECK_REFUSED(empty({2, -3}), "[empty]", "negative dimension -3", "(2, -3)");
    CHECK_REFUSED(arange(0.0, 1e300, 1.0), "[arange]", "more than int64 holds");
    CHECK_REFUSED(from_vector(std::vector<float>{1.0f}, {int64_t(1) << 40, int64_t(1) << 40}), "[from_vector]");
  }

  TEST_CASE("a refused draw leaves the generator's offset where it was") {
    Generator g(3);
    g.reserve(8);
    CHECK_REFUSED(randn({int64_t(1) << 40, int64_t(1) << 40}, {}, &g), "[randn]");
    CHECK(g.offset() == 2);
  }

  TEST_CASE("randint refuses ranges a double cannot hold exactly or the dtype cannot hold") {
    // The draw is computed in double: [0, INT64_MAX) rounded its top to 2^63, which does not
    // convert back to int64 (undefined behaviour); an i32 draw over [0, 2^40) did the same.
    CHECK_REFUSED(randint(0, kMax, {4}), "[randint]", "2^53");
    CHECK_REFUSED(randint(std::numeric_limits<int64_t>::min(), 0, {4}), "[randint]", "2^53");
    CHECK_REFUSED(randint(0, int64_t(1) << 40, {4}, DType::i32), "[randint]", "does not fit i32");
    CHECK_REFUSED(randint(-1, 1, {4}, DType::boolean), "[randint]", "does not fit");
    // The largest exact range still draws, and every value lies in it.
    const int64_t big = int64_t(1) << 53;
    const auto v = randint(-big, big, {64}).to_vector<int64_t>();
    for (int64_t x : v) CHECK((x >= -big && x < big));
    const auto w = randint(std::numeric_limits<int32_t>::min(), int64_t(std::numeric_limits<int32_t>::max()) + 1, {64},
                           DType::i32).to_vector<int32_t>();
    CHECK(w.size() == 64);
  }

  TEST_CASE("sizes that fit int64 but no machine: refused by the storage limit, not by the allocator") {
    // 2^45 f32 = 128 TiB; 2^44 f64 = 128 TiB on the stand-in device.
    CHECK_REFUSED(empty({int64_t(1) << 45}), "[empty]", "(35184372088832,)", "limit");
    CHECK_REFUSED(zeros({int64_t(1) << 44}, TensorOptions(DType::f64).with_device(Device::fake(0))), "[zeros]", "fake:0",
                  "limit");
    CHECK_REFUSED(Storage(size_t(1) << 50, Device::cpu()), "[storage]", "limit");
    CHECK_REFUSED(Storage(size_t(-1), Device::cpu()), "[storage]");
  }

  TEST_CASE("nn constructors refuse parameter shapes that overflow, naming the layer") {
    CHECK_REFUSED(nn::Linear(int64_t(1) << 62, 4), "[Linear]", "(4, 4611686018427387904)");
    CHECK_REFUSED(nn::Embedding(int64_t(1) << 40, int64_t(1) << 40), "[Embedding]", "(1099511627776, 1099511627776)");
    CHECK_REFUSED(nn::Conv1d(int64_t(1) << 40, int64_t(1) << 40, 8), "[Conv1d]");
    CHECK_REFUSED(nn::MultiheadAttention(int64_t(1) << 62, 1), "[MultiheadAttention]", "overflows");
    CHECK_REFUSED(nn::LSTM(nn::RNNOptions{.input_size = 4, .hidden_size = int64_t(1) << 62}), "[LSTM]", "overflows");
    CHECK_REFUSED(nn::GRU(nn::RNNOptions{.input_size = int64_t(1) << 40, .hidden_size = int64_t(1) << 30}), "[GRU]");
    CHECK_REFUSED(nn::LayerNorm(Shape{int64_t(1) << 40, int64_t(1) << 40}), "[LayerNorm]");
    CHECK_REFUSED(nn::ClassTree::balanced(int64_t(1) << 62, 2), "[ClassTree::balanced]", "32-bit");
  }

  TEST_CASE("pad refuses paddings whose sum overflows") {
    const Tensor x = randn({2, 8});
    CHECK_REFUSED(pad(x, {kMax, 1}), "[pad]", "(2, 8)");
    CHECK_REFUSED(pad(x, {1, kMax}), "[pad]", "(2, 8)");
    CHECK_REFUSED(pad(x, {int64_t(1) << 61, int64_t(1) << 61}), "[pad]", "(2, 4611686018427387912)");
  }

  TEST_CASE("conv1d refuses a padding or dilation whose span overflows") {
    const Tensor x = randn({1, 1, 8}), w = randn({1, 1, 3});
    // In release this once gave a (1, 1, 10) output from a length-8 input.
    CHECK_REFUSED(conv1d(x, w, Tensor(), 1, 0, kMax), "[conv1d]", "dilation 9223372036854775807");
    CHECK_REFUSED(conv1d(x, w, Tensor(), 1, int64_t(1) << 62), "[conv1d]", "padding 4611686018427387904");
    CHECK_REFUSED(conv1d(x, w, Tensor(), 1, kMax / 4), "[conv1d]");  // fits int64, not memory
    CHECK_REFUSED(conv1d_output_length(8, 3, 1, 0, kMax), "[conv1d]", "dilation");
    CHECK_REFUSED(conv1d_output_length(8, kMax, 1, 0, 2), "[conv1d]");
    CHECK_REFUSED(conv1d_backward_input(randn({1, 1, 6}), w, 8, 1, 0, kMax), "[conv1d_backward_input]");
    CHECK_REFUSED(conv1d_backward_weight(randn({1, 1, 6}), x, 3, 1, kMax, 1), "[conv1d_backward_weight]");
    CHECK_REFUSED(conv1d(x, w, Tensor(), 1, 0, 1, kMax), "[conv1d]");  // groups
  }

  TEST_CASE("pooling refuses a kernel and padding whose padded length overflows") {
    const Tensor x = randn({1, 2, 8});
    CHECK_REFUSED(nn::max_pool1d(x, kMax, 1, kMax / 2), "[max_pool1d]");
    CHECK_REFUSED(nn::avg_pool1d(x, kMax, 1, kMax / 2), "[avg_pool1d]");
  }

  TEST_CASE("one_hot, cat, split, expand, reshape, flatten and attention check their size arithmetic") {
    CHECK_REFUSED(one_hot(from_vector(std::vector<int64_t>{0, 1, 2}, {3}), kMax), "[one_hot]", "(3, 9223372036854775807)");
    const Tensor big = zeros({1}).expand({int64_t(1) << 62});  // a view: no memory
    CHECK_REFUSED(cat({big, big}, 0), "[cat]", "overflows");
    const Tensor x = f32_row(10);
    CHECK_REFUSED(split_sizes(x, {kMax, 1}, 0), "[split_sizes]", "(9223372036854775807, 1)");
    CHECK_REFUSED(zeros({1, 1}).expand({int64_t(1) << 40, int64_t(1) << 40}), "[expand]", "(1099511627776, 1099511627776)");
    CHECK_REFUSED(reshape(empty({0}), {int64_t(1) << 40, int64_t(1) << 40, 0}), "[reshape]");
    CHECK_REFUSED(view(empty({0}), {-1, int64_t(1) << 40, int64_t(1) << 40}), "[view]");
    CHECK_REFUSED(empty({0, int64_t(1) << 40, int64_t(1) << 40}), "[empty]", "strides");  // no elements, but strides
    const Tensor none = zeros({0, 1, 1}).expand({0, int64_t(1) << 40, int64_t(1) << 40});
    CHECK_REFUSED(flatten(none, 1, 2), "[flatten]");
    CHECK_REFUSED(narrow(x, 0, 2, kMax), "[narrow]", "size 10");
    // (1, 1, 2^32, 1) views: q @ k^T would have 2^64 scores.
    const Tensor q = zeros({1, 1, 1, 1}).expand({1, 1, int64_t(1) << 32, 1});
    CHECK_REFUSED(scaled_dot_product_attention(q, q, q), "[scaled_dot_product_attention]",
                  "(1, 1, 4294967296, 4294967296)");
    CHECK_REFUSED(sdpa_reference(q, q, q), "[sdpa_reference]");
  }

  TEST_CASE("huge steps and chunk counts give the right views instead of overflowing") {
    const Tensor x = f32_row(10);
    const Tensor s = slice(x, 0, 3, 10, kMax);
    CHECK(s.shape() == Shape{1});
    CHECK(s.item<float>() == 3.0f);
    CHECK(slice(x, 0, 0, 10, kMax - 1).shape() == Shape{1});
    CHECK(slice(x, 0, 10, 10, kMax).shape() == Shape{0});
    CHECK(slice(x, 0, 2, 10, 3).to_vector<float>() == std::vector<float>{2, 5, 8});  // ceil((10 - 2) / 3) = 3
    const Tensor u = unfold(x, 0, 3, kMax);
    CHECK(u.shape() == Shape{1, 3});
    CHECK(u.contiguous().to_vector<float>() == std::vector<float>{0, 1, 2});
    CHECK(chunk(x, kMax).size() == 10);
    CHECK(chunk(x, 3).size() == 3);
    CHECK(split(x, kMax).size() == 1);
    CHECK(split(x, kMax)[0].shape() == Shape{10});
    CHECK(narrow(x, 0, 10, 0).shape() == Shape{0});
  }

  // --- non-finite values --------------------------------------------------------------------------
  TEST_CASE("clip_grad_norm_ with error_if_nonfinite throws on a NaN or infinite norm and changes nothing") {
    for (double bad : {kNaN, kInf, -kInf}) {
      CAPTURE(bad);
      Tensor p = randn({3}), q = randn({2, 2});
      p.requires_grad_(true);
      q.requires_grad_(true);
      p.set_grad(tensor({0.5, bad, 1.0}));
      q.set_grad(full({2, 2}, 3.0));
      const std::vector<double> pg = p.grad().to_vector<double>(), qg = q.grad().to_vector<double>();
      const std::vector<double> pv = p.to_vector<double>();
      ember_test::check_error([&] { optim::clip_grad_norm_({p, q}, 1.0, 2.0, true); }, "error_if_nonfinite",
                              {"[clip_grad_norm_]", "total norm", "error_if_nonfinite"});
      ember_test::check_error([&] { optim::clip_grad_norm_({p, q}, 1.0, optim::kInfNorm, true); }, "inf norm",
                              {"[clip_grad_norm_]"});
      const std::vector<double> pg2 = p.grad().to_vector<double>();
      CHECK(pg2[0] == pg[0]);
      CHECK(std::isnan(pg2[1]) == std::isnan(pg[1]));
      CHECK(pg2[2] == pg[2]);
      CHECK(q.grad().to_vector<double>() == qg);
      // The training loop that checks: the step is skipped and the parameters stay finite.
      optim::SGD opt({p, q}, optim::SGDOptions{.lr = 0.1});
      try {
        optim::clip_grad_norm_(opt.parameters(), 1.0, 2.0, true);
        opt.step();
      } catch (const Error&) {
      }
      CHECK(p.to_vector<double>() == pv);
      // The default keeps PyTorch's error_if_nonfinite=false: a NaN norm makes every gradient
      // NaN; an infinite one scales every gradient by 0 (and the infinite elements to NaN).
      const double norm = optim::clip_grad_norm_({p, q}, 1.0).item<double>();
      CHECK(!std::isfinite(norm));
      CHECK(std::isnan(p.grad().to_vector<double>()[1]));
      if (std::isnan(bad)) CHECK(std::isnan(q.grad().to_vector<double>()[0]));
      else CHECK(q.grad().to_vector<double>()[0] == 0.0);
    }
  }

  TEST_CASE("clip_grad_norm_ with error_if_nonfinite and a finite norm clips exactly like without") {
    Tensor a = randn({5, 7}), b = randn({5, 7});
    a.requires_grad_(true);
    b.requires_grad_(true);
    const Tensor g = randn({5, 7}) * 10.0;
    a.set_grad(g.clone());
    b.set_grad(g.clone());
    const double na = optim::clip_grad_norm_({a}, 1.0, 2.0, true).item<double>();
    const double nb = optim::clip_grad_norm_({b}, 1.0, 2.0, false).item<double>();
    CHECK(na == nb);
    CHECK(equal(a.grad(), b.grad()));
    CHECK(a.grad().to_vector<float>() != g.to_vector<float>());  // it did clip
  }

  TEST_CASE("eps <= 0 or NaN is refused by Adam, AdamW, layer_norm and LayerNorm") {
    Tensor p = randn({3});
    p.requires_grad_(true);
    for (double eps : {0.0, -1e-8, kNaN, kInf}) {
      CAPTURE(eps);
      CHECK_EMBER_ERROR(optim::Adam({p}, optim::AdamOptions{.eps = eps}), "[Adam]", "eps");
      CHECK_EMBER_ERROR(optim::AdamW({p}, optim::AdamWOptions{.eps = eps}), "[AdamW]", "eps");
      CHECK_EMBER_ERROR(optim::Adam(std::vector<optim::ParamGroup>{{.params = {p}, .eps = eps}}), "[Adam]", "eps");
      CHECK_EMBER_ERROR(layer_norm(randn({2, 4}), {4}, Tensor(), Tensor(), eps), "[layer_norm]", "eps", "(2, 4)");
      CHECK_EMBER_ERROR(nn::LayerNorm(Shape{4}, eps), "[LayerNorm]", "eps");
    }
    CHECK_NOTHROW(optim::Adam({p}, optim::AdamOptions{.eps = 1e-30}));
  }

  TEST_CASE("anomaly mode names the node whose backward produced NaN or Inf") {
    Tensor x = tensor({1.0, 0.0, 2.0});
    x.requires_grad_(true);
    {
      autograd::DetectAnomalyGuard anomaly;
      CHECK(autograd::anomaly_detection_enabled());
      Tensor y = sum(log(x) * 2.0);  // d log(x) / dx = 1 / x: Inf at 0
      const std::string msg = ember_test::check_error([&] { y.backward(); }, "log backward",
                                                      {"[log]", "input 0", "1 infinite", "(3,)", "f32", "cpu"});
      CHECK(msg.find("[log]") == 0);
      Tensor z = sum(sqrt(x - 2.0));  // NaN forward and backward below 2
      ember_test::check_error([&] { z.backward(); }, "sqrt backward", {"[sqrt]", "NaN"});
      {
        autograd::DetectAnomalyGuard off(false);  // guards nest
        CHECK(!autograd::anomaly_detection_enabled());
        Tensor w = sum(log(x));
        CHECK_NOTHROW(w.backward());
      }
      CHECK(autograd::anomaly_detection_enabled());
      bool other_thread = true;
      std::thread([&] { other_thread = autograd::anomaly_detection_enabled(); }).join();
      CHECK(!other_thread);  // per thread
      x.set_grad(Tensor());
      Tensor ok = sum(x * x);
      CHECK_NOTHROW(ok.backward());  // finite gradients pass
    }
    CHECK(!autograd::anomaly_detection_enabled());
    x.set_grad(Tensor());
    Tensor y = sum(log(x));
    CHECK_NOTHROW(y.backward());  // off: the Inf reaches .grad
    CHECK(std::isinf(x.grad().to_vector<double>()[1]));
  }

  TEST_CASE("anomaly mode checks gradients on the test device") {
    const Device dev = ember_test::test_device();
    Tensor x = tensor({4.0, 0.0}, TensorOptions(DType::f32).with_device(dev));
    x.requires_grad_(true);
    autograd::DetectAnomalyGuard anomaly;
    Tensor y = sum(log(x));
    ember_test::check_error([&] { y.backward(); }, "log backward on the device", {"[log]", dev.str()});
  }

  TEST_CASE("pow refuses integer 0 to a negative power and computes other integer powers exactly") {
    const Tensor base = from_vector(std::vector<int64_t>{0, 2, 1, -1, 3}, {5});
    // Before: 0 ** -1 came back as INT64_MIN.
    CHECK_EMBER_ERROR(pow(base, -1.0), "[pow]", "integer 0", "-1", "(5,)");
    CHECK_EMBER_ERROR(pow(base, from_vector(std::vector<int64_t>{-1, 1, 1, 1, 1}, {5})), "[pow]", "integer 0");
    CHECK_EMBER_ERROR(pow(base, scalar_tensor(-2.0, DType::i64)), "[pow]", "integer 0");
    CHECK_EMBER_ERROR(pow(from_vector(std::vector<int32_t>{0}, {1}), -3.0), "[pow]", "i32");
    const Tensor nz = from_vector(std::vector<int64_t>{2, 1, -1, 3}, {4});
    CHECK(pow(nz, -1.0).to_vector<int64_t>() == std::vector<int64_t>{0, 1, -1, 0});
    CHECK(pow(nz, -3.0).to_vector<int64_t>() == std::vector<int64_t>{0, 1, -1, 0});
    CHECK(pow(nz, -2.0).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 1, 0});
    CHECK(pow(base, 3.0).to_vector<int64_t>() == std::vector<int64_t>{0, 8, 1, -1, 27});
    CHECK(pow(base, 0.0).to_vector<int64_t>() == std::vector<int64_t>{1, 1, 1, 1, 1});
    // Overflow wraps like integer multiplication (defined behaviour, PyTorch's result).
    uint64_t wrap = 1;
    for (int i = 0; i < 40; ++i) wrap *= 10;
    CHECK(pow(from_vector(std::vector<int64_t>{10}, {1}), 40.0).item<int64_t>() == static_cast<int64_t>(wrap));
    CHECK(pow(from_vector(std::vector<int64_t>{10}, {1}), from_vector(std::vector<int64_t>{40}, {1})).item<int64_t>() ==
          static_cast<int64_t>(wrap));
    // Floats keep IEEE semantics: 0 ** -1 = inf.
    CHECK(std::isinf(pow(tensor({0.0}), -1.0).item<double>()));
  }

  // --- threads and randomness ---------------------------------------------------------------------
  TEST_CASE("threads drawing from the default generator get distinct blocks and advance it exactly") {
    constexpr int kThreads = 4, kDraws = 4000;
    manual_seed(2024);
    using Block = std::tuple<float, float, float, float>;
    std::vector<std::vector<Block>> got(kThreads);
    std::vector<std::thread> pool;
    for (int t = 0; t < kThreads; ++t)
      pool.emplace_back([&got, t] {
        for (int i = 0; i < kDraws; ++i) {
          const std::vector<float> v = rand({4}).to_vector<float>();  // exactly one Philox block
          got[t].emplace_back(v[0], v[1], v[2], v[3]);
        }
      });
    for (auto& th : pool) th.join();
    CHECK(default_generator().offset() == uint64_t(kThreads) * kDraws);
    std::set<Block> all;
    for (const auto& v : got) all.insert(v.begin(), v.end());
    CHECK(all.size() == size_t(kThreads) * kDraws);  // no block drawn twice
    // And the blocks are exactly 0 .. kThreads * kDraws - 1 of the stream: nothing skipped.
    Generator seq(2024);
    std::set<Block> want;
    for (int i = 0; i < kThreads * kDraws; ++i) {
      const std::vector<float> v = rand({4}, {}, &seq).to_vector<float>();
      want.emplace(v[0], v[1], v[2], v[3]);
    }
    CHECK(all == want);
  }

  TEST_CASE("layers initialised on several threads from the default generator all differ") {
    constexpr int kThreads = 4, kLayers = 50;
    manual_seed(11);
    std::vector<std::vector<std::vector<float>>> weights(kThreads);
    std::vector<std::thread> pool;
    for (int t = 0; t < kThreads; ++t)
      pool.emplace_back([&weights, t] {
        for (int i = 0; i < kLayers; ++i) weights[t].push_back(nn::Linear(3, 5).weight.to_vector<float>());
      });
    for (auto& th : pool) th.join();
    std::set<std::vector<float>> distinct;
    for (const auto& w : weights) distinct.insert(w.begin(), w.end());
    CHECK(distinct.size() == size_t(kThreads) * kLayers);
    // Each Linear(3, 5) reserves ceil(15 / 4) + ceil(5 / 4) = 4 + 2 blocks.
    CHECK(default_generator().offset() == uint64_t(kThreads) * kLayers * 6);
  }

  TEST_CASE("a Generator copy is a snapshot of seed and offset") {
    Generator g(42);
    g.reserve(10);  // 3 blocks
    Generator h = g;
    CHECK(h.seed() == 42);
    CHECK(h.offset() == 3);
    CHECK(equal(rand({6}, {}, &g), rand({6}, {}, &h)));
    Generator k(1);
    k = g;
    CHECK(k.offset() == g.offset());
    CHECK(g.reserve(0) == g.offset());
    const uint64_t at = g.reserve(1);
    CHECK(at + 1 == g.offset());
  }

  TEST_CASE("cpu::set_num_threads sets the calling thread's count only") {
    const int n = cpu::num_threads();
    int seen = -1;
    std::thread([&] { seen = cpu::num_threads(); }).join();
    const int initial = seen;  // what a fresh thread starts with
    cpu::set_num_threads(initial + 3);
    CHECK(cpu::num_threads() == initial + 3);
    std::thread([&] { seen = cpu::num_threads(); }).join();
    CHECK(seen == initial);  // another thread keeps its own
    std::thread([&] {
      cpu::set_num_threads(1);
      seen = cpu::num_threads();
    }).join();
    CHECK(seen == 1);
    CHECK(cpu::num_threads() == initial + 3);  // and does not change ours
    cpu::set_num_threads(n);
  }

  // --- determinism --------------------------------------------------------------------------------
  TEST_CASE("a training step is bit-identical when repeated at the same thread count") {
    auto run = [] {
      Generator gen(99);
      nn::Sequential net;
      net.add(std::make_shared<nn::Linear>(37, 64, true, &gen));
      net.add(std::make_shared<nn::GELU>());
      net.add(std::make_shared<nn::Linear>(64, 11, true, &gen));
      const Tensor x = randn({129, 37}, {}, &gen);
      const Tensor target = randint(0, 11, {129}, DType::i64, &gen);
      optim::AdamW opt(net.parameters(), optim::AdamWOptions{.lr = 1e-2});
      std::vector<float> out;
      for (int step = 0; step < 3; ++step) {
        opt.zero_grad();
        Tensor loss = nn::cross_entropy(net.forward(x), target);
        loss.backward();
        opt.step();
        out.push_back(loss.item<float>());
      }
      for (const Tensor& p : net.parameters())
        for (float v : p.to_vector<float>()) out.push_back(v);
      return out;
    };
    const std::vector<float> a = run(), b = run();
    REQUIRE(a.size() == b.size());
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  }

  TEST_CASE("random draws and f32 sums do not depend on the thread count") {
    const int n = cpu::num_threads();
    auto draw_and_sum = [] {
      Generator gen(5);
      const Tensor x = randn({3, 1 << 18}, {}, &gen);  // long enough to split across threads
      std::vector<float> r = x.to_vector<float>();
      r.push_back(sum(x).item<float>());
      for (float v : sum(x, {1}).to_vector<float>()) r.push_back(v);
      for (float v : sum(x.t().contiguous(), {0}).to_vector<float>()) r.push_back(v);
      return r;
    };
    cpu::set_num_threads(1);
    const std::vector<float> one = draw_and_sum();
    cpu::set_num_threads(std::max(n, 2));
    const std::vector<float> many = draw_and_sum();
    cpu::set_num_threads(n);
    CHECK(std::memcmp(one.data(), many.data(), one.size() * sizeof(float)) == 0);
  }

  // --- views across Module::to --------------------------------------------------------------------
  TEST_CASE("a view taken before Module::to(DType) keeps the old storage (documented)") {
    nn::Linear lin(3, 2);
    const Tensor row = lin.weight.detach().select(0, 0);  // a view of the f32 weight
    const Tensor before = row.clone();
    lin.to(DType::f64);
    CHECK(lin.weight.dtype() == DType::f64);
    CHECK(row.dtype() == DType::f32);
    {
      NoGradGuard no_grad;
      lin.weight.fill_(7.0);
    }
    CHECK(equal(row, before));  // the old view no longer aliases the weight
  }
}
