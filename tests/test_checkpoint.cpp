// Module state dicts (buffers, strict/non-strict loading, to(DType), summary, ModuleList) and
// training checkpoints (io/checkpoint.h): round trips through a file, clear errors for the
// wrong model, missing sections and damaged files, and a resumed run that is bit for bit the
// uninterrupted one on the CPU.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "ember/io/checkpoint.h"
#include "test_util.h"

using namespace ember;
using ember_test::check_error;
using ember_test::contains;

namespace {

// fc1 (in -> hidden) -> ReLU -> fc2 (hidden -> 3), plus two buffers: an i64 step counter and
// an f32 running mean of the logits (trained nowhere, updated by the loop).
struct MLP : nn::Module {
  std::shared_ptr<nn::Linear> fc1, fc2;
  Tensor steps, running;
  MLP(Generator* g, int64_t in = 5, int64_t hidden = 7) {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(in, hidden, true, g));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(hidden, 3, true, g));
    steps = register_buffer("steps", zeros({1}, DType::i64));
    running = register_buffer("running", zeros({3}));
  }
  Tensor forward(const Tensor& x) { return (*fc2)(relu((*fc1)(x))); }
};

// Exposes register_buffer to test its checks.
struct Bare : nn::Module {
  Tensor buf(const std::string& name, Tensor t) { return register_buffer(name, std::move(t)); }
  Tensor param(const std::string& name, Tensor t) { return register_parameter(name, std::move(t)); }
};

std::string temp_path(const std::string& stem) { return ember_test::temp_path("ckpt_" + stem + ".safetensors"); }
using ember_test::read_bytes;
using ember_test::write_bytes;

bool all_equal(const nn::Module& a, const nn::Module& b) {
  auto sa = a.state_dict(), sb = b.state_dict();
  if (sa.tensors.size() != sb.tensors.size()) return false;
  for (size_t i = 0; i < sa.tensors.size(); ++i) {
    if (sa.tensors[i].first != sb.tensors[i].first) return false;
    if (!equal(sa.tensors[i].second, sb.tensors[i].second)) return false;
  }
  return true;
}

// A permutation of 0..n-1 drawn from gen (sort n uniforms).
std::vector<int64_t> permutation(int64_t n, Generator& gen) {
  const std::vector<float> keys = rand({n}, {}, &gen).to_vector<float>();
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return keys[a] < keys[b]; });
  return order;
}

// The whole training setup: data, model, optimizer, schedule, data-order generator.
struct Run {
  static constexpr int64_t kN = 40, kBatch = 8, kPerEpoch = kN / kBatch;
  Tensor x, y;
  Generator init_gen{11}, data_gen{99};
  MLP model{&init_gen};
  std::unique_ptr<optim::Optimizer> opt;
  std::unique_ptr<optim::LRScheduler> sched;
  io::TrainingState state;  // epoch, step, data_position; rng = data_gen at the epoch's start
  std::vector<int64_t> order;

  Device dev;

