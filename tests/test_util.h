// Small helpers shared by the test files: reading values out of tensors, comparing them with
// expectations, and checking that an ember::Error is raised with the right words in it.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

#include "ember/ember.h"

namespace ember_test {

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

}  // namespace ember_test

// CHECK_THROWS_AS(expr, ember::Error), then checks the message for each of the strings given.
// expr runs twice (once per check), so use it for expressions without lasting side effects.
#define CHECK_EMBER_ERROR(expr, ...)                                                          \
  do {                                                                                        \
    CHECK_THROWS_AS((void)(expr), ::ember::Error);                                            \
    ::ember_test::check_error([&] { (void)(expr); }, #expr, {__VA_ARGS__});                  \
  } while (0)
