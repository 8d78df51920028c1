// Recurrent layers, the fused recurrence (ember/ops/rnn.h):
//
// - Values computed by hand for one or two steps of each cell (gate order, GRU's b_hn inside r).
// - rnn_recurrence against rnn_recurrence_reference (composed from basic ops): forward and every
//   gradient, every mode, both directions, with and without lengths / initial states / bias,
//   in f64 (tight) and f32 (the vectorised float gate math).
// - gradcheck in f64 of the fused op.
// - Lengths: each sequence equals a run over its own prefix; zeros past the length.
// - Inference without autograd; f16/bf16 on the CPU.
// - Bad input (the op and the modules) raises ember::Error naming the op and shapes; device
//   mismatch.
// - CUDA vs CPU, with allocation poisoning, on cuda:0 or, without a GPU, the stand-in device
//   fake:0 (device placement and the tests, not the kernels).
// - GPU only (skipped without one): the persistent kernels and the per-step kernels, each
//   forced through EMBER_RNN_KERNEL, against the CPU in every mode, f32/f16/bf16, batches 1, 3
//   and 8, H 37 and 263 (263 is prime and above the SM count, so the units split unevenly over
//   the CTAs), lengths, reverse; the persistent kernels inside a CUDA graph; a bad
//   EMBER_RNN_KERNEL.
// nn::RNN / nn::LSTM / nn::GRU are in test_rnn_modules.cpp.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "ember/cuda_graph.h"
#include "ember/nn/rnn.h"
#include "ember/ops/rnn.h"
#include "rnn_util.h"
#include "test_util.h"

using namespace ember;
using ember_test::ScopedEnv;
using ember_test::check_close;
using ember_test::check_tensor;
using ember_test::grad_of;
using ember_test::leaf;
using ember_test::randn_t;
using ember_test::vals;

