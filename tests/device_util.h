// Helpers of the device-parity tests (the op harness's devices mode, tests/test_cuda*.cpp): the
// device under test, tolerances, comparisons against the CPU, leaves with the same values on
// both devices.
//
// The device under test is cuda:0 when a GPU is visible, else the stand-in device fake:0 (host
// memory with a device identity of its own, ember/core/device.h), so every device-placement
// path runs in CI. EMBER_TEST_DEVICE=fake or =cuda forces one (test_util.h).
#pragma once
#include <doctest/doctest.h>

#include <cctype>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace ember_test::device {

using namespace ember;
namespace ecuda = ember::cuda;
using V = std::vector<Tensor>;

// The device under test, and the reference.
inline const Device kCuda = ember_test::test_device();
inline const Device kCpu = Device::cpu();

// The dtypes the device tests sweep.
inline const std::vector<DType> kFloats = {DType::f32, DType::f64, DType::f16, DType::bf16};
inline const std::vector<DType> kNumeric = {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i32, DType::i64};
inline const std::vector<DType> kFloatsI64 = {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i64};

inline TensorOptions on(Device d, DType t = DType::f32) { return TensorOptions(t).with_device(d); }

// Poisons every device allocation made while a test case runs (the stand-in device poisons all of its allocations anyway).
struct PoisonGuard {
  PoisonGuard() { ecuda::set_poison_allocations(true); }
  ~PoisonGuard() { ecuda::set_poison_allocations(false); }
};

// Values in logical order as f64, converted on the CPU (the device's own conversion kernel is
// under test elsewhere).
inline std::vector<double> host_f64(const Tensor& t) {
  return to_dtype(contiguous(t.to(kCpu)), DType::f64).to_vector<double>();
}

inline std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

struct Tol {
  double rtol, atol;
};
inline Tol base_tol(DType dt) {
  switch (dt) {
    case DType::f64: return {1e-10, 1e-12};
    case DType::f32: return {1e-5, 1e-6};
    case DType::f16: return {1e-2, 1e-3};
    case DType::bf16: return {3e-2, 1e-2};
    default: return {0, 0};  // integers and bool: exact
  }
}

// "index 17: got nan, want 0.25" for the first element outside the tolerance.
inline std::string first_mismatch(const std::vector<double>& g, const std::vector<double>& w, Tol tol) {
  for (size_t i = 0; i < g.size() && i < w.size(); ++i) {
    if (close_ratio({g[i]}, {w[i]}, tol.rtol, tol.atol) > 1.0) {
      std::ostringstream os;
      os << "index " << i << ": got " << g[i] << ", want " << w[i];
      return os.str();
    }
  }
  return "none";
}

// CHECKs that `got` matches the CPU reference `want`: the device (when `device` is given), dtype,
// shape, values.
inline void check_matches_on(const std::optional<Device>& device, const std::string& ctx, const Tensor& got,
                             const Tensor& want, Tol tol) {
  REQUIRE(got.defined());
  REQUIRE(want.defined());
  if (device) CHECK_MESSAGE(got.device() == *device, ctx << ": result lives on " << got.device() << ", not " << *device);
  CHECK_MESSAGE(got.dtype() == want.dtype(), ctx << ": dtype " << got.dtype() << ", CPU gives " << want.dtype());
  CHECK_MESSAGE(got.shape() == want.shape(), ctx << ": shape " << shape_str(got.shape()) << ", CPU gives "
                                                 << shape_str(want.shape()));
  if (got.shape() != want.shape()) return;
  const std::vector<double> g = host_f64(got), w = host_f64(want);
  const double r = close_ratio(g, w, tol.rtol, tol.atol);
  CHECK_MESSAGE(r <= 1.0, ctx << ": " << got.device() << " differs from CPU (rtol " << tol.rtol << ", atol "
                              << tol.atol << ", worst ratio " << r << "; first at " << first_mismatch(g, w, tol)
                              << ")\n  got " << ember_test::list_str(g) << "\n  cpu " << ember_test::list_str(w));
}

// The same on the device under test (kCuda).
inline void check_matches(const std::string& ctx, const Tensor& got, const Tensor& want, Tol tol,
                          bool expect_cuda = true) {
  check_matches_on(expect_cuda ? std::optional<Device>(kCuda) : std::nullopt, ctx, got, want, tol);
}

// f64 draws as dtype dt, on the CPU: floats rounded, integers the draws times 7 truncated, bool
// the draws' signs.
inline Tensor as_dtype(const Tensor& x, DType dt) {
  if (dt == DType::boolean) return gt(x, scalar_tensor(0.0, DType::f64));
  if (is_floating(dt)) return to_dtype(x, dt);
  return to_dtype(x * 7.0, dt);
}

// Bit-exact comparison (random streams, copies).
inline void check_same(const std::string& ctx, const Tensor& got, const Tensor& want) {
  check_matches(ctx, got, want, {0, 0}, false);
}

// RAII: the GEMM backend for one scope.
struct GemmGuard {
  ecuda::GemmBackend prev;
  explicit GemmGuard(ecuda::GemmBackend b) : prev(ecuda::gemm_backend()) { ecuda::set_gemm_backend(b); }
  ~GemmGuard() { ecuda::set_gemm_backend(prev); }
};
inline const char* backend_name(ecuda::GemmBackend b) { return b == ecuda::GemmBackend::cublas ? "cublas" : "ember"; }

// --- gradients ---------------------------------------------------------------------------------

// Leaves with the same values on both devices: drawn in f64 on the CPU, rounded to dt.
struct Leaves {
  V cpu, dev;
};
inline Leaves make_leaves(const std::vector<Shape>& shapes, DType dt, uint64_t seed, bool requires_grad = true) {
  Generator g(seed);
  Leaves l;
  for (const Shape& s : shapes) {
    Tensor x = to_dtype(randn(s, DType::f64, &g), dt);
    l.cpu.push_back(x.clone().requires_grad_(requires_grad));
    l.dev.push_back(x.to(kCuda).requires_grad_(requires_grad));
  }
  return l;
}

inline Tol grad_tol(DType dt) { return dt == DType::f64 ? Tol{1e-9, 1e-11} : Tol{1e-4, 1e-5}; }

}  // namespace ember_test::device
