// CUDA graphs (ember/cuda_graph.h): a captured and replayed training step against the eager
// one, bit for bit, and everything a graph cannot hold refused with an error that says what.
// On the stand-in device fake:0 (CI) the capture records the kernels and a replay runs the
// record, so host code in the step runs once, as on a GPU; the same cases run on cuda:0 when
// a GPU is visible.
#include <doctest/doctest.h>

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ember/amp.h"
#include "ember/core/generator.h"
#include "ember/cuda.h"
#include "ember/cuda_graph.h"
#include "ember/fake.h"
#include "ember/nn/layers.h"
#include "ember/nn/loss.h"
#include "ember/ops/ops.h"
#include "ember/optim/adam.h"
#include "ember/optim/clip.h"
#include "ember/optim/schedule.h"
#include "ember/optim/sgd.h"
#include "test_util.h"

using namespace ember;
namespace ecuda = ember::cuda;

namespace {

const Device kDev = ember_test::test_device();
TensorOptions on(Device d, DType t = DType::f32) { return TensorOptions(t).with_device(d); }

std::shared_ptr<nn::Sequential> make_mlp(uint64_t seed) {
  Generator gen(seed);
  auto m = std::make_shared<nn::Sequential>();
  m->add(std::make_shared<nn::Linear>(6, 16, true, &gen));
  m->add(std::make_shared<nn::GELU>("tanh"));
  m->add(std::make_shared<nn::Linear>(16, 3, true, &gen));
  m->to(kDev);
  return m;
}

// Bytes of every parameter, in order, on the host.
std::vector<std::vector<unsigned char>> param_bytes(const nn::Module& m) {
  std::vector<std::vector<unsigned char>> out;
  for (const Tensor& p : m.parameters()) {
    const Tensor h = p.detach().to(Device::cpu()).contiguous();
    const auto* b = static_cast<const unsigned char*>(h.data_ptr());
    out.emplace_back(b, b + h.numel() * h.element_size());
  }
  return out;
}

// The batches of a run: fixed inputs and class targets, made on the host.
struct Batch {
  Tensor x, y;
};
std::vector<Batch> batches(int n) {
  Generator gen(7);
  std::vector<Batch> b;
  for (int i = 0; i < n; ++i)
    b.push_back({randn({5, 6}, {}, &gen), randint(0, 3, {5}, TensorOptions(DType::i64), &gen)});
  return b;
}

enum class Opt { adamw, sgd_momentum };

// Trains `steps` steps eagerly or through a StepGraph; returns the parameters' bytes and the
// losses read after each step.
struct RunResult {
  std::vector<std::vector<unsigned char>> params;
  std::vector<float> losses;
  int64_t host_step_calls = 0;
  int64_t replays = 0;
  int64_t opt_steps = 0;
};
RunResult train(bool graph, Opt which, int steps) {
  auto model = make_mlp(3);
  std::unique_ptr<optim::Optimizer> opt;
  if (which == Opt::adamw)
    opt = std::make_unique<optim::AdamW>(model->parameters(), optim::AdamWOptions{.lr = 0.01, .weight_decay = 0.1});
  else
    opt = std::make_unique<optim::SGD>(model->parameters(), optim::SGDOptions{.lr = 0.05, .momentum = 0.9});
  // The learning rate changes every step: a replay must see the new one.
  optim::WarmupCosineLR sched(*opt, {.warmup_steps = 2, .total_steps = steps, .min_lr = 1e-4});
  Tensor x = zeros({5, 6}, on(kDev)), y = zeros({5}, on(kDev, DType::i64)), loss;
  RunResult r;
  auto step = [&] {
    ++r.host_step_calls;
    opt->zero_grad();
    loss = nn::cross_entropy((*model)(x), y);
    loss.backward();
    optim::clip_grad_norm_(model->parameters(), 1.0);
    opt->step();
  };
  std::unique_ptr<ecuda::StepGraph> g;
  if (graph) g = std::make_unique<ecuda::StepGraph>(kDev, step, ecuda::StepGraphOptions{2, {&x, &y}});
  for (const Batch& b : batches(steps)) {
    x.copy_(b.x);
    y.copy_(b.y);
    if (g) g->run();
    else step();
    r.losses.push_back(loss.item<float>());
    sched.step();
  }
  r.params = param_bytes(*model);
  r.replays = g ? g->replays() : 0;
  r.opt_steps = opt->step_count(0, 0);
  return r;
}

}  // namespace