  // On `device`: the model and the data are moved there before the optimizer is made.
  explicit Run(bool adam, Device device = Device::cpu()) : dev(device) {
    Generator data(5);
    x = randn({kN, 5}, {}, &data).to(dev);
    y = randint(0, 3, {kN}, DType::i64, &data).to(dev);
    model.to(dev);
    if (adam) {
      opt = std::make_unique<optim::Adam>(model.parameters(), optim::AdamOptions{.lr = 0.01, .weight_decay = 0.01});
      sched = std::make_unique<optim::WarmupCosineLR>(
          *opt, optim::WarmupCosineOptions{.warmup_steps = 3, .total_steps = 25, .min_lr = 1e-4});
    } else {
      opt = std::make_unique<optim::SGD>(model.parameters(),
                                         optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-3});
      sched = std::make_unique<optim::StepLR>(*opt, 4, 0.5);
    }
    state.capture(data_gen);
  }

  // Continues from `state` until `state.step == until`.
  void train_until(int64_t until) {
    while (state.step < until) {
      if (state.data_position == 0 || order.empty()) {
        // The epoch's order comes from the generator as it was at the epoch's start.
        state.apply_to(data_gen);
        order = permutation(kN, data_gen);
      }
      std::vector<int64_t> idx(order.begin() + state.data_position, order.begin() + state.data_position + kBatch);
      const Tensor sel = from_vector(idx, {kBatch}).to(dev);
      const Tensor logits = model.forward(index_select(x, 0, sel));
      const Tensor loss = nn::cross_entropy(logits, index_select(y, 0, sel));
      opt->zero_grad();
      loss.backward();
      opt->step();
      sched->step();
      {
        NoGradGuard no_grad;
        model.steps.add_(ones({1}, TensorOptions(DType::i64).with_device(dev)));
        model.running.mul_(0.9);
        model.running.add_(mean(logits.detach(), {0}), 0.1);
      }
      ++state.step;
      state.data_position += kBatch;
      if (state.data_position == kN) {  // epoch done: the next one starts from the generator now
        state.data_position = 0;
        ++state.epoch;
        state.capture(data_gen);
        order.clear();
      }
    }
  }
};

}  // namespace

