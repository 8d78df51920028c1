// Creation (constant, range, random, from host data), copies and dtype conversion.
#include <cmath>
#include <cstdint>

#include "core/capture.h"
#include "ops/dispatch.h"
#include "ops/op_call.h"
#include "ops/common.h"

namespace ember {
using detail::make_tensor;

namespace {
Tensor finish(Tensor t, const TensorOptions& o) {
  if (o.requires_grad) t.requires_grad_(true);
  return t;
}
}  // namespace

Tensor empty(const Shape& shape, TensorOptions o) {
  detail::OpScope scope(OpId::empty, [&] { return Attrs{{"shape", shape}, {"dtype", o.dtype}}; });
  return scope.done(finish(make_tensor(shape, o.dtype, o.device, "empty"), o));
}
namespace {
Tensor filled(const char* op, const Shape& shape, double value, TensorOptions o) {
  detail::OpScope scope(OpId::full, [&] { return Attrs{{"shape", shape}, {"dtype", o.dtype}, {"value", value}}; });
  Tensor t = make_tensor(shape, o.dtype, o.device, op);
  backend::call<prim::fill>(t.device(), t, value);
  return scope.done(finish(t, o));
}
}  // namespace
Tensor full(const Shape& shape, double value, TensorOptions o) { return filled("full", shape, value, o); }
Tensor zeros(const Shape& shape, TensorOptions o) { return filled("zeros", shape, 0.0, o); }
Tensor ones(const Shape& shape, TensorOptions o) { return filled("ones", shape, 1.0, o); }
Tensor scalar_tensor(double value, TensorOptions o) { return full({}, value, o); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), TensorOptions(t.dtype()).with_device(t.device())); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), TensorOptions(t.dtype()).with_device(t.device())); }
Tensor empty_like(const Tensor& t) { return empty(t.shape(), TensorOptions(t.dtype()).with_device(t.device())); }

Tensor arange(double start, double end, double step, TensorOptions o) {
  detail::OpScope scope(OpId::arange,
                        [&] { return Attrs{{"start", start}, {"end", end}, {"step", step}, {"dtype", o.dtype}}; });
  EMBER_CHECK(step != 0, "arange", "step must be non-zero");
  EMBER_CHECK(std::isfinite(start) && std::isfinite(end), "arange", "bounds must be finite");
  const double span = (end - start) / step;
  // 2^63 is exact in double; a longer range would not even convert to int64 (undefined).
  EMBER_CHECK(std::isfinite(span) && std::ceil(span) < 9223372036854775808.0, "arange", "range [", start, ", ", end,
              ") in steps of ", step, " has ", span, " elements, more than int64 holds");
  const int64_t n = span > 0 ? static_cast<int64_t>(std::ceil(span)) : 0;
  Tensor t = make_tensor({n}, DType::f64, Device::cpu(), "arange");
  double* p = t.data<double>();
  for (int64_t i = 0; i < n; ++i) p[i] = start + static_cast<double>(i) * step;
  return scope.done(finish(to_device(to_dtype(t, o.dtype), o.device), o));
}

Tensor linspace(double start, double end, int64_t steps, TensorOptions o) {
  detail::OpScope scope(OpId::linspace,
                        [&] { return Attrs{{"start", start}, {"end", end}, {"steps", steps}, {"dtype", o.dtype}}; });
  EMBER_CHECK(steps >= 0, "linspace", "steps must be >= 0, got ", steps);
  Tensor t = make_tensor({steps}, DType::f64, Device::cpu(), "linspace");
  double* p = t.data<double>();
  for (int64_t i = 0; i < steps; ++i)
    p[i] = steps == 1 ? start : start + (end - start) * static_cast<double>(i) / static_cast<double>(steps - 1);
  return scope.done(finish(to_device(to_dtype(t, o.dtype), o.device), o));
}

