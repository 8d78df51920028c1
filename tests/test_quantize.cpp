// Dynamic int8 quantisation (ember/nn/quantized.h): the int8 GEMM on every CPU path and on the
// device under test against an exact int64 reference, row quantisation, QuantizedLinear and
// QuantizedRNN against their f32 originals, quantize_dynamic on a tree, state dicts, and bad
// input.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu/int8_gemm.h"
#include "device_util.h"
#include "ember/autograd/grad_mode.h"
#include "ember/cpu.h"
#include "ember/io/safetensors.h"
#include "ember/nn/quantized.h"
#include "ember/ops/observe.h"

using namespace ember;
using namespace ember_test::device;

namespace {

std::vector<int8_t> random_i8(size_t n, std::mt19937& rng, int lo = -127, int hi = 127) {
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(d(rng));
  return v;
}

Tensor randn_f32(const Shape& s, uint64_t seed, Device dev = Device::cpu()) {
  Generator g(seed);
  return to_device(randn(s, DType::f32, &g), dev);
}

// The exact sums in int64.
std::vector<int64_t> ref_gemm(const std::vector<int8_t>& a, const std::vector<int8_t>& b, int64_t M, int64_t N,
                              int64_t K) {
  std::vector<int64_t> c(static_cast<size_t>(M * N), 0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      int64_t s = 0;
      for (int64_t k = 0; k < K; ++k) s += int64_t{a[m * K + k]} * int64_t{b[n * K + k]};
      c[m * N + n] = s;
    }
  return c;
}

std::vector<int64_t> as_i64(const Tensor& t) {
  std::vector<int32_t> v = contiguous(t.to(Device::cpu())).to_vector<int32_t>();
  return std::vector<int64_t>(v.begin(), v.end());
}

double rel_err(const Tensor& got, const Tensor& want) {
  std::vector<double> g = host_f64(got), w = host_f64(want);
  REQUIRE(g.size() == w.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    num += (g[i] - w[i]) * (g[i] - w[i]);
    den += w[i] * w[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = host_f64(a), y = host_f64(b);
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(x[i] - y[i]));
  return m;
}

// Runs f once on every CPU int8 path the machine has, restoring the best one after.
template <class F>
void on_every_isa(F&& f) {
  const cpu::Int8Isa best = cpu::int8_best_isa();
  for (cpu::Int8Isa isa : {cpu::Int8Isa::scalar, cpu::Int8Isa::avx2, cpu::Int8Isa::avx512_vnni}) {
    if (isa > best) continue;
    cpu::set_int8_isa(isa);
    CAPTURE(cpu::int8_isa_name(isa));
    f();
  }
  cpu::set_int8_isa(best);
}

struct OpNames : OpObserver {
  std::vector<std::string> names;
  void before(const OpCall&) override {}
  void after(const OpCall& c) override {
    if (c.depth == 0) names.push_back(c.def->name);
  }
};

}  // namespace

TEST_SUITE("quantize") {
  TEST_CASE("int8 GEMM equals the int64 reference on every CPU path and on the device") {
    MESSAGE("best CPU int8 path: " << std::string(cpu::int8_isa_name(cpu::int8_best_isa())));
    std::mt19937 rng(7);
    struct Size {
      int64_t M, N, K;
    };
    const std::vector<Size> sizes = {{1, 1, 1},     {1, 5, 3},     {3, 7, 1}, {5, 33, 17},   {9, 31, 64},
                                     {17, 65, 131}, {64, 40, 257}, {2, 3, 4}, {13, 96, 1023}};
    for (const Size& s : sizes) {
      CAPTURE(s.M);
      CAPTURE(s.N);
      CAPTURE(s.K);
      const auto a = random_i8(static_cast<size_t>(s.M * s.K), rng);
      const auto b = random_i8(static_cast<size_t>(s.N * s.K), rng);
      const std::vector<int64_t> want = ref_gemm(a, b, s.M, s.N, s.K);
      const Tensor qa = nn::pack_int8(a, {s.M, s.K}), qb = nn::pack_int8(b, {s.N, s.K});
      CHECK(qa.shape() == Shape{s.M, (s.K + 3) / 4});
      on_every_isa([&] { CHECK(as_i64(linear_int8(qa, qb)) == want); });
      CHECK(as_i64(linear_int8(qa.to(kCuda), qb.to(kCuda))) == want);
    }
  }

  TEST_CASE("int8 GEMM on two threads: panels and row chunks split across them") {
    std::mt19937 rng(8);
    const int threads = cpu::num_threads();
    cpu::set_num_threads(2);
    for (auto [M, N, K] : {std::array<int64_t, 3>{64, 96, 1024}, {200, 20, 300}, {3, 300, 515}}) {
      CAPTURE(M);
      const auto a = random_i8(static_cast<size_t>(M * K), rng), b = random_i8(static_cast<size_t>(N * K), rng);
      const std::vector<int64_t> want = ref_gemm(a, b, M, N, K);
      const Tensor qa = nn::pack_int8(a, {M, K}), qb = nn::pack_int8(b, {N, K});
      on_every_isa([&] { CHECK(as_i64(linear_int8(qa, qb)) == want); });
    }
    cpu::set_num_threads(threads);
  }

  TEST_CASE("int8 GEMM is exact at the extremes (no int16 saturation, no sign trouble)") {
    const int64_t M = 3, N = 4, K = 300;
    std::vector<int8_t> a(M * K), b(N * K);
    for (int64_t i = 0; i < M * K; ++i) a[i] = static_cast<int8_t>(i % 2 ? -127 : 127);
    for (int64_t i = 0; i < N * K; ++i) b[i] = static_cast<int8_t>((i / 2) % 2 ? -127 : 127);
    for (int64_t k = 0; k < K; ++k) a[k] = 127, b[k] = 127;  // row 0 x column 0: 127^2 K
    const std::vector<int64_t> want = ref_gemm(a, b, M, N, K);
    CHECK(want[0] == 127 * 127 * K);
    const Tensor qa = nn::pack_int8(a, {M, K}), qb = nn::pack_int8(b, {N, K});
    on_every_isa([&] { CHECK(as_i64(linear_int8(qa, qb)) == want); });
    CHECK(as_i64(linear_int8(qa.to(kCuda), qb.to(kCuda))) == want);
  }

  TEST_CASE("CUDA: dp4a GEMM and row quantisation match the CPU at sizes past one tile" *
            doctest::skip(!ecuda::is_available())) {
    std::mt19937 rng(9);
    const int64_t M = 300, N = 260, K = 1101;
    const auto a = random_i8(static_cast<size_t>(M * K), rng), b = random_i8(static_cast<size_t>(N * K), rng);
    const Tensor qa = nn::pack_int8(a, {M, K}), qb = nn::pack_int8(b, {N, K});
    const Device gpu = Device::cuda(0);
    CHECK(as_i64(linear_int8(qa.to(gpu), qb.to(gpu))) == ref_gemm(a, b, M, N, K));
    const Tensor x = randn_f32({M, K}, 10);
    QuantizedRows cpu_r = quantize_rows(x), gpu_r = quantize_rows(x.to(gpu));
    CHECK(nn::unpack_int8(gpu_r.q, K) == nn::unpack_int8(cpu_r.q, K));
    CHECK(max_abs_diff(gpu_r.scale, cpu_r.scale) == 0);
    const Tensor y = linear_int8(x, qb, cpu_r.scale.narrow(0, 0, N), Tensor());
    const Tensor yg = linear_int8(x.to(gpu), qb.to(gpu), cpu_r.scale.narrow(0, 0, N).to(gpu), Tensor());
    CHECK(rel_err(yg, y) < 1e-6);
  }

  TEST_CASE("quantize_rows: scales, codes and the round-trip bound") {
    const int64_t K = 37;
    std::mt19937 rng(11);
    std::normal_distribution<float> nd(0.f, 3.f);
    std::vector<float> v(static_cast<size_t>(6 * K));
    for (auto& e : v) e = nd(rng);
    for (int64_t k = 0; k < K; ++k) v[static_cast<size_t>(2 * K + k)] = 0.f;  // row 2: all zero
    const Tensor x = from_vector(v, {2, 3, K});
    for (Device dev : {kCpu, kCuda}) {
      CAPTURE(dev);
      QuantizedRows r = quantize_rows(x.to(dev));
      CHECK(r.q.shape() == Shape{2, 3, (K + 3) / 4});
      CHECK(r.scale.shape() == Shape{2, 3});
      CHECK(r.q.dtype() == DType::i32);
      const std::vector<int8_t> q = nn::unpack_int8(r.q, K);
      const std::vector<float> sc = r.scale.to(kCpu).to_vector<float>();
      for (int64_t m = 0; m < 6; ++m) {
        float amax = 0;
        int qmax = 0;
        for (int64_t k = 0; k < K; ++k) {
          amax = std::max(amax, std::fabs(v[m * K + k]));
          qmax = std::max(qmax, std::abs(int{q[m * K + k]}));
        }
        CHECK(sc[m] == doctest::Approx(amax / 127.f).epsilon(1e-6));
        CHECK(qmax == (m == 2 ? 0 : 127));  // the largest value maps to +-127
        for (int64_t k = 0; k < K; ++k)
          CHECK(std::fabs(v[m * K + k] - q[m * K + k] * sc[m]) <= 0.5f * sc[m] * 1.0001f + 1e-7f);
      }
      // The padding bytes are zero (a dp4a reading a whole element adds nothing).
      const std::vector<int32_t> raw = r.q.to(kCpu).to_vector<int32_t>();
      const auto* bytes = reinterpret_cast<const int8_t*>(raw.data());
      for (int64_t m = 0; m < 6; ++m)
        for (int64_t k = K; k < (K + 3) / 4 * 4; ++k) CHECK(bytes[m * ((K + 3) / 4) * 4 + k] == 0);
      // Every CPU path writes the same codes and scales.
      on_every_isa([&] {
        QuantizedRows o = quantize_rows(x);
        CHECK(nn::unpack_int8(o.q, K) == q);
        CHECK(o.scale.to_vector<float>() == sc);
      });
      const Tensor back = nn::dequantize_rows(r.q, r.scale, K);
      CHECK(back.shape() == x.shape());
      CHECK(max_abs_diff(back, x) <= 0.5 * 3.0 * 4.5 / 127.0 + 1e-6);  // |x| < 4.5 sigma
    }
  }

  TEST_CASE("a row with inf or NaN: zero codes, NaN scale, NaN outputs for that row only") {
    const float inf = std::numeric_limits<float>::infinity();
    const Tensor x = from_vector(std::vector<float>{1, 2, inf, 4, 5, 6, 7, 8, 1, -1, 0.5f, 2}, {3, 4});
    on_every_isa([&] {
      QuantizedRows r = quantize_rows(x);
      const std::vector<float> sc = r.scale.to_vector<float>();
      CHECK(std::isnan(sc[0]));
      CHECK(sc[1] == doctest::Approx(8.f / 127.f));
      CHECK(nn::unpack_int8(r.q, 4)[0] == 0);
      const Tensor y = linear_int8(x, nn::pack_int8({1, 1, 1, 1}, {1, 4}), from_vector(std::vector<float>{1}, {1}));
      const std::vector<float> v = y.to_vector<float>();
      CHECK(std::isnan(v[0]));
      CHECK(std::isfinite(v[1]));
      CHECK(std::isfinite(v[2]));
    });
  }

  TEST_CASE("linear_int8 against f32 linear and against its own dequantised formula") {
    const int64_t M = 16, K = 301, N = 70;
    const Tensor x = randn_f32({2, M / 2, K}, 3), w = randn_f32({N, K}, 4) * 0.05, b = randn_f32({N}, 5);
    const Tensor want = linear(x, w, b);
    QuantizedRows qw = quantize_rows(w);
    for (Device dev : {kCpu, kCuda}) {
      CAPTURE(dev);
      const Tensor got = linear_int8(x.to(dev), qw.q.to(dev), qw.scale.to(dev), b.to(dev));
      CHECK(got.shape() == Shape{2, M / 2, N});
      CHECK(got.dtype() == DType::f32);
      CHECK(rel_err(got, want) < 0.02);
      // Exactly the dequantised product of the two quantised operands (f32 rounding only).
      QuantizedRows qx = quantize_rows(x);
      const Tensor ref = linear(nn::dequantize_rows(qx.q, qx.scale, K), nn::dequantize_rows(qw.q, qw.scale, K), b);
      CHECK(rel_err(got, ref) < 1e-5);
    }
    // f16 and bf16 inputs are quantised from their f32 values.
    for (DType dt : {DType::f16, DType::bf16, DType::f64})
      CHECK(rel_err(linear_int8(to_dtype(x, dt), qw.q, qw.scale, b), want) < 0.03);
    // Without a bias.
    CHECK(rel_err(linear_int8(x, qw.q, qw.scale), linear(x, w)) < 0.02);
  }

  TEST_CASE("the op path sees quantize_rows and linear_int8") {
    const Tensor x = randn_f32({4, 9}, 1), w = randn_f32({5, 9}, 2);
    QuantizedRows qw = quantize_rows(w);
    OpNames seen;
    {
      ObserveOps guard(seen);
      (void)quantize_rows(x);
      (void)linear_int8(x, qw.q, qw.scale);
    }
    CHECK(seen.names == std::vector<std::string>{"quantize_rows", "linear_int8"});
  }

  TEST_CASE("QuantizedLinear and quantize_dynamic on a Sequential") {
    Generator gen(21);
    auto make = [&] {
      auto m = std::make_shared<nn::Sequential>();
      m->add(std::make_shared<nn::Linear>(64, 96, true, &gen))
          .add(std::make_shared<nn::ReLU>())
          .add(std::make_shared<nn::Linear>(96, 10, true, &gen));
      return m;
    };
    auto model = make();
    const Tensor x = randn_f32({8, 64}, 22);
    Tensor want;
    {
      NoGradGuard ng;
      want = model->forward(x);
    }
    const int64_t f32_bytes = nn::state_dict_bytes(*model);
    CHECK(nn::quantize_dynamic(*model) == 2);
    CHECK(model->parameters().empty());  // only buffers are left
    auto q0 = nn::child<nn::QuantizedLinear>(*model, "0");
    CHECK(q0->weight.shape() == Shape{96, 16});
    CHECK(q0->weight.dtype() == DType::i32);
    const StateDict sd = model->state_dict();
    CHECK(sd.find("0.weight").dtype() == DType::i32);
    CHECK(sd.find("0.weight_scale").shape() == Shape{96});
    CHECK(sd.find("2.bias").shape() == Shape{10});
    const double ratio = static_cast<double>(nn::state_dict_bytes(*model)) / static_cast<double>(f32_bytes);
    CHECK(ratio < 0.3);
    const Tensor got = model->forward(x);  // grad mode on: fine, nothing requires a gradient
    CHECK(rel_err(got, want) < 0.03);

    // The state dict round-trips through a .safetensors file into a fresh quantised model.
    const std::string path = "test_quantize_roundtrip.safetensors";
    io::save_safetensors(path, model->state_dict());
    auto other = make();
    nn::quantize_dynamic(*other);
    CHECK(max_abs_diff(other->forward(x), got) > 0);  // different weights before loading
    other->load_state_dict(io::load_safetensors(path));
    std::remove(path.c_str());
    CHECK(max_abs_diff(other->forward(x), got) == 0);

    // On the device under test: the same numbers (the CPU kernel runs on fake:0).
    model->to(kCuda);
    const Tensor gd = model->forward(x.to(kCuda));
    CHECK(gd.device() == kCuda);
    if (kCuda.is_fake())
      CHECK(max_abs_diff(gd, got) == 0);
    else
      CHECK(rel_err(gd, got) < 1e-5);
  }

  TEST_CASE("QuantizedConv1d stays close to Conv1d (stride, padding, dilation)") {
    struct Case {
      int64_t C, O, K;
      nn::Conv1dOptions o;
    };
    const std::vector<Case> cases = {{3, 8, 3, {}},
                                     {5, 7, 4, {.stride = 2, .padding = 3, .dilation = 2}},
                                     {1, 4, 1, {.bias = false}},
                                     {16, 9, 9, {.padding = 4, .dilation = 3}}};
    for (const Case& c : cases) {
      CAPTURE(c.K);
      Generator gen(50 + c.K);
      nn::Conv1d conv(c.C, c.O, c.K, c.o, &gen);
      const Tensor x = randn_f32({3, c.C, 29}, 60 + c.K);
      NoGradGuard ng;
      const Tensor want = conv.forward(x);
      auto q = nn::QuantizedConv1d::from_float(conv);
      const Tensor got = q->forward(x);
      CHECK(got.shape() == want.shape());
      CHECK(rel_err(got, want) < 0.03);
      q->to(kCuda);
      CHECK(rel_err(q->forward(x.to(kCuda)), got) < 1e-5);
    }
  }

  TEST_CASE("QuantizedEmbedding: every row within half a step of the f32 table") {
    Generator gen(70);
    nn::Embedding emb(50, 13, 0, &gen);
    auto q = nn::QuantizedEmbedding::from_float(emb);
    const Tensor ids = from_vector(std::vector<int64_t>{0, 3, 49, 7, 7, 12}, {2, 3});
    NoGradGuard ng;
    const Tensor want = emb.forward(ids), got = q->forward(ids);
    CHECK(got.shape() == Shape{2, 3, 13});
    const double step = 2.0 * 0.5 / 127.0;  // weights ~ N(0, 1): max|row| < ~4
    CHECK(max_abs_diff(got, want) <= 4.0 * step);
    CHECK(host_f64(got.select(0, 0).select(0, 0)) == std::vector<double>(13, 0.0));  // the padding row
    q->to(kCuda);
    CHECK(max_abs_diff(q->forward(ids.to(kCuda)), got) == 0);
    CHECK_EMBER_ERROR(q->forward(from_vector(std::vector<int64_t>{50}, {1})), "50");
    CHECK_EMBER_ERROR(q->forward(from_vector(std::vector<float>{1}, {1})), "QuantizedEmbedding", "integers");
  }

  TEST_CASE("QuantizedRNN (LSTM, GRU, RNN) stays close to the f32 module") {
    for (int mode = 0; mode < 3; ++mode) {
      CAPTURE(mode);
      nn::RNNOptions o;
      o.input_size = 12;
      o.hidden_size = 16;
      o.num_layers = 2;
      o.bidirectional = true;
      o.batch_first = true;
      Generator gen(31 + mode);
      std::shared_ptr<nn::RNNBase> rnn;
      if (mode == 0)
        rnn = std::make_shared<nn::LSTM>(o, &gen);
      else if (mode == 1)
        rnn = std::make_shared<nn::GRU>(o, &gen);
      else
        rnn = std::make_shared<nn::RNN>(o, &gen);
      const Tensor x = randn_f32({3, 7, 12}, 40);
      const Tensor lengths = from_vector(std::vector<int64_t>{7, 4, 1}, {3});
      const Tensor h0 = randn_f32({4, 3, 16}, 41) * 0.5;
      const Tensor c0 = mode == 0 ? randn_f32({4, 3, 16}, 42) * 0.5 : Tensor();
      NoGradGuard ng;
      const nn::RNNResult want = rnn->forward(x, h0, c0, lengths);
      auto q = nn::QuantizedRNN::from_float(*rnn);
      const nn::RNNResult got = q->forward(x, h0, c0, lengths);
      CHECK(got.output.shape() == want.output.shape());
      CHECK(max_abs_diff(got.output, want.output) < 0.05);
      CHECK(max_abs_diff(got.h_n, want.h_n) < 0.05);
      if (mode == 0) CHECK(max_abs_diff(got.c_n, want.c_n) < 0.05);
      // Past each sequence's length the output is zero, as in the f32 module.
      CHECK(host_f64(got.output.select(0, 2).select(0, 3)) == std::vector<double>(32, 0.0));
      // fake:0 / the GPU against the CPU.
      q->to(kCuda);
      const nn::RNNResult gd = q->forward(x.to(kCuda), h0.to(kCuda), c0.defined() ? c0.to(kCuda) : Tensor(), lengths);
      CHECK(max_abs_diff(gd.output, got.output) < (kCuda.is_fake() ? 1e-7 : 1e-4));
      // The tree form: quantize_dynamic finds it and names it.
      struct Wrap : nn::Module {
        explicit Wrap(std::shared_ptr<nn::RNNBase> r) { register_module("rnn", r); }
      } wrap(rnn);
      CHECK(nn::quantize_dynamic(wrap) == 1);
      CHECK(nn::child_module(wrap, "rnn")->type_name().rfind("Quantized", 0) == 0);
      CHECK(wrap.state_dict().find("rnn.weight_hh_l1_reverse").dtype() == DType::i32);
      CHECK(wrap.state_dict().find("rnn.weight_hh_scale_l1_reverse").shape() == Shape{(mode == 0   ? 4
                                                                                       : mode == 1 ? 3
                                                                                                   : 1) *
                                                                                      16});
    }
  }

  TEST_CASE("bad input names the op, the shapes and dtypes") {
    const Tensor x = randn_f32({4, 9}, 1), w = randn_f32({5, 9}, 2);
    QuantizedRows qw = quantize_rows(w);
    CHECK_EMBER_ERROR(linear_int8(x, w, qw.scale), "linear_int8", "i32", "f32");
    CHECK_EMBER_ERROR(linear_int8(randn_f32({4, 13}, 3), qw.q, qw.scale), "linear_int8", "13 features");
    CHECK_EMBER_ERROR(linear_int8(x, qw.q, Tensor()), "linear_int8", "weight_scale");
    CHECK_EMBER_ERROR(linear_int8(x, qw.q, randn_f32({4}, 1)), "linear_int8", "weight_scale", "(5)");
    CHECK_EMBER_ERROR(linear_int8(x, qw.q, qw.scale, randn_f32({3}, 1)), "linear_int8", "bias");
    CHECK_EMBER_ERROR(linear_int8(x, qw.q.to(kCuda), qw.scale.to(kCuda)), "linear_int8", "device");
    CHECK_EMBER_ERROR(linear_int8(quantize_rows(x).q, qw.q, qw.scale), "linear_int8", "raw int32");
    CHECK_EMBER_ERROR(quantize_rows(from_vector(std::vector<int64_t>{1, 2}, {2})), "quantize_rows", "floating");
    // Gradients: the quantised ops and modules are inference-only.
    Tensor xg = randn_f32({4, 9}, 5);
    xg.requires_grad_(true);
    CHECK_EMBER_ERROR(linear_int8(xg, qw.q, qw.scale), "linear_int8", "inference-only");
    Generator gen(3);
    nn::Linear lin(9, 5, true, &gen);
    auto ql = nn::QuantizedLinear::from_float(lin);
    CHECK_EMBER_ERROR(ql->forward(xg), "QuantizedLinear", "inference-only");
    CHECK_EMBER_ERROR(ql->forward(randn_f32({4, 8}, 1)), "QuantizedLinear", "in_features = 9");
    {
      NoGradGuard ng;  // fine without recording
      CHECK(ql->forward(xg).shape() == Shape{4, 5});
    }
    // A module whose tensors sit on two devices is refused, and nothing changes.
    struct Net : nn::Module {
      std::shared_ptr<nn::Linear> a, b;
      explicit Net(Generator* g) {
        a = register_module("a", std::make_shared<nn::Linear>(4, 4, true, g));
        b = register_module("b", std::make_shared<nn::Linear>(4, 4, true, g));
      }
    } net(&gen);
    net.b->bias = net.b->bias.to(kCuda);
    CHECK_EMBER_ERROR(nn::quantize_dynamic(net), "quantize_dynamic", "Linear", "tensors on cpu and");
    CHECK(nn::child_module(net, "a")->type_name() == "Linear");
    CHECK_EMBER_ERROR(nn::child<nn::QuantizedLinear>(net, "a"), "child", "Linear");
    CHECK_EMBER_ERROR(nn::child_module(net, "zz"), "child", "zz");
    CHECK_EMBER_ERROR(net.replace_module("zz", std::make_shared<nn::ReLU>()), "replace_module", "zz");
    nn::RNNOptions o;
    o.input_size = 3;
    o.hidden_size = 4;
    auto q = nn::QuantizedRNN::from_float(nn::GRU(o, &gen));
    CHECK_EMBER_ERROR(q->forward(randn_f32({2, 2, 5}, 1)), "QuantizedGRU", "input_size = 3");
    CHECK_EMBER_ERROR(q->forward(randn_f32({2, 2, 3}, 1), Tensor(), randn_f32({1, 2, 4}, 1)), "QuantizedGRU", "c0");
  }
}
