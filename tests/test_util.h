// Small helpers shared by the test files: reading values out of tensors, comparing them with
// expectations, checking that an ember::Error is raised with the right words in it, temporary
// files, and byte surgery on .safetensors files for the damaged- and hostile-file tests.
#pragma once
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "ember/ember.h"

namespace ember_test {

// Sets an environment variable for one scope and puts back what was there (the kernel switches
// EMBER_ATTENTION_KERNEL, EMBER_ATTENTION_DROPOUT and EMBER_RNN_KERNEL are read at every call).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_.c_str(), old_.c_str(), 1);
    else unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, old_;
  bool had_ = false;
};

// The device the device-parity cases test: cuda:0 when a GPU is visible, else the stand-in
// device fake:0 (host memory and the CPU backend's kernels under a device identity of its own,
// ember/core/device.h), so every device-placement path runs in CI. EMBER_TEST_DEVICE=fake or
// =cuda (or any device string) forces one.
inline ember::Device test_device() {
  if (const char* v = std::getenv("EMBER_TEST_DEVICE"); v && *v) return ember::Device(std::string(v));
  return ember::cuda::is_available() ? ember::Device::cuda(0) : ember::Device::fake(0);
}
// Whether the device under test is a real GPU (some tolerances and CUDA-only checks depend on it).
inline bool on_gpu() { return test_device().is_cuda(); }

using ember::DType;
using ember::Shape;
using ember::Tensor;

// All elements in logical (row-major) order as doubles, whatever the dtype.
inline std::vector<double> vals(const Tensor& t) {
  if (t.dtype() == DType::f64) return t.to_vector<double>();
  return ember::to_dtype(t, DType::f64).to_vector<double>();
}

inline bool contains(const std::string& s, const std::string& sub) {
  return s.find(sub) != std::string::npos;
}

inline std::string to_string(const Shape& s) { return ember::shape_str(s); }

// Largest |a - e| / (atol + rtol * |e|); <= 1 means "close". NaN counts as far.
inline double close_ratio(const std::vector<double>& a, const std::vector<double>& e, double rtol,
                          double atol) {
  if (a.size() != e.size()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) != std::isnan(e[i])) return INFINITY;
    if (std::isnan(a[i])) continue;
    if (std::isinf(a[i]) || std::isinf(e[i])) {
      if (a[i] != e[i]) return INFINITY;
      continue;
    }
    if (a[i] == e[i]) continue;
    double r = std::fabs(a[i] - e[i]) / (atol + rtol * std::fabs(e[i]));  // inf when both are 0
    if (r > worst) worst = r;
  }
  return worst;
}

inline std::string list_str(const std::vector<double>& v, size_t max_items = 12) {
  std::ostringstream os;
  os << "{";
  for (size_t i = 0; i < v.size() && i < max_items; ++i) os << (i ? ", " : "") << v[i];
  if (v.size() > max_items) os << ", ... (" << v.size() << " values)";
  os << "}";
  return os.str();
}

// "worst at index 17 of 64: 0.412 vs 0.398 (ratio 3.2)": where a comparison fails most, which
// the first dozen values of a long tensor seldom show.
inline std::string worst_str(const std::vector<double>& a, const std::vector<double>& e, double rtol, double atol) {
  size_t at = 0;
  double worst = -1;
  for (size_t i = 0; i < a.size() && i < e.size(); ++i) {
    const double r = close_ratio({a[i]}, {e[i]}, rtol, atol);
    if (r > worst) worst = r, at = i;
  }
  std::ostringstream os;
  if (worst < 0) return "empty";
  os << "worst at index " << at << " of " << a.size() << ": " << a[at] << " vs " << e[at] << ", ratio " << worst;
  return os.str();
}

// CHECKs shape and values of t against the expectation.
inline void check_tensor(const Tensor& t, const Shape& shape, const std::vector<double>& expect,
                         double rtol = 1e-6, double atol = 1e-6) {
  REQUIRE(t.defined());
  CHECK_MESSAGE(t.shape() == shape, "shape " << to_string(t.shape()) << " != expected " << to_string(shape));
  if (t.shape() != shape) return;
  std::vector<double> got = vals(t);
  CHECK_MESSAGE(close_ratio(got, expect, rtol, atol) <= 1.0,
                "values " << list_str(got) << " != expected " << list_str(expect));
}

// CHECKs that two tensors have the same shape and close values.
inline void check_close(const Tensor& a, const Tensor& b, double rtol = 1e-6, double atol = 1e-6) {
  REQUIRE(a.defined());
  REQUIRE(b.defined());
  CHECK_MESSAGE(a.shape() == b.shape(), "shape " << to_string(a.shape()) << " != " << to_string(b.shape()));
  if (a.shape() != b.shape()) return;
  std::vector<double> va = vals(a), vb = vals(b);
  CHECK_MESSAGE(close_ratio(va, vb, rtol, atol) <= 1.0, "values " << list_str(va) << " != " << list_str(vb)
                                                                   << " (" << worst_str(va, vb, rtol, atol) << ")");
}

