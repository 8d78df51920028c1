// kernels/rnn_persistent.cuh (the persistent RNN/LSTM/GRU recurrence: one cooperative launch for
// all steps, W_hh slices in shared memory, a grid barrier per step) run under the host emulation's
// cooperative launch and compared with a double-precision reference of the recurrence written
// here from docs/rnn.md and src/cpu/rnn.cpp. The reference rounds to the storage type where the
// kernels store a value in it (h, the hidden projection, the workspace, the gate gradients), so
// the only differences left are f32 against f64 arithmetic and the roundings those flip.
//
// Launches use rnn_persistent::geometry(), the sizing rnn.cu's launcher uses, with a few SMs so
// that H splits unevenly over the CTAs (H 37 over 4: three CTAs of 10 units and one of 7).
#include "emu_runtime.h"  // first: the CUDA keywords on the host

// Before the kernel header, whose `extern __shared__` declaration must name a known array.
EMBER_EMU_DYNAMIC_SHARED(ember::cuda::rnn_persistent, smem);

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "emu_test_util.h"
// The backward kernel's gate gradients are written and read only for active rows; GCC cannot
// see that through the branches (the device build passes -Wno-maybe-uninitialized too).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "rnn_persistent.cuh"
#pragma GCC diagnostic pop

namespace {

namespace rp = ember::cuda::rnn_persistent;
namespace et = ember::emu::test;
using ember::RNNMode;
using ember::emu::GridSchedule;

constexpr size_t kSmemOptin = ember::emu::kMaxDynamicShared;  // sm_90's opt-in limit
constexpr double kSentinel = 7.0;  // what output buffers hold before a launch: a missed write shows

template <class T>
double round_to(double x) {
  return et::to_double(et::from_float<T>(static_cast<float>(x)));
}
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

template <class T>
constexpr const char* dtype_name() {
  return std::is_same_v<T, __nv_bfloat16> ? "bf16" : std::is_same_v<T, __half> ? "f16" : "f32";
}
template <RNNMode kMode>
constexpr const char* mode_name() {
  return kMode == RNNMode::lstm ? "LSTM" : kMode == RNNMode::gru ? "GRU" : kMode == RNNMode::rnn_relu ? "RNN_RELU"
                                                                                                      : "RNN_TANH";
}

struct Case {
  int steps, N, H, sms;
  bool reverse, bias;
  std::vector<int64_t> lengths;  // empty: every sequence has all steps
};

// The problem and the reference's results, all in the storage type except the carried state.
template <class T, RNNMode kMode>
struct Problem {
  static constexpr int G = rp::kGates<kMode>, Wk = rp::kWorkSlots<kMode>;
  Case c;
  int64_t GH = 0;
  std::vector<T> gx, w, b, h0, c0, go, dh_n, dc_n;
  // Reference forward: out, h_n, c_n, workspace, h_prev; backward: grad_gates_x, grad_gates_h,
  // grad_h0, grad_c0.
  std::vector<double> out, h_n, c_n, ws, hp, dgx, dgh, dh0, dc0;

  explicit Problem(const Case& k) : c(k), GH(static_cast<int64_t>(G) * k.H) {
    const int64_t T_ = k.steps, N = k.N, H = k.H;
    uint32_t seed = 7 * static_cast<uint32_t>(kMode) + 3 * static_cast<uint32_t>(sizeof(T)) + static_cast<uint32_t>(H);
    auto values = [&](int64_t n, float scale) {
      std::vector<T> v = et::random_values<T>(static_cast<size_t>(n), ++seed);
      for (T& e : v) e = et::from_float<T>(static_cast<float>(et::to_double(e)) * scale);
      return v;
    };
    gx = values(T_ * N * GH, 1.f);
    w = values(GH * H, 0.35f);
    if (k.bias) b = values(GH, 0.5f);
    h0 = values(N * H, 0.8f);
    if (kMode == RNNMode::lstm) c0 = values(N * H, 1.f);
    go = values(T_ * N * H, 1.f);
    dh_n = values(N * H, 1.f);
    if (kMode == RNNMode::lstm) dc_n = values(N * H, 1.f);
    forward();
    backward();
  }

