// conv1d and its backward primitives: argument checks, dtype handling, dispatch by device,
// and the recorded backwards (each of the three ops' gradients is one of the other two).
//
//   y  = conv1d(x, w) + b
//   dx = conv1d_backward_input(dy, w)      d/d dy: conv1d(G, w)                 d/d w: backward_weight(dy, G)
//   dw = conv1d_backward_weight(dy, x)     d/d dy: conv1d(x, G)                 d/d x: backward_input(dy, G)
//
// (G is the gradient arriving at dx or dw.) So the backward primitives are differentiable
// like any op, and the op harness gradchecks them.
#include "ember/ops/conv.h"

#include <string>

#include "cpu/conv.h"
#include "ops/common.h"
#include "ops/op_call.h"
#include "ops/dispatch.h"

namespace ember {
namespace {

using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;

struct ConvArgs {
  int64_t stride, padding, dilation, groups;
};

// --- checks ---------------------------------------------------------------------------------

std::string args_str(const ConvArgs& a) {
  return "stride=" + std::to_string(a.stride) + ", padding=" + std::to_string(a.padding) +
         ", dilation=" + std::to_string(a.dilation) + ", groups=" + std::to_string(a.groups);
}

void check_args(const char* op, const ConvArgs& a) {
  EMBER_CHECK(a.stride >= 1, op, "stride must be >= 1, got ", a.stride);
  EMBER_CHECK(a.dilation >= 1, op, "dilation must be >= 1, got ", a.dilation);
  EMBER_CHECK(a.padding >= 0, op, "padding must be >= 0, got ", a.padding);
  EMBER_CHECK(a.groups >= 1, op, "groups must be >= 1, got ", a.groups);
}

void check_3d(const char* op, const char* what, const char* layout, const Tensor& t) {
  EMBER_CHECK(t.dim() == 3, op, what, " must be 3-D ", layout, ", got ", shape_str(t.shape()));
}

// Same device, same float dtype, for the defined tensors among ts (named in the message).
void check_dtypes_devices(const char* op, const std::vector<Tensor>& ts) {
  std::vector<Tensor> defined;
  for (const Tensor& t : ts)
    if (t.defined()) defined.push_back(t);
  detail::check_same_device(op, defined);
  std::string all;
  for (const Tensor& t : defined) all += (all.empty() ? "" : ", ") + detail::describe(t);
  for (const Tensor& t : defined) {
    EMBER_CHECK(is_floating(t.dtype()), op, "needs float tensors, got ", all);
    EMBER_CHECK(t.dtype() == defined[0].dtype(), op, "dtypes differ: ", all);
  }
}

// The dilated kernel must fit in the padded input.
int64_t output_length(const char* op, int64_t length, int64_t kernel_size, const ConvArgs& a) {
  check_args(op, a);
  EMBER_CHECK(kernel_size >= 1, op, "kernel size must be >= 1, got ", kernel_size);
  EMBER_CHECK(length >= 0, op, "input length must be >= 0, got ", length);
  // Overflow here once gave a length-10 output from a length-8 input (dilation INT64_MAX).
  int64_t span = 0, padded = 0;
  EMBER_CHECK(!__builtin_mul_overflow(a.dilation, kernel_size - 1, &span) && !__builtin_add_overflow(span, 1, &span),
              op, "kernel of size ", kernel_size, " with dilation ", a.dilation, " spans more positions than int64 holds");
  EMBER_CHECK(!__builtin_mul_overflow(a.padding, 2, &padded) && !__builtin_add_overflow(length, padded, &padded), op,
              "input length ", length, " + 2 * padding ", a.padding, " overflows int64");
  EMBER_CHECK(span <= padded, op, "kernel of size ", kernel_size, " with dilation ", a.dilation, " spans ", span,
              " positions, longer than the padded input: length ", length, " + 2 * padding ", a.padding, " = ",
              padded);
  return (padded - span) / a.stride + 1;
}

// Channel counts of weight w (C_out, C_in/groups, K) against C_in.
void check_channels(const char* op, int64_t C_in, const Tensor& w, const ConvArgs& a, const std::string& whose) {
  const int64_t C_out = w.size(0);
  EMBER_CHECK(C_in >= 1 && C_out >= 1, op, "needs at least one channel: ", whose, ", weight ",
              shape_str(w.shape()));
  EMBER_CHECK(C_in % a.groups == 0, op, "groups=", a.groups, " does not divide the ", C_in, " input channels of ",
              whose);
  EMBER_CHECK(C_out % a.groups == 0, op, "groups=", a.groups, " does not divide the ", C_out,
              " output channels of weight ", shape_str(w.shape()));
  const int64_t expects = checked_mul(w.size(1), a.groups, op);
  EMBER_CHECK(expects == C_in, op, "channel mismatch: ", whose, " has ", C_in, " channels but weight ",
              shape_str(w.shape()), " with groups=", a.groups, " expects ", expects);
}

// Checks conv1d's arguments; returns L_out.
int64_t check_conv1d(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias, const ConvArgs& a) {
  detail::check_defined(op, {x, w});
  check_dtypes_devices(op, {x, w, bias});
  check_3d(op, "input", "(N, C_in, L)", x);
  check_3d(op, "weight", "(C_out, C_in/groups, K)", w);
  check_args(op, a);
  check_channels(op, x.size(1), w, a, "input " + shape_str(x.shape()));
  if (bias.defined())
    EMBER_CHECK(bias.dim() == 1 && bias.size(0) == w.size(0), op, "bias must be (C_out) = (", w.size(0),
                ") for weight ", shape_str(w.shape()), ", got ", shape_str(bias.shape()));
  return output_length(op, x.size(2), w.size(2), a);
}

// --- dispatch -------------------------------------------------------------------------------

void run_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& out, const ConvArgs& a) {
  backend::call<prim::conv1d_forward>(out.device(), x, w, b, out, a.stride, a.padding, a.dilation, a.groups);
}
void run_backward_input(const Tensor& gy, const Tensor& w, const Tensor& dx, const ConvArgs& a) {
  backend::call<prim::conv1d_backward_input>(dx.device(), gy, w, dx, a.stride, a.padding, a.dilation, a.groups);
}
void run_backward_weight(const Tensor& gy, const Tensor& x, const Tensor& dw, const ConvArgs& a) {
  backend::call<prim::conv1d_backward_weight>(dw.device(), gy, x, dw, a.stride, a.padding, a.dilation, a.groups);
}

using detail::prepared;

// --- the three primitives (arguments already checked) ---------------------------------------

Tensor backward_input_primitive(const Tensor& gy, const Tensor& w, int64_t L, const ConvArgs& a);
Tensor backward_weight_primitive(const Tensor& gy, const Tensor& x, int64_t K, const ConvArgs& a);

Tensor forward_primitive(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t L_out, const ConvArgs& a) {
  const DType rd = x.dtype(), cd = backend::compute_dtype_on(rd, x.device());
  Tensor out = detail::make_tensor({x.size(0), w.size(0), L_out}, cd, x.device(), "conv1d");  // (N, C_out, L_out)
  run_forward(prepared(x, cd), prepared(w, cd), prepared(bias, cd), out, a);
  if (cd != rd) out = to_dtype(out, rd);
  record(
      "conv1d", {x, w, bias}, {out},
      [a, L = x.size(2), K = w.size(2)](const Grads& g, const Grads& s, const Needs& n) {
        Tensor gx, gw, gb;
        if (n[0]) gx = backward_input_primitive(g[0], s[1], L, a);
        if (n[1]) gw = backward_weight_primitive(g[0], s[0], K, a);
        // Over L first (rows of a contiguous tensor), then over N (leading dim): a single
        // sum over {0, 2} would first copy the gradient into (C_out, N, L_out) order. The
        // partial sums stay in f32 for f16/bf16: rounding them to 16 bits before the second
        // sum lost up to 8 ulps of the bias gradient to cancellation (the first GPU run's
        // conv1d failures, which the CPU showed bit for bit).
        if (n[2]) {
          const DType dt = g[0].dtype(), acc = dt == DType::f16 || dt == DType::bf16 ? DType::f32 : dt;
          gb = to_dtype(sum(sum(to_dtype(g[0], acc), {2}), {0}), dt);
        }
        return Grads{gx, gw, gb};
      },
      {x, w});
  return out;
}

Tensor backward_input_primitive(const Tensor& gy, const Tensor& w, int64_t L, const ConvArgs& a) {
  const DType rd = gy.dtype(), cd = backend::compute_dtype_on(rd, gy.device());
  Tensor dx = detail::make_tensor({gy.size(0), checked_mul(w.size(1), a.groups, "conv1d_backward_input"), L}, cd,
                                  gy.device(), "conv1d_backward_input");  // (N, C_in, L)
  run_backward_input(prepared(gy, cd), prepared(w, cd), dx, a);
  if (cd != rd) dx = to_dtype(dx, rd);
  record(
      "conv1d_backward_input", {gy, w}, {dx},
      [a, K = w.size(2), L_out = gy.size(2)](const Grads& g, const Grads& s, const Needs& n) {
        Tensor ggy, gw;
        if (n[0]) ggy = forward_primitive(g[0], s[1], Tensor(), L_out, a);
        if (n[1]) gw = backward_weight_primitive(s[0], g[0], K, a);
        return Grads{ggy, gw};
      },
      {gy, w});
  return dx;
}

Tensor backward_weight_primitive(const Tensor& gy, const Tensor& x, int64_t K, const ConvArgs& a) {
  const DType rd = gy.dtype(), cd = backend::compute_dtype_on(rd, gy.device());
  Tensor dw = detail::make_tensor({gy.size(1), x.size(1) / a.groups, K}, cd, gy.device(),
                                  "conv1d_backward_weight");  // (C_out, cg, K)
  run_backward_weight(prepared(gy, cd), prepared(x, cd), dw, a);
  if (cd != rd) dw = to_dtype(dw, rd);
  record(
      "conv1d_backward_weight", {gy, x}, {dw},
      [a, L = x.size(2), L_out = gy.size(2)](const Grads& g, const Grads& s, const Needs& n) {
        Tensor ggy, gx;
        if (n[0]) ggy = forward_primitive(s[1], g[0], Tensor(), L_out, a);
        if (n[1]) gx = backward_input_primitive(s[0], g[0], L, a);
        return Grads{ggy, gx};
      },
      {gy, x});
  return dw;
}

}  // namespace

