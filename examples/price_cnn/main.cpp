// price_cnn: a 1-D convolutional network over windows of real log-returns that predicts the
// direction (up / not up) of the next move, trained and judged on a strict time split.
//
// Data (Debian's python-matplotlib-data, matplotlib's sample_data folder, from Yahoo Finance):
//   --source stocks (default)  Stocks.csv: monthly closes 1990-2022 of 10 tickers (IBM, AAPL,
//                              MSFT, XRX, AMZN, DELL, GOOGL, ADBE, ^GSPC, ^IXIC) pooled into one
//                              model, or one of them with --column NAME. Empty cells are missing
//                              values: a ticker's series starts at its first close; rows with no
//                              values at all are skipped, and so is a row that repeats the
//                              previous row's every value under a new date (the file ends with one).
//   --source goog              goog.npz: daily Google prices 2004-2008, read by this example's own
//                              .npz/.npy reader (npz.h); --column picks the field (default close).
//   --csv FILE                 your own series: a header row with columns date,close (another
//                              value column with --column NAME), dates YYYY-MM-DD (optionally
//                              " HH:MM[:SS]") strictly increasing, prices > 0, no empty cells.
//
// Task: from the last W log-returns r = log(close_t / close_{t-1}), predict whether the next
// return is > 0 (up) or not (down: <= 0). Split by date, no look-ahead: the pooled return dates'
// first (1 - val - test) share is the train range, then validation, then the latest test range;
// a window is kept only if every close it uses (W + 2 of them: inputs and target) lies inside one
// range, so no window straddles a boundary. --norm train (default) standardises returns with the
// mean and standard deviation of the train range's returns only; --norm window z-scores each
// window by itself. The epoch with the best validation accuracy is the model reported; the test
// range is scored for it and for the baselines only.
//
// Baselines from the same run: the train range's majority class, and persistence (the next move
// repeats the last). The better of the two on the test range is baseline_accuracy; logistic
// regression on the same windows is printed too. Prices are close to a random walk: the margin
// over the baseline may well be zero or negative, and it is reported as it comes.
//
// Model: Conv1d(1->C, k3) ReLU Conv1d(C->C, k3) ReLU, flatten, Dropout, Linear(C*W->H) ReLU,
// Linear(H->2); AdamW with a cosine-decayed learning rate, cross-entropy.
//
// Checkpoints (--checkpoint, default price_cnn.ckpt.safetensors; "" disables): model, AdamW
// state, schedule, the data-order and dropout generators, the epoch, the validation history
// and the best epoch so far, written at every epoch end. --resume continues a run with the same
// settings (checked), --stop-after E stops after epoch E as if interrupted.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "../common/cli.h"
#include "../common/flags.h"
#include "../common/quantize_report.h"
#include "../common/onnx_export.h"
#include "../common/profile.h"
#include "../common/training.h"
#include "../common/report.h"
#include "../common/seqdata.h"
#include "ember/cpu.h"
#include "ember/ember.h"
#include "ember/io/checkpoint.h"
#include "prices.h"

