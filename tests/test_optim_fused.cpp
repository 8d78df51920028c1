// optim, clipping and the fused kernels: clip_grad_norm_ (p = 2, 1, inf, 3) and
// clip_grad_value_ against a double sum, the fused CPU step over many tensors and one spanning
// many chunks against the rule in double, f16/bf16 parameters with f32 state, and the fused
// SGD / Adam / AdamW and clipping on the device under test (cuda:0 with a GPU, else the
// stand-in fake:0) against the CPU.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ember/optim/adam.h"
#include "ember/optim/clip.h"
#include "ember/optim/optimizer.h"
#include "ember/optim/sgd.h"
#include "optim_util.h"
#include "test_util.h"

using namespace ember;
using ember_test::AdamRef;
using ember_test::check_tensor;
using ember_test::clone_params;
using ember_test::vals;

namespace {

Device device_under_test() { return ember_test::test_device(); }

}  // namespace

TEST_SUITE("optim_fused") {
  // --- clipping -------------------------------------------------------------------------------

  TEST_CASE("clip_grad_norm_: total norm for p = 2, 1, inf, 3 and the scaling; skipped and f64 gradients") {
    auto make = [](Tensor& a, Tensor& b, Tensor& c) {
      a = zeros({2}).requires_grad_();
      b = zeros({2, 2}).requires_grad_();
      c = zeros({3}).requires_grad_();  // never gets a gradient
      a.set_grad(tensor({3.0, -4.0}));
      b.set_grad(tensor({{1.0, 2.0}, {-2.0, 0.0}}));
    };
    struct Case {
      double p, norm;
    };
    for (Case c : {Case{2.0, std::sqrt(34.0)}, Case{1.0, 12.0}, Case{optim::kInfNorm, 4.0}, Case{3.0, std::cbrt(108.0)}}) {
      CAPTURE(c.p);
      Tensor a, b, unused;
      make(a, b, unused);
      Tensor n = optim::clip_grad_norm_({a, b, unused}, 1.0, c.p);
      CHECK(n.dim() == 0);
      CHECK(n.dtype() == DType::f32);
      CHECK(n.item<double>() == doctest::Approx(c.norm).epsilon(1e-6));
      const double f = 1.0 / (c.norm + 1e-6);
      check_tensor(a.grad(), {2}, {3 * f, -4 * f}, 1e-6, 1e-7);
      check_tensor(b.grad(), {2, 2}, {f, 2 * f, -2 * f, 0.0}, 1e-6, 1e-7);
      CHECK_FALSE(unused.grad().defined());
    }
    {  // below max_norm: unchanged; an f64 gradient makes the result f64
      Tensor a, b, unused;
      make(a, b, unused);
      Tensor d = zeros({1}, DType::f64).requires_grad_();
      d.set_grad(tensor({0.5}, DType::f64));
      Tensor n = optim::clip_grad_norm_({a, b, d}, 100.0);
      CHECK(n.dtype() == DType::f64);
      CHECK(n.item<double>() == doctest::Approx(std::sqrt(34.25)).epsilon(1e-12));
      check_tensor(a.grad(), {2}, {3.0, -4.0}, 0, 0);
      check_tensor(d.grad(), {1}, {0.5}, 0, 0);
    }
    {  // no gradients at all
      Tensor a = zeros({2}).requires_grad_();
      CHECK(optim::clip_grad_norm_({a}, 1.0).item<double>() == 0.0);
    }
    Tensor a = zeros({2}).requires_grad_();
    CHECK_EMBER_ERROR(optim::clip_grad_norm_({a}, 1.0, 0.0), "clip_grad_norm_", "norm_type");
    CHECK_EMBER_ERROR(optim::clip_grad_norm_({a}, -1.0), "clip_grad_norm_", "max_norm");
    CHECK_EMBER_ERROR(optim::clip_grad_norm_({Tensor()}, 1.0), "clip_grad_norm_", "undefined");
  }

  TEST_CASE("clip_grad_norm_ over many chunks and tensors (several threads) against a double sum; clip_grad_value_") {
    Generator gen(11);
    std::vector<Tensor> ps;
    double sq = 0;
    for (int64_t n : {100003, 1, 17, 40000, 3}) {
      Tensor p = zeros({n}).requires_grad_();
      p.set_grad(randn({n}, DType::f32, &gen));
      for (double v : vals(p.grad())) sq += v * v;
      ps.push_back(p);
    }
    std::vector<std::vector<double>> before;
    for (const Tensor& p : ps) before.push_back(vals(p.grad()));
    const double norm = std::sqrt(sq);
    Tensor n = optim::clip_grad_norm_(ps, 10.0);
    CHECK(n.item<double>() == doctest::Approx(norm).epsilon(1e-6));
    const double f = 10.0 / (norm + 1e-6);
    for (size_t i = 0; i < ps.size(); ++i) {
      std::vector<double> want = before[i];
      for (double& v : want) v *= f;
      check_tensor(ps[i].grad(), ps[i].shape(), want, 1e-6, 1e-7);
    }
    // clip_grad_value_
    Tensor q = zeros({5}).requires_grad_();
    q.set_grad(tensor({-3.0, 0.25, 0.5, 2.0, -0.5}));
    Tensor r = zeros({2}, DType::f64).requires_grad_();
    r.set_grad(tensor({7.0, -0.1}, DType::f64));
    optim::clip_grad_value_({q, r}, 0.5);
    check_tensor(q.grad(), {5}, {-0.5, 0.25, 0.5, 0.5, -0.5}, 0, 0);
    check_tensor(r.grad(), {2}, {0.5, -0.1}, 0, 0);
    CHECK_EMBER_ERROR(optim::clip_grad_value_({q}, -1.0), "clip_grad_value_", "clip_value");
  }

  // --- the fused CPU kernel -------------------------------------------------------------------

  TEST_CASE("fused CPU step over many tensors, one spanning many chunks, matches the rule in double") {
    // 40 small tensors plus one of 70001 elements: the chunked OpenMP loop crosses tensors.
    Generator gen(5);
    std::vector<Tensor> ps;
    std::vector<std::vector<double>> pv;
    for (int i = 0; i < 41; ++i) {
      const int64_t n = i == 17 ? 70001 : 1 + (i * 7) % 23;
      ps.push_back(randn({n}, DType::f64, &gen).requires_grad_());
      pv.push_back(vals(ps.back()));
    }
    optim::AdamW opt(ps, {.lr = 0.01, .weight_decay = 0.05, .amsgrad = true});
    std::vector<std::vector<AdamRef>> ref;
    for (const auto& v : pv) ref.emplace_back(v.size());
    for (int it = 0; it < 3; ++it) {
      for (size_t i = 0; i < ps.size(); ++i) {
        Tensor g = randn(ps[i].shape(), DType::f64, &gen);
        ps[i].set_grad(g);
        const std::vector<double> gv = vals(g);
        for (size_t k = 0; k < gv.size(); ++k) ref[i][k].step(pv[i][k], gv[k], 0.01, 0.9, 0.999, 1e-8, 0.05, true, true);
      }
      opt.step();
    }
    for (size_t i = 0; i < ps.size(); ++i) check_tensor(ps[i], ps[i].shape(), pv[i], 1e-11, 1e-12);
  }

  TEST_CASE("f16 and bf16 parameters: f32 state, results as the rule on the rounded values") {
    for (DType dt : {DType::f16, DType::bf16}) {
      const std::string dt_name = dtype_name(dt);
      CAPTURE(dt_name);
      const double tol = dt == DType::f16 ? 4e-3 : 3e-2;
      Tensor p = to_dtype(tensor({0.5, -0.75, 1.25, -1.5}), dt).requires_grad_();
      std::vector<double> pv = vals(p);  // the rounded start values
      optim::Adam opt({p}, {.lr = 0.01});
      std::vector<AdamRef> ref(4);
      for (int it = 0; it < 3; ++it) {
        const std::vector<double> gv = {0.3, -0.2 * (it + 1), 1.0, 0.05};
        Tensor g = to_dtype(from_vector<double>(gv, {4}), dt);
        p.set_grad(g);
        const std::vector<double> grv = vals(g);
        for (size_t k = 0; k < 4; ++k) ref[k].step(pv[k], grv[k], 0.01, 0.9, 0.999, 1e-8, 0, false, false);
        opt.step();
        check_tensor(p, {4}, pv, tol, tol);
        CHECK(p.dtype() == dt);
      }
      const StateDict sd = opt.state_dict();
      CHECK(sd.find("state.0.0.exp_avg").dtype() == DType::f32);
      CHECK(sd.find("state.0.0.exp_avg_sq").dtype() == DType::f32);
      // clip on f16/bf16 gradients
      p.set_grad(to_dtype(tensor({3.0, 4.0, 0.0, 0.0}), dt));
      Tensor n = optim::clip_grad_norm_({p}, 1.0);
      CHECK(n.item<double>() == doctest::Approx(5.0).epsilon(1e-5));
      check_tensor(p.grad(), {4}, {0.6, 0.8, 0, 0}, tol, tol);
    }
  }

  // --- CUDA against the CPU -------------------------------------------------------------------

  TEST_CASE("CUDA fused SGD / Adam / AdamW match the CPU (f32 f64 f16 bf16, more tensors than one launch holds)") {
    const Device dev = device_under_test();
    for (DType dt : {DType::f32, DType::f64, DType::f16, DType::bf16}) {
      const std::string dt_name = dtype_name(dt);
      CAPTURE(dt_name);
      const double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 2e-5 : dt == DType::f16 ? 2e-3 : 1.6e-2;
      for (int kind = 0; kind < 3; ++kind) {
        CAPTURE(kind);
        Generator gen(100 + kind);
        // 330 tensors (more than a 24 KiB table holds for any of the three) incl. a 200003-element one.
        std::vector<Tensor> cpu_ps, dev_ps;
        for (int i = 0; i < 330; ++i) {
          const int64_t n = i == 5 ? 200003 : 1 + (i * 13) % 97;
          Tensor v = to_dtype(randn({n}, DType::f32, &gen), dt);
          cpu_ps.push_back(clone(v).requires_grad_());
          dev_ps.push_back(v.to(dev).requires_grad_());
        }
        auto make = [&](std::vector<Tensor> ps) -> std::unique_ptr<optim::Optimizer> {
          if (kind == 0)
            return std::make_unique<optim::SGD>(ps, optim::SGDOptions{.lr = 0.05, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true});
          if (kind == 1) return std::make_unique<optim::Adam>(ps, optim::AdamOptions{.lr = 0.01, .weight_decay = 0.1});
          return std::make_unique<optim::AdamW>(ps, optim::AdamWOptions{.lr = 0.01, .amsgrad = true});
        };
        auto cpu_opt = make(cpu_ps);
        auto dev_opt = make(dev_ps);
        for (int it = 0; it < 3; ++it) {
          for (size_t i = 0; i < cpu_ps.size(); ++i) {
            Tensor g = to_dtype(randn(cpu_ps[i].shape(), DType::f32, &gen), dt);
            cpu_ps[i].set_grad(g);
            dev_ps[i].set_grad(g.to(dev));
          }
          cpu_opt->step();
          dev_opt->step();
        }
        for (size_t i = 0; i < cpu_ps.size(); ++i) {
          CAPTURE(i);
          CHECK(dev_ps[i].device() == dev);
          check_tensor(dev_ps[i].to(Device::cpu()), cpu_ps[i].shape(), vals(cpu_ps[i]), tol, tol);
        }
        // The device state round-trips through a state dict.
        const StateDict sd = dev_opt->state_dict();
        auto again = make(clone_params(dev_ps));
        again->load_state_dict(sd);
        CHECK(again->step_count(0, 0) == 3);
      }
    }
  }

  TEST_CASE("CUDA clip_grad_norm_ / clip_grad_value_ match the CPU (p = 2, 1, inf, 3; more gradients than one launch holds)") {
    const Device dev = device_under_test();
    for (double p : {2.0, 1.0, optim::kInfNorm, 3.0}) {
      CAPTURE(p);
      Generator gen(3);
      std::vector<Tensor> cpu_ps, dev_ps;
      for (int i = 0; i < 1100; ++i) {
        const int64_t n = i == 3 ? 150001 : 1 + i % 37;
        const DType dt = i % 3 == 0 ? DType::f16 : DType::f32;
        Tensor g = to_dtype(randn({n}, DType::f32, &gen), dt);
        cpu_ps.push_back(zeros({n}, dt).requires_grad_());
        dev_ps.push_back(zeros({n}, TensorOptions(dt).with_device(dev)).requires_grad_());
        cpu_ps.back().set_grad(g);
        dev_ps.back().set_grad(clone(g).to(dev));  // own copy also in a dry run
      }
      const Tensor n_cpu = optim::clip_grad_norm_(cpu_ps, 1.0, p);
      const Tensor n_dev = optim::clip_grad_norm_(dev_ps, 1.0, p);
      CHECK(n_dev.device() == dev);
      CHECK(n_dev.item<double>() == doctest::Approx(n_cpu.item<double>()).epsilon(1e-5));
      for (size_t i = 0; i < cpu_ps.size(); i += 7)
        check_tensor(dev_ps[i].grad().to(Device::cpu()), cpu_ps[i].shape(), vals(cpu_ps[i].grad()), 2e-3, 1e-6);
    }
    Tensor a = zeros({5}, TensorOptions().with_device(dev)).requires_grad_();
    a.set_grad(tensor({-3.0, 0.25, 0.5, 2.0, -0.5}).to(dev));
    optim::clip_grad_value_({a}, 0.5);
    check_tensor(a.grad().to(Device::cpu()), {5}, {-0.5, 0.25, 0.5, 0.5, -0.5}, 0, 0);
  }
}