  int64_t length(int64_t n) const { return c.lengths.empty() ? c.steps : c.lengths[static_cast<size_t>(n)]; }
  double d(const std::vector<T>& v, int64_t i) const { return et::to_double(v[static_cast<size_t>(i)]); }

  void forward() {
    const int64_t T_ = c.steps, N = c.N, H = c.H;
    out.assign(static_cast<size_t>(T_ * N * H), 0.0);
    hp.assign(static_cast<size_t>(T_ * N * H), 0.0);
    ws.assign(static_cast<size_t>(T_ * N * Wk * H), kSentinel);  // padding rows are not written
    h_n.assign(static_cast<size_t>(N * H), 0.0);
    c_n.assign(static_cast<size_t>(N * H), 0.0);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t L = length(n);
      std::vector<double> h(static_cast<size_t>(H)), cs(static_cast<size_t>(H), 0.0), q(static_cast<size_t>(GH));
      for (int64_t j = 0; j < H; ++j) h[j] = d(h0, n * H + j);
      if (kMode == RNNMode::lstm)
        for (int64_t j = 0; j < H; ++j) cs[j] = d(c0, n * H + j);
      for (int64_t s = 0; s < T_; ++s) {
        if (s >= L) continue;  // out and h_prev stay 0 at (s, n)
        const int64_t t = c.reverse ? L - 1 - s : s;
        for (int64_t r = 0; r < GH; ++r) {  // the per-step GEMM's result, stored in T
          double acc = 0;
          for (int64_t k = 0; k < H; ++k) acc += d(w, r * H + k) * h[k];
          q[r] = round_to<T>(acc);
        }
        std::vector<double> hn(static_cast<size_t>(H));
        for (int64_t j = 0; j < H; ++j) {
          auto x = [&](int g) { return d(gx, (t * N + n) * GH + g * H + j); };
          auto bias = [&](int g) { return b.empty() ? 0.0 : d(b, g * H + j); };
          auto pre = [&](int g) { return x(g) + q[g * H + j] + bias(g); };
          double* wsr = &ws[static_cast<size_t>((s * N + n) * Wk * H + j)];
          double hv;
          if constexpr (kMode == RNNMode::lstm) {
            const double i = sigmoid(pre(0)), f = sigmoid(pre(1)), g = std::tanh(pre(2)), o = sigmoid(pre(3));
            const double cp = cs[j];
            cs[j] = f * cp + i * g;
            const double tc = std::tanh(cs[j]);
            const double slots[6] = {i, f, g, o, cp, tc};
            for (int k = 0; k < 6; ++k) wsr[k * H] = round_to<T>(slots[k]);
            hv = o * tc;
          } else if constexpr (kMode == RNNMode::gru) {
            const double r = sigmoid(pre(0)), z = sigmoid(pre(1));
            const double hh = q[2 * H + j] + bias(2);
            const double nn = std::tanh(x(2) + r * hh);
            const double slots[4] = {r, z, nn, hh};
            for (int k = 0; k < 4; ++k) wsr[k * H] = round_to<T>(slots[k]);
            hv = (1 - z) * nn + z * h[j];
          } else {
            const double v = pre(0);
            hv = kMode == RNNMode::rnn_relu ? (v > 0 ? v : 0.0) : std::tanh(v);
            wsr[0] = round_to<T>(hv);
          }
          hn[j] = round_to<T>(hv);
          hp[static_cast<size_t>((s * N + n) * H + j)] = h[j];
          out[static_cast<size_t>((t * N + n) * H + j)] = hn[j];
        }
        h = hn;
      }
      for (int64_t j = 0; j < H; ++j) {
        h_n[static_cast<size_t>(n * H + j)] = h[j];
        c_n[static_cast<size_t>(n * H + j)] = round_to<T>(cs[j]);
      }
    }
  }

