// The math of every elementwise op, written once as functors that both backends call
// (__host__ __device__ under nvcc). Arithmetic for f16/bf16 happens in float.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "core/host_device.h"


namespace ember {

// The op lists, each written once: the enums, the names, and both backends' per-op kernel
// instantiations (src/cpu/elementwise.cpp, kernels/elementwise.cu) expand them, so a new op is
// one entry here plus its case in unary_apply / binary_apply / compare_apply below.
// X(name, int_ok): int_ok says the op is defined on integer tensors too (the others turn
// integers into f32 first: unary_result in src/ops/elementwise.cpp).
#define EMBER_UNARY_OPS(X)                                                                       \
  X(neg, true) X(exp, false) X(log, false) X(log1p, false) X(sqrt, false) X(rsqrt, false)         \
  X(abs, true) X(tanh, false) X(sigmoid, false) X(relu, true) X(gelu, false) X(silu, false)       \
  X(clamp, true) X(pow_scalar, true) X(logical_not, true) X(gelu_grad, false) /* d gelu / dx */ \
  X(erf, false) X(expm1, false) X(softplus, false) X(gelu_tanh, false) X(gelu_tanh_grad, false)
// Arithmetic (result in the operands' dtype) and comparisons (result bool).
#define EMBER_BINARY_ARITH_OPS(X) X(add) X(sub) X(mul) X(div) X(pow) X(maximum) X(minimum)
#define EMBER_BINARY_COMPARE_OPS(X) X(eq) X(ne) X(lt) X(le) X(gt) X(ge) X(logical_and) X(logical_or)

#define EMBER_ENUMERATOR_(name, ...) name,
enum class UnaryOp : uint8_t { EMBER_UNARY_OPS(EMBER_ENUMERATOR_) };
enum class BinaryOp : uint8_t { EMBER_BINARY_ARITH_OPS(EMBER_ENUMERATOR_) EMBER_BINARY_COMPARE_OPS(EMBER_ENUMERATOR_) };
#undef EMBER_ENUMERATOR_

EMBER_HD const char* unary_op_name(UnaryOp op) {
  switch (op) {
#define EMBER_NAME_CASE_(name, ...) \
  case UnaryOp::name: return #name;
    EMBER_UNARY_OPS(EMBER_NAME_CASE_)
#undef EMBER_NAME_CASE_
  }
  return "?";
}

// Whether the op is defined on integer tensors (int_ok above).
EMBER_HD bool unary_int_ok(UnaryOp op) {
  switch (op) {
#define EMBER_INT_CASE_(name, int_ok) \
  case UnaryOp::name: return int_ok;
    EMBER_UNARY_OPS(EMBER_INT_CASE_)
#undef EMBER_INT_CASE_
  }
  return false;
}

EMBER_HD bool is_comparison(BinaryOp op) {
  switch (op) {
#define EMBER_COMPARE_CASE_(name) \
  case BinaryOp::name: return true;
    EMBER_BINARY_COMPARE_OPS(EMBER_COMPARE_CASE_)
#undef EMBER_COMPARE_CASE_
    default: return false;
  }
}

// Parameters a unary op may need (clamp bounds, exponent).
struct UnaryArgs {
  double a = 0, b = 0;
};

// double -> T, clamped to T's range for integers (a bound of +-inf or 2^63 must not wrap).
template <class T>
EMBER_HD T saturate_cast(double v) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    // -2^(bits-1) is exact in double; +2^(bits-1) is the first value past the maximum.
    const double lo = static_cast<double>(std::numeric_limits<T>::min());
    if (v <= lo) return std::numeric_limits<T>::min();
    if (v >= -lo) return std::numeric_limits<T>::max();
    return static_cast<T>(v);
  } else {
    return static_cast<T>(v);
  }
}

// Integer power, wrapping on overflow like integer multiplication (PyTorch's result), by
// squaring in unsigned arithmetic: std::pow's double result converted back is undefined once it
// leaves T's range (10^30, or 0^-1 = inf, came back as INT64_MIN). A negative exponent gives
// the integer part of 1 / base^-e: 1 for base 1, +-1 for base -1, else 0. The ops refuse
// 0 to a negative power before a kernel runs.
template <class T>
EMBER_HD T int_pow(T base, int64_t e) {
  if (e < 0) return base == T(1) ? T(1) : base == T(-1) ? ((e & 1) ? T(-1) : T(1)) : T(0);
  using U = std::make_unsigned_t<T>;
  U r = 1, b = static_cast<U>(base);
  for (uint64_t n = static_cast<uint64_t>(e); n != 0; n >>= 1) {
    if (n & 1) r = static_cast<U>(r * b);
    b = static_cast<U>(b * b);
  }
  return static_cast<T>(r);
}