// Runs f once; CHECKs that it throws ember::Error (not another exception, not nothing) whose
// message contains every needle. Returns the message ("" when nothing matching was thrown).
inline std::string check_error(const std::function<void()>& f, const char* what,
                               std::initializer_list<std::string> needles) {
  std::string msg, other;
  bool threw = false;
  try {
    f();
  } catch (const ember::Error& e) {
    threw = true;
    msg = e.what();
  } catch (const std::exception& e) {
    other = std::string("a non-ember exception: ") + e.what();
  } catch (...) {
    other = "an unknown exception";
  }
  CHECK_MESSAGE(threw, std::string(what) << ": expected ember::Error, got " << (other.empty() ? "no exception" : other));
  if (!threw) return "";
  for (const std::string& n : needles)
    CHECK_MESSAGE(contains(msg, n), std::string(what) << ": message \"" << msg << "\" does not contain \"" << n << "\"");
  return msg;
}

// --- files ------------------------------------------------------------------------------------

// `name` in this process's own temporary directory (created on first use).
inline std::string temp_path(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("ember_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A StateDict with one tensor of every dtype, a non-contiguous, a 0-d and an empty one, and
// metadata with quotes in it: what the file round-trip tests and the fuzz seeds start from.
inline ember::StateDict sample_state() {
  using namespace ember;
  Generator g(11);
  StateDict s;
  s.tensors.emplace_back("weight", randn({5, 7}, DType::f32, &g));
  s.tensors.emplace_back("transposed", randn({4, 3}, DType::f64, &g).t());  // non-contiguous
  s.tensors.emplace_back("half", to_dtype(randn({6}, DType::f32, &g), DType::f16));
  s.tensors.emplace_back("bhalf", to_dtype(randn({2, 3}, DType::f32, &g), DType::bf16));
  s.tensors.emplace_back("ids", randint(-50, 50, {9}, DType::i64, &g));
  s.tensors.emplace_back("small", randint(-50, 50, {3}, DType::i32, &g));
  s.tensors.emplace_back("mask", gt(randn({4}, DType::f32, &g), scalar_tensor(0.0)));
  s.tensors.emplace_back("scalar", scalar_tensor(3.25, DType::f32));
  s.tensors.emplace_back("empty", zeros({0, 3}));
  s.meta["step"] = "17";
  s.meta["note"] = "hello \"quoted\" text";
  return s;
}

// --- .safetensors surgery ----------------------------------------------------------------------
// A file is an 8-byte little-endian header length, the header's JSON text (space padded), and
// the data section.

struct SafetensorsParts {
  std::string header;  // the JSON text, padding included
  std::string data;
};

inline SafetensorsParts split_safetensors(const std::string& file) {
  REQUIRE(file.size() >= 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(file[i])) << (8 * i);
  REQUIRE(n <= file.size() - 8);
  return {file.substr(8, n), file.substr(8 + n)};
}

// A file from a header's JSON text (padded with spaces to a multiple of 8) and a data section.
inline std::string join_safetensors(std::string header, const std::string& data) {
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((static_cast<uint64_t>(header.size()) >> (8 * i)) & 0xff);
  return out + header + data;
}

// The file with metadata `key` set to `value` (the entry must exist; the header is re-padded).
inline std::string with_meta(const std::string& file, const std::string& key, const std::string& value) {
  SafetensorsParts p = split_safetensors(file);
  const std::string needle = "\"" + key + "\":\"";
  const size_t at = p.header.find(needle);
  REQUIRE_MESSAGE(at != std::string::npos, "no metadata " << key);
  const size_t begin = at + needle.size(), end = p.header.find('"', begin);
  p.header.replace(begin, end - begin, value);
  return join_safetensors(p.header.substr(0, p.header.find_last_not_of(' ') + 1), p.data);
}

// The file without metadata `key` (the entry must exist and not be the last one).
inline std::string without_meta(const std::string& file, const std::string& key) {
  SafetensorsParts p = split_safetensors(file);
  const std::string needle = "\"" + key + "\":\"";
  const size_t at = p.header.find(needle);
  REQUIRE_MESSAGE(at != std::string::npos, "no metadata " << key);
  const size_t end = p.header.find('"', at + needle.size());
  REQUIRE(p.header[end + 1] == ',');
  p.header.erase(at, end + 2 - at);
  return join_safetensors(p.header.substr(0, p.header.find_last_not_of(' ') + 1), p.data);
}

// A checkpoint as format version 1 wrote it: "ember.checkpoint" = "1", no "ember.checksum" (the
// data's "ember.crc32" stays valid).
inline std::string as_v1_checkpoint(const std::string& file) {
  return with_meta(without_meta(file, "ember.checksum"), "ember.checkpoint", "1");
}

}  // namespace ember_test

// CHECK_THROWS_AS(expr, ember::Error), then checks the message for each of the strings given.
// expr runs twice (once per check), so use it for expressions without lasting side effects.
#define CHECK_EMBER_ERROR(expr, ...)                                                          \
  do {                                                                                        \
    CHECK_THROWS_AS((void)(expr), ::ember::Error);                                            \
    ::ember_test::check_error([&] { (void)(expr); }, #expr, {__VA_ARGS__});                  \
  } while (0)
