// optim: SGD (Nesterov, dampening), Adam, AdamW (amsgrad) against their update rules computed
// here in double, parameter groups, checkpoints (state_dict round trips continue identically,
// load_state_dict names what is wrong), learning-rate schedules against hand values, gradient
// clipping, the fused CPU kernel on many and large tensors against the rule, f16/bf16
// parameters with f32 state, and CUDA against the CPU (skipped without a GPU).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ember/cuda.h"
#include "ember/optim/adam.h"
#include "ember/optim/clip.h"
#include "ember/optim/optimizer.h"
#include "ember/optim/schedule.h"
#include "ember/optim/sgd.h"
#include "test_util.h"

using namespace ember;
using ember_test::check_tensor;
using ember_test::vals;

namespace {

// loss = sum(p^3 - 0.5 p): gradient 3 p^2 - 0.5 (both signs).
Tensor cubic_loss(const Tensor& p) { return sum(p * p * p - p * 0.5); }
double cubic_grad(double p) { return 3 * p * p - 0.5; }

// The textbook Adam step in double for one element (bias-corrected moments).
struct AdamRef {
  double m = 0, v = 0, vmax = 0;
  int t = 0;
  void step(double& p, double g, double lr, double b1, double b2, double eps, double wd, bool decoupled, bool amsgrad) {
    ++t;
    if (decoupled) p -= lr * wd * p;
    else g += wd * p;
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    vmax = std::max(vmax, v);
    const double mhat = m / (1 - std::pow(b1, t));
    const double vhat = (amsgrad ? vmax : v) / (1 - std::pow(b2, t));
    p -= lr * mhat / (std::sqrt(vhat) + eps);
  }
};

std::vector<Tensor> clone_params(const std::vector<Tensor>& ps) {
  std::vector<Tensor> out;
  for (const Tensor& p : ps) out.push_back(clone(p.detach()).requires_grad_());
  return out;
}

bool has_meta(const StateDict& sd, const std::string& k) { return sd.meta.count(k) > 0; }

Device device_under_test() { return ember_test::test_device(); }

}  // namespace

