// layer_norm: argument checks, dtype handling, dispatch to src/cpu/norm.cpp or kernels/norm.cu,
// and the recorded backward (which calls the layer_norm_backward primitive). The backends see
// x as a contiguous (M, N) matrix: M rows over the leading dims, N = numel(normalized_shape).
#include "ember/ops/norm.h"

#include <cmath>
#include <optional>

#include "ops/common.h"
#include "ops/op_call.h"
#include "ops/dispatch.h"

namespace ember {
namespace {
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;
using detail::prepared;
using detail::make_tensor;

struct Rows {
  int64_t M, N;
  Shape lead;  // x.shape() without normalized_shape
};

void check_param(const char* op, const char* what, const Tensor& p, const Tensor& x, const Shape& ns) {
  if (!p.defined()) return;
  EMBER_CHECK(p.shape() == ns, op, what, " must have normalized_shape ", shape_str(ns), ", got ",
              shape_str(p.shape()));
  EMBER_CHECK(p.dtype() == x.dtype(), op, what, " dtype ", p.dtype(), " differs from input dtype ", x.dtype(),
              " (input ", shape_str(x.shape()), ")");
  EMBER_CHECK(p.device() == x.device(), op, what, " lives on ", p.device(), " but input ", shape_str(x.shape()),
              " on ", x.device());
}

Rows check_layer_norm(const char* op, const Tensor& x, const Shape& ns, const Tensor& weight, const Tensor& bias,
                      std::optional<double> eps) {  // nullopt: the backward's (rstd holds eps)
  EMBER_CHECK(x.defined(), op, "input is an undefined tensor");
  EMBER_CHECK(is_floating(x.dtype()), op, "input must be a float tensor, got ", x.dtype(), " of shape ",
              shape_str(x.shape()));
  EMBER_CHECK(!ns.empty(), op, "normalized_shape must name at least one trailing dim (input ",
              shape_str(x.shape()), ")");
  const int64_t k = static_cast<int64_t>(ns.size());
  bool match = x.dim() >= k;
  for (int64_t i = 0; i < k && match; ++i) match = x.size(x.dim() - k + i) == ns[i];
  EMBER_CHECK(match, op, "normalized_shape ", shape_str(ns), " does not match the trailing dims of input ",
              shape_str(x.shape()));
  EMBER_CHECK(numel_of(ns) > 0, op, "normalized_shape ", shape_str(ns), " has no elements (input ",
              shape_str(x.shape()), ")");
  check_param(op, "weight", weight, x, ns);
  check_param(op, "bias", bias, x, ns);
  // eps = 0 divides by sqrt(0) for a constant row: NaN or Inf.
  EMBER_CHECK(!eps || (std::isfinite(*eps) && *eps > 0), op, "eps must be finite and > 0, got ", *eps, " (input ",
              shape_str(x.shape()), ")");
  Shape lead(x.shape().begin(), x.shape().end() - k);
  return {numel_of(lead), numel_of(ns), lead};
}


}  // namespace

// What observers see as the results of the struct-returning ops (OpScope::done).
std::vector<Tensor> op_outputs(const LayerNormForward& r) { return {r.output, r.mean, r.rstd}; }
std::vector<Tensor> op_outputs(const LayerNormGrads& r) { return {r.grad_input, r.grad_weight, r.grad_bias}; }

LayerNormForward layer_norm_forward(const Tensor& x_in, const Shape& normalized_shape, const Tensor& weight_in,
                                    const Tensor& bias_in, double eps) {
  detail::OpScope scope(OpId::layer_norm_forward,
                        [&] { return Attrs{{"normalized_shape", normalized_shape}, {"eps", eps}}; },
                        x_in, weight_in, bias_in);
  const Tensor& x = scope.in(0, x_in);
  const Tensor& weight = scope.in(1, weight_in);
  const Tensor& bias = scope.in(2, bias_in);
  const Rows r = check_layer_norm("layer_norm", x, normalized_shape, weight, bias, eps);
  const Device dev = x.device();
  const DType cd = backend::compute_dtype_on(x.dtype(), dev);  // what the kernel reads and writes
  const DType sd = compute_dtype(x.dtype());                   // statistics: f32, or f64
  const Tensor xc = prepared(x, cd), wc = prepared(weight, cd), bc = prepared(bias, cd);
  Tensor out = make_tensor(x.shape(), cd, dev);
  Tensor mean = make_tensor(r.lead, sd, dev), rstd = make_tensor(r.lead, sd, dev);
  if (r.M > 0) backend::call<prim::layer_norm_forward>(xc.device(), xc, wc, bc, eps, out, mean, rstd, r.M, r.N);
  if (cd != x.dtype()) out = to_dtype(out, x.dtype());
  return scope.done(LayerNormForward{out, mean, rstd});
}

LayerNormGrads layer_norm_backward(const Tensor& grad_output, const Tensor& x, const Tensor& mean,
                                   const Tensor& rstd, const Tensor& weight, const Shape& normalized_shape,
                                   std::array<bool, 3> needs) {
  detail::OpScope scope(OpId::layer_norm_backward,
                        [&] { return Attrs{{"normalized_shape", normalized_shape}}; },
                        grad_output, x, mean, rstd, weight);
  const char* op = "layer_norm_backward";
  const Rows r = check_layer_norm(op, x, normalized_shape, weight, Tensor(), std::nullopt);
  const DType sd = compute_dtype(x.dtype());
  EMBER_CHECK(grad_output.defined() && mean.defined() && rstd.defined(), op,
              "grad_output, mean and rstd must be defined tensors");
  EMBER_CHECK(grad_output.shape() == x.shape() && grad_output.dtype() == x.dtype(), op, "grad_output ",
              detail::describe(grad_output), " must match input ", detail::describe(x));
  for (const Tensor* s : {&mean, &rstd})
    EMBER_CHECK(s->numel() == r.M && s->dtype() == sd, op, "mean and rstd must hold one ", sd,
                " value per row (", r.M, " rows of input ", shape_str(x.shape()), "), got ", detail::describe(*s));
  detail::check_same_device(op, {grad_output, x, mean, rstd});

  LayerNormGrads out;
  if (!needs[0] && !needs[1] && !needs[2]) return scope.done(out);
  const Device dev = x.device();
  const DType cd = backend::compute_dtype_on(x.dtype(), dev);
  const Tensor gc = prepared(grad_output, cd), xc = prepared(x, cd), wc = prepared(weight, cd);
  const Tensor mc = prepared(mean, sd), rc = prepared(rstd, sd);
  if (needs[0]) out.grad_input = make_tensor(x.shape(), cd, dev);
  if (needs[1]) out.grad_weight = make_tensor(normalized_shape, cd, dev);
  if (needs[2]) out.grad_bias = make_tensor(normalized_shape, cd, dev);
  backend::call<prim::layer_norm_backward>(xc.device(), gc, xc, mc, rc, wc, out.grad_input, out.grad_weight, out.grad_bias, r.M, r.N);
  if (cd != x.dtype())
    for (Tensor* t : {&out.grad_input, &out.grad_weight, &out.grad_bias})
      if (t->defined()) *t = to_dtype(*t, x.dtype());
  return scope.done(out);
}

Tensor layer_norm(const Tensor& x_in, const Shape& normalized_shape, const Tensor& weight_in, const Tensor& bias_in,
                  double eps) {
  detail::OpScope scope(OpId::layer_norm,
                        [&] { return Attrs{{"normalized_shape", normalized_shape}, {"eps", eps}}; },
                        x_in, weight_in, bias_in);
  const Tensor& x = scope.in(0, x_in);
  const Tensor& weight = scope.in(1, weight_in);
  const Tensor& bias = scope.in(2, bias_in);
  LayerNormForward f = layer_norm_forward(x, normalized_shape, weight, bias, eps);
  record(
      "layer_norm", {x, weight, bias}, {f.output},
      [normalized_shape](const Grads& g, const Grads& s, const Needs& n) {
        LayerNormGrads r = layer_norm_backward(g[0], s[0], s[1], s[2], s[3], normalized_shape, {n[0], n[1], n[2]});
        return Grads{r.grad_input, r.grad_weight, r.grad_bias};
      },
      {x, f.mean, f.rstd, weight});
  return scope.done(f.output);
}

Tensor layer_norm_reference(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                            const Tensor& bias, double eps) {
  check_layer_norm("layer_norm_reference", x, normalized_shape, weight, bias, eps);
  Shape dims;
  for (int64_t d = x.dim() - static_cast<int64_t>(normalized_shape.size()); d < x.dim(); ++d) dims.push_back(d);
  const DType sd = compute_dtype(x.dtype());  // f16/bf16 in f32, like the kernels
  const Tensor xf = to_dtype(x, sd);
  Tensor y = mul(sub(xf, mean(xf, dims, true)), rsqrt(var(xf, dims, /*correction=*/0, true) + eps));
  if (weight.defined()) y = mul(y, to_dtype(weight, sd));
  if (bias.defined()) y = add(y, to_dtype(bias, sd));
  return to_dtype(y, x.dtype());
}

}  // namespace ember