template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, TensorOptions o) {
  detail::OpScope scope(OpId::from_vector, [&] { return Attrs{{"shape", shape}, {"dtype", o.dtype}}; });
  EMBER_CHECK(static_cast<int64_t>(values.size()) == checked_numel(shape, "from_vector"), "from_vector", values.size(),
              " values do not fill shape ", shape_str(shape));
  Tensor t = make_tensor(shape, dtype_of<T>::value, Device::cpu());
  T* p = t.data<T>();
  for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
  if (o.dtype != t.dtype()) t = to_dtype(t, o.dtype);
  return scope.done(finish(to_device(t, o.device), o));
}
template Tensor from_vector<float>(const std::vector<float>&, const Shape&, TensorOptions);
template Tensor from_vector<double>(const std::vector<double>&, const Shape&, TensorOptions);
template Tensor from_vector<int32_t>(const std::vector<int32_t>&, const Shape&, TensorOptions);
template Tensor from_vector<int64_t>(const std::vector<int64_t>&, const Shape&, TensorOptions);
template <>
Tensor from_vector<bool>(const std::vector<bool>& values, const Shape& shape, TensorOptions o) {
  std::vector<int64_t> v(values.begin(), values.end());
  Tensor t = from_vector(v, shape, DType::boolean);
  if (o.dtype != t.dtype()) t = to_dtype(t, o.dtype);
  return finish(to_device(t, o.device), o);
}

Tensor tensor(std::initializer_list<double> values, TensorOptions o) {
  return from_vector(std::vector<double>(values), {static_cast<int64_t>(values.size())}, o);
}

Tensor tensor(std::initializer_list<std::initializer_list<double>> rows, TensorOptions o) {
  std::vector<double> v;
  const int64_t r = static_cast<int64_t>(rows.size());
  const int64_t c = r ? static_cast<int64_t>(rows.begin()->size()) : 0;
  for (const auto& row : rows) {
    EMBER_CHECK(static_cast<int64_t>(row.size()) == c, "tensor", "ragged rows: expected ", c,
                " values per row, got ", row.size());
    v.insert(v.end(), row.begin(), row.end());
  }
  return from_vector(v, {r, c}, o);
}

namespace {
Tensor random_tensor(const char* op, RandomKind kind, const Shape& shape, TensorOptions o, Generator* gen,
                     double a, double b) {
  // The seed and offset would be frozen into the graph: every replay would draw the same numbers.
  if (!o.device.is_cpu())
    detail::check_not_capturing(op, "drawing random numbers on the device (dropout, rand, randn, bernoulli) would repeat "
                                    "the same numbers at every replay");
  Generator& g = gen ? *gen : default_generator();
  const DType compute = o.dtype == DType::boolean ? DType::i64 : backend::compute_dtype_on(o.dtype, o.device);
  Tensor t = make_tensor(shape, compute, o.device, op);
  backend::call<prim::random_fill>(t.device(), kind, t, g.seed(), g.reserve(t.numel()), a, b);
  if (compute != o.dtype) t = to_dtype(t, o.dtype);
  return finish(t, o);
}
}  // namespace

Tensor rand(const Shape& shape, TensorOptions o, Generator* gen) { return uniform(shape, 0.0, 1.0, o, gen); }
Tensor uniform(const Shape& shape, double lo, double hi, TensorOptions o, Generator* gen) {
  detail::OpScope scope(OpId::uniform,
                        [&] { return Attrs{{"shape", shape}, {"dtype", o.dtype}, {"low", lo}, {"high", hi}}; });
  EMBER_CHECK(is_floating(o.dtype), "uniform", "needs a float dtype, got ", o.dtype);
  EMBER_CHECK(lo <= hi, "uniform", "low ", lo, " > high ", hi);
  return scope.done(random_tensor("uniform", RandomKind::uniform, shape, o, gen, lo, hi));
}
Tensor randn(const Shape& shape, TensorOptions o, Generator* gen) {
  detail::OpScope scope(OpId::randn, [&] { return Attrs{{"shape", shape}, {"dtype", o.dtype}}; });
  EMBER_CHECK(is_floating(o.dtype), "randn", "needs a float dtype, got ", o.dtype);
  return scope.done(random_tensor("randn", RandomKind::normal, shape, o, gen, 0.0, 1.0));
}
Tensor randint(int64_t low, int64_t high, const Shape& shape, TensorOptions o, Generator* gen) {
  detail::OpScope scope(OpId::randint,
                        [&] { return Attrs{{"shape", shape}, {"dtype", o.dtype}, {"low", low}, {"high", high}}; });
  EMBER_CHECK(low < high, "randint", "empty range [", low, ", ", high, ")");
  // The draw is computed in double (one formula for every device): bounds beyond 2^53 would
  // round, and a value rounded past INT64_MAX cannot be converted back.
  constexpr int64_t kExact = int64_t{1} << 53;
  EMBER_CHECK(low >= -kExact && high <= kExact, "randint", "range [", low, ", ", high,
              ") reaches beyond +-2^53, the integers a double holds exactly");
  if (o.dtype == DType::i32 || o.dtype == DType::boolean) {
    const int64_t lo = o.dtype == DType::i32 ? INT32_MIN : 0, hi = o.dtype == DType::i32 ? INT32_MAX : 1;
    EMBER_CHECK(low >= lo && high - 1 <= hi, "randint", "range [", low, ", ", high, ") does not fit ", o.dtype,
                " (values ", lo, " to ", hi, ")");
  }
  return scope.done(random_tensor("randint", RandomKind::randint, shape, o, gen, static_cast<double>(low),
                       static_cast<double>(high)));
}
Tensor bernoulli(const Shape& shape, double p, TensorOptions o, Generator* gen) {
  detail::OpScope scope(OpId::bernoulli, [&] { return Attrs{{"shape", shape}, {"dtype", o.dtype}, {"p", p}}; });
  EMBER_CHECK(p >= 0 && p <= 1, "bernoulli", "probability ", p, " outside [0, 1]");
  return scope.done(random_tensor("bernoulli", RandomKind::bernoulli, shape, o, gen, p, 0.0));
}

