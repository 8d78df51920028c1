// optim schedules: StepLR, WarmupCosineLR, LinearLR and ReduceLROnPlateau against hand-computed
// lr sequences (parameter groups keep their own base lr), option checks, and state_dict round
// trips that continue identically and restore the optimizer's lr.
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <vector>

#include "ember/optim/optimizer.h"
#include "ember/optim/schedule.h"
#include "ember/optim/sgd.h"
#include "test_util.h"

using namespace ember;

TEST_SUITE("optim_schedule") {
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
}