  // Reads the reference's workspace and h_prev, as the backward kernel will (rounded to T).
  void backward() {
    const int64_t T_ = c.steps, N = c.N, H = c.H;
    dgx.assign(static_cast<size_t>(T_ * N * GH), 0.0);
    dgh.assign(static_cast<size_t>(T_ * N * GH), 0.0);
    dh0.assign(static_cast<size_t>(N * H), 0.0);
    dc0.assign(static_cast<size_t>(N * H), 0.0);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t L = length(n);
      std::vector<double> dh(static_cast<size_t>(H)), dc(static_cast<size_t>(H), 0.0), dmm(static_cast<size_t>(H));
      for (int64_t j = 0; j < H; ++j) dh[j] = d(dh_n, n * H + j);
      if (kMode == RNNMode::lstm)
        for (int64_t j = 0; j < H; ++j) dc[j] = d(dc_n, n * H + j);
      // dmm = grad_gates_h[s] W_hh, stored in T (zeros when s is past the sequence).
      auto project = [&](int64_t s) {
        for (int64_t j = 0; j < H; ++j) {
          double acc = 0;
          for (int64_t r = 0; r < GH; ++r) acc += dgh[static_cast<size_t>((s * N + n) * GH + r)] * d(w, r * H + j);
          dmm[j] = round_to<T>(acc);
        }
      };
      for (int64_t s = T_ - 1; s >= 0; --s) {
        if (s + 1 < T_) project(s + 1);
        else std::fill(dmm.begin(), dmm.end(), 0.0);
        for (int64_t j = 0; j < H; ++j) dh[j] += dmm[j];
        if (s >= L) continue;  // the gradients pass through; zero gate gradients at (s, n)
        const int64_t t = c.reverse ? L - 1 - s : s;
        for (int64_t j = 0; j < H; ++j) {
          const double dt = dh[j] + d(go, (t * N + n) * H + j);
          auto wsv = [&](int k) { return ws[static_cast<size_t>((s * N + n) * Wk * H + k * H + j)]; };
          double dg[4] = {0, 0, 0, 0}, dgh_n = 0;
          dh[j] = 0;
          if constexpr (kMode == RNNMode::lstm) {
            const double i = wsv(0), f = wsv(1), g = wsv(2), o = wsv(3), cp = wsv(4), tc = wsv(5);
            const double dcv = dc[j] + dt * o * (1 - tc * tc);
            dg[0] = dcv * g * i * (1 - i);
            dg[1] = dcv * cp * f * (1 - f);
            dg[2] = dcv * i * (1 - g * g);
            dg[3] = dt * tc * o * (1 - o);
            dc[j] = dcv * f;
          } else if constexpr (kMode == RNNMode::gru) {
            const double r = wsv(0), z = wsv(1), nn = wsv(2), hh = wsv(3);
            const double hprev = hp[static_cast<size_t>((s * N + n) * H + j)];
            const double dn = dt * (1 - z) * (1 - nn * nn);
            dg[0] = dn * hh * r * (1 - r);
            dg[1] = dt * (hprev - nn) * z * (1 - z);
            dg[2] = dn;
            dgh_n = dn * r;  // hh_n enters as r * hh_n
            dh[j] = dt * z;  // the direct path h_{t-1} -> z h_{t-1}
          } else {
            const double hy = wsv(0);
            dg[0] = kMode == RNNMode::rnn_relu ? (hy > 0 ? dt : 0.0) : dt * (1 - hy * hy);
          }
          for (int g = 0; g < G; ++g) {
            dgx[static_cast<size_t>((t * N + n) * GH + g * H + j)] = round_to<T>(dg[g]);
            dgh[static_cast<size_t>((s * N + n) * GH + g * H + j)] =
                round_to<T>(kMode == RNNMode::gru && g == 2 ? dgh_n : dg[g]);
          }
        }
      }
      project(0);
      for (int64_t j = 0; j < H; ++j) {
        dh0[static_cast<size_t>(n * H + j)] = round_to<T>(dh[j] + dmm[j]);
        dc0[static_cast<size_t>(n * H + j)] = round_to<T>(dc[j]);
      }
    }
  }
};

