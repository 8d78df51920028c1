// Elementwise ops: promotion, broadcasting, dispatch to the backend, and their backward.
#include <cmath>
#include <limits>
#include <string>
#include <string_view>

#include "ops/dispatch.h"
#include "ops/common.h"
#include "ops/op_call.h"

namespace ember {
namespace {
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;
using detail::make_tensor;

// What a backward needs to know about an input without keeping it alive.
struct InputMeta {
  Shape shape;
  DType dtype;
};
InputMeta meta_of(const Tensor& t) { return {t.shape(), t.dtype()}; }

// Reduces a broadcast gradient back to an input's shape and dtype.
Tensor grad_for(const Tensor& g, const InputMeta& m) {
  Tensor r = detail::sum_to(g, m.shape);
  return is_floating(m.dtype) ? to_dtype(r, m.dtype) : r;
}

// A 0-d tensor with like's dtype and device (scalars in backward formulas live on the device).
Tensor scalar_of(double v, const Tensor& like) {
  return scalar_tensor(v, TensorOptions(like.dtype()).with_device(like.device()));
}

// Runs a unary kernel; returns the result in dtype `result` (computed in its compute dtype).
Tensor run_unary(UnaryOp op, const Tensor& x, DType result, UnaryArgs args = {}) {
  const DType cd = backend::compute_dtype_on(result, x.device());
  Tensor xin = to_dtype(x.detach(), cd);
  Tensor out = make_tensor(x.shape(), cd, x.device());
  backend::call<prim::unary>(out.device(), op, xin, out, args);
  return cd == result ? out : to_dtype(out, result);
}

// Result dtype of a unary op: float-only ops turn integers and bool into f32; the others
// turn bool into i64.
DType unary_result(const Tensor& x, bool float_only) {
  if (float_only && !is_floating(x.dtype())) return DType::f32;
  if (x.dtype() == DType::boolean) return DType::i64;
  return x.dtype();
}

Tensor unary_float(OpId id, UnaryOp op, const Tensor& x_in, FunctionNode::BackwardFn bw,
                   bool save_in, bool save_out, UnaryArgs args = {}) {
  detail::OpScope scope(id, x_in);
  const Tensor& x = scope.in(0, x_in);
  const char* name = scope.name();
  detail::check_defined(name, {x});
  Tensor out = run_unary(op, x, unary_result(x, true), args);
  Grads saved;
  if (save_in) saved.push_back(x);
  if (save_out) saved.push_back(out);
  record(name, {x}, {out}, std::move(bw), saved);
  return scope.done(out);
}

DType binary_result(BinaryOp op, DType a, DType b) {
  DType r = promote_types(a, b);
  if (is_comparison(op)) return r;
  if (r == DType::boolean) r = DType::i64;
  if (op == BinaryOp::div && !is_floating(r)) r = DType::f32;
  return r;
}

Tensor run_binary(const char* name, BinaryOp op, const Tensor& a_in, const Tensor& b_in, double alpha = 1.0) {
  detail::check_defined(name, {a_in, b_in});
  const Tensor a = detail::scalar_to_device(a_in, b_in), b = detail::scalar_to_device(b_in, a_in);
  detail::check_same_device(name, {a, b});
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  const DType rd = binary_result(op, a.dtype(), b.dtype());
  const DType cd = backend::compute_dtype_on(rd, a.device());
  Tensor ai = expand(to_dtype(a.detach(), cd), shape);
  Tensor bi = expand(to_dtype(b.detach(), cd), shape);
  Tensor out = make_tensor(shape, is_comparison(op) ? DType::boolean : cd, a.device());
  backend::call<prim::binary>(out.device(), op, ai, bi, out, alpha);
  if (!is_comparison(op) && cd != rd) out = to_dtype(out, rd);
  return out;
}

}  // namespace

// --- binary ----------------------------------------------------------------------------------
Tensor add(const Tensor& a_in, const Tensor& b_in, double alpha) {
  detail::OpScope scope(OpId::add, [&] { return Attrs{{"alpha", alpha}}; }, a_in, b_in);
  const Tensor &a = scope.in(0, a_in), &b = scope.in(1, b_in);
  Tensor out = run_binary("add", BinaryOp::add, a, b, alpha);
  record("add", {a, b}, {out},
         [ma = meta_of(a), mb = meta_of(b), alpha](const Grads& g, const Grads&, const Needs& n) {
           return Grads{n[0] ? grad_for(g[0], ma) : Tensor(),
                        n[1] ? grad_for(alpha == 1.0 ? g[0] : mul(g[0], scalar_of(alpha, g[0])), mb)
                             : Tensor()};
         });
  return scope.done(out);
}

Tensor sub(const Tensor& a_in, const Tensor& b_in) {
  detail::OpScope scope(OpId::sub, a_in, b_in);
  const Tensor &a = scope.in(0, a_in), &b = scope.in(1, b_in);
  Tensor out = run_binary("sub", BinaryOp::sub, a, b);
  record("sub", {a, b}, {out}, [ma = meta_of(a), mb = meta_of(b)](const Grads& g, const Grads&, const Needs& n) {
    return Grads{n[0] ? grad_for(g[0], ma) : Tensor(), n[1] ? grad_for(neg(g[0]), mb) : Tensor()};
  });
  return scope.done(out);
}

Tensor mul(const Tensor& a_in, const Tensor& b_in) {
  detail::OpScope scope(OpId::mul, a_in, b_in);
  const Tensor &a = scope.in(0, a_in), &b = scope.in(1, b_in);
  Tensor out = run_binary("mul", BinaryOp::mul, a, b);
  record(
      "mul", {a, b}, {out},
      [ma = meta_of(a), mb = meta_of(b)](const Grads& g, const Grads& s, const Needs& n) {
        return Grads{n[0] ? grad_for(mul(g[0], s[1]), ma) : Tensor(), n[1] ? grad_for(mul(g[0], s[0]), mb) : Tensor()};
      },
      {a, b});
  return scope.done(out);
}

Tensor div(const Tensor& a_in, const Tensor& b_in) {
  detail::OpScope scope(OpId::div, a_in, b_in);
  const Tensor &a = scope.in(0, a_in), &b = scope.in(1, b_in);
  Tensor out = run_binary("div", BinaryOp::div, a, b);
  record(
      "div", {a, b}, {out},
      [ma = meta_of(a), mb = meta_of(b)](const Grads& g, const Grads& s, const Needs& n) {
        Tensor ga, gb;
        if (n[0]) ga = grad_for(div(g[0], s[1]), ma);
        if (n[1]) gb = grad_for(neg(div(mul(g[0], s[0]), mul(s[1], s[1]))), mb);
        return Grads{ga, gb};
      },
      {a, b});
  return scope.done(out);
}

namespace {
// Integer 0 to a negative power has no integer value: refused like an integer division by
// zero, before the kernel runs (a device-to-host copy of one count for a device tensor).
// Returns how many elements raise integer 0 to a negative power.
int64_t zero_to_negative_count(const Tensor& base, const Tensor& exponent) {
  NoGradGuard no_grad;
  const Tensor a = detail::scalar_to_device(base, exponent), b = detail::scalar_to_device(exponent, base);
  detail::check_same_device("pow", {a, b});
  const Tensor zero = scalar_tensor(0.0, TensorOptions(DType::i64).with_device(a.device()));
  return sum(to_dtype(logical_and(eq(a, zero), lt(b, zero)), DType::i64)).item<int64_t>();
}
}  // namespace

Tensor pow(const Tensor& a_in, const Tensor& b_in) {
  detail::OpScope scope(OpId::pow, a_in, b_in);
  const Tensor &a = scope.in(0, a_in), &b = scope.in(1, b_in);
  detail::check_defined("pow", {a, b});
  if (!is_floating(binary_result(BinaryOp::pow, a.dtype(), b.dtype()))) {
    const int64_t bad = zero_to_negative_count(a, b);
    EMBER_CHECK(bad == 0, "pow", "integer 0 raised to a negative power in ", bad, " elements: base ",
                detail::describe(a), ", exponent ", detail::describe(b), " (use a float dtype)");
  }
  Tensor out = run_binary("pow", BinaryOp::pow, a, b);
  record(
      "pow", {a, b}, {out},
      [ma = meta_of(a), mb = meta_of(b)](const Grads& g, const Grads& s, const Needs& n) {
        Tensor ga, gb;
        if (n[0]) ga = grad_for(mul(g[0], mul(s[1], pow(s[0], sub(s[1], scalar_of(1, s[1]))))), ma);
        if (n[1]) gb = grad_for(mul(g[0], mul(s[2], log(s[0]))), mb);
        return Grads{ga, gb};
      },
      {a, b, out});
  return scope.done(out);
}

Tensor pow(const Tensor& a_in, double exponent) {
  detail::OpScope scope(OpId::pow, [&] { return Attrs{{"exponent", exponent}}; }, a_in);
  const Tensor& a = scope.in(0, a_in);
  detail::check_defined("pow", {a});
  const DType rd = unary_result(a, std::floor(exponent) != exponent);
  if (!is_floating(rd) && exponent < 0) {
    const int64_t bad = zero_to_negative_count(a, scalar_tensor(-1.0, TensorOptions(DType::i64).with_device(a.device())));
    EMBER_CHECK(bad == 0, "pow", "integer 0 raised to the negative power ", exponent, " in ", bad, " elements of ",
                detail::describe(a), " (use a float dtype)");
  }
  Tensor out = run_unary(UnaryOp::pow_scalar, a, rd, UnaryArgs{exponent, 0});
  record(
      "pow", {a}, {out},
      [exponent](const Grads& g, const Grads& s, const Needs&) {
        return Grads{mul(g[0], mul(pow(s[0], exponent - 1.0), scalar_of(exponent, s[0])))};
      },
      {a});
  return scope.done(out);
}

namespace {
// maximum/minimum: the gradient goes to the winner; ties split it evenly.
Tensor extremum(const char* name, BinaryOp op, const Tensor& a, const Tensor& b) {
  Tensor out = run_binary(name, op, a, b);
  const BinaryOp win = op == BinaryOp::maximum ? BinaryOp::gt : BinaryOp::lt;
  record(
      name, {a, b}, {out},
      [ma = meta_of(a), mb = meta_of(b), win](const Grads& g, const Grads& s, const Needs& n) {
        const DType dt = g[0].dtype();
        Tensor a_wins = to_dtype(win == BinaryOp::gt ? gt(s[0], s[1]) : lt(s[0], s[1]), dt);
        Tensor tie = mul(to_dtype(eq(s[0], s[1]), dt), scalar_of(0.5, g[0]));
        Tensor wa = add(a_wins, tie);
        Tensor ga, gb;
        if (n[0]) ga = grad_for(mul(g[0], wa), ma);
        if (n[1]) gb = grad_for(mul(g[0], sub(scalar_of(1, g[0]), wa)), mb);
        return Grads{ga, gb};
      },
      {a, b});
  return out;
}
}  // namespace

namespace {
// A binary op without a backward of its own (comparisons) or with extremum's: one scope, the
// inputs as the op path hands them over.
Tensor binary_op(OpId id, BinaryOp op, const Tensor& a_in, const Tensor& b_in) {
  detail::OpScope scope(id, a_in, b_in);
  const Tensor &a = scope.in(0, a_in), &b = scope.in(1, b_in);
  if (op == BinaryOp::maximum || op == BinaryOp::minimum) return scope.done(extremum(scope.name(), op, a, b));
  return scope.done(run_binary(scope.name(), op, a, b));
}
}  // namespace

Tensor maximum(const Tensor& a, const Tensor& b) { return binary_op(OpId::maximum, BinaryOp::maximum, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary_op(OpId::minimum, BinaryOp::minimum, a, b); }
Tensor eq(const Tensor& a, const Tensor& b) { return binary_op(OpId::eq, BinaryOp::eq, a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return binary_op(OpId::ne, BinaryOp::ne, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return binary_op(OpId::lt, BinaryOp::lt, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return binary_op(OpId::le, BinaryOp::le, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return binary_op(OpId::gt, BinaryOp::gt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return binary_op(OpId::ge, BinaryOp::ge, a, b); }
Tensor logical_and(const Tensor& a, const Tensor& b) {
  detail::OpScope scope(OpId::logical_and, a, b);
  return scope.done(
      run_binary("logical_and", BinaryOp::logical_and, to_dtype(a, DType::boolean), to_dtype(b, DType::boolean)));
}
Tensor logical_or(const Tensor& a, const Tensor& b) {
  detail::OpScope scope(OpId::logical_or, a, b);
  return scope.done(
      run_binary("logical_or", BinaryOp::logical_or, to_dtype(a, DType::boolean), to_dtype(b, DType::boolean)));
}
Tensor logical_not(const Tensor& a) {
  detail::OpScope scope(OpId::logical_not, a);
  detail::check_defined("logical_not", {a});
  Tensor x = to_dtype(a.detach(), DType::boolean);
  Tensor out = make_tensor(x.shape(), DType::boolean, x.device());
  backend::call<prim::unary>(out.device(), UnaryOp::logical_not, x, out, UnaryArgs{});
  return scope.done(out);
}

// --- unary -----------------------------------------------------------------------------------
Tensor neg(const Tensor& x) {
  detail::OpScope scope(OpId::neg, x);
  detail::check_defined("neg", {x});
  Tensor out = run_unary(UnaryOp::neg, x, unary_result(x, false));
  record("neg", {x}, {out}, [](const Grads& g, const Grads&, const Needs&) { return Grads{neg(g[0])}; });
  return scope.done(out);
}

Tensor exp(const Tensor& x) {
  return unary_float(OpId::exp, UnaryOp::exp, x,
                     [](const Grads& g, const Grads& s, const Needs&) { return Grads{mul(g[0], s[0])}; },
                     false, true);
}
Tensor log(const Tensor& x) {
  return unary_float(OpId::log, UnaryOp::log, x,
                     [](const Grads& g, const Grads& s, const Needs&) { return Grads{div(g[0], s[0])}; },
                     true, false);
}
Tensor log1p(const Tensor& x) {
  return unary_float(OpId::log1p, UnaryOp::log1p, x,
                     [](const Grads& g, const Grads& s, const Needs&) {
                       return Grads{div(g[0], add(s[0], scalar_of(1, s[0])))};
                     },
                     true, false);
}
Tensor erf(const Tensor& x) {
  return unary_float(OpId::erf, UnaryOp::erf, x,
                     [](const Grads& g, const Grads& s, const Needs&) {  // 2/sqrt(pi) e^(-x^2)
                       const Tensor& v = s[0];
                       return Grads{mul(g[0], mul(exp(neg(mul(v, v))), scalar_of(1.12837916709551257390, v)))};
                     },
                     true, false);
}
Tensor expm1(const Tensor& x) {
  return unary_float(OpId::expm1, UnaryOp::expm1, x,
                     [](const Grads& g, const Grads& s, const Needs&) {  // e^x = expm1(x) + 1
                       return Grads{mul(g[0], add(s[0], scalar_of(1, s[0])))};
                     },
                     false, true);
}
Tensor softplus(const Tensor& x) {
  return unary_float(OpId::softplus, UnaryOp::softplus, x,
                     [](const Grads& g, const Grads& s, const Needs&) { return Grads{mul(g[0], sigmoid(s[0]))}; },
                     true, false);
}
Tensor sqrt(const Tensor& x) {
  return unary_float(OpId::sqrt, UnaryOp::sqrt, x,
                     [](const Grads& g, const Grads& s, const Needs&) {
                       return Grads{div(g[0], mul(s[0], scalar_of(2, s[0])))};
                     },
                     false, true);
}
Tensor rsqrt(const Tensor& x) {
  // d/dx x^-1/2 = -1/2 x^-3/2 = -1/2 y^3
  return unary_float(OpId::rsqrt, UnaryOp::rsqrt, x,
                     [](const Grads& g, const Grads& s, const Needs&) {
                       const Tensor& y = s[0];
                       return Grads{mul(g[0], mul(mul(y, mul(y, y)), scalar_of(-0.5, y)))};
                     },
                     false, true);
}
Tensor tanh(const Tensor& x) {
  return unary_float(OpId::tanh, UnaryOp::tanh, x,
                     [](const Grads& g, const Grads& s, const Needs&) {
                       const Tensor& y = s[0];
                       return Grads{mul(g[0], sub(scalar_of(1, y), mul(y, y)))};
                     },
                     false, true);
}
Tensor sigmoid(const Tensor& x) {
  return unary_float(OpId::sigmoid, UnaryOp::sigmoid, x,
                     [](const Grads& g, const Grads& s, const Needs&) {
                       const Tensor& y = s[0];
                       return Grads{mul(g[0], mul(y, sub(scalar_of(1, y), y)))};
                     },
                     false, true);
}
Tensor gelu(const Tensor& x_in, std::string_view approximate) {
  EMBER_CHECK(approximate == "none" || approximate == "tanh", "gelu: approximate must be \"none\" or \"tanh\", got \"",
              approximate, "\"");
  const bool tanh_form = approximate == "tanh";
  detail::OpScope scope(OpId::gelu, [&] { return Attrs{{"approximate", std::string(approximate)}}; }, x_in);
  const Tensor& x = scope.in(0, x_in);
  detail::check_defined(scope.name(), {x});
  Tensor out = run_unary(tanh_form ? UnaryOp::gelu_tanh : UnaryOp::gelu, x, unary_result(x, true));
  const UnaryOp grad = tanh_form ? UnaryOp::gelu_tanh_grad : UnaryOp::gelu_grad;
  record(
      scope.name(), {x}, {out},
      [grad](const Grads& g, const Grads& s, const Needs&) {
        return Grads{mul(g[0], run_unary(grad, s[0], s[0].dtype()))};
      },
      {x});
  return scope.done(out);
}
Tensor silu(const Tensor& x) {
  // d/dx x*s(x) = s(x) * (1 + x * (1 - s(x)))
  return unary_float(OpId::silu, UnaryOp::silu, x,
                     [](const Grads& g, const Grads& s, const Needs&) {
                       const Tensor& v = s[0];
                       Tensor sg = sigmoid(v);
                       return Grads{mul(g[0], mul(sg, add(scalar_of(1, v), mul(v, sub(scalar_of(1, v), sg)))))};
                     },
                     true, false);
}

Tensor abs(const Tensor& x) {
  detail::OpScope scope(OpId::abs, x);
  detail::check_defined("abs", {x});
  Tensor out = run_unary(UnaryOp::abs, x, unary_result(x, false));
  record(
      "abs", {x}, {out},
      [](const Grads& g, const Grads& s, const Needs&) {
        const DType dt = g[0].dtype();
        Tensor zero = scalar_of(0, s[0]);
        Tensor sign = sub(to_dtype(gt(s[0], zero), dt), to_dtype(lt(s[0], zero), dt));
        return Grads{mul(g[0], sign)};
      },
      {x});
  return scope.done(out);
}

Tensor relu(const Tensor& x) {
  detail::OpScope scope(OpId::relu, x);
  detail::check_defined("relu", {x});
  Tensor out = run_unary(UnaryOp::relu, x, unary_result(x, false));
  record(
      "relu", {x}, {out},
      [](const Grads& g, const Grads& s, const Needs&) {
        return Grads{mul(g[0], to_dtype(gt(s[0], scalar_of(0, s[0])), g[0].dtype()))};
      },
      {out});
  return scope.done(out);
}

Tensor clamp(const Tensor& x, std::optional<double> lo, std::optional<double> hi) {
  detail::OpScope scope(OpId::clamp, [&] { return Attrs{{"min", lo}, {"max", hi}}; }, x);
  detail::check_defined("clamp", {x});
  EMBER_CHECK(lo || hi, "clamp", "needs at least one of min and max");
  const double l = lo ? *lo : -std::numeric_limits<double>::infinity();
  const double h = hi ? *hi : std::numeric_limits<double>::infinity();
  EMBER_CHECK(l <= h, "clamp", "min ", l, " > max ", h);
  DType rd = unary_result(x, false);
  if (!is_floating(rd) && ((lo && std::floor(*lo) != *lo) || (hi && std::floor(*hi) != *hi))) rd = DType::f32;
  const UnaryArgs args{l, h};  // integer kernels saturate the bounds (saturate_cast)
  Tensor out = run_unary(UnaryOp::clamp, x, rd, args);
  record(
      "clamp", {x}, {out},
      [l, h](const Grads& g, const Grads& s, const Needs&) {
        Tensor inside = logical_and(ge(s[0], scalar_of(l, s[0])), le(s[0], scalar_of(h, s[0])));
        return Grads{mul(g[0], to_dtype(inside, g[0].dtype()))};
      },
      {x});
  return scope.done(out);
}

Tensor where(const Tensor& cond, const Tensor& a_given, const Tensor& b_given) {
  detail::OpScope scope(OpId::where, cond, a_given, b_given);
  const Tensor &a_in = scope.in(1, a_given), &b_in = scope.in(2, b_given);
  detail::check_defined("where", {cond, a_in, b_in});
  const Tensor a = detail::scalar_to_device(a_in, cond), b = detail::scalar_to_device(b_in, cond);
  detail::check_same_device("where", {cond, a, b});
  EMBER_CHECK(cond.dtype() == DType::boolean, "where", "condition must be bool, got ", cond.dtype(),
              " of shape ", shape_str(cond.shape()));
  const Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  const DType rd = promote_types(a.dtype(), b.dtype());
  const DType cd = backend::compute_dtype_on(rd, a.device());
  Tensor out = make_tensor(shape, cd, a.device());
  backend::call<prim::where>(out.device(), expand(cond.detach(), shape), expand(to_dtype(a.detach(), cd), shape),
             expand(to_dtype(b.detach(), cd), shape), out);
  if (cd != rd) out = to_dtype(out, rd);
  record(
      "where", {a, b}, {out},
      [ma = meta_of(a), mb = meta_of(b)](const Grads& g, const Grads& s, const Needs& n) {
        Tensor zero = scalar_of(0, g[0]);
        Tensor ga, gb;
        if (n[0]) ga = grad_for(where(s[0], g[0], zero), ma);
        if (n[1]) gb = grad_for(where(s[0], zero, g[0]), mb);
        return Grads{ga, gb};
      },
      {cond});
  return scope.done(out);
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  detail::OpScope scope(OpId::masked_fill, [&] { return Attrs{{"value", value}}; }, x, mask);
  detail::check_same_device("masked_fill", {x, mask});
  EMBER_CHECK(mask.dtype() == DType::boolean, "masked_fill", "mask must be bool, got ", mask.dtype(),
              " of shape ", shape_str(mask.shape()));
  const Shape shape = broadcast_shapes(x.shape(), mask.shape(), "masked_fill");
  EMBER_CHECK(shape == x.shape(), "masked_fill", "mask of shape ", shape_str(mask.shape()),
              " must broadcast to the input's shape ", shape_str(x.shape()));
  return scope.done(where(mask, scalar_tensor(value, TensorOptions(x.dtype()).with_device(x.device())), x));
}

}  // namespace ember
