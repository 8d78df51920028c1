// The profiler (ember/profiler.h): a training step recorded op by op and kernel by kernel, on
// the CPU and on the device under test; the Chrome trace it writes, read back as JSON; the
// table; scopes that nest or overlap; a path it cannot write.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "ember/profiler.h"
#include "ops/dispatch.h"
#include "ops/op_call.h"
#include "test_util.h"

using namespace ember;
using Json = nlohmann::json;

namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("ember_profiler_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

Json load(const std::string& path) {
  std::ifstream f(path);
  REQUIRE(f.is_open());
  return Json::parse(f);
}

// One step of a small classifier: Linear, cross-entropy, backward, Adam.
struct TinyTrainer {
  Generator g{11};
  nn::Linear lin;
  Tensor x, t;
  optim::Adam opt;
  explicit TinyTrainer(Device dev)
      : lin(7, 3, true, &g),
        x(randn({4, 7}, DType::f32, &g).to(dev)),
        t(from_vector(std::vector<int64_t>{0, 2, 1, 2}, {4}).to(dev)),
        opt((lin.to(dev), lin.parameters()), optim::AdamOptions{.lr = 1e-2}) {}
  void step() {
    opt.zero_grad();
    Tensor loss = nn::cross_entropy(lin.forward(x), t);
    loss.backward();
    opt.step();
  }
};

// Options without the printed table (aggregate designated initializers that leave fields out
// trip -Wmissing-field-initializers on GCC).
ProfilerOptions quiet(std::string trace_path = "") {
  ProfilerOptions o;
  o.trace_path = std::move(trace_path);
  o.print_table = false;
  return o;
}

bool no_observer_left() { return detail::t_op.observer == nullptr && backend::t_kernel_observer == nullptr; }

int64_t json_count(const Json& trace, const std::string& name, const std::string& cat) {
  int64_t n = 0;
  for (const Json& e : trace["traceEvents"])
    if (e["ph"] == "X" && e["name"] == name && e.value("cat", "") == cat) ++n;
  return n;
}

// The events of one (pid, tid) row must nest: each begins after the enclosing one began and
// ends before it ends (chrome://tracing draws a row as a stack).
void check_row_nests(const Json& trace, int pid, int tid) {
  std::vector<std::pair<double, double>> spans;
  for (const Json& e : trace["traceEvents"])
    if (e["ph"] == "X" && e["pid"] == pid && e["tid"] == tid)
      spans.emplace_back(e["ts"].get<double>(), e["ts"].get<double>() + e["dur"].get<double>());
  REQUIRE(!spans.empty());
  std::stable_sort(spans.begin(), spans.end(), [](const auto& a, const auto& b) {
    return a.first < b.first || (a.first == b.first && a.second > b.second);
  });
  const double eps = 1e-3;  // ns -> us rounding
  std::vector<double> open_ends;
  for (const auto& [begin, end] : spans) {
    while (!open_ends.empty() && open_ends.back() <= begin + eps) open_ends.pop_back();
    if (!open_ends.empty()) {
      CAPTURE(begin);
      CHECK(end <= open_ends.back() + eps);
    }
    open_ends.push_back(end);
  }
}

struct CountingObserver final : OpObserver {
  int before_calls = 0, after_calls = 0;
  void before(const OpCall&) override { ++before_calls; }
  void after(const OpCall&) override { ++after_calls; }
};

}  // namespace