int64_t conv1d_output_length(int64_t length, int64_t kernel_size, int64_t stride, int64_t padding,
                             int64_t dilation) {
  return output_length("conv1d", length, kernel_size, ConvArgs{stride, padding, dilation, 1});
}

namespace {
Attrs conv_attrs(int64_t stride, int64_t padding, int64_t dilation, int64_t groups) {
  return Attrs{{"stride", stride}, {"padding", padding}, {"dilation", dilation}, {"groups", groups}};
}
}  // namespace

Tensor conv1d(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, int64_t stride, int64_t padding,
              int64_t dilation, int64_t groups) {
  detail::OpScope scope(OpId::conv1d,
                        [&] { return conv_attrs(stride, padding, dilation, groups); },
                        x_in, w_in, bias_in);
  const Tensor& x = scope.in(0, x_in);
  const Tensor& w = scope.in(1, w_in);
  const Tensor& bias = scope.in(2, bias_in);
  const ConvArgs a{stride, padding, dilation, groups};
  const int64_t L_out = check_conv1d("conv1d", x, w, bias, a);
  return scope.done(forward_primitive(x, w, bias, L_out, a));
}

Tensor conv1d_backward_input(const Tensor& grad_out, const Tensor& w, int64_t input_length, int64_t stride,
                             int64_t padding, int64_t dilation, int64_t groups) {
  detail::OpScope scope(OpId::conv1d_backward_input,
                        [&] { return conv_attrs(stride, padding, dilation, groups); },
                        grad_out, w);
  const char* op = "conv1d_backward_input";
  const ConvArgs a{stride, padding, dilation, groups};
  detail::check_defined(op, {grad_out, w});
  check_dtypes_devices(op, {grad_out, w});
  check_3d(op, "grad_out", "(N, C_out, L_out)", grad_out);
  check_3d(op, "weight", "(C_out, C_in/groups, K)", w);
  check_args(op, a);
  EMBER_CHECK(grad_out.size(1) == w.size(0), op, "grad_out ", shape_str(grad_out.shape()), " has ",
              grad_out.size(1), " channels but weight ", shape_str(w.shape()), " has C_out = ", w.size(0));
  check_channels(op, checked_mul(w.size(1), a.groups, op), w, a, "the input");
  const int64_t L_out = output_length(op, input_length, w.size(2), a);
  EMBER_CHECK(L_out == grad_out.size(2), op, "input length ", input_length, " gives L_out = ", L_out, " (",
              args_str(a), ", kernel size ", w.size(2), ") but grad_out is ", shape_str(grad_out.shape()));
  return scope.done(backward_input_primitive(grad_out, w, input_length, a));
}

