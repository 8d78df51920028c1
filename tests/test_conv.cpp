// conv1d: the op, its backward primitives, the composed reference, both CPU paths,
// nn::Conv1d, and CUDA-vs-CPU parity.
//
// - The op harness (tests/op_harness.h) runs conv1d, conv1d_backward_input and
//   conv1d_backward_weight over stride/padding/dilation/groups combinations at odd sizes:
//   forward on contiguous, transposed and strided-slice inputs, gradcheck in f64 on each
//   layout, and f16/bf16 against f32 — once per CPU path (direct, im2col, automatic).
// - A naive loop reference written here, in double, pins conv1d_reference's values; conv1d
//   and its gradients are held against conv1d_reference's (through pad/unfold/matmul autograd).
// - direct == im2col on larger f32 shapes, forward and both backward primitives.
// - Every bad-input class raises ember::Error naming the op and the shapes.
// - CUDA vs CPU (f32, f64, f16, bf16) with allocation poisoning, skipped without a GPU.
// - The tensor-core kernels (f16, bf16, f32 with TF32) on shapes the dispatch rule gives them,
//   every pass against the CPU, skipped without a GPU.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ember/cuda.h"
#include "ember/nn/conv.h"
#include "ember/ops/conv.h"
#include "op_harness.h"
#include "test_util.h"

using namespace ember;
using ember_test::check_close;
using ember_test::close_ratio;
using ember_test::list_str;
using ember_test::to_string;
using ember_test::vals;

namespace {

struct Combo {
  std::string label;
  Shape x, w;  // (N, C_in, L), (C_out, C_in/groups, K)
  int64_t stride, padding, dilation, groups;
  bool bias;
  int64_t L_out() const { return conv1d_output_length(x[2], w[2], stride, padding, dilation); }
  Shape y() const { return {x[0], w[0], L_out()}; }
  Shape b() const { return {w[0]}; }
};

// Odd and prime sizes; every argument off its default somewhere; depthwise; a 1x1 kernel
// (im2col skips the unfold); stride > kernel (skipped inputs); padding wider than the
// kernel; a layer large enough (5 x 16 x 5 weights) that the automatic rule picks im2col;
// rows long enough for the direct path's register tiles.
const std::vector<Combo>& combos() {
  static const std::vector<Combo> all = {
      {"plain", {2, 3, 11}, {5, 3, 3}, 1, 0, 1, 1, true},
      {"stride 2, padding 1, groups 2", {3, 4, 13}, {6, 2, 3}, 2, 1, 1, 2, true},
      {"depthwise k5, padding 2, dilation 2", {1, 6, 17}, {6, 1, 5}, 1, 2, 2, 6, true},
      {"1x1, no bias", {2, 5, 7}, {7, 5, 1}, 1, 0, 1, 1, false},
      {"even k4, stride 3, padding 3", {2, 3, 10}, {4, 3, 4}, 3, 3, 1, 1, true},
      {"k2, stride 2, dilation 3, groups 2, no bias", {2, 4, 9}, {2, 2, 2}, 2, 0, 3, 2, false},
      {"stride 4 > k3, padding 4", {1, 2, 7}, {3, 2, 3}, 4, 4, 1, 1, true},
      {"long reduction (im2col), padding 2", {2, 16, 9}, {5, 16, 5}, 1, 2, 1, 1, true},
      // Rows long enough for the direct path's register tiles (64 and 16 wide in f64).
      {"depthwise, long rows", {1, 2, 150}, {2, 1, 3}, 1, 1, 1, 2, true},
      {"groups 2, dilation 3, padding 3, long rows", {1, 2, 97}, {4, 1, 3}, 1, 3, 3, 2, false},
  };
  return all;
}

// Makes every CPU conv1d in its scope use one path.
struct PathGuard {
  Conv1dCpuPath prev;
  explicit PathGuard(Conv1dCpuPath p) : prev(conv1d_cpu_path()) { set_conv1d_cpu_path(p); }
  ~PathGuard() { set_conv1d_cpu_path(prev); }
  PathGuard(const PathGuard&) = delete;
  PathGuard& operator=(const PathGuard&) = delete;
};

const char* path_name(Conv1dCpuPath p) {
  switch (p) {
    case Conv1dCpuPath::automatic: return "automatic";
    case Conv1dCpuPath::direct: return "direct";
    case Conv1dCpuPath::im2col: return "im2col";
  }
  return "?";
}
const std::vector<Conv1dCpuPath> kPaths = {Conv1dCpuPath::direct, Conv1dCpuPath::im2col,
                                           Conv1dCpuPath::automatic};

Tensor randn64(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return randn(s, DType::f64, &g);
}

// y[n, co, j] straight from the definition, in double.
std::vector<double> naive_conv1d(const Combo& c, const std::vector<double>& x, const std::vector<double>& w,
                                 const std::vector<double>& b) {
  const int64_t N = c.x[0], C_in = c.x[1], L = c.x[2], C_out = c.w[0], cg = c.w[1], K = c.w[2];
  const int64_t og = C_out / c.groups, L_out = c.L_out();
  std::vector<double> y(static_cast<size_t>(N * C_out * L_out));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t co = 0; co < C_out; ++co)
      for (int64_t j = 0; j < L_out; ++j) {
        double acc = b.empty() ? 0.0 : b[co];
        for (int64_t ci = 0; ci < cg; ++ci)
          for (int64_t k = 0; k < K; ++k) {
            const int64_t pos = j * c.stride - c.padding + k * c.dilation;
            if (pos < 0 || pos >= L) continue;
            acc += w[(co * cg + ci) * K + k] * x[(n * C_in + (co / og) * cg + ci) * L + pos];
          }
        y[(n * C_out + co) * L_out + j] = acc;
      }
  return y;
}

