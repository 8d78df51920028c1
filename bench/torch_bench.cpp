// ember-bench-torch: the libtorch peer of ember-bench. The same workloads, built the same way
// (same shapes, SGD lr 0.01, same step order), timed with the same bench_util.h.
//
//   ember-bench-torch [--filter REGEX] [--threads N] [--steps N] [--stats]
//
// Prints, last, one `torch_NAME MEDIAN_MS` line per workload. With --stats (what ember-bench
// passes when it runs this binary) it first prints `stats NAME MIN MEDIAN MAX STEPS LOSS`.
// The random numbers differ from ember's (different generators); the shapes and the work don't.
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <regex>
#include <string>
#include <vector>

#include "bench_util.h"

namespace {

using bench::Instance;
using bench::Workload;
using bench::workloads;

// W1_mlp: Linear 784->512, ReLU, Linear 512->512, ReLU, Linear 512->10, cross-entropy.
Instance make_w1_mlp() {
  torch::manual_seed(bench::kSeed);
  torch::nn::Sequential model(torch::nn::Linear(784, 512), torch::nn::ReLU(),
                              torch::nn::Linear(512, 512), torch::nn::ReLU(),
                              torch::nn::Linear(512, 10));
  torch::Tensor x = torch::randn({256, 784});                   // (B, 784) f32
  torch::Tensor y = torch::randint(0, 10, {256}, torch::kLong);  // (B)
  auto opt = std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.01));
  auto last = std::make_shared<torch::Tensor>();

  Instance w;
  w.step = [model, x, y, opt, last]() mutable {
    torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    loss.backward();
    opt->step();
    // ember's zero_grad drops the gradients (set_to_none, PyTorch 2's default); libtorch 1.13's
    // Optimizer::zero_grad() zeroes them in place, so drop them here to do the same work.
    for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
    *last = loss.detach();
  };
  w.last_loss = [last] { return last->defined() ? last->item<double>() : NAN; };
  return w;
}

// W2_conv1d: Conv1d 64->128 k5 pad2, ReLU, Conv1d 128->128 k5 pad2, ReLU, max over time,
// Linear 128->2, cross-entropy.
struct W2Net : torch::nn::Module {
  W2Net()
      : conv1(register_module("conv1", torch::nn::Conv1d(torch::nn::Conv1dOptions(64, 128, 5).padding(2)))),
        conv2(register_module("conv2", torch::nn::Conv1d(torch::nn::Conv1dOptions(128, 128, 5).padding(2)))),
        fc(register_module("fc", torch::nn::Linear(128, 2))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = torch::relu(conv1->forward(x));  // (N, 128, 512)
    h = torch::relu(conv2->forward(h));                // (N, 128, 512)
    h = std::get<0>(h.max(2));                         // (N, 128): max over time
    return fc->forward(h);
  }
  torch::nn::Conv1d conv1, conv2;
  torch::nn::Linear fc;
};

Instance make_w2_conv1d() {
  torch::manual_seed(bench::kSeed);
  auto model = std::make_shared<W2Net>();
  torch::Tensor x = torch::randn({32, 64, 512});                // (N, C_in, L) f32
  torch::Tensor y = torch::randint(0, 2, {32}, torch::kLong);    // (N)
  auto opt = std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.01));
  auto last = std::make_shared<torch::Tensor>();

  Instance w;
  w.step = [model, x, y, opt, last]() mutable {
    torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    loss.backward();
    opt->step();
    for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();  // as in W1_mlp
    *last = loss.detach();
  };
  w.last_loss = [last] { return last->defined() ? last->item<double>() : NAN; };
  return w;
}

const bench::Register w1("W1_mlp", "", make_w1_mlp);
const bench::Register w2("W2_conv1d", "", make_w2_conv1d);

}  // namespace

int main(int argc, char** argv) {
  std::string filter = ".*";
  int threads = bench::kDefaultThreads, steps = bench::kDefaultSteps;
  bool stats = false;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    const char* v = (i + 1 < argc) ? argv[i + 1] : nullptr;
    if (s == "--stats") stats = true;
    else if (s == "--filter" && v) { filter = v; ++i; }
    else if (s == "--threads") { threads = bench::parse_positive("--threads", v); ++i; }
    else if (s == "--steps") { steps = bench::parse_positive("--steps", v); ++i; }
    else {
      std::fprintf(stderr, "usage: ember-bench-torch [--filter REGEX] [--threads N] [--steps N] [--stats]\n");
      return 2;
    }
  }
  torch::set_num_threads(threads);
  std::regex re;
  try {
    re = std::regex(filter);
  } catch (const std::regex_error& e) {
    std::fprintf(stderr, "--filter: bad regex '%s': %s\n", filter.c_str(), e.what());
    return 2;
  }

  std::vector<std::pair<std::string, double>> medians;
  for (const auto& w : workloads()) {
    if (!std::regex_search(w.name, re)) continue;
    Instance inst = w.make();
    bench::Stats s = bench::time_steps(inst.step, bench::kWarmupSteps, steps);
    double loss = inst.last_loss();
    if (stats)
      std::printf("stats %s %.6f %.6f %.6f %d %.6f\n", w.name.c_str(), s.min_ms, s.median_ms,
                  s.max_ms, s.steps, loss);
    else
      std::printf("  torch %-22s min %9.3f  median %9.3f  max %9.3f ms  (%d steps, last loss %.4f)\n",
                  w.name.c_str(), s.min_ms, s.median_ms, s.max_ms, s.steps, loss);
    medians.emplace_back(w.name, s.median_ms);
  }
  for (const auto& [name, ms] : medians) std::printf("torch_%s %.3f\n", name.c_str(), ms);
  return 0;
}