Tensor conv1d_backward_weight(const Tensor& grad_out, const Tensor& x, int64_t kernel_size, int64_t stride,
                              int64_t padding, int64_t dilation, int64_t groups) {
  detail::OpScope scope(OpId::conv1d_backward_weight,
                        [&] { return conv_attrs(stride, padding, dilation, groups); },
                        grad_out, x);
  const char* op = "conv1d_backward_weight";
  const ConvArgs a{stride, padding, dilation, groups};
  detail::check_defined(op, {grad_out, x});
  check_dtypes_devices(op, {grad_out, x});
  check_3d(op, "grad_out", "(N, C_out, L_out)", grad_out);
  check_3d(op, "input", "(N, C_in, L)", x);
  check_args(op, a);
  EMBER_CHECK(grad_out.size(0) == x.size(0), op, "batch sizes differ: grad_out ", shape_str(grad_out.shape()),
              ", input ", shape_str(x.shape()));
  const int64_t C_in = x.size(1), C_out = grad_out.size(1);
  EMBER_CHECK(C_in >= 1 && C_out >= 1, op, "needs at least one channel: grad_out ", shape_str(grad_out.shape()),
              ", input ", shape_str(x.shape()));
  EMBER_CHECK(C_in % a.groups == 0 && C_out % a.groups == 0, op, "groups=", a.groups,
              " does not divide the channels of input ", shape_str(x.shape()), " and grad_out ",
              shape_str(grad_out.shape()));
  const int64_t L_out = output_length(op, x.size(2), kernel_size, a);
  EMBER_CHECK(L_out == grad_out.size(2), op, "input ", shape_str(x.shape()), " gives L_out = ", L_out, " (",
              args_str(a), ", kernel size ", kernel_size, ") but grad_out is ", shape_str(grad_out.shape()));
  return scope.done(backward_weight_primitive(grad_out, x, kernel_size, a));
}

