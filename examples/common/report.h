// What the bundled examples print and draw: the progress line (loss, accuracy, samples/s, ETA),
// the final `result:` line that outside checks read, and a small SVG line chart of the training
// curves (--plot FILE). Header-only; prints through example::say (rank 0 only under --dist).
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "cli.h"
#include "ember/core/error.h"

namespace example {

// The default folder of fetched Debian data (scripts/fetch_data.sh): $EMBER_DATA, else the
// source tree's .cache/data (baked in by examples/CMakeLists.txt).
inline std::string default_data_root() {
  if (const char* e = std::getenv("EMBER_DATA"); e != nullptr && *e != '\0') return e;
#ifdef EMBER_DATA_ROOT
  return EMBER_DATA_ROOT;
#else
  return ".cache/data";
#endif
}

// "1:05" / "1:02:03"
inline std::string clock_text(double seconds) {
  const long s = std::lround(std::max(0.0, seconds));
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

// The progress line of a run of `total_steps` steps: call step(loss, correct, count) after every
// optimizer step; every `every` steps (and at the last) it prints
//   epoch 2/8 step 140/400 loss 0.3121 acc 88.4% 5210 samples/s ETA 0:41
// with loss and accuracy averaged over the steps since the last line.
class Progress {
 public:
  Progress(int64_t epochs, int64_t total_steps, int64_t every = 20)
      : epochs_(epochs), total_(total_steps), every_(std::max<int64_t>(1, every)),
        start_(std::chrono::steady_clock::now()), window_(start_) {}

  void step(int64_t epoch, double loss, int64_t correct, int64_t count) {
    ++done_;
    loss_ += loss * static_cast<double>(count);
    correct_ += correct;
    count_ += count;
    if (done_ % every_ != 0 && done_ != total_) return;
    const auto now = std::chrono::steady_clock::now();
    const double window = std::chrono::duration<double>(now - window_).count();
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double eta = elapsed / static_cast<double>(done_) * static_cast<double>(total_ - done_);
    say("epoch %lld/%lld step %lld/%lld loss %.4f acc %.1f%% %.0f samples/s ETA %s\n", static_cast<long long>(epoch),
        static_cast<long long>(epochs_), static_cast<long long>(done_), static_cast<long long>(total_),
        loss_ / static_cast<double>(std::max<int64_t>(count_, 1)),
        100.0 * static_cast<double>(correct_) / static_cast<double>(std::max<int64_t>(count_, 1)),
        static_cast<double>(count_) / std::max(window, 1e-9), clock_text(eta).c_str());
    loss_ = 0;
    correct_ = count_ = 0;
    window_ = now;
  }
  double elapsed_s() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  int64_t epochs_, total_, every_, done_ = 0;
  std::chrono::steady_clock::time_point start_, window_;
  double loss_ = 0;
  int64_t correct_ = 0, count_ = 0;
};

// The last line an example prints: `result: name=value name=value ...` (values with up to 4
// significant decimals). Outside checks read these names.
inline void print_result(const std::vector<std::pair<std::string, double>>& figures) {
  std::string line = "result:";
  for (const auto& [name, value] : figures) {
    char buf[64];
    std::snprintf(buf, sizeof buf, " %s=%.4g", name.c_str(), value);
    line += buf;
  }
  say("%s\n", line.c_str());
}

// A line chart with one or more series over a shared x axis (epochs), written as a small
// self-contained SVG: axes with ticks, one colour per series, a legend. Series may have
// different lengths; NaN points are skipped.
struct Series {
  std::string name;
  std::vector<double> y;
};

inline void write_svg_plot(const std::string& path, const std::string& title, const std::string& x_label,
                           const std::string& y_label, const std::vector<Series>& series) {
  EMBER_CHECK(!series.empty(), "plot", "nothing to plot into ", path);
  double lo = INFINITY, hi = -INFINITY;
  size_t n = 0;
  for (const Series& s : series) {
    n = std::max(n, s.y.size());
    for (double v : s.y)
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  }
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  if (hi - lo < 1e-12) hi = lo + 1;
  const double pad = 0.05 * (hi - lo);
  lo -= pad;
  hi += pad;
  const double W = 640, H = 400, L = 70, R = 170, T = 40, B = 50;
  auto px = [&](size_t i) { return L + (n <= 1 ? 0.0 : (W - L - R) * static_cast<double>(i) / static_cast<double>(n - 1)); };
  auto py = [&](double v) { return T + (H - T - B) * (1.0 - (v - lo) / (hi - lo)); };
  static const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};
  std::ofstream f(path);
  EMBER_CHECK(static_cast<bool>(f), "plot", "cannot write ", path);
  f << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  f << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">" << title << "</text>\n";
  f << "<line x1=\"" << L << "\" y1=\"" << H - B << "\" x2=\"" << W - R << "\" y2=\"" << H - B << "\" stroke=\"black\"/>\n";
  f << "<line x1=\"" << L << "\" y1=\"" << T << "\" x2=\"" << L << "\" y2=\"" << H - B << "\" stroke=\"black\"/>\n";
  for (int k = 0; k <= 4; ++k) {
    const double v = lo + (hi - lo) * k / 4.0;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", v);
    f << "<line x1=\"" << L - 4 << "\" y1=\"" << py(v) << "\" x2=\"" << W - R << "\" y2=\"" << py(v)
      << "\" stroke=\"#ddd\"/>\n<text x=\"" << L - 6 << "\" y=\"" << py(v) + 4 << "\" text-anchor=\"end\">" << buf
      << "</text>\n";
  }
  const size_t xt = std::max<size_t>(1, (n + 5) / 6);
  for (size_t i = 0; i < n; i += xt)
    f << "<text x=\"" << px(i) << "\" y=\"" << H - B + 16 << "\" text-anchor=\"middle\">" << i + 1 << "</text>\n";
  f << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 12 << "\" text-anchor=\"middle\">" << x_label << "</text>\n";
  f << "<text x=\"16\" y=\"" << (T + H - B) / 2 << "\" text-anchor=\"middle\" transform=\"rotate(-90 16 "
    << (T + H - B) / 2 << ")\">" << y_label << "</text>\n";
  for (size_t s = 0; s < series.size(); ++s) {
    const char* c = colours[s % 6];
    std::string pts;
    for (size_t i = 0; i < series[s].y.size(); ++i) {
      if (!std::isfinite(series[s].y[i])) continue;
      pts += std::to_string(px(i)) + "," + std::to_string(py(series[s].y[i])) + " ";
      f << "<circle cx=\"" << px(i) << "\" cy=\"" << py(series[s].y[i]) << "\" r=\"2.5\" fill=\"" << c << "\"/>\n";
    }
    f << "<polyline fill=\"none\" stroke=\"" << c << "\" stroke-width=\"2\" points=\"" << pts << "\"/>\n";
    const double ly = T + 10 + 18.0 * static_cast<double>(s);
    f << "<line x1=\"" << W - R + 12 << "\" y1=\"" << ly << "\" x2=\"" << W - R + 32 << "\" y2=\"" << ly
      << "\" stroke=\"" << c << "\" stroke-width=\"2\"/>\n<text x=\"" << W - R + 38 << "\" y=\"" << ly + 4 << "\">"
      << series[s].name << "</text>\n";
  }
  f << "</svg>\n";
  EMBER_CHECK(static_cast<bool>(f), "plot", "error writing ", path);
}

}  // namespace example