// --- copies ----------------------------------------------------------------------------------
Tensor contiguous(const Tensor& x) {
  detail::OpScope scope(OpId::contiguous, x);
  detail::check_defined("contiguous", {x});
  if (x.is_contiguous()) return scope.done(x);
  return scope.done(clone(x));
}

Tensor clone(const Tensor& x) {
  detail::OpScope scope(OpId::clone, x);
  detail::check_defined("clone", {x});
  Tensor out = make_tensor(x.shape(), x.dtype(), x.device());
  backend::copy(x, out);
  record("clone", {x}, {out},
         [](const std::vector<Tensor>& g, const std::vector<Tensor>&, const std::vector<bool>&) {
           return std::vector<Tensor>{g[0]};
         });
  return scope.done(out);
}

Tensor to_dtype(const Tensor& x, DType t) {
  detail::OpScope scope(OpId::to_dtype, [&] { return Attrs{{"dtype", t}}; }, x);
  detail::check_defined("to", {x});
  if (x.dtype() == t) return scope.done(x);
  Tensor out = make_tensor(x.shape(), t, x.device());
  backend::copy(x, out);
  const DType from = x.dtype();
  if (is_floating(from) && is_floating(t))
    record("to", {x}, {out},
           [from](const std::vector<Tensor>& g, const std::vector<Tensor>&, const std::vector<bool>&) {
             return std::vector<Tensor>{to_dtype(g[0], from)};
           });
  return scope.done(out);
}

Tensor to_device(const Tensor& x, Device d) {
  detail::OpScope scope(OpId::to_device, [&] { return Attrs{{"device", d.str()}}; }, x);
  detail::check_defined("to", {x});
  if (x.device() == d) return scope.done(x);
  Tensor out = make_tensor(x.shape(), x.dtype(), d);
  backend::copy(contiguous(x.detach()), out);
  const Device from = x.device();
  record("to", {x}, {out}, [from](const std::vector<Tensor>& g, const std::vector<Tensor>&, const std::vector<bool>&) {
    return std::vector<Tensor>{to_device(g[0], from)};
  });
  return scope.done(out);
}

// --- comparison helpers ----------------------------------------------------------------------
bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  detail::check_same_device("allclose", {a, b});
  NoGradGuard ng;
  broadcast_shapes(a.shape(), b.shape(), "allclose");
  Tensor x = to_dtype(a, DType::f64), y = to_dtype(b, DType::f64);
  Tensor tol = add(mul(abs(y), scalar_tensor(rtol, TensorOptions(DType::f64).with_device(y.device()))),
                   scalar_tensor(atol, TensorOptions(DType::f64).with_device(y.device())));
  Tensor ok = le(abs(sub(x, y)), tol);
  // NaN never compares close.
  return amin(to_dtype(ok, DType::i64)).item<int64_t>() == 1;
}

bool equal(const Tensor& a, const Tensor& b) {
  detail::check_same_device("equal", {a, b});
  if (a.shape() != b.shape()) return false;
  if (a.numel() == 0) return true;
  NoGradGuard ng;
  return amin(to_dtype(eq(a, b), DType::i64)).item<int64_t>() == 1;
}

}  // namespace ember