TEST_SUITE("checkpoint") {
  TEST_CASE("state_dict: parameters then buffers by dotted name, detached handles on the module's memory") {
    Generator g(1);
    MLP m(&g);
    const StateDict sd = m.state_dict();
    const std::vector<std::string> names = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "steps", "running"};
    REQUIRE(sd.tensors.size() == names.size());
    for (size_t i = 0; i < names.size(); ++i) CHECK(sd.tensors[i].first == names[i]);
    for (const auto& [n, t] : sd.tensors) CHECK_FALSE(t.requires_grad());
    CHECK(sd.tensors[0].second.data_ptr() == m.fc1->weight.data_ptr());
    // Buffers are not parameters and are not trained.
    CHECK(m.parameters().size() == 4);
    CHECK(m.named_buffers().size() == 2);
    CHECK_FALSE(m.steps.requires_grad());
    CHECK(m.named_children().size() == 2);
    CHECK(m.named_children()[1].first == "fc2");
  }

  TEST_CASE("load_state_dict round trip copies in place and converts dtypes") {
    Generator g1(1), g2(2);
    MLP a(&g1), b(&g2);
    {
      NoGradGuard ng;
      a.steps.fill_(17);
      a.running.copy_(from_vector<float>({0.25f, -1.5f, 3.0f}, {3}));
    }
    CHECK_FALSE(all_equal(a, b));
    const Tensor w_before = b.fc1->weight;
    optim::SGD opt(b.parameters(), {.lr = 0.1});  // built on b's parameters: stays valid
    b.load_state_dict(a.state_dict());
    CHECK(all_equal(a, b));
    CHECK(b.fc1->weight.is_same(w_before));
    CHECK(b.fc1->weight.requires_grad());
    CHECK(b.steps.to_vector<int64_t>()[0] == 17);
    // An f64 state dict into f32 parameters: converted, dtype kept.
    StateDict d = a.state_dict();
    for (auto& [n, t] : d.tensors)
      if (is_floating(t.dtype())) t = to_dtype(t, DType::f64);
    MLP c(&g2);
    c.load_state_dict(d);
    CHECK(c.fc2->weight.dtype() == DType::f32);
    CHECK(all_equal(a, c));
  }

  TEST_CASE("strict load_state_dict names every missing, unexpected and mis-shaped key in one error") {
    Generator g(3);
    MLP m(&g);
    MLP wide(&g, 5, 9);  // fc1 (9, 5), fc2 (3, 9)
    StateDict sd = wide.state_dict();
    sd.tensors.erase(sd.tensors.begin() + 3);  // fc2.bias missing
    sd.tensors.emplace_back("fc3.weight", zeros({2, 2}));
    const StateDict before = [&] {
      StateDict s = m.state_dict();
      for (auto& [n, t] : s.tensors) t = t.clone();
      return s;
    }();
    const std::string msg = check_error([&] { m.load_state_dict(sd); }, "strict load",
                                        {"load_state_dict", "missing", "\"fc2.bias\"", "unexpected",
                                         "\"fc3.weight\"", "fc1.weight", "(9, 5)", "(7, 5)", "fc2.weight", "(3, 9)",
                                         "(3, 7)"});
    CHECK_FALSE(contains(msg, "\"steps\""));
    // Nothing changed.
    for (const auto& [n, t] : before.tensors) CHECK_MESSAGE(equal(t, m.state_dict().find(n)), n);
    // Non-strict: missing and unexpected are fine, but a mis-shaped key is still an error.
    check_error([&] { m.load_state_dict(sd, false); }, "non-strict with wrong shapes", {"fc1.weight", "(9, 5)"});
  }

  TEST_CASE("non-strict load_state_dict loads the overlap and leaves the rest") {
    Generator g1(4), g2(5);
    MLP a(&g1), b(&g2);
    const Tensor fc2_before = b.fc2->weight.clone();
    StateDict sd;
    sd.tensors.emplace_back("fc1.weight", a.fc1->weight);
    sd.tensors.emplace_back("fc1.bias", a.fc1->bias);
    sd.tensors.emplace_back("head.weight", zeros({3, 3}));
    check_error([&] { b.load_state_dict(sd); }, "strict", {"fc2.weight", "head.weight"});
    b.load_state_dict(sd, /*strict=*/false);
    CHECK(equal(b.fc1->weight, a.fc1->weight));
    CHECK(equal(b.fc1->bias, a.fc1->bias));
    CHECK(equal(b.fc2->weight, fc2_before));
  }

  TEST_CASE("register_buffer checks its arguments") {
    Bare m;
    m.param("w", zeros({2}));
    m.buf("b", zeros({2}));
    CHECK_EMBER_ERROR(m.buf("b", zeros({1})), "registered twice");
    CHECK_EMBER_ERROR(m.buf("w", zeros({1})), "already a parameter");
    CHECK_EMBER_ERROR(m.param("b", zeros({1})), "already a buffer");
    CHECK_EMBER_ERROR(m.buf("a.b", zeros({1})), "no '.'");
    CHECK_EMBER_ERROR(m.buf("u", Tensor()), "undefined");
    CHECK_EMBER_ERROR(m.buf("r", zeros({1}, TensorOptions().with_requires_grad(true))), "requires grad");
  }

  TEST_CASE("to(DType) converts floating parameters and buffers in place, integer buffers stay") {
    Generator g(6);
    MLP m(&g);
    const Tensor w = m.fc1->weight;
    const std::vector<double> before = ember_test::vals(w);
    CHECK(&m.to(DType::f64) == &m);
    CHECK(w.dtype() == DType::f64);
    CHECK(m.fc1->weight.is_same(w));
    CHECK(w.requires_grad());
    CHECK(m.running.dtype() == DType::f64);
    CHECK(m.steps.dtype() == DType::i64);
    CHECK(ember_test::vals(w) == before);  // f32 -> f64 is exact
    const Tensor out = m.forward(randn({2, 5}, DType::f64, &g));
    CHECK(out.dtype() == DType::f64);
    CHECK_EMBER_ERROR(m.to(DType::i32), "floating");
  }

  TEST_CASE("summary lists names, types, shapes and the total") {
    Generator g(7);
    MLP m(&g);
    const std::string s = m.summary();
    for (const char* want : {"fc1", "Linear", "fc1.weight", "(7, 5)", "fc2.bias", "steps", "buffer", "MLP",
                             "total parameters: 66"})
      CHECK_MESSAGE(contains(s, want), "summary lacks \"" << want << "\":\n" << s);
    CHECK(m.parameter_count() == 66);
  }

  TEST_CASE("ModuleList registers \"0\", \"1\", ... and indexes with checks") {
    Generator g(8);
    nn::ModuleList list;
    CHECK(list.empty());
    list.push_back(std::make_shared<nn::Linear>(3, 4, true, &g)).push_back(std::make_shared<nn::ReLU>());
    list.push_back(std::make_shared<nn::Linear>(4, 2, false, &g));
    CHECK(list.size() == 3);
    const auto np = list.named_parameters();
    REQUIRE(np.size() == 3);
    CHECK(np[0].first == "0.weight");
    CHECK(np[2].first == "2.weight");
    CHECK(list.get<nn::Linear>(2)->weight.is_same(np[2].second));
    CHECK(list[1]->type_name() == "ReLU");
    CHECK_EMBER_ERROR(list[3], "out of range");
    CHECK_EMBER_ERROR(list.get<nn::Linear>(1), "ReLU");
    CHECK_EMBER_ERROR(list.push_back(nullptr), "null");
    size_t n = 0;
    for (const auto& m : list) n += m != nullptr;
    CHECK(n == 3);
  }

  TEST_CASE("checkpoint round trip through a file restores model, optimizer, schedule and training state") {
    for (bool adam : {false, true}) {
      CAPTURE(adam);
      Run a(adam);
      a.train_until(7);
      a.state.extra["note"] = "hello";
      const std::string path = temp_path(adam ? "rt_adam" : "rt_sgd");
      io::save_checkpoint(path, a.model, *a.opt, a.sched.get(), a.state);
      Run b(adam);
      io::TrainingState st;
      io::load_checkpoint(path, b.model, *b.opt, b.sched.get(), st);
      CHECK(all_equal(a.model, b.model));
      CHECK(st.epoch == a.state.epoch);
      CHECK(st.step == 7);
      CHECK(st.data_position == a.state.data_position);
      CHECK(st.rng_seed == a.state.rng_seed);
      CHECK(st.rng_offset == a.state.rng_offset);
      CHECK(st.extra.at("note") == "hello");
      CHECK(b.sched->last_epoch() == a.sched->last_epoch());
      CHECK(b.opt->lr(0) == a.opt->lr(0));
      CHECK(b.opt->step_count(0, 0) == 7);
      Generator g(1);
      st.apply_to(g);
      CHECK(g.seed() == a.data_gen.seed());
      CHECK(g.offset() == st.rng_offset);
      std::remove(path.c_str());
    }
  }

  TEST_CASE("resume is bit-identical on the CPU: checkpoint at step k, continue to N in a fresh process state") {
    for (bool adam : {false, true}) {
      for (int64_t k : {7, 10}) {  // mid-epoch and at an epoch boundary
        CAPTURE(adam);
        CAPTURE(k);
        constexpr int64_t kSteps = 18;
        Run full(adam);
        full.train_until(kSteps);

        Run first(adam);
        first.train_until(k);
        const std::string path = temp_path("resume");
        io::save_checkpoint(path, first.model, *first.opt, first.sched.get(), first.state);

        Run resumed(adam);  // fresh model (other init would do too), optimizer, schedule
        resumed.train_until(1);  // and some history that the checkpoint must overwrite
        io::load_checkpoint(path, resumed.model, *resumed.opt, resumed.sched.get(), resumed.state);
        resumed.order.clear();
        resumed.train_until(kSteps);
        std::remove(path.c_str());

        const auto pf = full.model.state_dict(), pr = resumed.model.state_dict();
        REQUIRE(pf.tensors.size() == pr.tensors.size());
        for (size_t i = 0; i < pf.tensors.size(); ++i)
          CHECK_MESSAGE(equal(pf.tensors[i].second, pr.tensors[i].second), pf.tensors[i].first);
        CHECK(resumed.opt->lr(0) == full.opt->lr(0));
        CHECK(resumed.state.rng_offset == full.state.rng_offset);
        CHECK(resumed.model.steps.to_vector<int64_t>()[0] == kSteps);
      }
    }
  }

  // The same on the device under test (cuda:0, or the stand-in fake:0 without a GPU): the
  // checkpoint is written from device tensors and loaded into a model and optimizer that live
  // on the device, and into ones on the CPU (the values agree bit for bit on the stand-in,
  // whose kernels are the CPU's; on a GPU the CPU continuation is only compared for closeness).
  TEST_CASE("resume on the test device: model, optimizer state and schedule come back on the device") {
    const Device dev = ember_test::test_device();
    for (bool adam : {false, true}) {
      CAPTURE(adam);
      constexpr int64_t kSteps = 12, k = 7;
      Run full(adam, dev);
      full.train_until(kSteps);
      Run first(adam, dev);
      first.train_until(k);
      const std::string path = temp_path("resume_device");
      io::save_checkpoint(path, first.model, *first.opt, first.sched.get(), first.state);
      Run resumed(adam, dev);
      resumed.train_until(1);
      io::load_checkpoint(path, resumed.model, *resumed.opt, resumed.sched.get(), resumed.state);
      for (const Tensor& p : resumed.model.parameters()) CHECK(p.device() == dev);
      resumed.order.clear();
      resumed.train_until(kSteps);
      const auto pf = full.model.state_dict(), pr = resumed.model.state_dict();
      REQUIRE(pf.tensors.size() == pr.tensors.size());
      for (size_t i = 0; i < pf.tensors.size(); ++i) {
        CHECK(pr.tensors[i].second.device() == dev);
        // bit for bit on the stand-in; a GPU may sum in another order between two runs
        const Tensor& a = pf.tensors[i].second;
        const Tensor& b = pr.tensors[i].second;
        CHECK_MESSAGE((dev.is_cuda() && is_floating(a.dtype()) ? allclose(a, b, 1e-6, 1e-7) : equal(a, b)),
                      pf.tensors[i].first);
      }
      // A device checkpoint continues on the CPU.
      Run on_cpu(adam);
      io::load_checkpoint(path, on_cpu.model, *on_cpu.opt, on_cpu.sched.get(), on_cpu.state);
      on_cpu.order.clear();
      on_cpu.train_until(kSteps);
      const auto pc = on_cpu.model.state_dict();
      for (size_t i = 0; i < pf.tensors.size(); ++i) {
        CHECK(pc.tensors[i].second.device().is_cpu());
        if (is_floating(pc.tensors[i].second.dtype()))
          CHECK_MESSAGE(allclose(pc.tensors[i].second, pf.tensors[i].second.to(Device::cpu()), 1e-4, 1e-5),
                        pf.tensors[i].first);
      }
      std::remove(path.c_str());
    }
  }

  TEST_CASE("loading into the wrong model, a missing section, or a non-checkpoint raises a clear error") {
    Run a(false);
    a.train_until(3);
    const std::string path = temp_path("errors");
    io::save_checkpoint(path, a.model, *a.opt, a.sched.get(), a.state);
    io::TrainingState st;
    {  // another hidden size: names the keys and both shapes; nothing changes
      Generator g(1);
      MLP wide(&g, 5, 9);
      optim::SGD opt(wide.parameters(), {.lr = 0.1, .momentum = 0.9});
      const Tensor before = wide.fc1->weight.clone();
      check_error([&] { io::load_checkpoint(path, wide, opt, nullptr, st); }, "wrong model",
                  {path, "model", "fc1.weight", "(7, 5)", "(9, 5)", "fc2.weight"});
      CHECK(equal(wide.fc1->weight, before));
    }
    {  // another optimizer kind
      Run b(true);
      check_error([&] { io::load_checkpoint(path, b.model, *b.opt, nullptr, st); }, "wrong optimizer",
                  {path, "optimizer", "SGD", "Adam"});
    }
    {  // another schedule kind: the optimizer is rolled back
      Run b(false);
      optim::LinearLR lin(*b.opt, {.total_steps = 10});
      const double lr_before = b.opt->lr(0);
      check_error([&] { io::load_checkpoint(path, b.model, *b.opt, &lin, st); }, "wrong schedule",
                  {"schedule", "StepLR", "LinearLR"});
      CHECK(b.opt->step_count(0, 0) == 0);
      CHECK(b.opt->lr(0) == lr_before);
    }
    {  // saved without a schedule, loaded with one
      const std::string p2 = temp_path("nosched");
      io::save_checkpoint(p2, a.model, *a.opt, nullptr, a.state);
      Run b(false);
      check_error([&] { io::load_checkpoint(p2, b.model, *b.opt, b.sched.get(), st); }, "missing sched",
                  {"missing section \"sched\""});
      io::load_checkpoint(p2, b.model, *b.opt, nullptr, st);  // fine without
      CHECK(all_equal(a.model, b.model));
      std::remove(p2.c_str());
    }
    {  // a plain weights file is not a checkpoint
      const std::string p3 = temp_path("weights");
      io::save_safetensors(p3, a.model.state_dict());
      Run b(false);
      check_error([&] { io::load_checkpoint(p3, b.model, *b.opt, nullptr, st); }, "weights file",
                  {"not an ember training checkpoint"});
      std::remove(p3.c_str());
    }
    check_error([&] { io::load_checkpoint(temp_path("does_not_exist"), a.model, *a.opt, nullptr, st); }, "no file",
                {"cannot open"});
    std::remove(path.c_str());
  }

  TEST_CASE("truncated and bit-flipped checkpoint files raise ember::Error") {
    Run a(true);
    a.train_until(2);
    const std::string path = temp_path("damaged");
    io::save_checkpoint(path, a.model, *a.opt, a.sched.get(), a.state);
    const std::string good = read_bytes(path);
    REQUIRE(good.size() > 100);
    const std::string bad = temp_path("damaged_copy");
    for (size_t cut : {size_t{4}, size_t{20}, good.size() / 2, good.size() - 1}) {
      CAPTURE(cut);
      write_bytes(bad, good.substr(0, cut));
      Run b(true);
      CHECK_THROWS_AS(io::load_checkpoint(bad, b.model, *b.opt, b.sched.get(), b.state), ember::Error);
    }
    for (size_t from_end : {size_t{1}, size_t{13}, size_t{200}}) {  // inside the tensor data
      CAPTURE(from_end);
      std::string flipped = good;
      flipped[flipped.size() - from_end] ^= 0x10;
      write_bytes(bad, flipped);
      Run b(true);
      check_error([&] { io::load_checkpoint(bad, b.model, *b.opt, b.sched.get(), b.state); }, "bit flip",
                  {"corrupted"});
    }
    std::remove(bad.c_str());
    std::remove(path.c_str());
  }

  TEST_CASE("the Python safetensors package reads a checkpoint: prefixed names, shapes, metadata") {
    Run a(false);
    a.train_until(3);
    const std::string path = temp_path("for_python");
    io::save_checkpoint(path, a.model, *a.opt, a.sched.get(), a.state);
    const std::string script =
        "import sys\n"
        "try:\n"
        "    from safetensors.numpy import load_file\n"
        "    from safetensors import safe_open\n"
        "except ImportError:\n"
        "    sys.exit(77)\n"
        "t = load_file(sys.argv[1])\n"
        "w = {k[len('model.'):]: v for k, v in t.items() if k.startswith('model.')}\n"
        "assert w['fc1.weight'].shape == (7, 5), w['fc1.weight'].shape\n"
        "assert w['steps'].dtype.name == 'int64' and int(w['steps'][0]) == 3\n"
        "assert t['optim.state.0.0.momentum_buffer'].shape == (7, 5)\n"
        "with safe_open(sys.argv[1], framework='numpy') as f:\n"
        "    m = f.metadata()\n"
        "assert m['train.step'] == '3' and m['optim.optimizer'] == 'SGD' and m['sched.scheduler'] == 'StepLR', m\n";
    const std::string script_path = temp_path("read_checkpoint") + ".py";
    {
      std::ofstream out(script_path);
      out << script;
    }
    const int rc = std::system(("python3 " + script_path + " " + path).c_str());
    const int code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    std::remove(script_path.c_str());
    std::remove(path.c_str());
    if (code == 77 || code == 127) {
      MESSAGE("skipped: python3 with the safetensors and numpy packages is not installed");
      return;
    }
    CHECK(code == 0);
  }
}
