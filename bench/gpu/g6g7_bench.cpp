// ember-g6g7_bench: the end-to-end GPU workloads G6_gpt and G7_lstm_lm (WORKLOADS.md) with
// ember: tokens/s, step time, MFU and peak memory of a whole training step, printed in the form
// the PyTorch peers bench/g6_gpt_torch.py and bench/g7_lstm_torch.py print, so that
// scripts/gpu_report.py (--e2e) pairs them.
//
//   ember-g6g7_bench [--device cuda|cuda:N|fake|cpu] [--tiny] [--only g6|g7] [--steps N] [--warmup N]
//
// G6: examples/gpt/model.h's GPT (12 layers, d 768, 12 heads, T 1024, batch 8, vocab 50304,
//     head tied to the embedding), bf16 autocast (--g6-f32 adds the f32 case).
// G7: Embedding(10000, 1024), 2-layer batch-first nn::LSTM(1024, 1024), Linear(1024, 10000);
//     T 128, batch 64; f32 and bf16 autocast.
// Both as the peers run them: cross-entropy of f32 logits over the whole (B, T) batch, one fixed
// random batch, AdamW(lr 1e-4, weight decay 0.01 on everything), gradients set to none by
// zero_grad. A step is forward, backward and optimizer step. Timed as the median of --steps
// steps (default 15) after --warmup steps (default 3), with CUDA events around each step on a
// GPU and a wall clock after a synchronisation elsewhere.
// The bf16 matmul ceiling (an 8192^3 GEMM through ember::matmul, median of 10) is measured in
// the same run; MFU = the model's training FLOP/s / that ceiling (f32 cases too). FLOPs per
// token: G6 6 (12 L d^2 + V d) + 6 L T d (causal attention, half the keys); G7
// 3 (2 layers x 2 x 4H (H + H) + 2 H V). Peak memory: the caching allocator's peak_allocated
// over the timed steps (ember::cuda::memory_stats; the stand-in device's statistics on fake).
//
// --tiny: G6 2 layers, d 64, 2 heads, T 64, batch 2, vocab 512; G7 hidden 64, T 16, batch 4,
// vocab 500; 3 steps after 2 warm-ups and a 256^3 ceiling: a seconds-long run of every path
// (the CTest runs it on the stand-in device).
//
// Output, per case: a line for people, then one JSON line
//   {"bench": "G6_gpt", "library": "ember", "mode": "eager", "dtype": "bf16", "step_ms": ..., ...}
// and last `NAME MEDIAN_MS` lines (the bench contract), e.g. `G6_gpt/bf16 27.1`.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "../../examples/gpt/model.h"
#include "ember/ember.h"
#include "ember/fake.h"

#ifndef EMBER_BENCH_COMMIT
#define EMBER_BENCH_COMMIT "unknown"
#endif

namespace {

using ember::Device;
using ember::DType;
using ember::Tensor;
namespace nn = ember::nn;

constexpr const char* kProg = "ember-g6g7_bench";

struct Args {
  std::string device = "cuda";
  std::string only;  // "", g6 or g7
  bool tiny = false, g6_f32 = false, help = false;
  int64_t steps = 0, warmup = -1;  // 0 / -1: the defaults (15 and 3; --tiny 3 and 2)
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto value = [&]() -> std::string {
      EMBER_CHECK(i + 1 < argc, kProg, f, " needs a value");
      return argv[++i];
    };
    if (f == "--device")
      a.device = value();
    else if (f == "--only")
      a.only = value();
    else if (f == "--steps")
      a.steps = std::stoll(value());
    else if (f == "--warmup")
      a.warmup = std::stoll(value());
    else if (f == "--tiny")
      a.tiny = true;
    else if (f == "--g6-f32")
      a.g6_f32 = true;
    else if (f == "--help" || f == "-h")
      a.help = true;
    else
      EMBER_FAIL(kProg, "unknown option \"", f, "\" (see --help)");
  }
  EMBER_CHECK(a.only.empty() || a.only == "g6" || a.only == "g7", kProg, "--only expects g6 or g7, got \"", a.only,
              "\"");
  EMBER_CHECK(a.steps >= 0 && a.warmup >= -1, kProg, "--steps and --warmup must be >= 0");
  if (a.steps == 0) a.steps = a.tiny ? 3 : 15;
  if (a.warmup < 0) a.warmup = a.tiny ? 2 : 3;
  return a;
}

