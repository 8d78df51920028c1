// Elementwise CPU kernels: copy/convert, fill, unary, binary, where.
#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>
#include <cstring>

#include "cpu/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"
#include "cpu/loops.h"

namespace ember::cpu {
namespace {

template <class T> struct Scalar { using type = T; };
template <class D, class S>
inline D convert(S s) {
  if constexpr (std::is_same_v<D, S>) {
    return s;
  } else if constexpr (std::is_same_v<S, Half> || std::is_same_v<S, BFloat16>) {
    return convert<D>(to_float(s));
  } else if constexpr (std::is_same_v<D, Half>) {
    return to_half(static_cast<float>(s));
  } else if constexpr (std::is_same_v<D, BFloat16>) {
    return to_bfloat16(static_cast<float>(s));
  } else if constexpr (std::is_same_v<D, bool>) {
    return s != S(0);
  } else {
    return static_cast<D>(s);
  }
}

#define EMBER_DISPATCH_STORAGE(dt, NAME, ...)        \
  switch (dt) {                                     \
    case DType::f32: { using NAME = float; __VA_ARGS__(); break; }    \
    case DType::f64: { using NAME = double; __VA_ARGS__(); break; }   \
    case DType::f16: { using NAME = Half; __VA_ARGS__(); break; }     \
    case DType::bf16: { using NAME = BFloat16; __VA_ARGS__(); break; } \
    case DType::i32: { using NAME = int32_t; __VA_ARGS__(); break; }  \
    case DType::i64: { using NAME = int64_t; __VA_ARGS__(); break; }  \
    case DType::boolean: { using NAME = bool; __VA_ARGS__(); break; } \
  }

template <class T>
void copy_same(const Tensor& src, const Tensor& dst) {
  const T* s = static_cast<const T*>(src.data_ptr());
  T* d = static_cast<T*>(dst.data_ptr());
  for_each_row<2>(dst.shape(), {dst.strides(), src.strides()},
                  [&](int64_t, std::array<int64_t, 2> o, int64_t n, std::array<int64_t, 2> st) {
                    if (st[0] == 1 && st[1] == 1) {
                      std::memcpy(d + o[0], s + o[1], n * sizeof(T));
                    } else {
                      for (int64_t i = 0; i < n; ++i) d[o[0] + i * st[0]] = s[o[1] + i * st[1]];
                    }
                  });
}

}  // namespace

void copy(const Tensor& src, const Tensor& dst) {
  if (src.dtype() == dst.dtype()) {
    switch (dst.element_size()) {
      case 1: copy_same<uint8_t>(src, dst); return;
      case 2: copy_same<uint16_t>(src, dst); return;
      case 4: copy_same<uint32_t>(src, dst); return;
      default: copy_same<uint64_t>(src, dst); return;
    }
  }
  EMBER_DISPATCH_STORAGE(src.dtype(), S, [&] {
    EMBER_DISPATCH_STORAGE(dst.dtype(), D, [&] {
      const S* s = static_cast<const S*>(src.data_ptr());
      D* d = static_cast<D*>(dst.data_ptr());
      for_each_row<2>(dst.shape(), {dst.strides(), src.strides()},
                      [&](int64_t, std::array<int64_t, 2> o, int64_t n, std::array<int64_t, 2> st) {
                        for (int64_t i = 0; i < n; ++i) d[o[0] + i * st[0]] = convert<D>(s[o[1] + i * st[1]]);
                      });
    });
  });
}

void fill(const Tensor& dst, double value) {
  EMBER_DISPATCH_STORAGE(dst.dtype(), D, [&] {
    D v = convert<D>(value);
    D* d = static_cast<D*>(dst.data_ptr());
    for_each_row<1>(dst.shape(), {dst.strides()},
                    [&](int64_t, std::array<int64_t, 1> o, int64_t n, std::array<int64_t, 1> st) {
                      for (int64_t i = 0; i < n; ++i) d[o[0] + i * st[0]] = v;
                    });
  });
}

namespace {

template <class T, class F>
void unary_loop(const Tensor& x, const Tensor& out, F f) {
  const T* px = static_cast<const T*>(x.data_ptr());
  T* po = static_cast<T*>(out.data_ptr());
  for_each_row<2>(out.shape(), {out.strides(), x.strides()},
                  [&](int64_t, std::array<int64_t, 2> o, int64_t n, std::array<int64_t, 2> st) {
                    if (st[0] == 1 && st[1] == 1) {
                      T* __restrict__ d = po + o[0];
                      const T* __restrict__ s = px + o[1];
                      for (int64_t i = 0; i < n; ++i) d[i] = f(s[i]);
                    } else {
                      for (int64_t i = 0; i < n; ++i) po[o[0] + i * st[0]] = f(px[o[1] + i * st[1]]);
                    }
                  });
}

// Contiguous float inputs: Eigen's packet math vectorises exp/log/tanh/sqrt/... which the
// scalar std:: calls in unary_apply do not. Returns false when the op has no Eigen form.
template <class T>
bool unary_vectorised(UnaryOp op, const Tensor& x, const Tensor& out) {
  if constexpr (!std::is_floating_point_v<T>) {
    return false;
  } else {
    if (!x.is_contiguous() || !out.is_contiguous()) return false;
    switch (op) {
      case UnaryOp::exp: case UnaryOp::log: case UnaryOp::log1p: case UnaryOp::sqrt:
      case UnaryOp::rsqrt: case UnaryOp::tanh: case UnaryOp::sigmoid: case UnaryOp::relu:
      case UnaryOp::neg: case UnaryOp::abs: case UnaryOp::gelu_tanh: case UnaryOp::gelu_tanh_grad:
      case UnaryOp::gelu: case UnaryOp::gelu_grad: break;
      default: return false;
    }
    const T* px = static_cast<const T*>(x.data_ptr());
    T* po = static_cast<T*>(out.data_ptr());
    parallel_for(x.numel(), 1, [&](int64_t b, int64_t e) {
      Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> in(px + b, e - b);
      Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> o(po + b, e - b);
      switch (op) {
        case UnaryOp::exp: o = in.exp(); break;
        case UnaryOp::log: o = in.log(); break;
        case UnaryOp::log1p: o = in.log1p(); break;
        case UnaryOp::sqrt: o = in.sqrt(); break;
        case UnaryOp::rsqrt: o = in.rsqrt(); break;
        case UnaryOp::tanh: o = in.tanh(); break;
        case UnaryOp::sigmoid: o = in.logistic(); break;
        case UnaryOp::relu: o = in.max(T(0)); break;
        case UnaryOp::neg: o = -in; break;
        case UnaryOp::abs: o = in.abs(); break;
        // GELU and its derivative, exact (erf) and GPT-2's tanh form below (the formulas of
        // unary_apply), with Eigen's packet erf/tanh/exp: the scalar std:: loops are much slower.
        case UnaryOp::gelu: o = T(0.5) * in * (T(1) + (in * T(0.70710678118654752440)).erf()); break;
        case UnaryOp::gelu_grad:
          o = T(0.5) * (T(1) + (in * T(0.70710678118654752440)).erf()) +
              in * (T(-0.5) * in.square()).exp() * T(0.39894228040143267794);
          break;
        case UnaryOp::gelu_tanh:
          o = T(0.5) * in * (T(1) + (T(0.79788456080286535588) * (in + T(0.044715) * in.cube())).tanh());
          break;
        case UnaryOp::gelu_tanh_grad:
          o = (T(0.79788456080286535588) * (in + T(0.044715) * in.cube())).tanh();  // t
          o = T(0.5) * (T(1) + o) +
              T(0.5) * in * (T(1) - o.square()) * T(0.79788456080286535588) * (T(1) + T(3 * 0.044715) * in.square());
          break;
        default: break;
      }
    });
    return true;
  }
}

template <class T>
void unary_typed(UnaryOp op, const Tensor& x, const Tensor& out, UnaryArgs p) {
  if (unary_vectorised<T>(op, x, out)) return;
  // One loop per op so the op is a constant inside the loop and the switch folds away.
#define EMBER_UNARY_CASE(OP, ...) \
  case UnaryOp::OP: unary_loop<T>(x, out, [p](T v) { return unary_apply<T>(UnaryOp::OP, v, p); }); break;
  switch (op) { EMBER_UNARY_OPS(EMBER_UNARY_CASE) }
#undef EMBER_UNARY_CASE
}

template <class T, class O, class F>
void binary_loop(const Tensor& a, const Tensor& b, const Tensor& out, F f) {
  const T* pa = static_cast<const T*>(a.data_ptr());
  const T* pb = static_cast<const T*>(b.data_ptr());
  O* po = static_cast<O*>(out.data_ptr());
  for_each_row<3>(out.shape(), {out.strides(), a.strides(), b.strides()},
                  [&](int64_t, std::array<int64_t, 3> o, int64_t n, std::array<int64_t, 3> st) {
                    O* d = po + o[0];
                    const T* x = pa + o[1];
                    const T* y = pb + o[2];
                    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
                      for (int64_t i = 0; i < n; ++i) d[i] = f(x[i], y[i]);
                    } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {
                      const T yv = *y;
                      for (int64_t i = 0; i < n; ++i) d[i] = f(x[i], yv);
                    } else {
                      for (int64_t i = 0; i < n; ++i) d[i * st[0]] = f(x[i * st[1]], y[i * st[2]]);
                    }
                  });
}

template <class T>
void binary_typed(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, double alpha) {
  const T al = static_cast<T>(alpha);
#define EMBER_BINARY_CASE(OP) \
  case BinaryOp::OP: binary_loop<T, T>(a, b, out, [al](T x, T y) { return binary_apply<T>(BinaryOp::OP, x, y, al); }); break;
#define EMBER_COMPARE_CASE(OP) \
  case BinaryOp::OP: binary_loop<T, bool>(a, b, out, [](T x, T y) { return compare_apply<T>(BinaryOp::OP, x, y); }); break;
  switch (op) { EMBER_BINARY_ARITH_OPS(EMBER_BINARY_CASE) EMBER_BINARY_COMPARE_OPS(EMBER_COMPARE_CASE) }
#undef EMBER_BINARY_CASE
#undef EMBER_COMPARE_CASE
}

}  // namespace