TEST_SUITE("cuda_graph") {
  TEST_CASE("a replayed training step equals the eager step bit for bit (AdamW + schedule + clipping, SGD momentum)") {
    for (Opt which : {Opt::adamw, Opt::sgd_momentum}) {
      CAPTURE(static_cast<int>(which));
      const RunResult eager = train(false, which, 7);
      const RunResult graph = train(true, which, 7);
      CHECK(graph.replays == 5);          // 2 warm-up steps, then capture + 5 replays
      CHECK(graph.host_step_calls == 3);  // the step's host code ran in warm-up and at capture only
      CHECK(graph.opt_steps == eager.opt_steps);
      CHECK(graph.opt_steps == 7);
      CHECK(graph.losses == eager.losses);
      REQUIRE(graph.params.size() == eager.params.size());
      for (size_t i = 0; i < eager.params.size(); ++i) CHECK(graph.params[i] == eager.params[i]);
      // And the run learned something, so equal is not equal-and-untouched.
      CHECK(eager.params != param_bytes(*make_mlp(3)));
    }
  }

  TEST_CASE("f16 loss scaling inside the graph: skipped steps, backoff and growth decided on the device, as eagerly") {
    // A scale so large that the first steps overflow f16 and are skipped, then growth every 2
    // clean steps: the replayed run must skip the same steps and walk the same scales.
    auto run = [](bool graph) {
      auto model = make_mlp(5);
      optim::SGD opt(model->parameters(), {.lr = 0.05});
      amp::GradScaler scaler({.init_scale = 524288.0, .growth_interval = 2});  // 2^19: overflows f16 here
      Tensor x = zeros({5, 6}, on(kDev)), y = zeros({5}, on(kDev, DType::i64)), loss;
      auto step = [&] {
        opt.zero_grad();
        {
          amp::AutocastGuard autocast(kDev, DType::f16);
          loss = nn::cross_entropy((*model)(x), y);
        }
        scaler.scale(loss).backward();
        scaler.step(opt);
        scaler.update();
      };
      ecuda::StepGraph g(kDev, step, {.warmup_steps = 1, .static_inputs = {&x, &y}});
      std::vector<double> scales;
      for (const Batch& b : batches(16)) {
        x.copy_(b.x);
        y.copy_(b.y);
        if (graph) g.run();
        else step();
        scales.push_back(scaler.get_scale());
      }
      return std::make_pair(scales, param_bytes(*model));
    };
    const auto eager = run(false), graph = run(true);
    CHECK(graph.first == eager.first);
    CHECK(graph.second == eager.second);
    // The run did skip (the scale fell) and did grow (it rose again).
    const auto& sc = eager.first;
    CHECK(sc.front() < 524288.0);
    bool rose = false;
    std::string walk;
    for (size_t i = 1; i < sc.size(); ++i) {
      rose = rose || sc[i] > sc[i - 1];
      walk += std::to_string(sc[i]) + " ";
    }
    CAPTURE(walk);
    CHECK(rose);
  }

  TEST_CASE("a graph replays device work only: host reads, host copies and random numbers are refused") {
    Tensor a = ones({4}, on(kDev));
    struct Case {
      const char* name;
      std::function<void()> work;
      const char* says;
    };
    amp::GradScaler scaler({.init_scale = 1024.0, .enabled = true});
    auto lin = std::make_shared<nn::Linear>(4, 2);
    lin->to(kDev);
    optim::SGD sgd(lin->parameters(), {.lr = 0.1});
    const std::vector<Case> cases = {
        {"item", [&] { (void)(a * 2.0).sum().item<float>(); }, "reading a device tensor on the host"},
        {"to_vector", [&] { (void)a.to_vector<float>(); }, "reading a device tensor on the host"},
        {"host to device", [&] { (void)from_vector(std::vector<float>{1, 2}, {2}, on(kDev)); },
         "copying host memory to the device"},
        {"arange", [&] { (void)arange(0, 4, 1, on(kDev)); }, "copying host memory to the device"},
        {"dropout", [&] { (void)dropout(a, 0.5, true); }, "random numbers"},
        {"GradScaler.get_scale", [&] {
           scaler.scale(lin->forward(a.reshape({1, 4})).sum()).backward();
           scaler.step(sgd);
           (void)scaler.get_scale();  // a host read of the device scale
         }, "GradScaler.get_scale"},
        {"nested", [&] { ecuda::Graph inner; inner.capture(kDev, [] {}); }, "do not nest"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.name);
      ecuda::Graph g;
      CHECK_THROWS_WITH_AS(g.capture(kDev, c.work), doctest::Contains(c.says), Error);
      CHECK_FALSE(g.captured());
      CHECK_FALSE(ecuda::is_capturing());  // the thread is back to eager work
      CHECK_THROWS_WITH_AS(g.replay(), doctest::Contains("nothing captured"), Error);
    }
    // The error names the device and where to read more.
    ecuda::Graph g;
    CHECK_THROWS_WITH_AS(g.capture(kDev, [&] { (void)a.sum().item<float>(); }),
                         doctest::Contains(("while capturing a CUDA graph on " + kDev.str()).c_str()), Error);
    // Eager work goes on as before.
    CHECK(a.sum().item<float>() == 4.0f);
  }

  TEST_CASE("bad use: host devices, empty work, shape changes, reassigned inputs, a momentum buffer made in capture") {
    CHECK_THROWS_WITH_AS(ecuda::Graph().capture(Device::cpu(), [] {}), doctest::Contains("capture on cuda:N or fake:N"),
                         Error);
    CHECK_THROWS_WITH_AS(ecuda::Graph().capture(kDev, {}), doctest::Contains("empty function"), Error);
    CHECK_THROWS_WITH_AS(ecuda::StepGraph(Device::cpu(), [] {}), doctest::Contains("run the step eagerly"), Error);
    CHECK_THROWS_WITH_AS(ecuda::StepGraph(kDev, [] {}, {.warmup_steps = -1, .static_inputs = {}}), doctest::Contains("warmup_steps"), Error);
    const Tensor cpu_input = ones({2});
    CHECK_THROWS_WITH_AS(ecuda::StepGraph(kDev, [] {}, {.static_inputs = {&cpu_input}}).run(),
                         doctest::Contains("static input 0 is on cpu"), Error);

    Tensor x = ones({3, 2}, on(kDev)), out;
    ecuda::StepGraph g(kDev, [&] { out = x * 3.0; }, {.warmup_steps = 1, .static_inputs = {&x}});
    g.run();  // warm-up
    g.run();  // capture + replay
    CHECK(out.to_vector<float>() == std::vector<float>(6, 3.0f));
    x.copy_(full({3, 2}, 2.0, on(kDev)));
    g.run();
    CHECK(out.to_vector<float>() == std::vector<float>(6, 6.0f));  // the replay read the new values
    x = ones({4, 2}, on(kDev));  // reassigned: another shape, other memory
    CHECK_THROWS_WITH_AS(g.run(), doctest::Contains("static input 0 is (4, 2) f32 but the step was captured with (3, 2)"),
                         Error);

    Tensor x2 = ones({3, 2}, on(kDev));
    ecuda::StepGraph g2(kDev, [&] { out = x2 + 1.0; }, {.warmup_steps = 0, .static_inputs = {&x2}});
    g2.run();
    x2 = ones({3, 2}, on(kDev));
    CHECK_THROWS_WITH_AS(g2.run(), doctest::Contains("fill it with copy_()"), Error);

    auto lin = std::make_shared<nn::Linear>(2, 2);
    lin->to(kDev);
    optim::SGD sgd(lin->parameters(), {.lr = 0.1, .momentum = 0.9});
    ecuda::StepGraph g3(kDev, [&] {
      sgd.zero_grad();
      lin->forward(x2).sum().backward();
      sgd.step();
    }, {.warmup_steps = 0, .static_inputs = {}});
    CHECK_THROWS_WITH_AS(g3.run(), doctest::Contains("run one step eagerly before capturing"), Error);
  }

  TEST_CASE("index checks of a captured step are reported after the replay that broke them") {
    Tensor w = randn({5, 3}, on(kDev)), idx = zeros({4}, on(kDev, DType::i64)), out;
    ecuda::Graph g;
    g.capture(kDev, [&] { out = embedding(w, idx); });
    g.replay();
    check_deferred_errors();  // all in range
    idx.copy_(from_vector(std::vector<int64_t>{0, 1, 9, 2}, {4}));
    g.replay();
    CHECK_THROWS_WITH_AS(check_deferred_errors(), doctest::Contains("9"), Error);
  }

  TEST_CASE("memory a captured step frees stays the graph's until the graph goes") {
    if (!kDev.is_fake()) return;  // the stand-in allocator's statistics; on CUDA see memory_stats
    Tensor x = ones({256, 256}, on(kDev)), out;
    const size_t before = fake::memory_stats(0).allocated;
    {
      ecuda::Graph g;
      g.capture(kDev, [&] {
        Tensor tmp = x * 2.0;  // freed at the end of the capture, written by every replay
        out = tmp.sum();
      });
      const size_t held = fake::memory_stats(0).allocated;
      CHECK(held >= before + 256 * 256 * 4);  // the temporary is still held
      g.replay();
      CHECK(out.item<float>() == 2.0f * 256 * 256);
      g.reset();
      CHECK(fake::memory_stats(0).allocated < held);
    }
  }
}