template <class T>
std::vector<T> filled(size_t n, double v) {
  return std::vector<T>(n, et::from_float<T>(static_cast<float>(v)));
}
template <class T>
std::vector<T> rounded(const std::vector<double>& v) {
  std::vector<T> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = et::from_float<T>(static_cast<float>(v[i]));
  return r;
}

// The largest |got - want| / (1 + |want|), NaN as infinite.
struct Error {
  double worst = 0;
  std::string where;
};
template <class T>
void measure(Error& e, const char* name, const std::vector<T>& got, const std::vector<double>& want) {
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = et::to_double(got[i]);
    double err = std::fabs(g - want[i]) / (1 + std::fabs(want[i]));
    if (std::isnan(err)) err = INFINITY;
    if (err > e.worst) {
      e.worst = err;
      e.where = std::string(name) + "[" + std::to_string(i) + "]: got " + std::to_string(g) + ", want " +
                std::to_string(want[i]);
    }
  }
}

template <class T>
double tolerance() {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return 2e-2;
  else if constexpr (std::is_same_v<T, __half>) return 4e-3;
  else return 2e-5;
}

// Runs the forward kernel on p's problem; `unit_shift` (a deliberate fault) launches with U
// that many units short of the geometry's, so the last units of every CTA's slice are never
// computed.
template <class T, RNNMode kMode>
Error run_forward(const Problem<T, kMode>& p, GridSchedule schedule, int unit_shift = 0) {
  constexpr int Wk = rp::kWorkSlots<kMode>;
  const Case& k = p.c;
  const int64_t T_ = k.steps, N = k.N, H = k.H;
  const rp::Geometry g = rp::geometry<T, kMode, false>(k.sms, kSmemOptin, T_, N, H);
  REQUIRE(g.ok);
  std::vector<T> out = filled<T>(static_cast<size_t>(T_ * N * H), kSentinel);
  std::vector<T> hp = filled<T>(static_cast<size_t>(T_ * N * H), kSentinel);
  std::vector<T> ws = filled<T>(static_cast<size_t>(T_ * N * Wk * H), kSentinel);
  std::vector<T> h_n = p.h0, c_n = p.c0;
  std::vector<T> hbuf = filled<T>(2 * static_cast<size_t>(g.Np) * g.Kp, 0.0);
  unsigned counter = 0;
  const rp::ForwardArgs<T> a{p.gx.data(), p.w.data(), p.b.empty() ? nullptr : p.b.data(),
                             k.lengths.empty() ? nullptr : k.lengths.data(), h_n.data(),
                             c_n.empty() ? nullptr : c_n.data(), out.data(), ws.data(), hp.data(), hbuf.data(),
                             &counter, k.steps, k.N, k.H, g.U - unit_shift, g.Np, g.Kp, g.KP, k.reverse};
  ember::emu::launch_cooperative(dim3(g.grid), dim3(rp::kBlock), g.smem, schedule, &rp::forward_kernel<T, kMode>,
                                 a);
  Error e;
  measure(e, "output", out, p.out);
  measure(e, "h_n", h_n, p.h_n);
  if (kMode == RNNMode::lstm) measure(e, "c_n", c_n, p.c_n);
  measure(e, "workspace", ws, p.ws);
  measure(e, "h_prev", hp, p.hp);
  return e;
}

