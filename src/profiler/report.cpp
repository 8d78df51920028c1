// What a profile says: the top-ops table and the Chrome trace (the JSON "traceEvents" format
// that chrome://tracing and Perfetto read: "X" complete events with microsecond ts/dur).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/atomic_file.h"
#include "ember/core/error.h"
#include "profiler/profiler_impl.h"

namespace ember {
namespace {

using Json = nlohmann::json;

constexpr int kHostPid = 1;
constexpr int kStepTid = 0;    // step spans on their own row, so they never cross op nesting
constexpr int kOpTid = 1;      // ops and the kernel calls under them, nested
constexpr int kDevicePid = 2;  // + the CUDA device index: the device timeline

std::string shape_text(const Shape& s) {
  if (s.size() == 1 && s[0] == -1) return "none";
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

double us(int64_t ns) { return static_cast<double>(ns) * 1e-3; }

// Is this event one that the table counts (self times add up without double counting)?
bool tabled(const ProfileEvent& e) {
  return e.kind == ProfileEvent::Kind::op || (e.kind == ProfileEvent::Kind::kernel && e.parent < 0);
}

std::string row_name(const ProfileEvent& e) {
  std::string n = e.kind == ProfileEvent::Kind::kernel ? std::string("[kernel] ") + e.name : std::string(e.name);
  if (e.in_backward) n += " (backward)";
  return n;
}

Json metadata(const char* what, int pid, int tid, const std::string& name) {
  Json m = {{"ph", "M"}, {"name", what}, {"pid", pid}, {"args", {{"name", name}}}};
  if (tid >= 0) m["tid"] = tid;
  return m;
}

}  // namespace

double Profiler::Impl::wall_ms() const { return static_cast<double>(stop_ns >= 0 ? stop_ns : now_ns()) * 1e-6; }
double Profiler::Impl::steps_ms() const {
  return steps_end_ns >= 0 ? static_cast<double>(steps_end_ns) * 1e-6 : wall_ms();
}

std::vector<ProfileRow> Profiler::Impl::rows() const {
  // Once step() has marked steps, the table covers them: what ran after the last one (an
  // evaluation, a checkpoint) is in the trace only.
  const double span = steps_ms();
  const int64_t end_ns = steps_end_ns >= 0 ? steps_end_ns : std::numeric_limits<int64_t>::max();
  std::map<std::string, ProfileRow> by_name;
  for (const ProfileEvent& e : events) {
    if (!tabled(e) || e.start_ns >= end_ns) continue;
    const std::string key = row_name(e);
    ProfileRow& r = by_name[key];
    r.name = key;
    ++r.calls;
    const double host = static_cast<double>(e.self_ns) * 1e-6;
    r.host_ms += host;
    // On CUDA the device's time is what a step waits for; an op with no kernel (a view) has none.
    if (e.device.is_cuda() && gathered) {
      r.total_ms += std::max(e.self_device_ms, 0.0);
      r.device_timed = true;
    } else {
      r.total_ms += host;
    }
    r.bytes += e.self_bytes;
  }
  const double wall = span;
  std::vector<ProfileRow> out;
  out.reserve(by_name.size());
  for (auto& [name, r] : by_name) {
    r.mean_us = r.calls > 0 ? r.total_ms * 1e3 / static_cast<double>(r.calls) : 0;
    r.share = wall > 0 ? 100.0 * r.total_ms / wall : 0;
    out.push_back(std::move(r));
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const ProfileRow& a, const ProfileRow& b) { return a.total_ms > b.total_ms; });
  return out;
}

std::string Profiler::Impl::table(int max_rows) const {
  const std::vector<ProfileRow> all = rows();
  int64_t op_calls = 0, kernel_calls = 0;
  const int64_t end_ns = steps_end_ns >= 0 ? steps_end_ns : std::numeric_limits<int64_t>::max();
  for (const ProfileEvent& e : events) {
    if (e.start_ns >= end_ns) continue;
    op_calls += e.kind == ProfileEvent::Kind::op;
    kernel_calls += e.kind == ProfileEvent::Kind::kernel;
  }
  bool any_device = false;
  double sum_ms = 0, sum_share = 0;
  uint64_t sum_bytes = 0;
  for (const ProfileRow& r : all) {
    any_device = any_device || r.device_timed;
    sum_ms += r.total_ms;
    sum_share += r.share;
    sum_bytes += r.bytes;
  }
  std::ostringstream os;
  char line[256];
  std::snprintf(line, sizeof line, "ember profiler: %d step(s) in %.3f ms, %lld op calls, %lld kernel calls\n", steps,
                steps_ms(), static_cast<long long>(op_calls), static_cast<long long>(kernel_calls));
  os << line;
  os << "self times (an op's time minus the ops it called); "
     << (any_device ? "CUDA ops: device time from CUDA events, others: host time\n" : "host time (steady clock)\n");
  const size_t n = std::min(all.size(), static_cast<size_t>(std::max(max_rows, 0)));
  int w = 24;  // the name column: as wide as the longest name shown, within reason
  for (size_t i = 0; i < n; ++i) w = std::max(w, static_cast<int>(std::min<size_t>(all[i].name.size(), 64)));
  std::snprintf(line, sizeof line, "%-*s %8s %11s %10s %7s %11s\n", w, "op", "calls", "total ms", "mean us", "step %",
                "alloc MiB");
  os << line;
  const auto mib = [](uint64_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); };
  for (size_t i = 0; i < n; ++i) {
    const ProfileRow& r = all[i];
    std::snprintf(line, sizeof line, "%-*.*s %8lld %11.3f %10.2f %6.1f%% %11.3f\n", w, w, r.name.c_str(),
                  static_cast<long long>(r.calls), r.total_ms, r.mean_us, r.share, mib(r.bytes));
    os << line;
  }
  if (all.size() > n) os << "  ... " << (all.size() - n) << " more op(s)\n";
  std::snprintf(line, sizeof line, "%-*s %8s %11.3f %10s %6.1f%% %11.3f\n", w, "all ops", "", sum_ms, "", sum_share,
                mib(sum_bytes));
  os << line;
  return os.str();
}

