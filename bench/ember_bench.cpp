// ember-bench: the CPU training-step workloads of WORKLOADS.md, timed the same way every run.
//
//   ember-bench [--list] [--filter REGEX] [--json FILE] [--threads N] [--steps N] [--no-peer]
//
// Each workload is a full training step (forward, backward, SGD update, zero_grad) timed as
// min / median / max over --steps steps after 3 warm-up steps, on --threads OpenMP threads.
// When the libtorch peer `ember-bench-torch` sits next to this binary, it runs in the same
// invocation with the same flags and a ratio line (ember / torch; below 1.0 = ember faster)
// is printed per workload. Output contract: the last lines are one `NAME MEDIAN_MS` per
// workload, nothing after them.
//
// Data-parallel workloads (D1_allreduce, D2_ddp_mlp) run as 2 processes: ember-bench starts
// itself under `mpirun -np 2` (hidden flag --dist-child) and reads rank 0's figures back.
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "bench_util.h"
#include "ember/ember.h"
#include "ember/nn/conv.h"

#ifndef EMBER_BENCH_COMMIT
#define EMBER_BENCH_COMMIT "unknown"
#endif

namespace {

// The commit of the source tree at run time (the configure-time value can be stale after
// later commits); "+dirty" when the tree has uncommitted changes.
std::string current_commit() {
#ifdef EMBER_SOURCE_DIR
  std::string cmd = std::string("git -C '") + EMBER_SOURCE_DIR +
                    "' describe --always --dirty=+dirty --abbrev=7 2>/dev/null";
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[128] = {0};
    const bool ok = std::fgets(buf, sizeof buf, p) != nullptr;
    pclose(p);
    std::string r = ok ? buf : "";
    while (!r.empty() && (r.back() == '\n' || r.back() == '\r')) r.pop_back();
    if (!r.empty()) return r;
  }
#endif
  return EMBER_BENCH_COMMIT;
}

using bench::Instance;
using bench::Workload;
using bench::workloads;

// W1_mlp: Linear 784->512, ReLU, Linear 512->512, ReLU, Linear 512->10, cross-entropy.
// x (256, 784) ~ N(0, 1), labels in [0, 10), plain SGD lr 0.01, all from a fixed seed.
Instance make_w1_mlp() {
  using namespace ember;
  auto gen = std::make_shared<Generator>(bench::kSeed);
  auto model = std::make_shared<nn::Sequential>();
  model->add(std::make_shared<nn::Linear>(784, 512, true, gen.get()));
  model->add(std::make_shared<nn::ReLU>());
  model->add(std::make_shared<nn::Linear>(512, 512, true, gen.get()));
  model->add(std::make_shared<nn::ReLU>());
  model->add(std::make_shared<nn::Linear>(512, 10, true, gen.get()));
  Tensor x = randn({256, 784}, {}, gen.get());                 // (B, 784) f32
  Tensor y = randint(0, 10, {256}, DType::i64, gen.get());     // (B) class indices
  optim::SGDOptions sgd;
  sgd.lr = 0.01;
  auto opt = std::make_shared<optim::SGD>(model->parameters(), sgd);
  auto last = std::make_shared<Tensor>();

  Instance w;
  w.step = [gen, model, x, y, opt, last] {
    Tensor logits = model->forward(x);  // (B, 10)
    Tensor loss = nn::cross_entropy(logits, y);
    loss.backward();
    opt->step();
    opt->zero_grad();
    *last = loss.detach();  // keep the value, not the graph
  };
  w.last_loss = [last] { return last->defined() ? static_cast<double>(last->item<float>()) : NAN; };
  return w;
}

// W2_conv1d: Conv1d 64->128 k5 pad2, ReLU, Conv1d 128->128 k5 pad2, ReLU, max over time,
// Linear 128->2, cross-entropy. x (32, 64, 512) as (N, C, L) ~ N(0, 1), labels in [0, 2),
// plain SGD lr 0.01.
Instance make_w2_conv1d() {
  using namespace ember;
  auto gen = std::make_shared<Generator>(bench::kSeed);
  nn::Conv1dOptions pad2;
  pad2.padding = 2;
  auto conv1 = std::make_shared<nn::Conv1d>(64, 128, 5, pad2, gen.get());
  auto conv2 = std::make_shared<nn::Conv1d>(128, 128, 5, pad2, gen.get());
  auto fc = std::make_shared<nn::Linear>(128, 2, true, gen.get());
  Tensor x = randn({32, 64, 512}, {}, gen.get());            // (N, C_in, L) f32
  Tensor y = randint(0, 2, {32}, DType::i64, gen.get());     // (N) class indices
  std::vector<Tensor> params;
  for (const nn::Module* m : std::initializer_list<const nn::Module*>{conv1.get(), conv2.get(), fc.get()})
    for (const Tensor& p : m->parameters()) params.push_back(p);
  optim::SGDOptions sgd;
  sgd.lr = 0.01;
  auto opt = std::make_shared<optim::SGD>(params, sgd);
  auto last = std::make_shared<Tensor>();

  Instance w;
  w.step = [gen, conv1, conv2, fc, x, y, opt, last] {
    Tensor h = relu((*conv1)(x));   // (N, 128, 512)
    h = relu((*conv2)(h));          // (N, 128, 512)
    h = amax(h, {2});               // (N, 128): max over time
    Tensor loss = nn::cross_entropy((*fc)(h), y);
    loss.backward();
    opt->step();
    opt->zero_grad();
    *last = loss.detach();
  };
  w.last_loss = [last] { return last->defined() ? static_cast<double>(last->item<float>()) : NAN; };
  return w;
}