std::vector<ember_test::OpCase> harness_cases() {
  using ember_test::OpCase;
  std::vector<OpCase> cases;
  for (const Combo& c : combos()) {
    const std::string tag = " [" + c.label + "]";
    std::vector<Shape> fwd = {c.x, c.w};
    if (c.bias) fwd.push_back(c.b());
    OpCase f{"conv1d" + tag,
             {{to_string(c.x) + " * " + to_string(c.w), fwd}},
             [c](const std::vector<Tensor>& v) {
               return conv1d(v[0], v[1], c.bias ? v[2] : Tensor(), c.stride, c.padding, c.dilation, c.groups);
             },
             ember_test::kLowPrecision};
    cases.push_back(f);
    OpCase bi{"conv1d_backward_input" + tag,
              {{"grad_out " + to_string(c.y()) + ", weight " + to_string(c.w), {c.y(), c.w}}},
              [c](const std::vector<Tensor>& v) {
                return conv1d_backward_input(v[0], v[1], c.x[2], c.stride, c.padding, c.dilation, c.groups);
              },
              ember_test::kLowPrecision};
    cases.push_back(bi);
    OpCase bw{"conv1d_backward_weight" + tag,
              {{"grad_out " + to_string(c.y()) + ", input " + to_string(c.x), {c.y(), c.x}}},
              [c](const std::vector<Tensor>& v) {
                return conv1d_backward_weight(v[0], v[1], c.w[2], c.stride, c.padding, c.dilation, c.groups);
              },
              ember_test::kLowPrecision};
    cases.push_back(bw);
  }
  return cases;
}

}  // namespace