template <class T>
constexpr bool is_int_v = std::is_integral_v<T> && !std::is_same_v<T, bool>;

template <class T>
EMBER_HD T unary_apply(UnaryOp op, T x, UnaryArgs p) {
  using std::abs;
  switch (op) {
    case UnaryOp::neg: return static_cast<T>(-x);
    case UnaryOp::exp: return std::exp(x);
    case UnaryOp::log: return std::log(x);
    case UnaryOp::log1p: return std::log1p(x);
    case UnaryOp::sqrt: return std::sqrt(x);
    case UnaryOp::rsqrt: return T(1) / std::sqrt(x);
    case UnaryOp::abs: return x < T(0) ? static_cast<T>(-x) : x;
    case UnaryOp::tanh: return std::tanh(x);
    case UnaryOp::sigmoid: return T(1) / (T(1) + std::exp(-x));
    case UnaryOp::relu: return x > T(0) ? x : T(0);
    case UnaryOp::gelu: return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440)));
    case UnaryOp::silu: return x / (T(1) + std::exp(-x));
    case UnaryOp::clamp: {
      const T lo = saturate_cast<T>(p.a), hi = saturate_cast<T>(p.b);
      return x < lo ? lo : (x > hi ? hi : x);
    }
    case UnaryOp::pow_scalar:
      if constexpr (is_int_v<T>) return int_pow(x, saturate_cast<int64_t>(p.a));
      else return std::pow(x, static_cast<T>(p.a));
    case UnaryOp::logical_not: return static_cast<T>(!static_cast<bool>(x));
    case UnaryOp::gelu_grad: {
      T cdf = T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
      T pdf = std::exp(T(-0.5) * x * x) * T(0.39894228040143267794);
      return cdf + x * pdf;
    }
    // GPT-2's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    case UnaryOp::gelu_tanh: {
      const T u = T(0.79788456080286535588) * (x + T(0.044715) * x * x * x);
      return T(0.5) * x * (T(1) + std::tanh(u));
    }
    case UnaryOp::gelu_tanh_grad: {
      const T u = T(0.79788456080286535588) * (x + T(0.044715) * x * x * x);
      const T t = std::tanh(u);
      return T(0.5) * (T(1) + t) +
             T(0.5) * x * (T(1) - t * t) * T(0.79788456080286535588) * (T(1) + T(3 * 0.044715) * x * x);
    }
    case UnaryOp::erf: return std::erf(x);
    case UnaryOp::expm1: return std::expm1(x);
    // log(1 + e^x) without overflow: x + log1p(e^-x) for x > 0 (PyTorch's threshold form gives
    // the same values to rounding).
    case UnaryOp::softplus: return x > T(0) ? static_cast<T>(x + std::log1p(std::exp(-x))) : std::log1p(std::exp(x));
  }
  return x;
}

template <class T>
EMBER_HD T binary_apply(BinaryOp op, T a, T b, T alpha) {
  switch (op) {
    case BinaryOp::add: return static_cast<T>(a + alpha * b);
    case BinaryOp::sub: return static_cast<T>(a - b);
    case BinaryOp::mul: return static_cast<T>(a * b);
    case BinaryOp::div: return static_cast<T>(a / b);
    case BinaryOp::pow:
      if constexpr (is_int_v<T>) return int_pow(a, static_cast<int64_t>(b));
      else return static_cast<T>(std::pow(a, b));
    case BinaryOp::maximum: return a > b ? a : b;
    case BinaryOp::minimum: return a < b ? a : b;
    default: return a;
  }
}

template <class T>
EMBER_HD bool compare_apply(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::eq: return a == b;
    case BinaryOp::ne: return a != b;
    case BinaryOp::lt: return a < b;
    case BinaryOp::le: return a <= b;
    case BinaryOp::gt: return a > b;
    case BinaryOp::ge: return a >= b;
    case BinaryOp::logical_and: return static_cast<bool>(a) && static_cast<bool>(b);
    case BinaryOp::logical_or: return static_cast<bool>(a) || static_cast<bool>(b);
    default: return false;
  }
}

}  // namespace ember