const bench::Register w1("W1_mlp", "MLP 784-512-512-10, ReLU, cross-entropy, x (256, 784), SGD", make_w1_mlp);
const bench::Register w2("W2_conv1d",
                         "Conv1d 64-128-128 k5 pad2, ReLU, max over time, Linear 128-2, x (32, 64, 512), SGD",
                         make_w2_conv1d);

struct Result {
  std::string name;
  std::string library;  // "ember" or "torch"
  bench::Stats stats;
  double loss = NAN;
};

struct Args {
  bool list = false;
  bool peer = true;
  std::string filter = ".*";
  std::string json;
  int threads = bench::kDefaultThreads;
  int steps = bench::kDefaultSteps;
  std::string amp = "off";  // --amp: every step under autocast with this low dtype
  bool dist_child = false;  // run as one rank of the job ember-bench started for a D workload
  std::string dtype() const { return amp == "off" ? "f32" : "f32+autocast-" + amp; }
};

void usage(FILE* to) {
  std::fprintf(to,
               "usage: ember-bench [--list] [--filter REGEX] [--json FILE] [--threads N] "
               "[--steps N] [--no-peer] [--amp bf16|f16|off]\n"
               "  --list          name the workloads and exit\n"
               "  --filter REGEX  run the workloads whose name matches (default: all)\n"
               "  --json FILE     write every figure (min/median/max ms, device, dtype, commit)\n"
               "  --threads N     OpenMP threads, also given to the libtorch peer (default %d)\n"
               "  --steps N       timed steps after %d warm-up steps (default %d)\n"
               "  --no-peer       do not run ember-bench-torch even when it is built\n"
               "  --amp M         run every ember step under autocast (bf16 or f16; default off); the\n"
               "                  libtorch peer stays f32\n",
               bench::kDefaultThreads, bench::kWarmupSteps, bench::kDefaultSteps);
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", s.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (s == "--list") a.list = true;
    else if (s == "--no-peer") a.peer = false;
    else if (s == "--dist-child") a.dist_child = true;
    else if (s == "--filter") a.filter = value();
    else if (s == "--json") a.json = value();
    else if (s == "--threads") a.threads = bench::parse_positive("--threads", value());
    else if (s == "--steps") a.steps = bench::parse_positive("--steps", value());
    else if (s == "--amp") {
      a.amp = value();
      if (a.amp != "bf16" && a.amp != "f16" && a.amp != "off") {
        std::fprintf(stderr, "--amp expects bf16, f16 or off, got '%s'\n", a.amp.c_str());
        std::exit(2);
      }
    }
    else if (s == "-h" || s == "--help") { usage(stdout); std::exit(0); }
    else { std::fprintf(stderr, "unknown argument '%s'\n", s.c_str()); usage(stderr); std::exit(2); }
  }
  return a;
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) { out += ' '; continue; }
    out += c;
  }
  return out;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::filesystem::path peer_path(const char* argv0) {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) self = std::filesystem::absolute(argv0, ec);
  return self.parent_path() / "ember-bench-torch";
}

// Runs `cmd` and reads its `stats NAME MIN MEDIAN MAX STEPS LOSS` lines (as `library`) and
// `note TEXT` lines. Returns false (with a message) when it fails.
bool run_stats(const std::string& cmd, const std::string& library, std::vector<Result>& out,
               std::vector<std::string>* notes = nullptr) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    std::printf("%s could not be started: %s\n", library.c_str(), cmd.c_str());
    return false;
  }
  std::string text;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) text.append(buf, n);
  int status = pclose(p);
  if (status != 0) {
    std::printf("%s failed (status %d); its output:\n%s", cmd.c_str(), status, text.c_str());
    return false;
  }
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream f(line);
    std::string tag;
    Result r;
    r.library = library;
    if (!(f >> tag)) continue;
    if (tag == "note" && notes != nullptr) notes->push_back(line.substr(5));
    if (tag == "stats" && f >> r.name >> r.stats.min_ms >> r.stats.median_ms >> r.stats.max_ms >> r.stats.steps) {
      std::string loss;
      f >> loss;
      r.loss = (loss.empty() || loss == "nan") ? NAN : std::stod(loss);
      out.push_back(r);
    }
  }
  return true;
}