namespace {

using namespace ember;
namespace fs = std::filesystem;
using price_cnn::Series;

constexpr const char* kProg = "price_cnn";
constexpr const char* kSampleDir = "python-matplotlib-data/usr/share/matplotlib/mpl-data/sample_data";
constexpr const char* kSystemSampleDir = "/usr/share/matplotlib/mpl-data/sample_data";
constexpr uint64_t kShuffleSeedMix = 0x9E3779B97F4A7C15ULL;

// --- command line -----------------------------------------------------------------------------

struct Args {
  std::string data_root = example::default_data_root();
  std::string source = "stocks";  // stocks | goog | csv
  std::string csv;
  std::string column;  // stocks: one ticker (default: all); goog: a field (close); csv: close
  int64_t window = 0;  // 0: the source's default (stocks 12 months, goog and csv 20 rows)
  std::string norm = "train";
  double val_frac = 0.15, test_frac = 0.15;
  std::string preset = "small";
  int64_t epochs = 30, batch = 64, channels = 16, hidden = 32;
  double lr = 1e-3, weight_decay = 1e-2, dropout = 0.2;
  uint64_t seed = 1;
  int threads = 1;  // the model is tiny: more threads cost more in synchronisation than they save
  std::string device = "cpu";
  std::optional<DType> amp;
  std::string checkpoint = "price_cnn.ckpt.safetensors";
  std::string profile;  // --profile: Chrome trace of the training loop
  std::string export_onnx;  // --export-onnx: the trained model as ONNX
  bool resume = false, help = false;
  bool eval_only = false;                      // --eval-only: load --checkpoint, no training
  std::optional<example::QuantForm> quantize;  // --quantize: compare f32 with int8/f16/bf16
  int64_t stop_after = 0;
  std::string plot;
};

void apply_preset(Args& a, const std::string& name) {
  EMBER_CHECK(name == "small" || name == "full", kProg, "--preset expects small or full, got \"", name, "\"");
  a.preset = name;
  if (name == "full") {  // a bigger network and longer training (meant for a GPU)
    a.channels = 64, a.hidden = 128, a.epochs = 100, a.batch = 128, a.dropout = 0.3;
  }
}

void usage(std::ostream& o) {
  o << "usage: price_cnn [options]\n"
       "Predicts the direction of the next price move from the last W log-returns with a 1-D CNN,\n"
       "on a time split (train: earliest dates, validation, test: latest dates).\n"
       "data:\n"
       "  --data-root DIR    fetched Debian data (default " << example::default_data_root() << ";\n"
       "                     python-matplotlib-data's sample_data folder under it, else " << kSystemSampleDir << ")\n"
       "  --source S         stocks: Stocks.csv, 10 tickers' monthly closes 1990-2022, pooled (default);\n"
       "                     goog: goog.npz, daily Google prices 2004-2008\n"
       "  --csv FILE         your own prices: header row with columns date,close; dates YYYY-MM-DD\n"
       "                     (optionally HH:MM[:SS]) strictly increasing; prices > 0\n"
       "  --column NAME      stocks: one ticker only (e.g. AAPL); goog: the field (default close);\n"
       "                     csv: the value column (default close)\n"
       "  --window W         returns per window (default: stocks 12, goog and csv 20)\n"
       "  --norm M           train: standardise with the train range's mean and std (default);\n"
       "                     window: z-score each window by its own mean and std\n"
       "  --val-frac X       share of the return dates for validation (default 0.15)\n"
       "  --test-frac X      share of the latest return dates for the test (default 0.15)\n"
       "training:\n"
       "  --preset P         small (default: C=16, H=32, 30 epochs, seconds on a CPU) or full\n"
       "                     (C=64, H=128, 100 epochs); later flags override it\n"
       "  --epochs N  --batch N  --lr X (AdamW, cosine to 0; default 1e-3)  --weight-decay X (1e-2)\n"
       "  --dropout X (0.2)  --channels C (16)  --hidden H (32)\n"
       "  --seed N           initialisation, dropout and data order (default 1)\n"
       "  --threads N        CPU threads (default 1: the model is too small to gain from more)\n"
       "  --device D         cpu, cuda, cuda:N or fake (the stand-in test device); default cpu\n"
       "  --amp M            bf16, f16 (with loss scaling) or off (default off)\n"
       "  --checkpoint PATH  saved at every epoch end (default price_cnn.ckpt.safetensors; \"\" disables)\n"
       "  --resume           continue from --checkpoint (same settings)\n"
       "  --stop-after E     stop after epoch E as if interrupted\n"
       "  --eval-only        load the model from --checkpoint and evaluate it on the test range, no training\n"
       "  --quantize Q       int8, f16 or bf16: compare the trained f32 model with that form on the test\n"
       "                     range (accuracy, size, latency; a last result: line)\n"
       "  --plot FILE        SVG of the per-epoch train loss and validation accuracy\n"
       "  --export-onnx FILE write the trained model as ONNX (batch axis dynamic) with a sample of test\n"
       "                     windows and the model's outputs for them (docs/deploy.md)\n"
       "  --profile FILE     profile the training loop: Chrome trace JSON to FILE, top-ops table\n"
       "  --help             this text\n"
       "The last line is `result: test_accuracy=... baseline_accuracy=... margin=...` (fractions;\n"
       "margin = test_accuracy - baseline_accuracy, the baseline the better of the train range's\n"
       "majority class and persistence).\n";
}

Args parse_args(int argc, char** argv) {
  Args a;
  example::Flags f(kProg);
  f.preset([&](const std::string& v) { apply_preset(a, v); });  // later flags override it
  f.boolean("--resume", &a.resume).boolean("--eval-only", &a.eval_only);
  f.custom("--quantize", [&](const std::string& v) { a.quantize = example::parse_quantize(kProg, v); });
  f.text("--data-root", &a.data_root);
  f.choice("--source", &a.source, {"stocks", "goog"}, " (your own file: --csv FILE)");
  f.text("--csv", &a.csv).text("--column", &a.column);
  f.integer("--window", &a.window, 2);
  f.choice("--norm", &a.norm, {"train", "window"});
  f.real("--val-frac", &a.val_frac, 0.0, true).real("--test-frac", &a.test_frac, 0.0, true);
  f.integer("--epochs", &a.epochs, 1).integer("--batch", &a.batch, 1);
  f.real("--lr", &a.lr, 0.0, true).real("--weight-decay", &a.weight_decay, 0.0, false);
  f.real("--dropout", &a.dropout, 0.0, false, /*below=*/1.0);
  f.integer("--channels", &a.channels, 1).integer("--hidden", &a.hidden, 1);
  f.integer("--seed", &a.seed, 0).integer("--threads", &a.threads, 1);
  f.text("--device", &a.device).amp("--amp", &a.amp);
  f.text("--checkpoint", &a.checkpoint).integer("--stop-after", &a.stop_after, 1);
  f.text("--plot", &a.plot).text("--profile", &a.profile).text("--export-onnx", &a.export_onnx);
  a.help = f.parse(argc, argv);
  if (!a.csv.empty()) a.source = "csv";
  if (a.window == 0) a.window = a.source == "stocks" ? 12 : 20;
  EMBER_CHECK(a.val_frac + a.test_frac < 0.9, kProg, "--val-frac + --test-frac must leave at least 10% for training, got ",
              a.val_frac, " + ", a.test_frac);
  EMBER_CHECK(!a.resume || !a.checkpoint.empty(), kProg, "--resume needs a --checkpoint path");
  return a;
}

// --- data -------------------------------------------------------------------------------------

std::string sample_file(const Args& a, const std::string& name) {
  const std::string p = a.data_root + "/" + kSampleDir + "/" + name;
  if (fs::is_regular_file(p)) return p;
  const std::string sys = std::string(kSystemSampleDir) + "/" + name;
  if (fs::is_regular_file(sys)) return sys;
  EMBER_FAIL(kProg, "missing data file ", p, " (and ", sys, "); fetch it with `bash scripts/fetch_data.sh "
             "python-matplotlib-data`, install Debian's python-matplotlib-data, or pass --data-root DIR");
}

struct Loaded {
  std::vector<Series> series;
  std::string what;  // where it came from, for the summary
};

Loaded load_series(const Args& a) {
  Loaded L;
  if (a.source == "goog") {
    const std::string path = sample_file(a, "goog.npz");
    std::string described;
    Series s = price_cnn::read_npz_prices(path, a.column.empty() ? "close" : a.column, &described);
    s.name = "GOOG " + s.name;
    L.what = path + " (" + described + "), daily";
    L.series.push_back(std::move(s));
    return L;
  }
  const bool user = a.source == "csv";
  const std::string path = user ? a.csv : sample_file(a, "Stocks.csv");
  std::vector<std::string> cols;
  if (user) cols.push_back(a.column.empty() ? "close" : a.column);
  else if (!a.column.empty()) cols.push_back(a.column);
  price_cnn::CsvSummary sum;
  L.series = price_cnn::read_price_csv(path, cols, /*allow_missing=*/!user, &sum);
  std::ostringstream os;
  os << path << ": " << sum.rows << " rows, " << sum.columns.size() << " value column(s)";
  if (sum.empty_rows > 0) os << "; skipped " << sum.empty_rows << " rows without any value";
  if (sum.repeated_rows > 0) os << " and " << sum.repeated_rows << " row(s) repeating the previous row's values";
  L.what = os.str();
  return L;
}

// Windows of one split: (N, W) inputs, labels (1 = up), the persistence guess (1 = the last
// input return was > 0).
struct Windows {
  std::vector<float> x;
  std::vector<int64_t> y, persist;
  int64_t n = 0;
  int64_t first_t = 0, last_t = 0;  // target dates
  int64_t zero_moves = 0;           // targets with a return of exactly 0 (labelled down)
};

struct Dataset {
  Windows part[3];  // train, val, test
  int64_t t1 = 0, t2 = 0;  // the val range starts at t1, the test range at t2
  double mean = 0, std = 1;
  int64_t returns = 0;
};

Dataset build(const std::vector<Series>& series, const Args& a) {
  const int64_t W = a.window;
  std::vector<int64_t> dates;  // every return's date (the later close's)
  for (const Series& s : series)
    for (size_t k = 1; k < s.t.size(); ++k) dates.push_back(s.t[k]);
  EMBER_CHECK(dates.size() >= 10, kProg, "only ", dates.size(), " returns in the data; need many more");
  std::sort(dates.begin(), dates.end());
  Dataset d;
  d.returns = static_cast<int64_t>(dates.size());
  const auto at = [&](double q) { return dates[std::min(dates.size() - 1, static_cast<size_t>(q * static_cast<double>(dates.size())))]; };
  d.t1 = at(1.0 - a.val_frac - a.test_frac);
  d.t2 = at(1.0 - a.test_frac);
  EMBER_CHECK(d.t1 > dates.front() && d.t2 > d.t1, kProg, "the data's dates are too few to split into train, "
              "validation and test ranges (", price_cnn::format_time(dates.front()), " to ",
              price_cnn::format_time(dates.back()), ")");
  const auto range = [&](int64_t t) { return t < d.t1 ? 0 : t < d.t2 ? 1 : 2; };

  // Statistics from the train range only: returns whose two closes are both in it.
  double s1 = 0, s2 = 0;
  int64_t n = 0;
  for (const Series& s : series)
    for (size_t k = 1; k < s.t.size(); ++k)
      if (range(s.t[k]) == 0) {
        const double r = std::log(s.close[k] / s.close[k - 1]);
        s1 += r, s2 += r * r, ++n;
      }
  EMBER_CHECK(n >= 2, kProg, "fewer than 2 returns in the train range");
  d.mean = s1 / static_cast<double>(n);
  d.std = std::sqrt(std::max(s2 / static_cast<double>(n) - d.mean * d.mean, 1e-24));

  std::vector<double> r;
  for (const Series& s : series) {
    r.assign(s.t.size(), 0.0);
    for (size_t k = 1; k < s.t.size(); ++k) r[k] = std::log(s.close[k] / s.close[k - 1]);
    // Target return k uses closes k-W-1 .. k; ranges are contiguous in time, so both ends
    // in one range means all of them are.
    for (int64_t k = W + 1; k < static_cast<int64_t>(s.t.size()); ++k) {
      const int p = range(s.t[static_cast<size_t>(k - W - 1)]);
      if (p != range(s.t[static_cast<size_t>(k)])) continue;
      Windows& w = d.part[p];
      const double* in = r.data() + (k - W);
      double m = d.mean, sd = d.std;
      if (a.norm == "window") {
        double a1 = 0, a2 = 0;
        for (int64_t j = 0; j < W; ++j) a1 += in[j], a2 += in[j] * in[j];
        m = a1 / static_cast<double>(W);
        sd = std::sqrt(std::max(a2 / static_cast<double>(W) - m * m, 0.0)) + 1e-8;
      }
      for (int64_t j = 0; j < W; ++j) w.x.push_back(static_cast<float>((in[j] - m) / sd));
      const double next = r[static_cast<size_t>(k)];
      w.y.push_back(next > 0 ? 1 : 0);
      w.persist.push_back(in[W - 1] > 0 ? 1 : 0);
      w.zero_moves += next == 0;
      if (w.n == 0) w.first_t = s.t[static_cast<size_t>(k)];
      w.first_t = std::min(w.first_t, s.t[static_cast<size_t>(k)]);
      w.last_t = std::max(w.last_t, s.t[static_cast<size_t>(k)]);
      ++w.n;
    }
  }
  static const char* kNames[3] = {"train", "validation", "test"};
  for (int p = 0; p < 3; ++p)
    EMBER_CHECK(d.part[p].n >= 1 && (p != 0 || d.part[p].n >= 8), kProg, "only ", d.part[p].n, " windows of ", W,
                " returns fit in the ", kNames[p], " range; use a smaller --window or a longer series");
  return d;
}

// --- model ------------------------------------------------------------------------------------

std::shared_ptr<nn::Sequential> make_model(const Args& a, Generator* gen) {
  auto m = std::make_shared<nn::Sequential>();
  m->add(std::make_shared<nn::Conv1d>(1, a.channels, 3, nn::Conv1dOptions{.padding = 1}, gen))
      .add(std::make_shared<nn::ReLU>())
      .add(std::make_shared<nn::Conv1d>(a.channels, a.channels, 3, nn::Conv1dOptions{.padding = 1}, gen))
      .add(std::make_shared<nn::ReLU>())
      .add(std::make_shared<nn::Flatten>())
      .add(std::make_shared<nn::Dropout>(a.dropout, gen))
      .add(std::make_shared<nn::Linear>(a.channels * a.window, a.hidden, true, gen))
      .add(std::make_shared<nn::ReLU>())
      .add(std::make_shared<nn::Linear>(a.hidden, 2, true, gen));
  return m;
}


// Accuracy of the model on a split (a fraction).
double accuracy(nn::Sequential& model, const Tensor& x, const Tensor& y, Device device, const Args& a) {
  model.eval();
  NoGradGuard ng;
  int64_t correct = 0;
  const int64_t n = x.size(0);
  for (int64_t s = 0; s < n; s += 1024) {
    const int64_t len = std::min<int64_t>(1024, n - s);
    Tensor logits;
    {
      amp::AutocastGuard autocast(device, a.amp.value_or(DType::bf16), a.amp.has_value());
      logits = model(x.narrow(0, s, len).to(device));
    }
    correct += sum(eq(argmax(logits, 1), y.narrow(0, s, len).to(device))).item<int64_t>();
  }
  model.train();
  return static_cast<double>(correct) / static_cast<double>(n);
}

double share_equal(const std::vector<int64_t>& guess, const std::vector<int64_t>& y) {
  int64_t c = 0;
  for (size_t i = 0; i < y.size(); ++i) c += guess[i] == y[i];
  return static_cast<double>(c) / static_cast<double>(y.size());
}


std::map<std::string, std::string> run_identity(const Args& a, const Dataset& d) {
  char buf[200];
  std::snprintf(buf, sizeof buf, "lr=%.17g wd=%.17g dropout=%.17g val=%.17g test=%.17g", a.lr, a.weight_decay,
                a.dropout, a.val_frac, a.test_frac);
  return {{"source", a.source == "csv" ? "csv:" + a.csv : a.source}, {"column", a.column},
          {"window", std::to_string(a.window)}, {"norm", a.norm}, {"epochs", std::to_string(a.epochs)},
          {"batch", std::to_string(a.batch)}, {"model", std::to_string(a.channels) + "x" + std::to_string(a.hidden)},
          {"rates", buf}, {"seed", std::to_string(a.seed)}, {"amp", example::amp_name(a.amp)},
          {"train_n", std::to_string(d.part[0].n)}};
}

// --quantize: the f32 model against its int8 / f16 / bf16 form on the test range.
void quantize_report(example::QuantForm form, nn::Sequential& model, const Tensor& x, const Tensor& y, Device device) {
  example::QuantizeHooks h;
  h.accuracy = [&](DType dt) {
    NoGradGuard ng;
    int64_t correct = 0;
    const int64_t n = x.size(0);
    for (int64_t s = 0; s < n; s += 1024) {
      const int64_t len = std::min<int64_t>(1024, n - s);
      const Tensor logits = model(to_dtype(x.narrow(0, s, len), dt).to(device));
      correct += sum(eq(argmax(logits, 1), y.narrow(0, s, len).to(device))).item<int64_t>();
    }
    return 100.0 * static_cast<double>(correct) / static_cast<double>(n);
  };
  h.forward = [&](int64_t b, DType dt) { (void)model(to_dtype(x.narrow(0, 0, std::min(b, x.size(0))), dt).to(device)); };
  h.large_batch = std::min<int64_t>(256, x.size(0));
  example::quantize_report(kProg, model, form, h);
}

int run(const Args& a, Device device) {
  cpu::set_num_threads(a.threads);
  const auto t0 = std::chrono::steady_clock::now();
  using price_cnn::format_time;

  // Data.
  const Loaded L = load_series(a);
  const Dataset d = build(L.series, a);
  example::say("data: %s\n", L.what.c_str());
  for (const Series& s : L.series)
    example::say("  %-8s %s .. %s  %zu closes\n", s.name.c_str(), format_time(s.t.front()).c_str(),
                 format_time(s.t.back()).c_str(), s.close.size());
  example::say("task: from the last %lld log-returns, is the next return > 0? (%lld returns in all; %s)\n",
               static_cast<long long>(a.window), static_cast<long long>(d.returns),
               a.norm == "train" ? "standardised with the train range's statistics" : "each window z-scored by itself");
  if (a.norm == "train") example::say("  train-range log-return mean %.5f std %.5f\n", d.mean, d.std);
  example::say("split by date (no window crosses a boundary): train < %s <= validation < %s <= test\n",
               format_time(d.t1).c_str(), format_time(d.t2).c_str());
  static const char* kNames[3] = {"train", "validation", "test"};
  for (int p = 0; p < 3; ++p) {
    const Windows& w = d.part[p];
    const int64_t up = std::accumulate(w.y.begin(), w.y.end(), int64_t{0});
    example::say("  %-10s %5lld windows, targets %s .. %s: up %lld, down %lld (up %.1f%%%s)\n", kNames[p],
                 static_cast<long long>(w.n), format_time(w.first_t).c_str(), format_time(w.last_t).c_str(),
                 static_cast<long long>(up), static_cast<long long>(w.n - up), 100.0 * static_cast<double>(up) / static_cast<double>(w.n),
                 w.zero_moves > 0 ? (", " + std::to_string(w.zero_moves) + " unchanged counted as down").c_str() : "");
  }
  example::say("  classes are not rebalanced: the majority-class baseline below shows the imbalance\n");

  const int64_t W = a.window;
  Tensor X[3], Y[3];
  for (int p = 0; p < 3; ++p) {
    X[p] = from_vector(d.part[p].x, {d.part[p].n, 1, W});
    Y[p] = from_vector(d.part[p].y, {d.part[p].n});
  }

  // Baselines on the test range.
  const Windows& tr = d.part[0];
  const Windows& te = d.part[2];
  const int64_t train_up = std::accumulate(tr.y.begin(), tr.y.end(), int64_t{0});
  const int64_t majority = 2 * train_up >= tr.n ? 1 : 0;
  const double majority_acc = share_equal(std::vector<int64_t>(te.y.size(), majority), te.y);
  const double persistence_acc = share_equal(te.persist, te.y);
  const double logistic_acc =
      example::logistic_baseline(X[0].reshape({tr.n, W}), Y[0], X[2].reshape({te.n, W}), Y[2], 2);
  const double baseline = std::max(majority_acc, persistence_acc);

  // Model.
  Generator gen(a.seed);  // initialisation, then dropout masks
  std::shared_ptr<nn::Sequential> model = make_model(a, &gen);
  example::say("model: Conv1d(1->%lld,k3) ReLU Conv1d(%lld->%lld,k3) ReLU flatten Dropout(%g) Linear(%lld->%lld) ReLU "
               "Linear(%lld->2), %lld parameters; AdamW lr %g (cosine to 0) wd %g, batch %lld, %lld epochs, device %s, "
               "threads %d\n",
               static_cast<long long>(a.channels), static_cast<long long>(a.channels), static_cast<long long>(a.channels),
               a.dropout, static_cast<long long>(a.channels * W), static_cast<long long>(a.hidden),
               static_cast<long long>(a.hidden), static_cast<long long>(model->parameter_count()), a.lr, a.weight_decay,
               static_cast<long long>(a.batch), static_cast<long long>(a.epochs), device.str().c_str(),
               cpu::num_threads());
  model->to(device);
  if (a.eval_only) {
    example::load_model_weights(kProg, a.checkpoint, *model);
    example::say("loaded %s; test accuracy %.4f\n", a.checkpoint.c_str(), accuracy(*model, X[2], Y[2], device, a));
    if (a.quantize) quantize_report(*a.quantize, *model, X[2], Y[2], device);
    return 0;
  }
  optim::AdamW opt(model->parameters(), {.lr = a.lr, .weight_decay = a.weight_decay});
  const int64_t steps = (tr.n + a.batch - 1) / a.batch;
  optim::WarmupCosineLR sched(opt, {.warmup_steps = 0, .total_steps = a.epochs * steps, .min_lr = 0.0});
  amp::GradScaler scaler(example::scaler_options(a.amp));
  Generator shuffle_gen(a.seed ^ kShuffleSeedMix);

  const auto identity = run_identity(a, d);
  std::vector<double> hist_loss, hist_val;
  int64_t first_epoch = 1, best_epoch = 0, global_step = 0;
  double best_val = -1, test_at_best = 0;
  if (a.resume) {
    io::TrainingState st;
    io::load_checkpoint(a.checkpoint, *model, opt, &sched, st, &scaler);
    example::check_run_identity(kProg, a.checkpoint, st.extra, identity,
                                "resume with the same data, window and training flags");
    for (const char* k : {"model_rng_seed", "model_rng_offset", "best_epoch", "best_val", "test_at_best", "hist_loss", "hist_val"})
      EMBER_CHECK(st.extra.count(k), kProg, a.checkpoint, " lacks train.extra.", k, " (not written by price_cnn?)");
    st.apply_to(shuffle_gen);
    gen.manual_seed(std::stoull(st.extra["model_rng_seed"]));  // the dropout masks continue too
    gen.set_offset(std::stoull(st.extra["model_rng_offset"]));
    first_epoch = st.epoch + 1;
    global_step = st.step;
    best_epoch = std::stoll(st.extra["best_epoch"]);
    best_val = std::stod(st.extra["best_val"]);
    test_at_best = std::stod(st.extra["test_at_best"]);
    hist_loss = example::parse_numbers(kProg, st.extra["hist_loss"], a.checkpoint + " train.extra.hist_loss");
    hist_val = example::parse_numbers(kProg, st.extra["hist_val"], a.checkpoint + " train.extra.hist_val");
    example::say("resumed from %s: %lld/%lld epochs done, best validation accuracy so far %.4f (epoch %lld)\n",
                 a.checkpoint.c_str(), static_cast<long long>(st.epoch), static_cast<long long>(a.epochs), best_val,
                 static_cast<long long>(best_epoch));
  }
  const int64_t last_epoch = a.stop_after > 0 ? std::min(a.stop_after, a.epochs) : a.epochs;
  example::Progress progress(a.epochs, (last_epoch - first_epoch + 1) * steps, std::max<int64_t>(1, steps));
  std::unique_ptr<ember::Profiler> profiler = example::start_profile(a.profile);

  for (int64_t epoch = first_epoch; epoch <= last_epoch; ++epoch) {
    const Tensor perm = from_vector(example::shuffled_order(tr.n, shuffle_gen), {tr.n});
    double loss_sum = 0;
    for (int64_t step = 0; step < steps; ++step) {
      const int64_t start = step * a.batch, len = std::min(a.batch, tr.n - start);
      const Tensor idx = perm.narrow(0, start, len);
      const Tensor x = index_select(X[0], 0, idx).to(device);
      const Tensor y = index_select(Y[0], 0, idx).to(device);
      Tensor logits, loss;
      {
        amp::AutocastGuard autocast(device, a.amp.value_or(DType::bf16), a.amp.has_value());
        logits = (*model)(x);
        loss = nn::cross_entropy(logits, y);
      }
      opt.zero_grad();
      scaler.scale(loss).backward();
      scaler.step(opt);
      scaler.update();
      sched.step();
      ++global_step;
      if (profiler) profiler->step();
      NoGradGuard ng;
      const double l = loss.item<double>();
      loss_sum += l * static_cast<double>(len);
      progress.step(epoch, l, sum(eq(argmax(logits, 1), y)).item<int64_t>(), len);
    }
    const double val = accuracy(*model, X[1], Y[1], device, a);
    const double test = accuracy(*model, X[2], Y[2], device, a);  // kept for the selected epoch only
    hist_loss.push_back(loss_sum / static_cast<double>(tr.n));
    hist_val.push_back(val);
    const bool better = val > best_val;
    if (better) best_val = val, best_epoch = epoch, test_at_best = test;
    char scale[48] = "";
    if (scaler.is_enabled()) std::snprintf(scale, sizeof scale, " (loss scale %g)", scaler.get_scale());
    example::say("epoch %lld/%lld train loss %.4f validation accuracy %.4f%s%s\n", static_cast<long long>(epoch),
                 static_cast<long long>(a.epochs), hist_loss.back(), val, better ? " (best so far)" : "", scale);
    if (!a.checkpoint.empty()) {
      io::TrainingState st = io::TrainingState::from(shuffle_gen);
      st.epoch = epoch;
      st.step = global_step;
      st.extra = identity;
      st.extra["model_rng_seed"] = std::to_string(gen.seed());
      st.extra["model_rng_offset"] = std::to_string(gen.offset());
      st.extra["best_epoch"] = std::to_string(best_epoch);
      st.extra["best_val"] = example::format_numbers({best_val});
      st.extra["test_at_best"] = example::format_numbers({test_at_best});
      st.extra["hist_loss"] = example::format_numbers(hist_loss);
      st.extra["hist_val"] = example::format_numbers(hist_val);
      io::save_checkpoint(a.checkpoint, *model, opt, &sched, st, &scaler);
    }
  }
  if (profiler) profiler->stop();
  if (!a.plot.empty() && !hist_loss.empty()) {
    example::write_svg_plot(a.plot, "price_cnn: direction of the next move", "epoch", "loss / accuracy",
                            {{"train loss", hist_loss}, {"validation accuracy", hist_val}});
    example::say("plot: %s\n", a.plot.c_str());
  }
  if (last_epoch < a.epochs) {
    example::say("stopped after epoch %lld of %lld (--stop-after); continue with --resume\n",
                 static_cast<long long>(last_epoch), static_cast<long long>(a.epochs));
    return 0;
  }

  const double se = std::sqrt(baseline * (1 - baseline) / static_cast<double>(te.n));
  example::say("baselines on the test range (%lld windows): majority class of the train range (%s) %.4f, "
               "persistence (next move = last move) %.4f; logistic regression on the same windows %.4f\n",
               static_cast<long long>(te.n), majority ? "up" : "down", majority_acc, persistence_acc, logistic_acc);
  example::say("model selected by validation accuracy: epoch %lld (validation %.4f)\n", static_cast<long long>(best_epoch),
               best_val);
  const double margin = test_at_best - baseline;
  example::say("test accuracy %.4f vs baseline %.4f (%s): margin %+.4f, %+lld windows of %lld; one standard error "
               "of the test accuracy is about %.4f, so a margin inside +-%.4f is noise\n",
               test_at_best, baseline, majority_acc >= persistence_acc ? "majority class" : "persistence", margin,
               static_cast<long long>(std::llround(margin * static_cast<double>(te.n))), static_cast<long long>(te.n),
               se, 2 * se);
  if (!a.export_onnx.empty()) {
    io::ExportOptions o;
    o.input_names = {"windows"};
    o.output_names = {"logits"};
    o.dynamic_axes = {{"windows", {{0, "batch"}}}, {"logits", {{0, "batch"}}}};
    example::export_onnx(kProg, a.export_onnx, *model, {X[2].narrow(0, 0, std::min<int64_t>(8, te.n))}, o,
                         [&model](const std::vector<Tensor>& in) { return std::vector<Tensor>{model->forward(in[0])}; });
  }
  example::say("total time: %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  example::print_result({{"test_accuracy", test_at_best}, {"baseline_accuracy", baseline}, {"margin", margin}});
  if (a.quantize) quantize_report(*a.quantize, *model, X[2], Y[2], device);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return example::run_main(kProg, argc, argv, parse_args, usage, run); }