void unary(UnaryOp op, const Tensor& x, const Tensor& out, UnaryArgs args) {
  if (x.dtype() == DType::boolean) {
    EMBER_CHECK(op == UnaryOp::logical_not, "unary", "bool tensors support only logical_not here");
    unary_loop<bool>(x, out, [](bool v) { return !v; });
    return;
  }
  EMBER_DISPATCH_NUMERIC(x.dtype(), "unary", [&] { unary_typed<scalar_t>(op, x, out, args); });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, double alpha) {
  if (a.dtype() == DType::boolean) {
    EMBER_CHECK(is_comparison(op), "binary", "bool tensors support only comparisons and logical ops");
    binary_typed<bool>(op, a, b, out, alpha);
    return;
  }
  EMBER_DISPATCH_NUMERIC(a.dtype(), "binary", [&] { binary_typed<scalar_t>(op, a, b, out, alpha); });
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  EMBER_DISPATCH_ALL(out.dtype(), "where", [&] {
    const bool* pc = static_cast<const bool*>(cond.data_ptr());
    const scalar_t* pa = static_cast<const scalar_t*>(a.data_ptr());
    const scalar_t* pb = static_cast<const scalar_t*>(b.data_ptr());
    scalar_t* po = static_cast<scalar_t*>(out.data_ptr());
    for_each_row<4>(out.shape(), {out.strides(), cond.strides(), a.strides(), b.strides()},
                    [&](int64_t, std::array<int64_t, 4> o, int64_t n, std::array<int64_t, 4> st) {
                      for (int64_t i = 0; i < n; ++i)
                        po[o[0] + i * st[0]] = pc[o[1] + i * st[1]] ? pa[o[2] + i * st[2]] : pb[o[3] + i * st[3]];
                    });
  });
}

void register_elementwise_kernels() {
  prim::define<prim::copy>(prim::Backend::cpu, &copy);
  prim::define<prim::fill>(prim::Backend::cpu, &fill);
  prim::define<prim::unary>(prim::Backend::cpu, &unary);
  prim::define<prim::binary>(prim::Backend::cpu, &binary);
  prim::define<prim::where>(prim::Backend::cpu, &where);
}

}  // namespace ember::cpu