Tensor conv1d_reference(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t stride, int64_t padding,
                        int64_t dilation, int64_t groups) {
  const ConvArgs a{stride, padding, dilation, groups};
  const int64_t L_out = check_conv1d("conv1d_reference", x, w, bias, a);
  const int64_t N = x.size(0), C_out = w.size(0), cg = w.size(1), K = w.size(2), G = groups;
  const int64_t og = C_out / G, span = dilation * (K - 1) + 1;
  Tensor xp = padding > 0 ? pad(x, {padding, padding}) : x;  // (N, C_in, L + 2p)
  Tensor win = unfold(xp, 2, span, stride);                  // (N, C_in, L_out, span)
  if (dilation > 1) win = slice(win, 3, 0, span, dilation);  // (N, C_in, L_out, K)
  win = reshape(win, {N, G, cg, L_out, K}).permute({0, 1, 3, 2, 4});
  Tensor cols = reshape(win, {N, G, L_out, cg * K});               // (N, G, L_out, cg*K)
  Tensor wg = reshape(w, {G, og, cg * K}).transpose(1, 2);         // (G, cg*K, og)
  Tensor y = matmul(cols, wg);                                     // (N, G, L_out, og)
  y = reshape(y.permute({0, 1, 3, 2}), {N, C_out, L_out});        // (N, C_out, L_out)
  if (bias.defined()) y = y + reshape(bias, {C_out, 1});
  return y;
}

void set_conv1d_cpu_path(Conv1dCpuPath path) {
  switch (path) {
    case Conv1dCpuPath::automatic: cpu::set_conv1d_algo(cpu::Conv1dAlgo::automatic); break;
    case Conv1dCpuPath::direct: cpu::set_conv1d_algo(cpu::Conv1dAlgo::direct); break;
    case Conv1dCpuPath::im2col: cpu::set_conv1d_algo(cpu::Conv1dAlgo::im2col); break;
  }
}
Conv1dCpuPath conv1d_cpu_path() {
  switch (cpu::conv1d_algo()) {
    case cpu::Conv1dAlgo::direct: return Conv1dCpuPath::direct;
    case cpu::Conv1dAlgo::im2col: return Conv1dCpuPath::im2col;
    case cpu::Conv1dAlgo::automatic: break;
  }
  return Conv1dCpuPath::automatic;
}

}  // namespace ember