TEST_SUITE("optim") {
  // --- SGD ------------------------------------------------------------------------------------

  TEST_CASE("SGD Nesterov and dampening follow PyTorch's rule step by step (f64, f32)") {
    struct Case {
      double momentum, dampening;
      bool nesterov;
    };
    for (Case c : {Case{0.9, 0.0, true}, Case{0.8, 0.3, false}, Case{0.5, 0.0, false}}) {
      for (DType dt : {DType::f64, DType::f32}) {
        CAPTURE(c.momentum);
        CAPTURE(c.dampening);
        CAPTURE(c.nesterov);
        const std::string dt_name = dtype_name(dt);
        CAPTURE(dt_name);
        const double tol = dt == DType::f64 ? 1e-12 : 2e-5;
        const double lr = 0.05, wd = 0.02;
        Tensor p = tensor({0.5, -0.75, 1.25, 0.1}, dt).requires_grad_();
        optim::SGD opt({p}, {.lr = lr, .momentum = c.momentum, .weight_decay = wd, .dampening = c.dampening,
                             .nesterov = c.nesterov});
        std::vector<double> pv = {0.5, -0.75, 1.25, 0.1}, buf(4, 0.0);
        for (int it = 0; it < 5; ++it) {
          opt.zero_grad();
          cubic_loss(p).backward();
          opt.step();
          for (size_t i = 0; i < pv.size(); ++i) {
            double g = cubic_grad(pv[i]) + wd * pv[i];
            buf[i] = it == 0 ? g : c.momentum * buf[i] + (1 - c.dampening) * g;
            g = c.nesterov ? g + c.momentum * buf[i] : buf[i];
            pv[i] -= lr * g;
          }
          check_tensor(p, {4}, pv, tol, tol);
        }
        CHECK(opt.step_count(0, 0) == 5);
        CHECK(p.is_leaf());
        CHECK(p.grad_fn() == nullptr);
      }
    }
  }

  TEST_CASE("SGD option checks") {
    Tensor p = tensor({1.0}).requires_grad_();
    CHECK_EMBER_ERROR(optim::SGD({p}, {.lr = 0.1, .nesterov = true}), "SGD", "nesterov", "momentum");
    CHECK_EMBER_ERROR(optim::SGD({p}, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}), "SGD",
                      "dampening");
    CHECK_EMBER_ERROR(optim::SGD({p}, {.dampening = 1.5}), "SGD", "dampening", "1.5");
    CHECK_EMBER_ERROR(optim::SGD(std::vector<Tensor>{}, {}), "SGD", "empty parameter list");
    CHECK_EMBER_ERROR(optim::SGD({p, p}, {}), "SGD", "more than once");
    CHECK_EMBER_ERROR(optim::SGD(std::vector<optim::ParamGroup>{{.params = {p}, .beta1 = 0.5}}, {}), "SGD", "beta1",
                      "does not use");
    // Options changed to a bad value between steps are caught by step().
    optim::SGD opt({p}, {.lr = 0.1});
    opt.options().lr = -2;
    CHECK_EMBER_ERROR(opt.step(), "SGD", "lr", "-2");
  }

  // --- Adam / AdamW ---------------------------------------------------------------------------

  TEST_CASE("Adam and AdamW against the textbook rule over several steps (weight decay, amsgrad; f64, f32)") {
    const double lr = 0.01, b1 = 0.8, b2 = 0.95, eps = 1e-6, wd = 0.1;
    for (bool decoupled : {false, true}) {
      for (bool amsgrad : {false, true}) {
        for (DType dt : {DType::f64, DType::f32}) {
          CAPTURE(decoupled);
          CAPTURE(amsgrad);
          const std::string dt_name = dtype_name(dt);
          CAPTURE(dt_name);
          const double tol = dt == DType::f64 ? 1e-12 : 2e-5;
          const std::vector<double> init = {0.5, -0.75, 1.25, 0.05, -1.5};
          Tensor p = tensor({0.5, -0.75, 1.25, 0.05, -1.5}, dt).requires_grad_();
          std::unique_ptr<optim::Adam> opt;
          if (decoupled)
            opt = std::make_unique<optim::AdamW>(std::vector<Tensor>{p}, optim::AdamWOptions{.lr = lr, .beta1 = b1, .beta2 = b2,
                                                                                            .eps = eps, .weight_decay = wd,
                                                                                            .amsgrad = amsgrad});
          else
            opt = std::make_unique<optim::Adam>(std::vector<Tensor>{p}, optim::AdamOptions{.lr = lr, .beta1 = b1, .beta2 = b2,
                                                                                          .eps = eps, .weight_decay = wd,
                                                                                          .amsgrad = amsgrad});
          CHECK(opt->name() == (decoupled ? "AdamW" : "Adam"));
          std::vector<double> pv = init;
          std::vector<AdamRef> ref(init.size());
          for (int it = 0; it < 6; ++it) {
            opt->zero_grad();
            // Steps 3 and 4 flip the gradient's sign so v shrinks and amsgrad's max matters.
            Tensor loss = it == 3 || it == 4 ? -cubic_loss(p) * 0.25 : cubic_loss(p);
            loss.backward();
            opt->step();
            for (size_t i = 0; i < pv.size(); ++i) {
              const double g = (it == 3 || it == 4 ? -0.25 : 1.0) * cubic_grad(pv[i]);
              ref[i].step(pv[i], g, lr, b1, b2, eps, wd, decoupled, amsgrad);
            }
            check_tensor(p, {5}, pv, tol, tol);
          }
        }
      }
    }
  }

  TEST_CASE("AdamW defaults to weight_decay 1e-2; Adam to 0; option checks") {
    Tensor p = tensor({1.0, -2.0}, DType::f64).requires_grad_();
    optim::AdamW w({p});
    CHECK(w.options().weight_decay == 1e-2);
    CHECK(w.options().lr == 1e-3);
    CHECK(optim::AdamW({p}, {.lr = 0.5}).options().weight_decay == 1e-2);
    CHECK(optim::Adam({p}).options().weight_decay == 0.0);
    // A zero gradient: Adam moves nothing; AdamW still decays.
    p.set_grad(zeros({2}, DType::f64));
    w.step();
    check_tensor(p, {2}, {1.0 * (1 - 1e-3 * 1e-2), -2.0 * (1 - 1e-3 * 1e-2)}, 1e-15, 1e-15);
    CHECK_EMBER_ERROR(optim::Adam({p}, {.beta1 = 1.0}), "Adam", "beta1");
    CHECK_EMBER_ERROR(optim::Adam({p}, {.beta2 = -0.1}), "Adam", "beta2");
    CHECK_EMBER_ERROR(optim::Adam({p}, {.eps = -1}), "Adam", "eps");
    CHECK_EMBER_ERROR(optim::AdamW({p}, {.lr = -1}), "AdamW", "lr");
    CHECK_EMBER_ERROR(optim::Adam(std::vector<optim::ParamGroup>{{.params = {p}, .momentum = 0.9}}), "Adam", "momentum",
                      "does not use");
  }

  TEST_CASE("Adam: a parameter without a gradient skips the step and keeps its own step count") {
    const double lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    Tensor p = tensor({0.5, -1.0}, DType::f64).requires_grad_();
    Tensor q = tensor({2.0}, DType::f64).requires_grad_();
    optim::Adam opt({p, q}, {.lr = lr});
    std::vector<double> pv = {0.5, -1.0}, qv = {2.0};
    std::vector<AdamRef> pr(2), qr(1);
    for (int it = 0; it < 4; ++it) {
      const bool use_q = it != 1;
      opt.zero_grad();
      Tensor loss = cubic_loss(p);
      if (use_q) loss = loss + cubic_loss(q);
      loss.backward();
      opt.step();
      for (size_t i = 0; i < 2; ++i) pr[i].step(pv[i], cubic_grad(pv[i]), lr, b1, b2, eps, 0, false, false);
      if (use_q) qr[0].step(qv[0], cubic_grad(qv[0]), lr, b1, b2, eps, 0, false, false);
      check_tensor(p, {2}, pv, 1e-12, 1e-12);
      check_tensor(q, {1}, qv, 1e-12, 1e-12);
    }
    CHECK(opt.step_count(0, 0) == 4);
    CHECK(opt.step_count(0, 1) == 3);
  }

  TEST_CASE("the update records no autograd, bumps the version, and works with grad mode on") {
    Tensor p = tensor({1.0, 2.0}).requires_grad_();
    optim::Adam opt({p}, {.lr = 0.1});
    Tensor y = p * p;  // saves p
    sum(y).backward(Tensor(), true);
    const uint64_t v0 = p.version();
    CHECK(grad_enabled());
    opt.step();
    CHECK(p.version() > v0);
    CHECK(p.is_leaf());
    CHECK(p.requires_grad());
    CHECK(p.grad_fn() == nullptr);
    // The graph that saved p notices the in-place update.
    CHECK_THROWS_AS(sum(y).backward(), Error);
  }

  TEST_CASE("non-contiguous parameters are updated through a contiguous copy") {
    Tensor base = tensor({{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}}, DType::f64);
    Tensor p = transpose(base, 0, 1).requires_grad_();  // (3, 2), strides (1, 3)
    REQUIRE_FALSE(p.is_contiguous());
    optim::SGD opt({p}, {.lr = 0.5, .momentum = 0.9});
    p.set_grad(tensor({{1.0, 2.0}, {3.0, 4.0}, {5.0, 6.0}}, DType::f64));
    opt.step();
    opt.step();  // buf = g, then 1.9 g: the total change is 0.5 * 2.9 g = 1.45 g
    check_tensor(p, {3, 2}, {1 - 1.45, 4 - 2.9, 2 - 4.35, 5 - 5.8, 3 - 7.25, 6 - 8.7}, 1e-15, 1e-15);
    check_tensor(base, {2, 3}, {1 - 1.45, 2 - 4.35, 3 - 7.25, 4 - 2.9, 5 - 5.8, 6 - 8.7}, 1e-15, 1e-15);
  }

  // --- groups ---------------------------------------------------------------------------------

  TEST_CASE("parameter groups: their own lr / weight decay / betas; unset options follow options()") {
    Tensor a = tensor({1.0, -1.0}, DType::f64).requires_grad_();
    Tensor b = tensor({0.5}, DType::f64).requires_grad_();
    Tensor c = tensor({-0.25, 2.0}, DType::f64).requires_grad_();
    optim::Adam opt({{.params = {a}, .lr = 0.1},
                     {.params = {b}, .weight_decay = 0.5, .beta1 = 0.5},
                     {.params = {c}}},
                    {.lr = 0.01, .beta2 = 0.99});
    REQUIRE(opt.num_groups() == 3);
    CHECK(opt.lr(0) == 0.1);
    CHECK(opt.lr(1) == 0.01);
    CHECK(opt.weight_decay(1) == 0.5);
    CHECK(opt.group_options(1).beta1 == 0.5);
    CHECK(opt.group_options(1).beta2 == 0.99);
    CHECK(opt.parameters().size() == 3);
    std::vector<double> av = {1.0, -1.0}, bv = {0.5}, cv = {-0.25, 2.0};
    std::vector<AdamRef> ar(2), br(1), cr(2);
    const std::vector<double> lrs = {0.01, 0.02, 0.005};  // the default lr, changed between steps
    for (int it = 0; it < 3; ++it) {
      opt.options().lr = lrs[it];
      if (it == 2) opt.set_lr(2, 0.3);  // c's group now has its own lr
      CHECK(opt.lr(1) == lrs[it]);
      opt.zero_grad();
      (cubic_loss(a) + cubic_loss(b) + cubic_loss(c)).backward();
      opt.step();
      for (size_t i = 0; i < 2; ++i) ar[i].step(av[i], cubic_grad(av[i]), 0.1, 0.9, 0.99, 1e-8, 0, false, false);
      br[0].step(bv[0], cubic_grad(bv[0]), lrs[it], 0.5, 0.99, 1e-8, 0.5, false, false);
      for (size_t i = 0; i < 2; ++i)
        cr[i].step(cv[i], cubic_grad(cv[i]), it == 2 ? 0.3 : lrs[it], 0.9, 0.99, 1e-8, 0, false, false);
      check_tensor(a, {2}, av, 1e-12, 1e-12);
      check_tensor(b, {1}, bv, 1e-12, 1e-12);
      check_tensor(c, {2}, cv, 1e-12, 1e-12);
    }
    CHECK_EMBER_ERROR(opt.set_lr(0, -1.0), "Adam", "lr");
    CHECK_EMBER_ERROR(opt.lr(3), "Adam", "group 3");
    CHECK_EMBER_ERROR(optim::Adam({{.params = {a}}, {.params = {a}}}), "Adam", "more than once");
    CHECK_EMBER_ERROR(optim::Adam({{.params = {a}}, {.params = {b}, .beta1 = 2.0}}), "Adam", "group 1", "beta1");
  }

  TEST_CASE("SGD groups with different lrs and momentum; zero_grad(false) zeroes in place") {
    Tensor a = tensor({1.0}, DType::f64).requires_grad_();
    Tensor b = tensor({2.0}, DType::f64).requires_grad_();
    optim::SGD opt({{.params = {a}}, {.params = {b}, .lr = 0.5, .momentum = 0.0}}, {.lr = 0.1, .momentum = 0.9});
    double av = 1.0, bv = 2.0, abuf = 0;
    for (int it = 0; it < 3; ++it) {
      opt.zero_grad(false);
      if (it > 0) {
        CHECK(a.grad().defined());
        CHECK(a.grad().item<double>() == 0.0);
      }
      (sum(a * a) + sum(b * b)).backward();
      opt.step();
      abuf = it == 0 ? 2 * av : 0.9 * abuf + 2 * av;
      av -= 0.1 * abuf;
      bv -= 0.5 * 2 * bv;
      check_tensor(a, {1}, {av}, 1e-14, 1e-14);
      check_tensor(b, {1}, {bv}, 1e-14, 1e-14);
    }
    const StateDict sd = opt.state_dict();
    CHECK(sd.find("state.0.0.momentum_buffer").defined());
    CHECK_FALSE(sd.find("state.1.0.momentum_buffer").defined());  // no momentum in group 1
  }

  // --- checkpoints ----------------------------------------------------------------------------

  TEST_CASE("state_dict names, and a round trip continues identically (SGD, Adam amsgrad, AdamW)") {
    using Make = std::function<std::unique_ptr<optim::Optimizer>(std::vector<Tensor>, std::vector<Tensor>)>;
    const std::vector<std::pair<std::string, Make>> makers = {
        {"SGD",
         [](std::vector<Tensor> g0, std::vector<Tensor> g1) {
           return std::make_unique<optim::SGD>(
               std::vector<optim::ParamGroup>{{.params = g0}, {.params = g1, .lr = 0.02, .nesterov = true}},
               optim::SGDOptions{.lr = 0.05, .momentum = 0.9, .weight_decay = 0.01});
         }},
        {"Adam",
         [](std::vector<Tensor> g0, std::vector<Tensor> g1) {
           return std::make_unique<optim::Adam>(
               std::vector<optim::ParamGroup>{{.params = g0, .amsgrad = true}, {.params = g1, .lr = 0.003}},
               optim::AdamOptions{.lr = 0.01, .weight_decay = 0.1});
         }},
        {"AdamW",
         [](std::vector<Tensor> g0, std::vector<Tensor> g1) {
           return std::make_unique<optim::AdamW>(
               std::vector<optim::ParamGroup>{{.params = g0}, {.params = g1, .weight_decay = 0.0}},
               optim::AdamWOptions{.lr = 0.01, .amsgrad = true});
         }},
    };
    for (const auto& [name, make] : makers) {
      CAPTURE(name);
      Generator gen(7);
      std::vector<Tensor> ps = {randn({3, 4}, DType::f64, &gen).requires_grad_(), randn({5}, DType::f64, &gen).requires_grad_(),
                                randn({2}, DType::f64, &gen).requires_grad_()};
      auto opt = make({ps[0], ps[1]}, {ps[2]});
      auto train = [](optim::Optimizer& o, const std::vector<Tensor>& p, int steps, bool skip_last) {
        for (int s = 0; s < steps; ++s) {
          o.zero_grad();
          Tensor loss = cubic_loss(p[0]) + cubic_loss(p[1]);
          if (!skip_last) loss = loss + cubic_loss(p[2]);
          loss.backward();
          o.step();
        }
      };
      train(*opt, ps, 2, true);  // p[2] has no state yet
      train(*opt, ps, 1, false);
      const StateDict sd = opt->state_dict();
      CHECK(sd.meta.at("optimizer") == name);
      CHECK(sd.meta.at("groups") == "2");
      CHECK(sd.meta.at("group.0.params") == "2");
      CHECK(sd.meta.at("group.1.params") == "1");
      CHECK(sd.meta.at("state.0.0.step") == "3");
      CHECK(sd.meta.at("state.1.0.step") == "1");
      CHECK(has_meta(sd, "defaults.lr"));
      if (name == "SGD") {
        CHECK(sd.meta.at("state.0.1.buffers") == "momentum_buffer");
        CHECK(sd.find("state.0.1.momentum_buffer").shape() == Shape{5});
        CHECK(sd.meta.at("group.1.nesterov") == "true");
        CHECK(sd.meta.at("group.1.lr") == "0.02");
        CHECK_FALSE(has_meta(sd, "group.0.lr"));
      } else {
        CHECK(sd.find("state.0.0.exp_avg").shape() == Shape{3, 4});
        CHECK(sd.find("state.0.0.exp_avg_sq").shape() == Shape{3, 4});
        CHECK(sd.find("state.0.0.max_exp_avg_sq").defined());
        CHECK(sd.meta.at("state.0.0.buffers") == "exp_avg,exp_avg_sq,max_exp_avg_sq");
        CHECK(sd.meta.at("defaults.amsgrad") == (name == "AdamW" ? "true" : "false"));
      }
      // A fresh optimizer over copies of the parameters, loaded, continues identically.
      std::vector<Tensor> qs = clone_params(ps);
      auto opt2 = make({qs[0], qs[1]}, {qs[2]});
      opt2->load_state_dict(sd);
      CHECK(opt2->step_count(0, 0) == 3);
      CHECK(opt2->lr(1) == opt->lr(1));
      train(*opt, ps, 3, false);
      train(*opt2, qs, 3, false);
      for (size_t i = 0; i < ps.size(); ++i) CHECK_MESSAGE(equal(ps[i], qs[i]), "parameter " << i);
    }
  }

  TEST_CASE("load_state_dict restores options and names every missing, mis-shaped and unexpected entry") {
    Tensor a = tensor({1.0, 2.0}).requires_grad_();
    Tensor b = tensor({{1.0, 2.0}, {3.0, 4.0}}).requires_grad_();
    optim::Adam opt({a, b}, {.lr = 0.05, .beta1 = 0.7});
    (cubic_loss(a) + cubic_loss(b)).backward();
    opt.step();
    const StateDict good = opt.state_dict();

    Tensor a2 = tensor({1.0, 2.0}).requires_grad_();
    Tensor b2 = tensor({{1.0, 2.0}, {3.0, 4.0}}).requires_grad_();
    optim::Adam fresh({a2, b2});
    fresh.load_state_dict(good);
    CHECK(fresh.options().lr == 0.05);
    CHECK(fresh.options().beta1 == 0.7);

    optim::Adam target({a2, b2});
    StateDict bad = good;
    bad.tensors.erase(std::remove_if(bad.tensors.begin(), bad.tensors.end(),
                                     [](const auto& nt) { return nt.first == "state.0.1.exp_avg"; }),
                      bad.tensors.end());
    for (auto& [n, t] : bad.tensors)
      if (n == "state.0.0.exp_avg_sq") t = zeros({3});
    bad.tensors.emplace_back("state.0.0.velocity", zeros({2}));
    bad.meta.erase("state.0.1.step");
    ember_test::check_error([&] { target.load_state_dict(bad); }, "load_state_dict(bad)",
                            {"Adam", "missing tensor \"state.0.1.exp_avg\"", "\"state.0.0.exp_avg_sq\" has shape (3,)",
                             "(2,)", "unexpected tensor \"state.0.0.velocity\"", "missing meta \"state.0.1.step\""});
    CHECK(target.step_count(0, 0) == 0);  // nothing changed
    CHECK(target.options().lr == 1e-3);

    // Another optimizer kind, other group structure, other parameter counts.
    optim::SGD sgd({a2, b2}, {.lr = 0.1});
    CHECK_EMBER_ERROR(sgd.load_state_dict(good), "load_state_dict", "Adam", "SGD");
    optim::Adam one({a2});
    CHECK_EMBER_ERROR(one.load_state_dict(good), "load_state_dict", "group 0 has 2 parameters");
    optim::Adam two_groups({{.params = {a2}}, {.params = {b2}}});
    CHECK_EMBER_ERROR(two_groups.load_state_dict(good), "load_state_dict", "1 parameter groups");
    CHECK_EMBER_ERROR(target.load_state_dict(StateDict{}), "load_state_dict", "optimizer");
    // A mis-shaped parameter: same count, other shape.
    optim::Adam other({a2, tensor({1.0, 2.0, 3.0, 4.0}).requires_grad_()});
    CHECK_EMBER_ERROR(other.load_state_dict(good), "load_state_dict", "state.0.1.exp_avg", "(2, 2)", "(4,)");
    // Bad option values in meta.
    StateDict worse = good;
    worse.meta["defaults.beta1"] = "oops";
    CHECK_EMBER_ERROR(target.load_state_dict(worse), "load_state_dict", "defaults.beta1", "oops");
  }

  // --- schedules ------------------------------------------------------------------------------

  TEST_CASE("StepLR, WarmupCosineLR and LinearLR lr sequences against hand values") {
    Tensor p = tensor({1.0}).requires_grad_();
    auto run = [](optim::LRScheduler& s, optim::Optimizer& o, size_t n) {
      std::vector<double> lrs = {o.lr(0)};
      for (size_t i = 1; i < n; ++i) {
        s.step();
        lrs.push_back(o.lr(0));
      }
      return lrs;
    };
    auto check_seq = [](const std::vector<double>& got, const std::vector<double>& want) {
      REQUIRE(got.size() == want.size());
      for (size_t i = 0; i < got.size(); ++i) CHECK_MESSAGE(std::fabs(got[i] - want[i]) < 1e-15, "epoch " << i << ": " << got[i] << " != " << want[i]);
    };
    {
      optim::SGD o({p}, {.lr = 0.1});
      optim::StepLR s(o, 2, 0.5);
      check_seq(run(s, o, 7), {0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125});
      CHECK(s.last_epoch() == 6);
    }
    {
      optim::SGD o({p}, {.lr = 0.1});
      optim::WarmupCosineLR s(o, {.warmup_steps = 2, .total_steps = 6, .min_lr = 0.01});
      const double r = std::sqrt(0.5);  // cos(pi/4)
      check_seq(run(s, o, 9), {0.0, 0.05, 0.1, 0.01 + 0.045 * (1 + r), 0.055, 0.01 + 0.045 * (1 - r), 0.01, 0.01, 0.01});
    }
    {
      optim::SGD o({p}, {.lr = 0.1});
      optim::WarmupCosineLR s(o, {.warmup_steps = 4, .total_steps = 5, .start_factor = 0.2});
      check_seq(run(s, o, 6), {0.02, 0.04, 0.06, 0.08, 0.1, 0.0});
    }
    {
      optim::SGD o({p}, {.lr = 0.2});
      optim::LinearLR s(o, {.start_factor = 1.0, .end_factor = 0.1, .total_steps = 4});
      check_seq(run(s, o, 6), {0.2, 0.155, 0.11, 0.065, 0.02, 0.02});
    }
    {  // groups keep their own base lr
      Tensor q = tensor({1.0}).requires_grad_();
      optim::SGD o({{.params = {p}}, {.params = {q}, .lr = 1.0}}, {.lr = 0.1});
      optim::StepLR s(o, 1, 0.1);
      s.step();
      CHECK(std::fabs(o.lr(0) - 0.01) < 1e-15);
      CHECK(std::fabs(o.lr(1) - 0.1) < 1e-15);
      CHECK(s.base_lrs() == std::vector<double>{0.1, 1.0});
    }
    optim::SGD o({p}, {.lr = 0.1});
    CHECK_EMBER_ERROR(optim::StepLR(o, 0), "StepLR", "step_size");
    CHECK_EMBER_ERROR(optim::WarmupCosineLR(o, {.warmup_steps = 5, .total_steps = 5}), "WarmupCosineLR", "total_steps");
    CHECK_EMBER_ERROR(optim::LinearLR(o, {.total_steps = 0}), "LinearLR", "total_steps");
  }

  TEST_CASE("ReduceLROnPlateau: patience, relative threshold, cooldown and min_lr against a hand trace") {
    Tensor p = tensor({1.0}).requires_grad_();
    optim::SGD o({p}, {.lr = 0.1});
    optim::ReduceLROnPlateau s(o, {.factor = 0.5, .patience = 1, .threshold = 0.1, .cooldown = 1, .min_lr = 0.02});
    const std::vector<double> metrics = {1.0, 0.95, 0.95, 0.99, 0.99, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8};
    const std::vector<double> want = {0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.02, 0.02, 0.02, 0.02};
    for (size_t i = 0; i < metrics.size(); ++i) {
      s.step(metrics[i]);
      CHECK_MESSAGE(std::fabs(o.lr(0) - want[i]) < 1e-15, "epoch " << i + 1 << ": " << o.lr(0) << " != " << want[i]);
    }
    CHECK(s.best() == 0.8);
    // mode max with an absolute threshold
    optim::SGD o2({p}, {.lr = 1.0});
    optim::ReduceLROnPlateau s2(o2, {.mode_max = true, .factor = 0.1, .patience = 0, .threshold = 0.5, .threshold_abs = true});
    s2.step(1.0);  // better than -inf
    CHECK(o2.lr(0) == 1.0);
    s2.step(1.4);  // not > 1.0 + 0.5: bad, patience 0 -> reduce
    CHECK(std::fabs(o2.lr(0) - 0.1) < 1e-15);
    s2.step(2.0);  // better
    CHECK(std::fabs(o2.lr(0) - 0.1) < 1e-15);
    CHECK_EMBER_ERROR(optim::ReduceLROnPlateau(o2, {.factor = 1.0}), "ReduceLROnPlateau", "factor");
  }

  TEST_CASE("schedules: state_dict round trips continue identically and restore the optimizer's lr") {
    Tensor p = tensor({1.0}).requires_grad_();
    {
      optim::SGD o({p}, {.lr = 0.1});
      optim::WarmupCosineLR s(o, {.warmup_steps = 3, .total_steps = 10, .min_lr = 0.001});
      for (int i = 0; i < 4; ++i) s.step();
      const StateDict sd = s.state_dict();
      CHECK(sd.meta.at("scheduler") == "WarmupCosineLR");
      CHECK(sd.meta.at("last_epoch") == "4");
      CHECK(sd.meta.at("base_lr.0") == "0.10000000000000001");
      // A new optimizer + schedule, built in the usual order, then loaded.
      optim::SGD o2({p}, {.lr = 0.1});
      optim::WarmupCosineLR s2(o2, {.warmup_steps = 1, .total_steps = 2});
      s2.load_state_dict(sd);
      CHECK(o2.lr(0) == o.lr(0));
      for (int i = 0; i < 8; ++i) {
        s.step();
        s2.step();
        CHECK(o2.lr(0) == o.lr(0));
      }
      optim::StepLR wrong(o2, 3);
      CHECK_EMBER_ERROR(wrong.load_state_dict(sd), "load_state_dict", "WarmupCosineLR", "StepLR");
      StateDict broken = sd;
      broken.meta.erase("total_steps");
      CHECK_EMBER_ERROR(s2.load_state_dict(broken), "load_state_dict", "total_steps");
    }
    {
      optim::SGD o({p}, {.lr = 0.1});
      optim::ReduceLROnPlateau s(o, {.factor = 0.5, .patience = 1, .cooldown = 2});
      for (double m : {1.0, 1.0, 1.0, 0.5, 0.6}) s.step(m);
      optim::SGD o2({p}, {.lr = o.lr(0)});
      optim::ReduceLROnPlateau s2(o2);
      s2.load_state_dict(s.state_dict());
      CHECK(s2.best() == s.best());
      CHECK(s2.num_bad_epochs() == s.num_bad_epochs());
      CHECK(s2.cooldown_counter() == s.cooldown_counter());
      for (double m : {0.6, 0.6, 0.6, 0.6, 0.4, 0.4, 0.4, 0.4}) {
        s.step(m);
        s2.step(m);
        CHECK(o2.lr(0) == o.lr(0));
      }
      CHECK(o.lr(0) < 0.05);
    }
  }

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