namespace {

using ember_test::test_device;

const RNNMode kModes[] = {RNNMode::rnn_tanh, RNNMode::rnn_relu, RNNMode::lstm, RNNMode::gru};

// One recurrence problem: inputs and the weights of a scalar loss over all outputs.
struct Problem {
  RNNMode mode;
  RNNRecurrenceOptions opts;
  Tensor gx, w, b, h0, c0, lengths;  // b, h0, c0, lengths may be undefined
  Tensor wo, wh, wc;                 // loss = sum(out * wo) + sum(h_n * wh) + sum(c_n * wc)
};

Problem make_problem(RNNMode mode, bool reverse, bool with_lengths, bool with_state, bool bias, int64_t T, int64_t N,
                     int64_t H, DType dt, uint64_t seed) {
  Problem p;
  p.mode = mode;
  p.opts = {mode, reverse};
  const int64_t GH = rnn_gate_count(mode) * H;
  p.gx = randn_t({T, N, GH}, ++seed, dt);
  p.w = randn_t({GH, H}, ++seed, dt, 1.0 / std::sqrt(static_cast<double>(H)));  // keeps RELU bounded
  if (bias) p.b = randn_t({GH}, ++seed, dt);
  if (with_state) {
    p.h0 = randn_t({N, H}, ++seed, dt);
    if (mode == RNNMode::lstm) p.c0 = randn_t({N, H}, ++seed, dt);
  }
  if (with_lengths) {
    std::vector<int64_t> len(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) len[n] = (n * 7 + 3) % (T + 1);  // unsorted, 0 and T included when N is large enough
    len[0] = T;
    if (N > 2) len[2] = 0;
    p.lengths = from_vector(len, {N});
  }
  p.wo = randn_t({T, N, H}, ++seed, dt);
  p.wh = randn_t({N, H}, ++seed, dt);
  p.wc = randn_t({N, H}, ++seed, dt);
  return p;
}

struct Run {
  RNNRecurrenceResult r;
  std::vector<Tensor> grads;  // gx, w, b, h0, c0
};

Run run_problem(const Problem& p, bool reference, Device dev = Device::cpu()) {
  auto on = [&](const Tensor& t) { return t.defined() ? leaf(t.to(dev)) : t; };
  Tensor gx = on(p.gx), w = on(p.w), b = on(p.b), h0 = on(p.h0), c0 = on(p.c0);
  Run run;
  run.r = reference ? rnn_recurrence_reference(gx, w, b, h0, c0, p.lengths, p.opts)
                    : rnn_recurrence(gx, w, b, h0, c0, p.lengths, p.opts);
  Tensor loss = sum(run.r.output * p.wo.to(dev)) + sum(run.r.h_n * p.wh.to(dev));
  if (p.mode == RNNMode::lstm) loss = loss + sum(run.r.c_n * p.wc.to(dev));
  loss.backward();
  run.grads = {grad_of(gx), grad_of(w), grad_of(b), grad_of(h0), grad_of(c0)};
  return run;
}

void compare_runs(const Run& a, const Run& e, double rtol, double atol) {
  check_close(a.r.output, e.r.output, rtol, atol);
  check_close(a.r.h_n, e.r.h_n, rtol, atol);
  CHECK(a.r.c_n.defined() == e.r.c_n.defined());
  if (e.r.c_n.defined()) check_close(a.r.c_n, e.r.c_n, rtol, atol);
  const char* names[] = {"grad gates_x", "grad w_hh", "grad b_hh", "grad h0", "grad c0"};
  for (size_t i = 0; i < 5; ++i) {
    const std::string grad_name = names[i];
    CAPTURE(grad_name);
    CHECK(a.grads[i].defined() == e.grads[i].defined());
    if (e.grads[i].defined()) check_close(a.grads[i], e.grads[i], rtol, atol);
  }
}

std::string label(RNNMode m, bool rev, bool len, bool state, bool bias) {
  return std::string(rnn_mode_name(m)) + (rev ? " reverse" : " forward") + (len ? ", lengths" : "") +
         (state ? ", h0/c0" : "") + (bias ? ", bias" : "");
}

double sigm(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Runs p on `dev` in dt and on the CPU (f64 for f32, the same dtype for f16/bf16, which rounds
// where the CUDA kernels store: docs/rnn.md, "Reduced precision") and compares everything.
void check_device_against_cpu(Problem p, DType dt, Device dev) {
  for (Tensor* t : {&p.gx, &p.w, &p.b, &p.h0, &p.c0, &p.wo, &p.wh, &p.wc})
    if (t->defined()) *t = t->to(dt);
  const bool half = dt == DType::f16 || dt == DType::bf16;
  Problem ref = p;
  if (!half)
    for (Tensor* t : {&ref.gx, &ref.w, &ref.b, &ref.h0, &ref.c0, &ref.wo, &ref.wh, &ref.wc})
      if (t->defined()) *t = t->to(DType::f64);
  const double tol = dt == DType::f64 ? 1e-10 : dt == DType::f32 ? 1e-4 : dt == DType::f16 ? 2e-2 : 8e-2;
  const Run want = run_problem(ref, false);
  const Run got = run_problem(p, false, dev);
  REQUIRE(got.r.output.device() == dev);
  CHECK(got.r.output.dtype() == dt);
  Run got_cpu = got;
  auto host = [](const Tensor& t) { return t.defined() ? t.to(Device::cpu()) : t; };
  got_cpu.r = {host(got.r.output), host(got.r.h_n), host(got.r.c_n)};
  for (Tensor& g : got_cpu.grads) g = host(g);
  compare_runs(got_cpu, want, tol, tol);
}

}  // namespace

TEST_SUITE("rnn") {
  TEST_CASE("one or two steps of each cell against values computed by hand") {
    // RNN_TANH, two steps, H = 1: h1 = tanh(0.5 + 0.8 * 0.2 + 0.1), h2 = tanh(-0.3 + 0.8 h1 + 0.1).
    {
      Tensor gx = from_vector<double>({0.5, -0.3}, {2, 1, 1}), w = from_vector<double>({0.8}, {1, 1});
      Tensor b = from_vector<double>({0.1}, {1}), h0 = from_vector<double>({0.2}, {1, 1});
      const double h1 = std::tanh(0.76), h2 = std::tanh(-0.2 + 0.8 * h1);
      RNNRecurrenceResult r = rnn_recurrence(gx, w, b, h0, Tensor(), Tensor(), {RNNMode::rnn_tanh, false});
      check_tensor(r.output, {2, 1, 1}, {h1, h2}, 1e-12, 1e-12);
      check_tensor(r.h_n, {1, 1}, {h2}, 1e-12, 1e-12);
      CHECK_FALSE(r.c_n.defined());
      // Reverse: the second time step first.
      const double r1 = std::tanh(-0.3 + 0.16 + 0.1), r0 = std::tanh(0.5 + 0.8 * r1 + 0.1);
      r = rnn_recurrence(gx, w, b, h0, Tensor(), Tensor(), {RNNMode::rnn_tanh, true});
      check_tensor(r.output, {2, 1, 1}, {r0, r1}, 1e-12, 1e-12);
      check_tensor(r.h_n, {1, 1}, {r0}, 1e-12, 1e-12);
      // RNN_RELU clamps.
      r = rnn_recurrence(from_vector<double>({-0.5, 0.3}, {2, 1, 1}), w, b, h0, Tensor(), Tensor(),
                         {RNNMode::rnn_relu, false});
      check_tensor(r.output, {2, 1, 1}, {0.0, 0.4}, 1e-12, 1e-12);
    }
    // LSTM, one step, H = 1, gates i, f, g, o; W_hh h0 = 0.1 * (1, 2, 3, 4) * 0.5.
    {
      const std::vector<double> a{0.3, -0.2, 0.7, 1.1}, wv{0.1, 0.2, 0.3, 0.4};
      Tensor gx = from_vector(a, {1, 1, 4}), w = from_vector(wv, {4, 1});
      Tensor h0 = from_vector<double>({0.5}, {1, 1}), c0 = from_vector<double>({-0.4}, {1, 1});
      const double i = sigm(a[0] + 0.05), f = sigm(a[1] + 0.1), g = std::tanh(a[2] + 0.15), o = sigm(a[3] + 0.2);
      const double c = f * -0.4 + i * g, h = o * std::tanh(c);
      RNNRecurrenceResult r = rnn_recurrence(gx, w, Tensor(), h0, c0, Tensor(), {RNNMode::lstm, false});
      check_tensor(r.output, {1, 1, 1}, {h}, 1e-12, 1e-12);
      check_tensor(r.c_n, {1, 1}, {c}, 1e-12, 1e-12);
    }
    // GRU, one step, H = 1, gates r, z, n; b_hn goes inside r * (W_hn h + b_hn).
    {
      const std::vector<double> a{0.3, -0.6, 0.2}, wv{0.5, -0.4, 0.9}, bv{0.1, 0.2, -0.7};
      Tensor gx = from_vector(a, {1, 1, 3}), w = from_vector(wv, {3, 1}), b = from_vector(bv, {3});
      const double hp = 0.8;
      const double rr = sigm(a[0] + 0.5 * hp + 0.1), z = sigm(a[1] - 0.4 * hp + 0.2);
      const double n = std::tanh(a[2] + rr * (0.9 * hp - 0.7)), h = (1 - z) * n + z * hp;
      RNNRecurrenceResult r = rnn_recurrence(gx, w, b, from_vector<double>({hp}, {1, 1}), Tensor(), Tensor(),
                                             {RNNMode::gru, false});
      check_tensor(r.h_n, {1, 1}, {h}, 1e-12, 1e-12);
    }
  }

  TEST_CASE("rnn_recurrence equals the composed reference: forward and every gradient, f64") {
    uint64_t seed = 100;
    for (RNNMode m : kModes)
      for (bool rev : {false, true})
        for (bool len : {false, true})
          for (bool state : {false, true})
            for (bool bias : {false, true}) {
              CAPTURE(label(m, rev, len, state, bias));
              const Problem p = make_problem(m, rev, len, state, bias, 6, 4, 5, DType::f64, seed += 20);
              compare_runs(run_problem(p, false), run_problem(p, true), 1e-10, 1e-12);
            }
  }

  TEST_CASE("rnn_recurrence equals the composed reference in f32 (vectorised gate math, packed per-step GEMM)") {
    // Odd H (partial 16-column panels, an odd panel count), a batch that splits into full and
    // partial 8-row tiles, and a batch of one.
    struct Size {
      int64_t T, N, H;
    };
    uint64_t seed = 900;
    for (const Size& z : {Size{9, 5, 37}, Size{6, 19, 48}, Size{4, 1, 20}})
      for (RNNMode m : kModes)
        for (bool rev : {false, true}) {
          CAPTURE(label(m, rev, true, true, true));
          CAPTURE(z.N);
          CAPTURE(z.H);
          const Problem p = make_problem(m, rev, true, true, true, z.T, z.N, z.H, DType::f32, seed += 20);
          compare_runs(run_problem(p, false), run_problem(p, true), 1e-4, 2e-5);
        }
  }

  TEST_CASE("gradcheck in f64 of the fused recurrence") {
    uint64_t seed = 300;
    for (RNNMode m : kModes)
      for (bool rev : {false, true})
        for (bool len : {false, true}) {
          CAPTURE(label(m, rev, len, true, true));
          const Problem p = make_problem(m, rev, len, true, true, 4, 3, 3, DType::f64, seed += 20);
          std::vector<Tensor> in{leaf(p.gx), leaf(p.w), leaf(p.b), leaf(p.h0)};
          if (m == RNNMode::lstm) in.push_back(leaf(p.c0));
          const RNNRecurrenceOptions opts = p.opts;
          const Tensor lengths = p.lengths;
          auto fn = [opts, lengths](const std::vector<Tensor>& x) {
            RNNRecurrenceResult r =
                rnn_recurrence(x[0], x[1], x[2], x[3], x.size() > 4 ? x[4] : Tensor(), lengths, opts);
            std::vector<Tensor> parts{r.output.flatten(), r.h_n.flatten()};
            if (r.c_n.defined()) parts.push_back(r.c_n.flatten());
            return cat(parts, 0);
          };
          GradcheckResult r = gradcheck(fn, in);
          CHECK_MESSAGE(r.ok, r.message);
        }
  }

  TEST_CASE("lengths: each sequence equals a run over its own prefix; zeros past the length") {
    uint64_t seed = 500;
    for (RNNMode m : kModes)
      for (bool rev : {false, true}) {
        CAPTURE(label(m, rev, true, true, true));
        const Problem p = make_problem(m, rev, true, true, true, 7, 4, 3, DType::f64, seed += 20);
        const RNNRecurrenceResult all = rnn_recurrence(p.gx, p.w, p.b, p.h0, p.c0, p.lengths, p.opts);
        const std::vector<int64_t> len = p.lengths.to_vector<int64_t>();
        for (int64_t n = 0; n < 4; ++n) {
          CAPTURE(n);
          const int64_t L = len[n];
          Tensor h0 = p.h0.narrow(0, n, 1), c0 = p.c0.defined() ? p.c0.narrow(0, n, 1) : Tensor();
          if (L > 0) {
            const RNNRecurrenceResult one =
                rnn_recurrence(p.gx.narrow(0, 0, L).narrow(1, n, 1), p.w, p.b, h0, c0, Tensor(), p.opts);
            check_close(all.output.narrow(0, 0, L).narrow(1, n, 1), one.output, 1e-12, 1e-12);
            check_close(all.h_n.narrow(0, n, 1), one.h_n, 1e-12, 1e-12);
            if (m == RNNMode::lstm) check_close(all.c_n.narrow(0, n, 1), one.c_n, 1e-12, 1e-12);
          } else {  // no step: the state is h0
            check_close(all.h_n.narrow(0, n, 1), h0, 0, 0);
          }
          if (L < 7) {
            const std::vector<double> pad = vals(all.output.narrow(0, L, 7 - L).narrow(1, n, 1));
            for (double v : pad) CHECK(v == 0.0);
          }
        }
      }
  }

  TEST_CASE("without autograd the forward skips the workspace and gives the same values; T = 0 keeps h0") {
    const Problem p = make_problem(RNNMode::lstm, true, true, true, true, 5, 3, 4, DType::f64, 77);
    const RNNRecurrenceResult with = rnn_recurrence(leaf(p.gx), p.w, p.b, p.h0, p.c0, p.lengths, p.opts);
    CHECK(with.output.requires_grad());
    RNNRecurrenceResult without;
    {
      NoGradGuard ng;
      without = rnn_recurrence(leaf(p.gx), p.w, p.b, p.h0, p.c0, p.lengths, p.opts);
    }
    CHECK_FALSE(without.output.requires_grad());
    check_close(with.output, without.output, 0, 0);
    check_close(with.c_n, without.c_n, 0, 0);
    RNNRecurrenceForward f = rnn_recurrence_forward(p.gx, p.w, p.b, p.h0, p.c0, p.lengths, p.opts, false);
    CHECK_FALSE(f.workspace.defined());
    f = rnn_recurrence_forward(p.gx, p.w, p.b, p.h0, p.c0, p.lengths, p.opts, true);
    CHECK(f.workspace.shape() == Shape{5, 3, 24});
    CHECK(f.h_prev.shape() == Shape{5, 3, 4});
    // T = 0: empty output, final state = initial state, gradient passes straight to h0.
    Tensor h0 = leaf(p.h0);
    RNNRecurrenceResult e = rnn_recurrence(zeros({0, 3, 16}, DType::f64), p.w, p.b, h0, p.c0, Tensor(), p.opts);
    CHECK(e.output.shape() == Shape{0, 3, 4});
    check_close(e.h_n, p.h0, 0, 0);
    sum(e.h_n * 3.0).backward();
    check_close(h0.grad(), full({3, 4}, 3.0, DType::f64), 0, 0);
  }

  TEST_CASE("f16 and bf16 on the CPU: own dtype out, close to f32 on the same rounded inputs") {
    for (DType dt : {DType::f16, DType::bf16}) {
      const std::string dt_name = dtype_name(dt);
      CAPTURE(dt_name);
      const Problem p = make_problem(RNNMode::gru, true, true, true, true, 5, 3, 8, DType::f32, 41);
      auto r16 = [&](const Tensor& t) { return t.defined() ? t.to(dt) : t; };
      Tensor gx = leaf(r16(p.gx)), w = leaf(r16(p.w));
      RNNRecurrenceResult a = rnn_recurrence(gx, w, r16(p.b), r16(p.h0), Tensor(), p.lengths, p.opts);
      CHECK(a.output.dtype() == dt);
      sum(a.output.to(DType::f32) * p.wo).backward();
      CHECK(gx.grad().dtype() == dt);
      Tensor gx32 = leaf(r16(p.gx).to(DType::f32)), w32 = leaf(r16(p.w).to(DType::f32));
      RNNRecurrenceResult e = rnn_recurrence(gx32, w32, r16(p.b).to(DType::f32), r16(p.h0).to(DType::f32), Tensor(),
                                             p.lengths, p.opts);
      sum(e.output * p.wo).backward();
      const double tol = dt == DType::f16 ? 4e-3 : 3e-2;
      check_close(a.output, e.output, tol, tol);
      check_close(gx.grad(), gx32.grad(), tol, tol);
      check_close(w.grad(), w32.grad(), tol, 4 * tol);
    }
  }

  TEST_CASE("bad input raises ember::Error naming the op and the shapes") {
    const Tensor gx = randn_t({4, 2, 12}, 1, DType::f32), w = randn_t({12, 3}, 2, DType::f32);
    const RNNRecurrenceOptions lstm{RNNMode::lstm, false}, gru{RNNMode::gru, false};
    CHECK_EMBER_ERROR(rnn_recurrence(gx, zeros({12, 4}), Tensor(), Tensor(), Tensor(), Tensor(), lstm),
                      "rnn_recurrence", "LSTM has 4 gates", "w_hh must be (4*H, H) = (16, 4)", "(12, 4)");
    CHECK_EMBER_ERROR(rnn_recurrence(gx.narrow(2, 0, 8), w.narrow(0, 0, 9), Tensor(), Tensor(), Tensor(), Tensor(), gru),
                      "rnn_recurrence", "gates_x (4, 2, 8)", "G*H = 9");
    CHECK_EMBER_ERROR(rnn_recurrence(gx.narrow(2, 0, 9), w.narrow(0, 0, 9), Tensor(), zeros({2, 4}), Tensor(),
                                     Tensor(), gru),
                      "rnn_recurrence", "h0", "(N, H) = (2, 3)", "(2, 4)");
    CHECK_EMBER_ERROR(rnn_recurrence(gx.narrow(2, 0, 9), w.narrow(0, 0, 9), Tensor(), Tensor(), zeros({2, 3}),
                                     Tensor(), gru),
                      "rnn_recurrence", "c0", "GRU");
    CHECK_EMBER_ERROR(rnn_recurrence(gx.narrow(2, 0, 9), w.narrow(0, 0, 9).to(DType::f64), Tensor(), Tensor(),
                                     Tensor(), Tensor(), gru),
                      "rnn_recurrence", "f64", "f32");
    const Tensor g9 = gx.narrow(2, 0, 9), w9 = w.narrow(0, 0, 9);
    CHECK_EMBER_ERROR(rnn_recurrence(g9, w9, Tensor(), Tensor(), Tensor(), from_vector<int64_t>({4, 5}, {2}), gru),
                      "rnn_recurrence", "lengths[1] = 5", "[0, 4]");
    CHECK_EMBER_ERROR(rnn_recurrence(g9, w9, Tensor(), Tensor(), Tensor(), from_vector<int64_t>({-1, 2}, {2}), gru),
                      "rnn_recurrence", "lengths[0] = -1");
    CHECK_EMBER_ERROR(rnn_recurrence(g9, w9, Tensor(), Tensor(), Tensor(), from_vector<int64_t>({1, 2, 3}, {3}), gru),
                      "rnn_recurrence", "lengths", "(N) = (2)", "(3,)");
    CHECK_EMBER_ERROR(rnn_recurrence(g9, w9, Tensor(), Tensor(), Tensor(), from_vector<int32_t>({1, 2}, {2}), gru),
                      "rnn_recurrence", "lengths must be an i64", "i32");
    CHECK_EMBER_ERROR(rnn_recurrence_reference(g9, w9, zeros({8}), Tensor(), Tensor(), Tensor(), gru),
                      "rnn_recurrence_reference", "b_hh must be (G*H) = (9)", "(8,)");
    // The backward primitive checks what it is given against the forward's layout.
    const RNNRecurrenceForward f = rnn_recurrence_forward(g9, w9, Tensor(), Tensor(), Tensor(), Tensor(), gru);
    CHECK_EMBER_ERROR(rnn_recurrence_backward(zeros({4, 2, 3}), Tensor(), Tensor(), w9, f.workspace.narrow(2, 0, 6),
                                              f.h_prev, Tensor(), gru),
                      "rnn_recurrence_backward", "workspace must be (4, 2, 12)", "(4, 2, 6)");
    CHECK_EMBER_ERROR(rnn_recurrence_backward(zeros({4, 2, 3}), zeros({2, 3}), zeros({2, 3}), w9, f.workspace,
                                              f.h_prev, Tensor(), gru),
                      "rnn_recurrence_backward", "grad_c_n", "GRU");
    CHECK_EMBER_ERROR(rnn_recurrence_backward(zeros({4, 2, 5}), Tensor(), Tensor(), w9, f.workspace, f.h_prev,
                                              Tensor(), gru),
                      "rnn_recurrence_backward", "(4, 2, 5)", "(9, 3)");
    // Modules.
    nn::RNNOptions o;
    o.input_size = 3;
    o.hidden_size = 4;
    o.num_layers = 2;
    nn::LSTM m(o);
    CHECK_EMBER_ERROR(m.forward(zeros({5, 2, 4})), "LSTM", "input_size = 3", "(5, 2, 4)");
    CHECK_EMBER_ERROR(m.forward(zeros({5, 3})), "LSTM", "(T, N, input_size)", "(5, 3)");
    CHECK_EMBER_ERROR(m.forward(zeros({5, 2, 3}), zeros({1, 2, 4})), "LSTM", "h0", "(2, 2, 4)", "(1, 2, 4)");
    CHECK_EMBER_ERROR(m.forward(zeros({5, 2, 3}), zeros({2, 2, 4}), zeros({2, 3, 4})), "LSTM", "c0", "(2, 3, 4)");
    CHECK_EMBER_ERROR(m.forward(zeros({5, 2, 3}, DType::f64)), "LSTM", "f64", "weight_ih_l0", "f32");
    CHECK_EMBER_ERROR(m.forward(zeros({5, 2, 3}), zeros({2, 2, 4}, DType::f64)), "LSTM", "h0", "f64");
    CHECK_EMBER_ERROR(m.forward(zeros({5, 2, 3}), Tensor(), Tensor(), from_vector<int64_t>({6, 1}, {2})), "LSTM",
                      "lengths[0] = 6", "(5, 2, 3)");
    nn::GRU gm(o);
    CHECK_EMBER_ERROR(gm.forward(zeros({5, 2, 3}), Tensor(), zeros({2, 2, 4})), "GRU", "c0", "cell state");
    o.hidden_size = 0;
    CHECK_EMBER_ERROR(nn::RNN(o), "RNN", "hidden_size", "(3, 0)");
  }

  TEST_CASE("device mismatch raises ember::Error") {
    const Device dev = test_device();
    const Tensor gx = randn_t({4, 2, 12}, 1, DType::f32), w = randn_t({12, 3}, 2, DType::f32);
    CHECK_EMBER_ERROR(rnn_recurrence(gx.to(dev), w, Tensor(), Tensor(), Tensor(), Tensor(),
                                     {RNNMode::lstm, false}),
                      "rnn_recurrence", "different devices", dev.str());
    nn::RNNOptions o;
    o.input_size = 3;
    o.hidden_size = 4;
    nn::GRU m(o);
    CHECK_EMBER_ERROR(m.forward(zeros({5, 2, 3}).to(dev)), "GRU", "device", dev.str());
  }

  // --- CUDA -------------------------------------------------------------------------------------

  TEST_CASE("CUDA vs CPU: forward and all gradients, f32/f64/f16/bf16, every mode and direction, lengths") {
    // On a GPU this runs whichever kernel the rule picks (the persistent one for this batch).
    ember::cuda::set_poison_allocations(cuda::is_available());  // unwritten outputs show up as NaN
    const Device gpu = test_device();
    uint64_t seed = 2000;
    for (DType dt : {DType::f32, DType::f64, DType::f16, DType::bf16})
      for (RNNMode m : kModes)
        for (bool rev : {false, true})
          for (bool len : {false, true}) {
            const std::string dt_name = dtype_name(dt);
            CAPTURE(dt_name);
            CAPTURE(label(m, rev, len, true, true));
            check_device_against_cpu(make_problem(m, rev, len, true, true, 7, 5, 33, DType::f64, seed += 20), dt, gpu);
          }
    ember::cuda::set_poison_allocations(false);
  }

  TEST_CASE("GPU: persistent and per-step kernels vs CPU, every mode, f32/f16/bf16, N 1/3/8, uneven unit slices" *
            doctest::skip(!cuda::is_available())) {
    ember::cuda::set_poison_allocations(true);
    const Device gpu = Device::cuda(0);
    uint64_t seed = 7000;
    // persistent: a failed self-check is an ember::Error here, not a silent fallback, so a
    // pass means the persistent kernels ran (sizes this small fit any GPU that launches
    // cooperative kernels).
    for (const char* kernel : {"persistent", "steps"}) {
      ScopedEnv env("EMBER_RNN_KERNEL", kernel);
      for (DType dt : {DType::f32, DType::f16, DType::bf16})
        for (RNNMode m : kModes)
          for (int64_t N : {1, 3, 8})
            for (int64_t H : {37, 263})
              for (bool rev : {false, true}) {
                const bool len = N > 1, extras = (N + rev) % 2 == 0;  // bias and initial state half the time
                const std::string dt_name = dtype_name(dt), kernel_name = kernel;
                CAPTURE(kernel_name);
                CAPTURE(dt_name);
                CAPTURE(label(m, rev, len, extras, extras));
                CAPTURE(N);
                CAPTURE(H);
                check_device_against_cpu(make_problem(m, rev, len, extras, extras, 7, N, H, DType::f64, seed += 20),
                                         dt, gpu);
              }
    }
    ember::cuda::set_poison_allocations(false);
  }

  TEST_CASE("GPU: the persistent kernels inside a CUDA graph replay the eager values" *
            doctest::skip(!cuda::is_available())) {
    ScopedEnv env("EMBER_RNN_KERNEL", "persistent");
    const Device gpu = Device::cuda(0);
    for (RNNMode m : {RNNMode::lstm, RNNMode::gru}) {
      CAPTURE(rnn_mode_name(m));
      const Problem p = make_problem(m, true, false, true, true, 9, 4, 263, DType::f32, 4242);
      const Tensor gx = p.gx.to(gpu), w = p.w.to(gpu), b = p.b.to(gpu), h0 = p.h0.to(gpu);
      const Tensor c0 = p.c0.defined() ? p.c0.to(gpu) : Tensor(), go = p.wo.to(gpu);
      auto step = [&] {
        NoGradGuard ng;
        const RNNRecurrenceForward f = rnn_recurrence_forward(gx, w, b, h0, c0, Tensor(), p.opts, true);
        const RNNRecurrenceGrads g =
            rnn_recurrence_backward(go, Tensor(), Tensor(), w, f.workspace, f.h_prev, Tensor(), p.opts);
        // What the persistent kernels compute alone (no GEMM), so a replay must match bit for bit.
        return std::vector<Tensor>{f.output, f.h_n, f.workspace, g.grad_gates_x, g.grad_h0};
      };
      const std::vector<Tensor> eager = step();  // also decides the self-check outside the capture
      std::vector<Tensor> captured;
      cuda::Graph graph;
      graph.capture(gpu, [&] { captured = step(); });
      for (int replay = 0; replay < 2; ++replay) {
        graph.replay();
        for (size_t i = 0; i < eager.size(); ++i)
          check_close(captured[i].to(Device::cpu()), eager[i].to(Device::cpu()), 0, 0);
      }
    }
  }

  TEST_CASE("GPU: an unknown EMBER_RNN_KERNEL raises ember::Error" * doctest::skip(!cuda::is_available())) {
    ScopedEnv env("EMBER_RNN_KERNEL", "fastest");
    const Device gpu = Device::cuda(0);
    const Tensor gx = randn_t({4, 2, 12}, 1, DType::f32).to(gpu), w = randn_t({12, 3}, 2, DType::f32).to(gpu);
    CHECK_EMBER_ERROR(rnn_recurrence(gx, w, Tensor(), Tensor(), Tensor(), Tensor(), {RNNMode::lstm, false}),
                      "rnn_recurrence", "EMBER_RNN_KERNEL=\"fastest\"", "persistent or steps");
  }
}