template <class T, RNNMode kMode>
Error run_backward(const Problem<T, kMode>& p, GridSchedule schedule) {
  const Case& k = p.c;
  const int64_t T_ = k.steps, N = k.N, H = k.H, GH = p.GH;
  const rp::Geometry g = rp::geometry<T, kMode, true>(k.sms, kSmemOptin, T_, N, H);
  REQUIRE(g.ok);
  const std::vector<T> ws = rounded<T>(p.ws), hp = rounded<T>(p.hp);
  std::vector<T> dh = p.dh_n, dc = p.dc_n;
  std::vector<T> dgx = filled<T>(static_cast<size_t>(T_ * N * GH), kSentinel);
  std::vector<T> dgh = filled<T>(static_cast<size_t>(T_ * N * GH), kSentinel);
  std::vector<T> gbuf = filled<T>(2 * static_cast<size_t>(g.Np) * g.Kp, 0.0);
  unsigned counter = 0;
  const rp::BackwardArgs<T> a{p.go.data(), p.w.data(), ws.data(), hp.data(),
                              k.lengths.empty() ? nullptr : k.lengths.data(), dh.data(),
                              dc.empty() ? nullptr : dc.data(), dgx.data(), dgh.data(), gbuf.data(), &counter,
                              k.steps, k.N, k.H, g.U, g.Np, g.Kp, g.KP, k.reverse};
  ember::emu::launch_cooperative(dim3(g.grid), dim3(rp::kBlock), g.smem, schedule, &rp::backward_kernel<T, kMode>,
                                 a);
  Error e;
  measure(e, "grad_gates_x", dgx, p.dgx);
  measure(e, "grad_gates_h", dgh, p.dgh);
  measure(e, "grad_h0", dh, p.dh0);
  if (kMode == RNNMode::lstm) measure(e, "grad_c0", dc, p.dc0);
  return e;
}

std::string describe(const Case& k) {
  std::ostringstream s;
  s << "T " << k.steps << ", N " << k.N << ", H " << k.H << " over " << k.sms << " SMs, "
    << (k.reverse ? "reverse" : "forward") << (k.bias ? ", bias" : "") << ", lengths";
  if (k.lengths.empty()) s << " none";
  for (int64_t l : k.lengths) s << " " << l;
  return s.str();
}

// Under both grid schedules: round robin interleaves the blocks finely but keeps them in near
// lockstep; with blocks running ahead, a block that reads what another has not written yet (a
// missing grid wait) or overwrites what another still reads (a buffer reused too early) shows.
template <class T, RNNMode kMode>
void check(const Case& k) {
  const std::string what = std::string(mode_name<kMode>()) + " " + dtype_name<T>() + ": " + describe(k);
  INFO(what);
  const Problem<T, kMode> p(k);
  for (GridSchedule schedule : {GridSchedule::kRoundRobin, GridSchedule::kRunAhead}) {
    const std::string how = schedule == GridSchedule::kRunAhead ? "blocks running ahead" : "blocks in round robin";
    INFO(how);
    const Error f = run_forward(p, schedule);
    INFO("forward: worst " << f.worst << " at " << f.where);
    CHECK(f.worst <= tolerance<T>());
    const Error b = run_backward(p, schedule);
    INFO("backward: worst " << b.worst << " at " << b.where);
    CHECK(b.worst <= tolerance<T>());
  }
}

// Ragged everywhere: H 37 over 4 CTAs (10, 10, 10, 7 units), N 3 with a full, an empty and a
// short sequence, in reverse, with a bias; and N 1 without lengths or bias, forward.
Case ragged(int steps) { return Case{steps, 3, 37, 4, true, true, {steps, 0, steps - 2}}; }
Case single(int steps) { return Case{steps, 1, 37, 4, false, false, {}}; }

}  // namespace