// Milliseconds of one call of fn on `device`: CUDA events on a GPU, else a wall clock (the
// stand-in device and the CPU run synchronously).
double time_ms(Device device, const std::function<void()>& fn) {
  if (device.is_cuda()) {
    ember::cuda::Event start, stop;
    start.record();
    fn();
    stop.record();
    return start.elapsed_ms(stop);
  }
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void reset_peak(Device d) {
  if (d.is_cuda()) ember::cuda::reset_peak_stats(d.index);
  if (d.is_fake()) ember::fake::reset_peak_stats(d.index);
}
// Peak bytes since reset_peak, or -1 where the device keeps no statistics (the CPU).
double peak_bytes(Device d) {
  if (d.is_cuda()) return static_cast<double>(ember::cuda::memory_stats(d.index).peak_allocated);
  if (d.is_fake()) return static_cast<double>(ember::fake::memory_stats(d.index).peak_allocated);
  return -1;
}

// TFLOP/s of an n^3 bf16 GEMM (median of 10 after 3).
double matmul_ceiling(Device device, int64_t n) {
  ember::Generator gen(7);
  Tensor a = ember::randn({n, n}, {}, &gen).to(DType::bf16).to(device);
  Tensor b = ember::randn({n, n}, {}, &gen).to(DType::bf16).to(device);
  ember::NoGradGuard no_grad;
  for (int i = 0; i < 3; ++i) ember::matmul(a, b);
  std::vector<double> ms;
  for (int i = 0; i < 10; ++i) ms.push_back(time_ms(device, [&] { ember::matmul(a, b); }));
  return 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / (median(ms) * 1e-3) / 1e12;
}

// G7's model: Embedding, 2-layer LSTM, Linear head.
class LstmLM : public nn::Module {
 public:
  LstmLM(int64_t vocab, int64_t hidden, ember::Generator* gen) {
    emb = register_module("emb", std::make_shared<nn::Embedding>(vocab, hidden, std::nullopt, gen));
    nn::RNNOptions o;
    o.input_size = hidden;
    o.hidden_size = hidden;
    o.num_layers = 2;
    o.batch_first = true;
    rnn = register_module("rnn", std::make_shared<nn::LSTM>(o, gen));
    head = register_module("head", std::make_shared<nn::Linear>(hidden, vocab, true, gen));
  }
  Tensor forward(const Tensor& ids) { return head->forward(rnn->forward(emb->forward(ids)).output); }

  std::shared_ptr<nn::Embedding> emb;
  std::shared_ptr<nn::LSTM> rnn;
  std::shared_ptr<nn::Linear> head;
};

struct Case {
  std::string bench, dtype;
  int64_t batch, seq;
  double flops_per_token;
};

struct Result {
  double step_ms = 0;
  double peak = -1;
};

// Times `step` (forward, backward, optimizer) and prints the case's two lines.
Result run_case(const Case& c, const Args& a, Device device, double ceiling, const std::function<void()>& step) {
  for (int64_t i = 0; i < a.warmup; ++i) step();
  if (device.is_cuda()) ember::cuda::synchronize(device.index);
  reset_peak(device);
  std::vector<double> ms;
  for (int64_t i = 0; i < a.steps; ++i) ms.push_back(time_ms(device, step));
  Result r{median(ms), peak_bytes(device)};
  const double tokens = static_cast<double>(c.batch * c.seq);
  const double tps = tokens / (r.step_ms * 1e-3);
  const double tflops = c.flops_per_token * tps / 1e12;
  const double gib = r.peak < 0 ? -1 : r.peak / 1073741824.0;
  char peak_text[32] = "null";
  if (gib >= 0) std::snprintf(peak_text, sizeof peak_text, "%.4f", gib);
  std::printf("%s/%s: %.3f ms/step, %.0f tokens/s, %.3g TFLOP/s, MFU %.3f, peak %s%s\n", c.bench.c_str(),
              c.dtype.c_str(), r.step_ms, tps, tflops, tflops / ceiling, gib < 0 ? "n/a" : peak_text,
              gib < 0 ? "" : " GiB");
  std::printf(
      "{\"bench\": \"%s\", \"library\": \"ember\", \"mode\": \"eager\", \"dtype\": \"%s\", \"device\": \"%s\", "
      "\"batch\": %lld, \"seq\": %lld, \"tokens_per_step\": %lld, \"step_ms\": %.4f, \"tokens_per_s\": %.1f, "
      "\"tflops\": %.3f, \"ceiling_tflops\": %.2f, \"mfu\": %.4f, \"peak_mem_gib\": %s, \"steps\": %lld, "
      "\"commit\": \"%s\"}\n",
      c.bench.c_str(), c.dtype.c_str(), device.str().c_str(), static_cast<long long>(c.batch),
      static_cast<long long>(c.seq), static_cast<long long>(c.batch * c.seq), r.step_ms, tps, tflops, ceiling,
      tflops / ceiling, peak_text, static_cast<long long>(a.steps), EMBER_BENCH_COMMIT);
  std::fflush(stdout);
  return r;
}

// One training step of `model` on (idx, tgt) under optional bf16 autocast.
template <class Model>
std::function<void()> make_step(Model& model, ember::optim::AdamW& opt, const Tensor& idx, const Tensor& tgt,
                                Device device, bool bf16) {
  return [&model, &opt, idx, tgt, device, bf16] {
    Tensor loss;
    {
      ember::amp::AutocastGuard autocast(device, DType::bf16, bf16);
      Tensor logits = model.forward(idx);
      loss = nn::cross_entropy(logits.to(DType::f32).reshape({-1, logits.size(2)}), tgt.reshape({-1}));
    }
    loss.backward();
    opt.step();
    opt.zero_grad();
  };
}

int run(const Args& a) {
  const Device device(a.device);
  if (device.is_cuda() && !ember::cuda::is_available()) {
    std::printf(
        "%s: no CUDA GPU is available; nothing measured (--device fake --tiny runs every path on the "
        "stand-in device)\n",
        kProg);
    return 0;
  }
  std::printf("# %s on %s, commit %s%s\n", kProg, device.str().c_str(), EMBER_BENCH_COMMIT,
              a.tiny ? ", --tiny sizes" : "");
  const double ceiling = matmul_ceiling(device, a.tiny ? 256 : 8192);
  std::printf("# bf16 matmul ceiling %.3g TFLOP/s\n", ceiling);
  std::vector<std::pair<std::string, double>> lines;  // the NAME MEDIAN_MS lines, printed last

  if (a.only.empty() || a.only == "g6") {
    const int64_t V = a.tiny ? 512 : 50304, T = a.tiny ? 64 : 1024, L = a.tiny ? 2 : 12, D = a.tiny ? 64 : 768;
    const int64_t H = a.tiny ? 2 : 12, B = a.tiny ? 2 : 8;
    std::vector<bool> modes = {true};
    if (a.g6_f32) modes.insert(modes.begin(), false);
    for (bool bf16 : modes) {
      ember::Generator gen(0);
      gpt::GPT model(V, T, L, D, H, &gen);
      model.to(device);
      ember::optim::AdamW opt(model.parameters(), {.lr = 1e-4});
      Tensor idx = ember::randint(0, V, {B, T}, DType::i64, &gen).to(device);
      Tensor tgt = ember::randint(0, V, {B, T}, DType::i64, &gen).to(device);
      const Case c{"G6_gpt", bf16 ? "bf16" : "f32", B, T, gpt::train_flops_per_token(V, T, L, D)};
      const Result r = run_case(c, a, device, ceiling, make_step(model, opt, idx, tgt, device, bf16));
      lines.emplace_back(c.bench + "/" + c.dtype, r.step_ms);
    }
  }
  if (a.only.empty() || a.only == "g7") {
    const int64_t V = a.tiny ? 500 : 10000, Hd = a.tiny ? 64 : 1024, T = a.tiny ? 16 : 128, B = a.tiny ? 4 : 64;
    for (bool bf16 : {false, true}) {
      ember::Generator gen(0);
      LstmLM model(V, Hd, &gen);
      model.to(device);
      ember::optim::AdamW opt(model.parameters(), {.lr = 1e-4});
      Tensor idx = ember::randint(0, V, {B, T}, DType::i64, &gen).to(device);
      Tensor tgt = ember::randint(0, V, {B, T}, DType::i64, &gen).to(device);
      const double h = static_cast<double>(Hd);
      const Case c{"G7_lstm_lm", bf16 ? "bf16" : "f32", B, T, 3.0 * (2 * 2 * 4 * h * (2 * h) + 2 * h * V)};
      const Result r = run_case(c, a, device, ceiling, make_step(model, opt, idx, tgt, device, bf16));
      lines.emplace_back(c.bench + "/" + c.dtype, r.step_ms);
    }
  }
  for (const auto& [name, ms] : lines) std::printf("%s %.3f\n", name.c_str(), ms);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    if (a.help) {
      std::cout << "usage: " << kProg
                << " [--device cuda|cuda:N|fake|cpu] [--tiny] [--only g6|g7] [--g6-f32] [--steps N] [--warmup N]\n"
                   "  G6_gpt (bf16 autocast) and G7_lstm_lm (f32, bf16) training steps: tokens/s, step time, MFU\n"
                   "  against the bf16 matmul ceiling measured in the same run, peak memory; one JSON line a case.\n";
      return 0;
    }
    return run(a);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
