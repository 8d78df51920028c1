// optim: SGD (Nesterov, dampening), Adam, AdamW (amsgrad) against their update rules computed
// here in double, parameter groups, and checkpoints (state_dict round trips continue
// identically, load_state_dict names what is wrong). Learning-rate schedules are in
// test_optim_schedule.cpp; clipping, the fused kernels, f16/bf16 and the device in
// test_optim_fused.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ember/optim/adam.h"
#include "ember/optim/optimizer.h"
#include "ember/optim/sgd.h"
#include "optim_util.h"
#include "test_util.h"

using namespace ember;
using ember_test::AdamRef;
using ember_test::check_tensor;
using ember_test::clone_params;
using ember_test::cubic_grad;
using ember_test::cubic_loss;

namespace {

bool has_meta(const StateDict& sd, const std::string& k) { return sd.meta.count(k) > 0; }

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
}