TEST_SUITE("kernel_emu") {
  TEST_CASE("rnn_persistent LSTM: forward and backward against the reference") {
    check<float, RNNMode::lstm>(ragged(5));
    check<__nv_bfloat16, RNNMode::lstm>(single(4));
    check<__nv_bfloat16, RNNMode::lstm>(ragged(4));
    check<__half, RNNMode::lstm>(Case{4, 3, 37, 4, false, true, {2, 4, 0}});
    // U 4 over 9 CTAs (the last owns one unit): the backward's dot products split k in two
    // parts (KP 2), which the cell adds.
    const Case split{3, 3, 33, 9, true, false, {3, 1, 2}};
    CHECK(rp::geometry<float, RNNMode::lstm, true>(split.sms, kSmemOptin, split.steps, split.N, split.H).KP == 2);
    check<float, RNNMode::lstm>(split);
  }

  TEST_CASE("rnn_persistent GRU: forward and backward against the reference") {
    check<float, RNNMode::gru>(single(4));
    check<__nv_bfloat16, RNNMode::gru>(ragged(5));
    check<__half, RNNMode::gru>(ragged(4));
  }

  TEST_CASE("rnn_persistent RNN tanh and relu: forward and backward against the reference") {
    check<float, RNNMode::rnn_tanh>(ragged(5));
    check<__nv_bfloat16, RNNMode::rnn_tanh>(single(4));
    check<float, RNNMode::rnn_relu>(single(4));
    check<__nv_bfloat16, RNNMode::rnn_relu>(ragged(5));
    check<__half, RNNMode::rnn_relu>(Case{4, 3, 37, 4, false, true, {2, 4, 0}});
  }

  TEST_CASE("rnn_persistent: a grid barrier that does not wait, or a wrong unit slice, is caught") {
    const Problem<float, RNNMode::lstm> p(ragged(4));
    // Blocks running ahead: in round robin the blocks stay in near lockstep, and a missing grid
    // wait goes unnoticed.
    const GridSchedule ahead = GridSchedule::kRunAhead;
    REQUIRE(run_forward(p, ahead).worst <= tolerance<float>());
    ember::emu::injected_fault = ember::emu::Fault::kAcquireLoadMax;
    Error skipped_fwd, skipped_bwd;
    try {
      skipped_fwd = run_forward(p, ahead);
      skipped_bwd = run_backward(p, ahead);
    } catch (...) {
      ember::emu::injected_fault = ember::emu::Fault::kNone;
      throw;
    }
    ember::emu::injected_fault = ember::emu::Fault::kNone;
    INFO("forward without the barrier: " << skipped_fwd.where << "; backward: " << skipped_bwd.where);
    CHECK(skipped_fwd.worst > 100 * tolerance<float>());
    CHECK(skipped_bwd.worst > 100 * tolerance<float>());
    const Error short_slice = run_forward(p, GridSchedule::kRoundRobin, 1);
    INFO("U one short: " << short_slice.where);
    CHECK(short_slice.worst > 100 * tolerance<float>());
  }

  TEST_CASE("rnn_persistent: launched without every block resident, the grid barrier is a deadlock") {
    const Problem<float, RNNMode::rnn_tanh> p(single(2));
    const rp::Geometry g = rp::geometry<float, RNNMode::rnn_tanh, false>(4, kSmemOptin, 2, 1, 37);
    std::vector<float> out(2 * 37), hp(2 * 37), ws(2 * 37), h_n = p.h0, hbuf(2 * g.Np * g.Kp, 0.f);
    unsigned counter = 0;
    const rp::ForwardArgs<float> a{p.gx.data(), p.w.data(), nullptr, nullptr, h_n.data(), nullptr, out.data(),
                                   ws.data(), hp.data(), hbuf.data(), &counter, 2, 1, 37, g.U, g.Np, g.Kp, g.KP,
                                   false};
    CHECK_THROWS_WITH_AS(
        ember::emu::launch(dim3(g.grid), dim3(rp::kBlock), g.smem, &rp::forward_kernel<float, RNNMode::rnn_tanh>, a),
        doctest::Contains("launch_cooperative"), ember::emu::KernelFault);
  }
}