void Profiler::Impl::write_chrome_trace(const std::string& path) const {
  EMBER_CHECK(!path.empty(), "profiler", "write_chrome_trace: empty path");
  Json trace = Json::array();
  trace.push_back(metadata("process_name", kHostPid, -1, "ember host"));
  trace.push_back(metadata("thread_name", kHostPid, kStepTid, "steps"));
  trace.push_back(metadata("thread_name", kHostPid, kOpTid, "ops and kernel calls"));
  std::set<int> devices;
  for (const ProfileEvent& e : events) {
    const double ts = us(e.start_ns), dur = us(e.end_ns - e.start_ns);
    if (e.kind == ProfileEvent::Kind::step) {
      const bool step = std::string(e.name) == "step";
      trace.push_back({{"ph", "X"},
                       {"cat", "step"},
                       {"name", step ? "step " + std::to_string(e.depth) : e.name},
                       {"pid", kHostPid},
                       {"tid", kStepTid},
                       {"ts", ts},
                       {"dur", dur},
                       {"args", {{"step", e.depth}}}});
      continue;
    }
    Json args = {{"device", e.device.str()}, {"depth", e.depth}, {"bytes", e.bytes}};
    if (e.in_backward) args["in_backward"] = true;
    if (e.parent >= 0) args["parent"] = events[static_cast<size_t>(e.parent)].name;
    if (e.kind == ProfileEvent::Kind::op) {
      args["self_us"] = us(e.self_ns);
      args["self_bytes"] = e.self_bytes;
      if (e.threw) args["threw"] = true;
      if (e.device_ms >= 0) args["device_us"] = e.device_ms * 1e3;
      if (!e.shapes.empty()) {
        Json shapes = Json::array(), dtypes = Json::array();
        for (size_t i = 0; i < e.shapes.size(); ++i) {
          shapes.push_back(shape_text(e.shapes[i]));
          dtypes.push_back(shape_text(e.shapes[i]) == "none" ? "none" : dtype_name(e.dtypes[i]));
        }
        args["shapes"] = std::move(shapes);
        args["dtypes"] = std::move(dtypes);
      }
    }
    const bool kernel = e.kind == ProfileEvent::Kind::kernel;
    trace.push_back({{"ph", "X"},
                     {"cat", kernel ? "kernel" : (e.in_backward ? "op,backward" : "op")},
                     {"name", e.name},
                     {"pid", kHostPid},
                     {"tid", kOpTid},
                     {"ts", ts},
                     {"dur", dur},
                     {"args", std::move(args)}});
    if (kernel && e.device_ms >= 0 && e.device_start_ms >= 0) {
      devices.insert(e.device.index);
      Json dargs = {{"host_ts", ts}};
      if (e.parent >= 0) dargs["op"] = events[static_cast<size_t>(e.parent)].name;
      trace.push_back({{"ph", "X"},
                       {"cat", "device"},
                       {"name", e.name},
                       {"pid", kDevicePid + e.device.index},
                       {"tid", 0},
                       {"ts", e.device_start_ms * 1e3},
                       {"dur", e.device_ms * 1e3},
                       {"args", std::move(dargs)}});
    }
  }
  for (int d : devices) {
    trace.push_back(metadata("process_name", kDevicePid + d, -1, "cuda:" + std::to_string(d) + " (device time)"));
    trace.push_back(metadata("thread_name", kDevicePid + d, 0, "kernels (current stream)"));
  }
  Json doc = {{"traceEvents", std::move(trace)},
              {"displayTimeUnit", "ms"},
              {"otherData", {{"producer", "ember profiler"}, {"steps", steps}, {"wall_ms", wall_ms()}}}};

  // Atomically: a reader (or a crash) never sees half a trace.
  try {
    detail::write_file_atomically("profiler", path, {doc.dump()});
  } catch (const Error& e) {
    EMBER_FAIL("profiler", "cannot write the trace to '", path, "': ", e.what());
  }
}

}  // namespace ember