// Runs the libtorch peer with the same flags.
bool run_peer(const std::filesystem::path& exe, const Args& a, std::vector<Result>& out) {
  return run_stats(shell_quote(exe.string()) + " --stats --threads " + std::to_string(a.threads) + " --steps " +
                       std::to_string(a.steps) + " --filter " + shell_quote(a.filter) + " 2>&1",
                   "torch", out);
}

// A workload of several ranks: this binary again, under mpirun, as --dist-child.
bool run_ranks(const char* argv0, const bench::Workload& w, const Args& a, Result& r,
               std::vector<std::string>& notes) {
  FILE* probe = popen("command -v mpirun 2>/dev/null", "r");
  char found[512] = {0};
  const bool have = probe != nullptr && std::fgets(found, sizeof found, probe) != nullptr;
  if (probe != nullptr) pclose(probe);
  if (!have) {
    notes.push_back(w.name + " skipped: it runs " + std::to_string(w.ranks) +
                    " processes under mpirun, which is not installed (apt-get install openmpi-bin)");
    return false;
  }
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) self = std::filesystem::absolute(argv0, ec);
  const int threads = w.threads > 0 ? w.threads : a.threads;
  const std::string cmd = "mpirun --allow-run-as-root --oversubscribe -np " + std::to_string(w.ranks) +
                          " -x OMP_NUM_THREADS=" + std::to_string(threads) + " " + shell_quote(self.string()) +
                          " --dist-child --no-peer --amp " + a.amp + " --threads " + std::to_string(threads) +
                          " --steps " + std::to_string(a.steps) + " --filter " + shell_quote("^" + w.name + "$") +
                          " 2>&1";
  std::vector<Result> got;
  if (!run_stats(cmd, "ember", got, &notes) || got.empty()) return false;
  r = got.front();
  return true;
}