TEST_SUITE("conv") {
  TEST_CASE("op harness: conv1d and both backward primitives on every CPU path (layouts, f64 gradcheck, f16/bf16)") {
    const auto cases = harness_cases();
    for (Conv1dCpuPath p : kPaths) {
      CAPTURE(path_name(p));
      PathGuard guard(p);
      ember_test::run_cases(cases);
    }
  }

  TEST_CASE("conv1d_reference matches a naive loop; conv1d matches conv1d_reference") {
    uint64_t seed = 100;
    for (const Combo& c : combos()) {
      CAPTURE(c.label);
      Tensor x = randn64(c.x, ++seed), w = randn64(c.w, ++seed), b = c.bias ? randn64(c.b(), ++seed) : Tensor();
      const std::vector<double> want = naive_conv1d(c, vals(x), vals(w), c.bias ? vals(b) : std::vector<double>{});
      Tensor ref = conv1d_reference(x, w, b, c.stride, c.padding, c.dilation, c.groups);
      REQUIRE(ref.shape() == c.y());
      CHECK_MESSAGE(close_ratio(vals(ref), want, 1e-12, 1e-12) <= 1.0,
                    "reference " << list_str(vals(ref)) << " != naive " << list_str(want));
      for (Conv1dCpuPath p : kPaths) {
        CAPTURE(path_name(p));
        PathGuard guard(p);
        Tensor y = conv1d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
        CHECK(y.dtype() == DType::f64);
        check_close(y, ref, 1e-12, 1e-12);
      }
    }
  }

  TEST_CASE("gradients of conv1d equal the reference's autograd, and the backward primitives equal them too") {
    uint64_t seed = 200;
    for (const Combo& c : combos()) {
      for (Conv1dCpuPath p : kPaths) {
        CAPTURE(c.label);
        CAPTURE(path_name(p));
        PathGuard guard(p);
        Tensor x = randn64(c.x, ++seed), w = randn64(c.w, ++seed);
        Tensor b = c.bias ? randn64(c.b(), ++seed) : Tensor();
        Tensor G = randn64(c.y(), ++seed);  // the gradient arriving at y
        auto grads = [&](bool reference) {
          Tensor xr = x.clone().requires_grad_(), wr = w.clone().requires_grad_();
          Tensor br = c.bias ? b.clone().requires_grad_() : Tensor();
          Tensor y = reference ? conv1d_reference(xr, wr, br, c.stride, c.padding, c.dilation, c.groups)
                               : conv1d(xr, wr, br, c.stride, c.padding, c.dilation, c.groups);
          y.backward(G);
          return std::vector<Tensor>{xr.grad(), wr.grad(), c.bias ? br.grad() : Tensor()};
        };
        const auto want = grads(true), got = grads(false);
        check_close(got[0], want[0], 1e-10, 1e-10);
        check_close(got[1], want[1], 1e-10, 1e-10);
        if (c.bias) check_close(got[2], want[2], 1e-10, 1e-10);
        check_close(conv1d_backward_input(G, w, c.x[2], c.stride, c.padding, c.dilation, c.groups), want[0], 1e-10,
                    1e-10);
        check_close(conv1d_backward_weight(G, x, c.w[2], c.stride, c.padding, c.dilation, c.groups), want[1], 1e-10,
                    1e-10);
      }
    }
  }

  TEST_CASE("direct and im2col paths agree in f32 on larger shapes (forward, backward-input, backward-weight)") {
    const std::vector<Combo> big = {
        {"W2 layer 2 shape, smaller batch", {3, 128, 61}, {128, 128, 5}, 1, 2, 1, 1, true},
        {"groups 4, stride 2, dilation 2", {5, 24, 37}, {32, 6, 5}, 2, 3, 2, 4, true},
        {"depthwise 33 channels", {4, 33, 50}, {33, 1, 7}, 1, 3, 1, 33, true},
        {"1x1 32 -> 48", {6, 32, 29}, {48, 32, 1}, 1, 0, 1, 1, false},
        {"batch 1 (GEMMs threaded by Eigen)", {1, 40, 101}, {24, 40, 3}, 1, 1, 1, 1, true},
        {"depthwise k9, long rows (128- and 16-wide tiles)", {2, 8, 700}, {8, 1, 9}, 1, 4, 1, 8, true},
        {"multiplier 2, dilation 2", {3, 6, 333}, {12, 2, 5}, 1, 5, 2, 3, false},
    };
    uint64_t seed = 300;
    for (const Combo& c : big) {
      CAPTURE(c.label);
      Generator g(++seed);
      Tensor x = randn(c.x, {}, &g), w = randn(c.w, {}, &g), b = c.bias ? randn(c.b(), {}, &g) : Tensor();
      Tensor G = randn(c.y(), {}, &g);
      std::vector<Tensor> out[2];
      int i = 0;
      for (Conv1dCpuPath p : {Conv1dCpuPath::direct, Conv1dCpuPath::im2col}) {
        PathGuard guard(p);
        out[i++] = {conv1d(x, w, b, c.stride, c.padding, c.dilation, c.groups),
                    conv1d_backward_input(G, w, c.x[2], c.stride, c.padding, c.dilation, c.groups),
                    conv1d_backward_weight(G, x, c.w[2], c.stride, c.padding, c.dilation, c.groups)};
      }
      // f32 sums of up to C_in*K (forward) or N*L_out (weight) terms of size ~1, in different orders.
      check_close(out[0][0], out[1][0], 1e-4, 1e-4);
      check_close(out[0][1], out[1][1], 1e-4, 1e-4);
      check_close(out[0][2], out[1][2], 1e-4, 1e-4);
      // And both against f64.
      Tensor y64 = conv1d(x.to(DType::f64), w.to(DType::f64), c.bias ? b.to(DType::f64) : Tensor(), c.stride,
                          c.padding, c.dilation, c.groups);
      check_close(out[0][0], y64, 1e-4, 1e-4);
    }
  }

  TEST_CASE("f16 and bf16 inputs give their own dtype; an empty batch gives empty outputs and zero weight gradients") {
    const Combo& c = combos()[1];
    for (DType dt : {DType::f16, DType::bf16}) {
      Tensor x = randn64(c.x, 1).to(dt), w = randn64(c.w, 2).to(dt), b = randn64(c.b(), 3).to(dt);
      Tensor y = conv1d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
      CHECK(y.dtype() == dt);
      CHECK(y.shape() == c.y());
    }
    Tensor x = zeros({0, 4, 13}, DType::f64), w = randn64(c.w, 4);
    Tensor y = conv1d(x, w, Tensor(), c.stride, c.padding, c.dilation, c.groups);
    CHECK(y.shape() == Shape{0, 6, c.L_out()});
    Tensor dw = conv1d_backward_weight(zeros({0, 6, c.L_out()}, DType::f64), x, 3, c.stride, c.padding, c.dilation,
                                       c.groups);
    CHECK(dw.shape() == c.w);
    for (double v : vals(dw)) CHECK(v == 0.0);
    CHECK(conv1d_output_length(512, 5, 1, 2, 1) == 512);
    CHECK(conv1d_output_length(10, 3, 2, 0, 2) == 3);
  }

  TEST_CASE("bad arguments raise ember::Error naming the op and the shapes") {
    Tensor x = randn64({2, 4, 10}, 1), w = randn64({6, 4, 3}, 2), b = randn64({6}, 3);
    CHECK_EMBER_ERROR(conv1d(randn64({4, 10}, 4), w), "conv1d", "(N, C_in, L)", "(4, 10)");
    CHECK_EMBER_ERROR(conv1d(x, randn64({6, 12}, 5)), "conv1d", "weight", "(6, 12)");
    CHECK_EMBER_ERROR(conv1d(x, randn64({6, 3, 3}, 6)), "conv1d", "channel mismatch", "(2, 4, 10)", "(6, 3, 3)");
    CHECK_EMBER_ERROR(conv1d(x, randn64({6, 2, 3}, 7), Tensor(), 1, 0, 1, 3), "conv1d", "groups=3", "4 input channels");
    CHECK_EMBER_ERROR(conv1d(x, randn64({5, 2, 3}, 8), Tensor(), 1, 0, 1, 2), "conv1d", "groups=2", "5 output channels");
    CHECK_EMBER_ERROR(conv1d(x, randn64({6, 4, 11}, 9)), "conv1d", "kernel of size 11", "padded input", "10");
    CHECK_EMBER_ERROR(conv1d(x, w, Tensor(), 1, 1, 6), "conv1d", "dilation 6", "spans 13", "12");
    CHECK_EMBER_ERROR(conv1d(x, w, Tensor(), 0), "conv1d", "stride must be >= 1", "0");
    CHECK_EMBER_ERROR(conv1d(x, w, Tensor(), 1, -1), "conv1d", "padding must be >= 0");
    CHECK_EMBER_ERROR(conv1d(x, w, Tensor(), 1, 0, 0), "conv1d", "dilation must be >= 1");
    CHECK_EMBER_ERROR(conv1d(x, w, Tensor(), 1, 0, 1, 0), "conv1d", "groups must be >= 1");
    CHECK_EMBER_ERROR(conv1d(x, w, randn64({5}, 10)), "conv1d", "bias must be (C_out) = (6)", "(6, 4, 3)");
    CHECK_EMBER_ERROR(conv1d(x, w.to(DType::f32)), "conv1d", "dtypes differ", "f64", "f32");
    CHECK_EMBER_ERROR(conv1d(x, w, b.to(DType::f32)), "conv1d", "dtypes differ");
    CHECK_EMBER_ERROR(conv1d(x.to(DType::i64), w.to(DType::i64)), "conv1d", "float");
    CHECK_EMBER_ERROR(conv1d(Tensor(), w), "conv1d", "undefined");
    CHECK_EMBER_ERROR(conv1d_reference(x, randn64({6, 3, 3}, 11)), "conv1d_reference", "channel mismatch");
    CHECK_EMBER_ERROR(conv1d_output_length(4, 7, 1, 1, 1), "conv1d", "kernel of size 7");
    // backward primitives
    Tensor gy = randn64({2, 6, 8}, 12);
    CHECK_EMBER_ERROR(conv1d_backward_input(gy, w, 11), "conv1d_backward_input", "input length 11", "L_out = 9",
                      "(2, 6, 8)");
    CHECK_EMBER_ERROR(conv1d_backward_input(randn64({2, 5, 8}, 13), w, 10), "conv1d_backward_input", "(2, 5, 8)",
                      "C_out = 6");
    CHECK_EMBER_ERROR(conv1d_backward_input(gy, w.to(DType::f32), 10), "conv1d_backward_input", "dtypes differ");
    CHECK_EMBER_ERROR(conv1d_backward_weight(gy, x, 5), "conv1d_backward_weight", "L_out = 6", "(2, 6, 8)");
    CHECK_EMBER_ERROR(conv1d_backward_weight(randn64({3, 6, 8}, 14), x, 3), "conv1d_backward_weight",
                      "batch sizes differ", "(3, 6, 8)", "(2, 4, 10)");
    CHECK_EMBER_ERROR(conv1d_backward_weight(gy, x, 3, 1, 0, 1, 3), "conv1d_backward_weight", "groups=3");
    CHECK_EMBER_ERROR(conv1d_backward_weight(gy, x, 0), "conv1d_backward_weight", "kernel size must be >= 1");
  }

  TEST_CASE("nn::Conv1d: parameters, PyTorch's init bound, forward is conv1d, gradients reach the parameters") {
    Generator g(7);
    nn::Conv1dOptions opt;
    opt.padding = 2;
    opt.groups = 2;
    nn::Conv1d conv(6, 8, 5, opt, &g);
    auto np = conv.named_parameters();
    REQUIRE(np.size() == 2);
    CHECK(np[0].first == "weight");
    CHECK(np[1].first == "bias");
    CHECK(conv.weight.shape() == Shape{8, 3, 5});
    CHECK(conv.bias.shape() == Shape{8});
    CHECK(conv.parameter_count() == 8 * 3 * 5 + 8);
    const double bound = 1.0 / std::sqrt(3.0 * 5.0);
    for (const Tensor& p : {conv.weight, conv.bias}) {
      double mx = 0;
      for (double v : vals(p)) {
        CHECK(std::fabs(v) <= bound);
        mx = std::max(mx, std::fabs(v));
      }
      CHECK(mx > 0.5 * bound);  // drawn from the whole interval, not a corner of it
    }
    Tensor x = randn({3, 6, 17}, {}, &g);
    Tensor y = conv(x);
    CHECK(y.shape() == Shape{3, 8, 17});
    check_close(y, conv1d(x, conv.weight, conv.bias, 1, 2, 1, 2), 0, 0);
    y.sum().backward();
    REQUIRE(conv.weight.grad().defined());
    REQUIRE(conv.bias.grad().defined());
    CHECK(conv.weight.grad().shape() == conv.weight.shape());
    for (double v : vals(conv.bias.grad())) CHECK(v == doctest::Approx(3 * 17));  // sum over N and L of ones
    // The same seed gives the same parameters.
    Generator g2(7);
    nn::Conv1d again(6, 8, 5, opt, &g2);
    check_close(again.weight, conv.weight, 0, 0);

    nn::Conv1dOptions nb;
    nb.bias = false;
    nb.stride = 2;
    nn::Conv1d no_bias(4, 3, 3, nb, &g);
    CHECK(no_bias.named_parameters().size() == 1);
    CHECK_FALSE(no_bias.bias.defined());
    CHECK(no_bias(randn({2, 4, 11}, {}, &g)).shape() == Shape{2, 3, 5});

    CHECK_EMBER_ERROR(conv(randn({3, 5, 17}, {}, &g)), "Conv1d", "(3, 5, 17)", "in_channels = 6");
    CHECK_EMBER_ERROR(nn::Conv1d(6, 8, 0), "Conv1d", "kernel_size");
    CHECK_EMBER_ERROR(nn::Conv1d(6, 9, 3, opt), "Conv1d", "groups=2");
  }

  TEST_CASE("nn::Conv1d gradients: gradcheck in f64 of a two-layer stack with ReLU and max over time") {
    Generator g(8);
    nn::Conv1dOptions o1;
    o1.padding = 1;
    nn::Conv1dOptions o2;
    o2.stride = 2;
    o2.dilation = 2;
    nn::Conv1d c1(3, 4, 3, o1, &g), c2(4, 5, 3, o2, &g);
    Tensor x = randn64({2, 3, 12}, 9);
    std::vector<Tensor> inputs = {x};
    for (const Tensor& p : {c1.weight, c1.bias, c2.weight, c2.bias}) inputs.push_back(p.detach().to(DType::f64));
    for (Tensor& t : inputs) t.requires_grad_(true);
    auto fn = [&](const std::vector<Tensor>& v) {
      Tensor h = relu(conv1d(v[0], v[1], v[2], 1, 1));
      return amax(conv1d(h, v[3], v[4], 2, 0, 2), {2});
    };
    GradcheckResult r = gradcheck(fn, inputs);
    CHECK_MESSAGE(r.ok, r.message);
  }

  // --- CUDA -------------------------------------------------------------------------------------

  TEST_CASE("CUDA vs CPU: forward, backward primitives and autograd, f32/f64/f16/bf16, strided inputs") {
    ember::cuda::set_poison_allocations(ember::cuda::is_available());  // unwritten outputs show up as NaN
    // The f32 tolerance below is for exact f32 products: TF32 (EMBER_ALLOW_TF32=1) is tested below.
    const bool tf32_before = ember::cuda::is_available() && ember::cuda::allow_tf32();
    if (tf32_before) ember::cuda::set_allow_tf32(false);
    std::vector<Combo> cs = combos();
    // Tiles of 64 rows (C/groups >= 32) and a backward-weight reduction split across blocks.
    cs.push_back({"64 channels, k5, padding 2 (64-row tiles, split weight reduction)", {4, 64, 300}, {64, 64, 5}, 1,
                  2, 1, 1, true});
    cs.push_back({"G2-like k3, groups 2, stride 2", {2, 96, 129}, {64, 48, 3}, 2, 1, 1, 2, true});
    const Device gpu = ember_test::test_device();
    uint64_t seed = 400;
    for (DType dt : {DType::f32, DType::f64, DType::f16, DType::bf16}) {
      // Relative tolerance by result dtype; the absolute part allows for cancellation in sums of
      // about R terms of size ~1 accumulated in f32 in another order.
      const double rtol = dt == DType::f64 ? 1e-10 : dt == DType::f32 ? 1e-5 : dt == DType::f16 ? 2e-3 : 1.6e-2;
      for (const Combo& c : cs) {
        CAPTURE(c.label);
        const std::string dt_name = dtype_name(dt);
        CAPTURE(dt_name);
        // Inputs rounded to dt on the CPU; the CPU reference computes in f64 from those values.
        auto draw = [&](const Shape& s) { return randn64(s, ++seed).to(DType::f32).to(dt); };
        Tensor x = draw(c.x), w = draw(c.w), b = c.bias ? draw(c.b()) : Tensor(), G = draw(c.y());
        auto f64 = [](const Tensor& t) { return t.defined() ? t.to(DType::f64) : t; };
        auto on_gpu = [&](const Tensor& t) { return t.defined() ? t.to(gpu) : t; };
        // A transposed view of a transposed buffer, on the device.
        auto strided_on_gpu = [&](const Tensor& t) { return contiguous(t.to(gpu).transpose(1, 2)).transpose(1, 2); };
        auto cmp = [&](const Tensor& got, const Tensor& want, double terms, const char* what) {
          const std::string what_s = what;
          CAPTURE(what_s);
          REQUIRE(got.device() == gpu);
          CHECK(got.dtype() == dt);
          ember_test::check_close(got.to(Device::cpu()), want, rtol, (dt == DType::f64 ? 1e-12 : 1e-5) * std::sqrt(terms));
        };
        const double R_fwd = static_cast<double>(c.w[1] * c.w[2]);
        const double R_bin = static_cast<double>(c.w[0] / c.groups * c.w[2]);
        const double R_bw = static_cast<double>(c.x[0] * c.L_out());

        Tensor y_ref = conv1d(f64(x), f64(w), f64(b), c.stride, c.padding, c.dilation, c.groups);
        cmp(conv1d(on_gpu(x), on_gpu(w), on_gpu(b), c.stride, c.padding, c.dilation, c.groups), y_ref, R_fwd,
            "forward");
        cmp(conv1d(strided_on_gpu(x), strided_on_gpu(w), on_gpu(b), c.stride, c.padding, c.dilation, c.groups), y_ref,
            R_fwd, "forward, strided inputs");
        Tensor dx_ref = conv1d_backward_input(f64(G), f64(w), c.x[2], c.stride, c.padding, c.dilation, c.groups);
        cmp(conv1d_backward_input(on_gpu(G), on_gpu(w), c.x[2], c.stride, c.padding, c.dilation, c.groups), dx_ref,
            R_bin, "backward-input");
        Tensor dw_ref = conv1d_backward_weight(f64(G), f64(x), c.w[2], c.stride, c.padding, c.dilation, c.groups);
        cmp(conv1d_backward_weight(on_gpu(G), on_gpu(x), c.w[2], c.stride, c.padding, c.dilation, c.groups), dw_ref,
            R_bw, "backward-weight");
        cmp(conv1d_backward_weight(strided_on_gpu(G), strided_on_gpu(x), c.w[2], c.stride, c.padding, c.dilation,
                                   c.groups),
            dw_ref, R_bw, "backward-weight, strided inputs");
        // Autograd on the device: leaves on the GPU, gradient G.
        Tensor xg = x.to(gpu).requires_grad_(), wg = w.to(gpu).requires_grad_();
        Tensor bg = c.bias ? b.to(gpu).requires_grad_() : Tensor();
        conv1d(xg, wg, bg, c.stride, c.padding, c.dilation, c.groups).backward(G.to(gpu));
        cmp(xg.grad(), dx_ref, R_bin, "x.grad");
        cmp(wg.grad(), dw_ref, R_bw, "w.grad");
        if (c.bias) cmp(bg.grad(), sum(f64(G), {0, 2}), R_bw, "b.grad");
      }
    }
    if (tf32_before) ember::cuda::set_allow_tf32(true);
    ember::cuda::set_poison_allocations(false);
  }

  // The tensor-core kernels take a pass when its GEMM has at least 32 rows, 32 columns and 32
  // reduction terms (kernels/conv.cu, use_mma); each case says which passes that is, and where
  // the kernel that ran can be asked, the test checks it was the expected one (a kernel that
  // failed its first-use self-check would fall back to SIMT and show up here as "simt").
  TEST_CASE("CUDA tensor cores: every pass in f16, bf16 and f32 with TF32 against the CPU, odd sizes and strides") {
    if (!ember::cuda::is_available()) {
      MESSAGE("no CUDA GPU: the tensor-core conv1d cases are skipped");
      return;
    }
    ember::cuda::set_poison_allocations(true);  // unwritten outputs show up as NaN
    const bool tf32_before = ember::cuda::allow_tf32();
    const char* env = std::getenv("EMBER_CONV_KERNEL");
    const bool simt_forced = env != nullptr && std::strcmp(env, "simt") == 0;
    auto wants_mma = [&](int64_t M, int64_t P, int64_t R) { return !simt_forced && M >= 32 && P >= 32 && R >= 32; };
    const std::vector<Combo> cs = {
        // 64-row tiles, every dimension ragged (C 37 -> 45, L 131, R 111 / 135 / 393).
        {"C 37 -> 45, L 131, k3, padding 1", {3, 37, 131}, {45, 37, 3}, 1, 1, 1, 1, true},
        // 128-row tiles (M 130), K 5, stride 2: backward-input keeps only the taps on the stride.
        {"C 70 -> 130, L 200, k5, stride 2, padding 2", {2, 70, 200}, {130, 70, 5}, 2, 2, 1, 1, true},
        {"groups 2, dilation 2, padding 3, k3, no bias", {2, 96, 77}, {80, 48, 3}, 1, 3, 2, 2, false},
        // L_out = 1: the forward and backward-weight GEMMs are too thin (SIMT), backward-input
        // (M 64, P 40, R 864) runs on tensor cores with a stride longer than the input.
        {"L_out = 1: k9, stride 64", {4, 64, 40}, {96, 64, 9}, 64, 0, 1, 1, true},
        // Depthwise with a channel multiplier: every GEMM has 1 row or 5 reduction terms (SIMT).
        {"depthwise, multiplier 32, k5, padding 2", {2, 8, 150}, {256, 1, 5}, 1, 2, 1, 8, true},
        // A long weight reduction, split over many blocks (partials summed in split order).
        {"long rows: L 1000, N 8 (split weight reduction)", {8, 64, 1000}, {64, 64, 3}, 1, 1, 1, 1, true},
        {"C 256 -> 256, L 300, k5, padding 2, stride 3, dilation 2", {2, 256, 300}, {256, 256, 5}, 3, 2, 2, 1, true},
    };
    const Device gpu = Device::cuda(0);
    uint64_t seed = 900;
    for (DType dt : {DType::f16, DType::bf16, DType::f32}) {
      const std::string dt_name = dt == DType::f32 ? "f32 (TF32)" : dtype_name(dt);
      CAPTURE(dt_name);
      if (dt == DType::f32) ember::cuda::set_allow_tf32(true);
      // f16/bf16: the inputs are exact in their type, products exact in f32, f32 accumulation, one
      // rounding to the output type. TF32 rounds each f32 input to 11 significant bits (relative
      // error up to 2^-11 each), so a sum of R products of N(0, 1) values is off by about
      // 2^-10.5 sqrt(R) (its own size is about sqrt(R)); the absolute part allows 7 of those.
      const double rtol = dt == DType::f16 ? 2e-3 : dt == DType::bf16 ? 1.6e-2 : 1e-2;
      const double atol_unit = dt == DType::f32 ? 5e-3 : 1e-5;
      for (const Combo& c : cs) {
        CAPTURE(c.label);
        auto draw = [&](const Shape& s) { return randn64(s, ++seed).to(DType::f32).to(dt); };
        Tensor x = draw(c.x), w = draw(c.w), b = c.bias ? draw(c.b()) : Tensor(), G = draw(c.y());
        auto f64 = [](const Tensor& t) { return t.defined() ? t.to(DType::f64) : t; };
        auto on_gpu = [&](const Tensor& t) { return t.defined() ? t.to(gpu) : t; };
        const int64_t cg = c.w[1], og = c.w[0] / c.groups, K = c.w[2];
        auto cmp = [&](const Tensor& got, const Tensor& want, int64_t R, bool mma, const char* what) {
          const std::string what_s = what;
          CAPTURE(what_s);
          REQUIRE(got.device() == gpu);
          CHECK(got.dtype() == dt);
          CHECK(std::string(ember::cuda::last_conv1d_kernel()) == (mma ? "mma" : "simt"));
          check_close(got.to(Device::cpu()), want, rtol, atol_unit * std::sqrt(static_cast<double>(R)));
        };
        const int64_t R_fwd = cg * K, R_bin = og * K, R_bw = c.x[0] * c.L_out();
        cmp(conv1d(on_gpu(x), on_gpu(w), on_gpu(b), c.stride, c.padding, c.dilation, c.groups),
            conv1d(f64(x), f64(w), f64(b), c.stride, c.padding, c.dilation, c.groups), R_fwd,
            wants_mma(og, c.L_out(), R_fwd), "forward");
        cmp(conv1d_backward_input(on_gpu(G), on_gpu(w), c.x[2], c.stride, c.padding, c.dilation, c.groups),
            conv1d_backward_input(f64(G), f64(w), c.x[2], c.stride, c.padding, c.dilation, c.groups), R_bin,
            wants_mma(cg, c.x[2], R_bin), "backward-input");
        cmp(conv1d_backward_weight(on_gpu(G), on_gpu(x), K, c.stride, c.padding, c.dilation, c.groups),
            conv1d_backward_weight(f64(G), f64(x), K, c.stride, c.padding, c.dilation, c.groups), R_bw,
            wants_mma(og, cg * K, R_bw), "backward-weight");
      }
    }
    // f32 without TF32 (the default) stays on the exact SIMT kernel.
    ember::cuda::set_allow_tf32(false);
    {
      const Combo& c = cs[0];
      Tensor x = randn64(c.x, 1).to(DType::f32), w = randn64(c.w, 2).to(DType::f32);
      Tensor y = conv1d(x.to(gpu), w.to(gpu), Tensor(), c.stride, c.padding);
      CHECK(std::string(ember::cuda::last_conv1d_kernel()) == "simt");
      check_close(y.to(Device::cpu()), conv1d(x.to(DType::f64), w.to(DType::f64), Tensor(), c.stride, c.padding), 1e-5,
                  1e-5 * std::sqrt(static_cast<double>(c.w[1] * c.w[2])));
    }
    ember::cuda::set_allow_tf32(tf32_before);
    ember::cuda::set_poison_allocations(false);
  }
}
