// matmul, bmm and linear. Every product reduces to one primitive, a batched (B, n, k) @ (B, k, m)
// [+ bias over columns], whose backward is two more batched products (and a column sum).
#include "ops/dispatch.h"
#include "ops/common.h"
#include "ops/op_call.h"

namespace ember {
namespace {
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;

// The backend needs unit stride in one of a matrix's two dims and no broadcast batch.
Tensor gemm_ready(const Tensor& t) {
  const bool rows_ok = t.stride(2) == 1 || t.size(2) == 1;
  const bool cols_ok = t.stride(1) == 1 || t.size(1) == 1;
  const bool batch_ok = t.size(0) == 1 || t.stride(0) != 0;
  const bool lead_ok = rows_ok ? t.stride(1) >= t.size(2) || t.size(1) == 1 : t.stride(2) >= t.size(1) || t.size(2) == 1;
  if ((rows_ok || cols_ok) && batch_ok && lead_ok) return t;
  return contiguous(t);
}

// (B, n, k) @ (B, k, m) -> (B, n, m), with autograd.
Tensor bmm_primitive(const Tensor& a, const Tensor& b) {
  const DType rd = a.dtype();
  const DType cd = backend::compute_dtype_on(rd, a.device());
  Tensor ai = gemm_ready(to_dtype(a.detach(), cd)), bi = gemm_ready(to_dtype(b.detach(), cd));
  Tensor out = detail::make_tensor({a.size(0), a.size(1), b.size(2)}, cd, a.device(), "bmm");
  backend::call<prim::bmm>(out.device(), ai, bi, out, Tensor());
  if (cd != rd) out = to_dtype(out, rd);
  record(
      "matmul", {a, b}, {out},
      [](const Grads& g, const Grads& s, const Needs& n) {
        // Each gradient is produced in its input's memory layout: an operand that is a
        // transposed view (a Linear weight used as W^T) gets a transposed gradient, which
        // the transpose's backward turns back into a contiguous one, so no copy follows.
        auto col_major = [](const Tensor& t) { return t.stride(1) == 1 && t.stride(2) != 1; };
        Tensor ga, gb;
        if (n[0])
          ga = col_major(s[0]) ? bmm_primitive(s[1], g[0].transpose(1, 2)).transpose(1, 2)
                               : bmm_primitive(g[0], s[1].transpose(1, 2));
        if (n[1])
          gb = col_major(s[1]) ? bmm_primitive(g[0].transpose(1, 2), s[0]).transpose(1, 2)
                               : bmm_primitive(s[0].transpose(1, 2), g[0]);
        return Grads{ga, gb};
      },
      {a, b});
  return out;
}

void check_matmul_args(const char* op, const Tensor& a, const Tensor& b) {
  detail::check_same_device(op, {a, b});
  EMBER_CHECK(a.dtype() == b.dtype(), op, "dtypes differ: ", detail::describe(a), " @ ", detail::describe(b));
  EMBER_CHECK(is_floating(a.dtype()), op, "needs float tensors, got ", detail::describe(a), " @ ",
              detail::describe(b));
  EMBER_CHECK(a.dim() >= 1 && b.dim() >= 1, op, "needs tensors of at least 1 dim, got ",
              shape_str(a.shape()), " @ ", shape_str(b.shape()));
}

}  // namespace

Tensor bmm(const Tensor& a_in, const Tensor& b_in) {
  detail::OpScope scope(OpId::bmm, a_in, b_in);
  const Tensor& a = scope.in(0, a_in);
  const Tensor& b = scope.in(1, b_in);
  check_matmul_args("bmm", a, b);
  EMBER_CHECK(a.dim() == 3 && b.dim() == 3, "bmm", "needs 3-D tensors, got ", shape_str(a.shape()), " @ ",
              shape_str(b.shape()));
  EMBER_CHECK(a.size(0) == b.size(0), "bmm", "batch sizes differ: ", shape_str(a.shape()), " @ ",
              shape_str(b.shape()));
  EMBER_CHECK(a.size(2) == b.size(1), "bmm", "inner dimensions differ: ", shape_str(a.shape()), " @ ",
              shape_str(b.shape()));
  return scope.done(bmm_primitive(a, b));
}

Tensor matmul(const Tensor& a_given, const Tensor& b_given) {
  detail::OpScope scope(OpId::matmul, a_given, b_given);
  const Tensor &a_in = scope.in(0, a_given), &b_in = scope.in(1, b_given);
  check_matmul_args("matmul", a_in, b_in);
  const bool a_vec = a_in.dim() == 1, b_vec = b_in.dim() == 1;
  Tensor a = a_vec ? a_in.unsqueeze(0) : a_in;
  Tensor b = b_vec ? b_in.unsqueeze(1) : b_in;
  EMBER_CHECK(a.size(-1) == b.size(-2), "matmul", "inner dimensions differ: ", shape_str(a_in.shape()),
              " @ ", shape_str(b_in.shape()));
  const int64_t n = a.size(-2), k = a.size(-1), m = b.size(-1);
  Shape batch_a(a.shape().begin(), a.shape().end() - 2), batch_b(b.shape().begin(), b.shape().end() - 2);
  Tensor out;
  if (b.dim() == 2) {
    // (..., n, k) @ (k, m): fold the batch into rows, one GEMM.
    Tensor a2 = reshape(a, {checked_mul(checked_numel(batch_a, "matmul"), n, "matmul"), k}).unsqueeze(0);
    Tensor r = bmm_primitive(a2, b.unsqueeze(0));
    Shape s = batch_a;
    s.push_back(n);
    s.push_back(m);
    out = reshape(r, s);
  } else {
    Shape batch;
    try {
      batch = broadcast_shapes(batch_a, batch_b, "matmul");
    } catch (const Error&) {
      EMBER_FAIL("matmul", "batch dimensions do not broadcast: ", shape_str(a_in.shape()), " @ ",
                 shape_str(b_in.shape()));
    }
    Shape sa = batch, sb = batch;
    sa.insert(sa.end(), {n, k});
    sb.insert(sb.end(), {k, m});
    const int64_t B = checked_numel(batch, "matmul");
    Tensor a3 = reshape(expand(a, sa), {B, n, k});
    Tensor b3 = reshape(expand(b, sb), {B, k, m});
    Shape s = batch;
    s.insert(s.end(), {n, m});
    out = reshape(bmm_primitive(a3, b3), s);
  }
  if (a_vec) out = out.squeeze(-2);
  if (b_vec) out = out.squeeze(-1);
  return scope.done(out);
}

Tensor linear(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in) {
  detail::OpScope scope(OpId::linear, x_in, weight_in, bias_in);
  const Tensor& x = scope.in(0, x_in);
  const Tensor& weight = scope.in(1, weight_in);
  const Tensor& bias = scope.in(2, bias_in);
  const char* op = "linear";
  EMBER_CHECK(x.defined() && weight.defined(), op, "input and weight must be defined tensors");
  std::vector<Tensor> all = {x, weight};
  if (bias.defined()) all.push_back(bias);
  detail::check_same_device(op, all);
  EMBER_CHECK(weight.dim() == 2, op, "weight must be (out_features, in_features), got ", shape_str(weight.shape()));
  EMBER_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), op, "input ", shape_str(x.shape()),
              " does not end in in_features = ", weight.size(1), " (weight ", shape_str(weight.shape()), ")");
  EMBER_CHECK(is_floating(x.dtype()) && x.dtype() == weight.dtype(), op, "needs float tensors of one dtype, got ",
              detail::describe(x), " and weight ", detail::describe(weight));
  if (bias.defined()) {
    EMBER_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), op, "bias must be (", weight.size(0),
                ") for weight ", shape_str(weight.shape()), ", got ", shape_str(bias.shape()));
    EMBER_CHECK(bias.dtype() == x.dtype(), op, "bias ", detail::describe(bias), " differs in dtype from input ",
                detail::describe(x));
  }
  const int64_t in = weight.size(1), outf = weight.size(0);
  Shape out_shape = x.shape();
  out_shape.back() = outf;
  const DType rd = x.dtype();
  const DType cd = backend::compute_dtype_on(rd, x.device());
  // (..., in) -> (1, M, in); W^T is a column-major view of the weight, so no copy.
  Tensor x3 = gemm_ready(to_dtype(reshape(x.detach(), {-1, in}), cd).unsqueeze(0));
  Tensor wt = gemm_ready(to_dtype(weight.detach(), cd).t().unsqueeze(0));
  Tensor b = bias.defined() ? contiguous(to_dtype(bias.detach(), cd)) : Tensor();
  Tensor out = detail::make_tensor({1, x3.size(1), outf}, cd, x.device(), "linear");
  backend::call<prim::bmm>(out.device(), x3, wt, out, b);
  out = reshape(out, out_shape);
  if (cd != rd) out = to_dtype(out, rd);
  std::vector<Tensor> inputs = {x, weight};
  if (bias.defined()) inputs.push_back(bias);
  record(
      op, inputs, {out},
      [in, outf](const Grads& g, const Grads& s, const Needs& n) {
        // g (..., out) -> (M, out). dx = g W; dW = g^T x (contiguous, the weight's layout);
        // db = column sums of g.
        Tensor g2 = reshape(g[0], {-1, outf});
        Grads r(n.size());
        if (n[0]) r[0] = reshape(matmul(g2, s[1]), s[0].shape());
        if (n[1]) r[1] = matmul(g2.t(), reshape(s[0], {-1, in}));
        if (n.size() > 2 && n[2]) r[2] = sum(g2, {0});
        return r;
      },
      {x, weight});
  return scope.done(out);
}

}  // namespace ember