// One rank of a D workload's job: rank 0 prints the stats and notes run_ranks reads.
int dist_child(const Args& a, const std::vector<const Workload*>& chosen) {
  ember::dist::init();
  int rc = 0;
  for (const Workload* w : chosen) {
    if (w->ranks != ember::dist::world_size()) continue;
    try {
      Instance inst = w->make();
      const bench::Stats s = bench::time_steps(inst.step, bench::kWarmupSteps, a.steps);
      if (ember::dist::rank() == 0) {
        if (inst.notes)
          for (const std::string& n : inst.notes()) std::printf("note %s\n", n.c_str());
        std::printf("stats %s %.6f %.6f %.6f %d %.6f\n", w->name.c_str(), s.min_ms, s.median_ms, s.max_ms, s.steps,
                    inst.last_loss());
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s failed on rank %d: %s\n", w->name.c_str(), ember::dist::rank(), e.what());
      rc = 1;
    }
  }
  std::fflush(stdout);
  ember::dist::finalize();
  return rc;
}

void print_result(const Result& r) {
  std::printf("  %-6s %-22s min %9.3f  median %9.3f  max %9.3f ms  (%d steps, last loss %.4f)\n",
              r.library.c_str(), r.name.c_str(), r.stats.min_ms, r.stats.median_ms, r.stats.max_ms,
              r.stats.steps, r.loss);
  std::fflush(stdout);
}

bool write_json(const std::string& file, const Args& a, const std::vector<Result>& results,
                const std::map<std::string, double>& ratios) {
  std::ofstream js(file);
  if (!js) return false;
  js << "{\n  \"commit\": \"" << json_escape(current_commit()) << "\",\n"
     << "  \"device\": \"cpu\",\n  \"dtype\": \"" << a.dtype() << "\",\n"
     << "  \"threads\": " << a.threads << ",\n  \"warmup_steps\": " << bench::kWarmupSteps
     << ",\n  \"steps\": " << a.steps << ",\n  \"results\": [";
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    js << (i ? "," : "") << "\n    {\"name\": \"" << json_escape(r.name) << "\", \"library\": \""
       << r.library << "\", \"device\": \"cpu\", \"dtype\": \"" << (r.library == "ember" ? a.dtype() : "f32")
       << "\", \"min_ms\": " << r.stats.min_ms
       << ", \"median_ms\": " << r.stats.median_ms << ", \"max_ms\": " << r.stats.max_ms
       << ", \"steps\": " << r.stats.steps << ", \"last_loss\": "
       << (std::isfinite(r.loss) ? std::to_string(r.loss) : std::string("null")) << "}";
  }
  js << "\n  ],\n  \"ratios_ember_over_torch\": {";
  size_t i = 0;
  for (const auto& [name, ratio] : ratios)
    js << (i++ ? "," : "") << "\n    \"" << json_escape(name) << "\": " << ratio;
  js << (ratios.empty() ? "}" : "\n  }") << "\n}\n";
  return static_cast<bool>(js);
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse_args(argc, argv);
  if (a.list) {
    for (const auto& w : workloads()) std::printf("%-22s %s\n", w.name.c_str(), w.what.c_str());
    return 0;
  }
  std::regex filter;
  try {
    filter = std::regex(a.filter);
  } catch (const std::regex_error& e) {
    std::fprintf(stderr, "--filter: bad regex '%s': %s\n", a.filter.c_str(), e.what());
    return 2;
  }
  std::vector<const Workload*> chosen;
  for (const auto& w : workloads())
    if (std::regex_search(w.name, filter)) chosen.push_back(&w);
  if (chosen.empty()) {
    std::fprintf(stderr, "no workload matches '%s' (see --list)\n", a.filter.c_str());
    return 2;
  }

  if (a.dist_child) {
    omp_set_num_threads(a.threads);
    return dist_child(a, chosen);
  }
  std::printf("ember-bench  commit %s  device cpu  dtype %s  threads %d  steps %d (+%d warm-up)\n",
              current_commit().c_str(), a.dtype().c_str(), a.threads, a.steps, bench::kWarmupSteps);
  std::fflush(stdout);

  std::vector<Result> results;
  std::vector<std::string> notes;
  for (const Workload* w : chosen) {
    Result r{w->name, "ember", {}, NAN};
    if (w->ranks > 1) {
      if (!run_ranks(argv[0], *w, a, r, notes)) {
        std::fprintf(stderr, "%s: no result (see above)\n", w->name.c_str());
        continue;
      }
      print_result(r);
      results.push_back(r);
      continue;
    }
    omp_set_num_threads(w->threads > 0 ? w->threads : a.threads);
    try {
      Instance inst = w->make();
      std::function<void()> step = inst.step;
      if (a.amp != "off")
        step = [inner = inst.step, low = a.amp == "f16" ? ember::DType::f16 : ember::DType::bf16] {
          ember::amp::AutocastGuard autocast(ember::Device::cpu(), low);
          inner();
        };
      r.stats = bench::time_steps(step, bench::kWarmupSteps, a.steps);
      r.loss = inst.last_loss();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s failed: %s\n", w->name.c_str(), e.what());
      return 1;
    }
    print_result(r);
    results.push_back(r);
  }
  const size_t n_ember = results.size();
  omp_set_num_threads(a.threads);

  std::map<std::string, double> ratios;
  {
    const Result *ddp = nullptr, *one = nullptr;
    for (const Result& r : results) {
      if (r.name == "D2_ddp_mlp") ddp = &r;
      if (r.name == "D2_ddp_mlp_1rank") one = &r;
    }
    if (ddp != nullptr && one != nullptr && one->stats.median_ms > 0) {
      char line[200];
      std::snprintf(line, sizeof line,
                    "D2_ddp_mlp overhead of data parallelism (2 ranks x 1 thread / 1 rank x 1 thread, 128 rows each) "
                    "%.2fx (target <= 1.15)",
                    ddp->stats.median_ms / one->stats.median_ms);
      notes.push_back(line);
    }
  }
  if (a.peer) {
    auto exe = peer_path(argv[0]);
    std::error_code ec;
    if (!std::filesystem::exists(exe, ec)) {
      notes.push_back("libtorch peer not built (apt-get install libtorch-dev)");
    } else {
      std::vector<Result> peer;
      if (run_peer(exe, a, peer)) {
        for (const Result& p : peer) {
          print_result(p);
          results.push_back(p);
        }
        for (size_t i = 0; i < n_ember; ++i)
          for (const Result& p : peer)
            if (p.name == results[i].name && p.stats.median_ms > 0) {
              double ratio = results[i].stats.median_ms / p.stats.median_ms;
              ratios[p.name] = ratio;
              char line[256];
              std::snprintf(line, sizeof line, "%s ratio ember/torch %.2f", p.name.c_str(), ratio);
              notes.push_back(line);
            }
      } else {
        notes.push_back("libtorch peer failed; no ratios");
      }
    }
  }

  if (!a.json.empty()) {
    if (!write_json(a.json, a, results, ratios)) {
      std::fprintf(stderr, "could not write %s\n", a.json.c_str());
      return 1;
    }
    std::printf("wrote %s\n", a.json.c_str());
  }
  for (const auto& n : notes) std::printf("%s\n", n.c_str());
  // The contract: last, one `NAME MEDIAN_MS` line per workload.
  for (size_t i = 0; i < n_ember; ++i)
    std::printf("%s %.3f\n", results[i].name.c_str(), results[i].stats.median_ms);
  return 0;
}