TEST_SUITE("profiler") {
  TEST_CASE("a training step is recorded op by op, nested, with shapes, bytes and kernels") {
    for (const Device dev : {Device::cpu(), ember_test::test_device()}) {
      CAPTURE(dev.str());
      TinyTrainer tr(dev);
      tr.step();  // warm: the optimizer's state exists before the profiled steps
      const std::string path = temp_path("step_" + dev.str() + ".json");
      std::filesystem::remove(path);
      {
        Profiler prof(quiet(path));
        tr.step();
        prof.step();
        tr.step();
        prof.step();
        prof.stop();
        CHECK(!prof.running());
        CHECK(prof.steps() == 2);
        CHECK(prof.count("linear") == 2);
        CHECK(prof.count("cross_entropy") == 2);

        // Structure, from the recorded events: every child lies within its parent, depths grow.
        const std::vector<ProfileEvent>& ev = prof.events();
        bool saw_backward = false, saw_bmm_under_linear = false;
        for (const ProfileEvent& e : ev) {
          CHECK(e.end_ns >= e.start_ns);
          CHECK(e.self_ns <= e.end_ns - e.start_ns);
          if (e.kind == ProfileEvent::Kind::step) continue;
          if (e.kind == ProfileEvent::Kind::op && e.in_backward) saw_backward = true;
          if (e.parent >= 0) {
            const ProfileEvent& p = ev[static_cast<size_t>(e.parent)];
            CAPTURE(e.name);
            CAPTURE(p.name);
            CHECK(p.kind == ProfileEvent::Kind::op);
            CHECK(e.start_ns >= p.start_ns);
            CHECK(e.end_ns <= p.end_ns);
            CHECK(e.depth > p.depth);
            if (e.kind == ProfileEvent::Kind::kernel && std::string(e.name) == "bmm") {
              // linear's GEMM runs under linear (directly or through an op it calls)
              for (int a = e.parent; a >= 0; a = ev[static_cast<size_t>(a)].parent)
                if (std::string(ev[static_cast<size_t>(a)].name) == "linear") saw_bmm_under_linear = true;
            }
          }
          if (e.kind == ProfileEvent::Kind::op) CHECK(e.bytes >= e.self_bytes);
        }
        CHECK(saw_backward);
        CHECK(saw_bmm_under_linear);
        if (dev.is_cuda()) {
          // Device times were gathered at stop(): every CUDA kernel has one.
          for (const ProfileEvent& e : ev)
            if (e.kind == ProfileEvent::Kind::kernel && e.device.is_cuda()) CHECK(e.device_ms >= 0);
        }

        // The table: linear among the rows with its call count; shares of the step add up to <= 100%.
        const std::vector<ProfileRow> rows = prof.rows();
        REQUIRE(!rows.empty());
        double share = 0;
        bool linear_row = false;
        for (const ProfileRow& r : rows) {
          CHECK(r.share >= 0);
          share += r.share;
          if (r.name == "linear") {
            linear_row = true;
            CHECK(r.calls == 2);
            CHECK(r.bytes >= 2 * 4 * 3 * sizeof(float));  // its output, at least
          }
        }
        CHECK(linear_row);
        CHECK(share <= 100.0 + 1e-6);
        CHECK(share > 0);
        for (size_t i = 1; i < rows.size(); ++i) CHECK(rows[i - 1].total_ms >= rows[i].total_ms);
        const std::string table = prof.table(5);
        CHECK(ember_test::contains(table, "calls"));
        CHECK(ember_test::contains(table, "step %"));
        CHECK(ember_test::contains(table, rows[0].name));
        CHECK(ember_test::contains(table, "more op(s)"));
      }

      // The trace, read back.
      REQUIRE(std::filesystem::exists(path));
      const Json trace = load(path);
      REQUIRE(trace.contains("traceEvents"));
      CHECK(json_count(trace, "linear", "op") == 2);
      CHECK(json_count(trace, "cross_entropy", "op") == 2);
      CHECK(json_count(trace, "step 0", "step") == 1);
      CHECK(json_count(trace, "step 1", "step") == 1);
      int backward_ops = 0;
      bool linear_shapes = false;
      for (const Json& e : trace["traceEvents"]) {
        if (e["ph"] != "X") continue;
        CHECK(e["dur"].get<double>() >= 0);
        if (e["cat"] == "op,backward") {
          ++backward_ops;
          CHECK(e["args"]["in_backward"] == true);
        }
        if (e["name"] == "linear") {
          CHECK(e["args"]["device"] == dev.str());
          CHECK(e["args"]["depth"] == 0);
          const Json& s = e["args"]["shapes"];
          REQUIRE(s.size() == 3);
          CHECK(s[0] == "[4, 7]");
          CHECK(s[1] == "[3, 7]");
          CHECK(s[2] == "[3]");
          CHECK(e["args"]["dtypes"][0] == "f32");
          CHECK(e["args"]["bytes"].get<uint64_t>() >= 4 * 3 * sizeof(float));
          linear_shapes = true;
        }
      }
      CHECK(backward_ops > 0);
      CHECK(linear_shapes);
      check_row_nests(trace, 1, 1);  // ops and kernel calls
      check_row_nests(trace, 1, 0);  // steps
      std::filesystem::remove(path);
    }
    CHECK(no_observer_left());
  }

  TEST_CASE("off, the profiler records nothing and leaves no observer") {
    CHECK(no_observer_left());
    Profiler prof(quiet());
    const Tensor a = ones({2, 2});
    (void)(a + a);
    prof.stop();
    const size_t n = prof.events().size();
    CHECK(prof.count("add") == 1);
    CHECK(no_observer_left());  // the op path is back to its single branch
    (void)(a + a);
    (void)matmul(a, a);
    CHECK(prof.events().size() == n);
    CHECK(prof.count("add") == 1);
    prof.stop();  // twice: nothing
    CHECK(prof.events().size() == n);
  }

  TEST_CASE("nested scopes: each records its own window, in any order of ending") {
    const Tensor a = ones({2, 3});
    {
      Profiler outer(quiet());
      (void)exp(a);
      {
        Profiler inner(quiet());
        (void)neg(a);
        inner.stop();
        CHECK(inner.count("neg") == 1);
        CHECK(inner.count("exp") == 0);
      }
      (void)sqrt(a);
      outer.stop();
      CHECK(outer.count("exp") == 1);
      CHECK(outer.count("neg") == 1);  // the inner scope did not hide it
      CHECK(outer.count("sqrt") == 1);
    }
    CHECK(no_observer_left());
    {
      // The outer one ends first: the inner one keeps recording.
      auto outer = std::make_unique<Profiler>(quiet());
      Profiler inner(quiet());
      (void)exp(a);
      outer.reset();
      (void)neg(a);
      inner.stop();
      CHECK(inner.count("exp") == 1);
      CHECK(inner.count("neg") == 1);
    }
    CHECK(no_observer_left());
  }

  TEST_CASE("an observer installed before the profiler still sees every call") {
    CountingObserver counter;
    {
      ObserveOps watch(counter);
      Profiler prof(quiet());
      const Tensor a = ones({2, 2});
      (void)(a * a);
      prof.stop();
      CHECK(prof.count("mul") == 1);
    }
    CHECK(counter.before_calls >= 2);  // ones (full) and mul
    CHECK(counter.before_calls == counter.after_calls);
    CHECK(no_observer_left());
  }

  TEST_CASE("a profiler stopped under a newer observer gives the thread back once that one ends") {
    CountingObserver counter;
    const Tensor a = ones({2});
    auto prof = std::make_unique<Profiler>(quiet());
    {
      ObserveOps watch(counter);  // installed over the profiler: it sees the calls now
      (void)exp(a);
      prof->stop();
      CHECK(prof->count("exp") == 0);
      (void)exp(a);
    }
    const int seen = counter.before_calls;
    CHECK(seen >= 2);  // both exp calls (and what they call)
    prof.reset();
    (void)exp(a);  // the first call after: the profiler's observer steps aside
    CHECK(no_observer_left());
    CHECK(counter.before_calls == seen);  // the counter's guard is gone: it sees nothing more
  }

  TEST_CASE("an op that throws is closed, marked, and the nesting stays right") {
    Profiler prof(quiet());
    const Tensor a = ones({2, 3}), b = ones({4, 5});
    CHECK_THROWS_AS((void)matmul(a, b), ember::Error);
    (void)exp(a);
    prof.stop();
    const std::vector<ProfileEvent>& ev = prof.events();
    bool threw = false;
    for (const ProfileEvent& e : ev) {
      if (e.kind == ProfileEvent::Kind::op && std::string(e.name) == "matmul") threw = e.threw;
      if (e.kind == ProfileEvent::Kind::op && std::string(e.name) == "exp") {
        CHECK(e.depth == 0);
        CHECK(e.parent == -1);
      }
    }
    CHECK(threw);
  }

  TEST_CASE("only the profiling thread is recorded") {
    Profiler prof(quiet());
    std::thread other([] {
      const Tensor a = ones({2, 2});
      (void)exp(a);
    });
    other.join();
    prof.stop();
    CHECK(prof.count("exp") == 0);
    CHECK(prof.count("full") == 0);
  }

  TEST_CASE("a trace path that cannot be written is an ember::Error naming it") {
    const std::string bad = temp_path("no_such_dir") + "/trace.json";
    {
      Profiler prof(quiet(bad));
      (void)exp(ones({2}));
      CHECK_THROWS_WITH_AS(prof.stop(), doctest::Contains(bad.c_str()), ember::Error);
      CHECK(!prof.running());  // ended anyway; the destructor does not try again
      CHECK_THROWS_WITH_AS(prof.write_chrome_trace(bad), doctest::Contains("cannot write the trace"), ember::Error);
      CHECK_THROWS_WITH_AS(prof.write_chrome_trace(""), doctest::Contains("profiler"), ember::Error);
    }
    ProfilerOptions negative = quiet();
    negative.table_rows = -1;
    CHECK_THROWS_WITH_AS(Profiler{negative}, doctest::Contains("table_rows"), ember::Error);
    CHECK(no_observer_left());
  }

  TEST_CASE("a window of a long run: skip_steps, then max_steps, then it stops by itself") {
    const std::string path = temp_path("window.json");
    ProfilerOptions o = quiet(path);
    o.skip_steps = 2;
    o.max_steps = 3;
    Profiler prof(o);
    const Tensor a = ones({2});
    CHECK(!prof.recording());
    for (int i = 0; i < 8; ++i) {
      (void)(a * static_cast<double>(i));  // step i's op
      CHECK(prof.recording() == (i >= 2 && i < 5));
      prof.step();
    }
    // The first 2 step() calls end the skipped iterations 0 and 1; 2, 3, 4 are recorded; then it stops.
    CHECK(!prof.running());
    CHECK(!prof.recording());
    CHECK(prof.steps() == 3);
    CHECK(prof.count("mul") == 3);
    CHECK(no_observer_left());
    const Json trace = load(path);
    CHECK(json_count(trace, "step 2", "step") == 1);
    CHECK(json_count(trace, "step 3", "step") == 0);
    CHECK(json_count(trace, "mul", "op") == 3);
    std::filesystem::remove(path);

    ProfilerOptions bad = quiet();
    bad.skip_steps = -1;
    CHECK_THROWS_WITH_AS(Profiler{bad}, doctest::Contains("skip_steps"), ember::Error);
    // Stopped before the window opened: nothing recorded, no observer left behind.
    ProfilerOptions later = quiet();
    later.skip_steps = 5;
    Profiler never(later);
    (void)exp(a);
    never.stop();
    CHECK(never.events().empty());
    CHECK(no_observer_left());
  }

  TEST_CASE("the table prints when the scope ends, and the trace replaces an old file") {
    const std::string path = temp_path("replace.json");
    {
      std::ofstream old(path);
      old << "not json";
    }
    {
      ProfilerOptions o = quiet(path);
      o.record_shapes = false;
      Profiler prof(o);
      (void)exp(ones({3}));
    }  // the destructor stops it
    const Json trace = load(path);
    bool exp_seen = false;
    for (const Json& e : trace["traceEvents"])
      if (e["name"] == "exp") {
        exp_seen = true;
        CHECK(!e["args"].contains("shapes"));  // record_shapes = false
      }
    CHECK(exp_seen);
    std::filesystem::remove(path);
  }
}
