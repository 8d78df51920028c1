// The int8 ops (ember/nn/quantized.h): quantize_rows and linear_int8, through the op path, and
// the helpers for the packed layout. Kernels: src/cpu/int8_gemm.cpp, kernels/int8_gemm.cu.
#include "ember/ops/ops.h"

#include <cstring>
#include <vector>

#include "ember/autograd/grad_mode.h"
#include "ember/core/error.h"
#include "ember/nn/quantized.h"
#include "ops/common.h"
#include "ops/dispatch.h"
#include "ops/op_call.h"
#include "prim/primitives.h"

namespace ember {
namespace {

// Sums of K int8 products stay inside int32 for K <= 2^31 / 127^2.
constexpr int64_t kMaxK = 131072;

int64_t k4_of(int64_t K) { return (K + 3) / 4; }

void check_no_grad(const char* op, const Tensor& x) {
  EMBER_CHECK(!(grad_enabled() && x.requires_grad()), op,
              "is inference-only (int8, no backward), but its input requires a gradient: run it under NoGradGuard, "
              "or detach the input");
}

// x floating (..., K) -> f32 contiguous (M, K).
Tensor rows_f32(const Tensor& x, int64_t K) { return contiguous(to_dtype(reshape(x.detach(), {-1, K}), DType::f32)); }

QuantizedRows quantize_2d(const Tensor& x2, int64_t M, int64_t K) {
  QuantizedRows r;
  r.q = detail::make_tensor({M, k4_of(K)}, DType::i32, x2.device(), "quantize_rows");
  r.scale = detail::make_tensor({M}, DType::f32, x2.device(), "quantize_rows");
  if (M > 0) backend::call<prim::quantize_rows>(x2.device(), x2, r.q, r.scale, M, K);
  return r;
}

}  // namespace

std::vector<Tensor> op_outputs(const QuantizedRows& r) { return {r.q, r.scale}; }

QuantizedRows quantize_rows(const Tensor& x_in) {
  detail::OpScope scope(OpId::quantize_rows, x_in);
  const Tensor& x = scope.in(0, x_in);
  const char* op = "quantize_rows";
  EMBER_CHECK(x.defined(), op, "input is an undefined tensor");
  EMBER_CHECK(is_floating(x.dtype()) && x.dim() >= 1, op, "needs a floating tensor of at least one dim, got ",
              detail::describe(x));
  check_no_grad(op, x);
  const int64_t K = x.size(-1);
  EMBER_CHECK(K <= kMaxK, op, "rows of ", K, " values exceed the int32-exact limit of ", kMaxK);
  const Tensor x2 = rows_f32(x, K);
  QuantizedRows r = quantize_2d(x2, x2.size(0), K);
  Shape qs = x.shape(), ss = x.shape();
  qs.back() = k4_of(K);
  ss.pop_back();
  r.q = reshape(r.q, qs);
  r.scale = reshape(r.scale, ss);
  return scope.done(std::move(r));
}

Tensor linear_int8(const Tensor& x_in, const Tensor& wq_in, const Tensor& ws_in, const Tensor& bias_in) {
  detail::OpScope scope(OpId::linear_int8, x_in, wq_in, ws_in, bias_in);
  const Tensor& x = scope.in(0, x_in);
  const Tensor& wq = scope.in(1, wq_in);
  const Tensor& ws = scope.in(2, ws_in);
  const Tensor& bias = scope.in(3, bias_in);
  const char* op = "linear_int8";
  EMBER_CHECK(x.defined() && wq.defined(), op, "input and weight must be defined tensors");
  detail::check_same_device(op, detail::defined_of({x, wq, ws, bias}));
  EMBER_CHECK(wq.dim() == 2 && wq.dtype() == DType::i32, op,
              "weight must be the packed int8 rows, i32 (out_features, ceil(in_features / 4)), got ",
              detail::describe(wq));
  const int64_t N = wq.size(0), K4 = wq.size(1);
  check_no_grad(op, x);
  Tensor w = contiguous(wq.detach());
  if (x.dtype() == DType::i32) {  // already quantised: the raw int32 sums
    EMBER_CHECK(!ws.defined() && !bias.defined(), op,
                "an i32 (already quantised) input gives the raw int32 sums: weight_scale and bias must be undefined");
    EMBER_CHECK(x.dim() == 2 && x.size(1) == K4, op, "quantised input ", detail::describe(x), " must be (M, ", K4,
                ") for weight ", detail::describe(wq));
    EMBER_CHECK(K4 * 4 <= kMaxK + 3, op, "rows of ", K4 * 4, " int8 values exceed the int32-exact limit of ", kMaxK);
    const int64_t M = x.size(0);
    Tensor out = detail::make_tensor({M, N}, DType::i32, x.device(), op);
    backend::call<prim::int8_gemm>(x.device(), contiguous(x.detach()), w, Tensor(), Tensor(), Tensor(), out, M, N, K4);
    return scope.done(out);
  }
  EMBER_CHECK(is_floating(x.dtype()) && x.dim() >= 1, op,
              "input must be floating (quantised per row here) or i32 "
              "(already quantised), got ",
              detail::describe(x));
  const int64_t K = x.size(-1);
  EMBER_CHECK(k4_of(K) == K4, op, "input ", detail::describe(x), " has ", K, " features, but weight ",
              detail::describe(wq), " holds rows of ", K4, " packed elements (", K4 * 4 - 3, "..", K4 * 4,
              " features)");
  EMBER_CHECK(K <= kMaxK, op, "rows of ", K, " values exceed the int32-exact limit of ", kMaxK);
  EMBER_CHECK(ws.defined() && ws.dim() == 1 && ws.size(0) == N && ws.dtype() == DType::f32, op,
              "weight_scale must be f32 (", N, "), got ", ws.defined() ? detail::describe(ws) : "undefined");
  if (bias.defined()) {
    EMBER_CHECK(bias.dim() == 1 && bias.size(0) == N && bias.dtype() == DType::f32, op, "bias must be f32 (", N,
                "), got ", detail::describe(bias));
  }
  const Tensor x2 = rows_f32(x, K);
  const int64_t M = x2.size(0);
  QuantizedRows qx = quantize_2d(x2, M, K);
  Tensor out = detail::make_tensor({M, N}, DType::f32, x.device(), op);
  backend::call<prim::int8_gemm>(x.device(), qx.q, w, qx.scale, contiguous(ws.detach()),
                                 bias.defined() ? contiguous(bias.detach()) : Tensor(), out, M, N, K4);
  Shape os = x.shape();
  os.back() = N;
  return scope.done(reshape(out, os));
}

}  // namespace ember

namespace ember::nn {

Tensor pack_int8(const std::vector<int8_t>& values, const Shape& shape, Device device) {
  EMBER_CHECK(!shape.empty(), "pack_int8", "needs a shape of at least one dim");
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
  const int64_t K = shape.back(), K4 = k4_of(K);
  EMBER_CHECK(static_cast<int64_t>(values.size()) == rows * K, "pack_int8", "shape ", shape_str(shape), " needs ",
              rows * K, " values, got ", values.size());
  std::vector<int32_t> packed(static_cast<size_t>(rows * K4), 0);
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(reinterpret_cast<int8_t*>(packed.data() + r * K4), values.data() + r * K, static_cast<size_t>(K));
  Shape ps = shape;
  ps.back() = K4;
  return to_device(from_vector(packed, ps), device);
}

std::vector<int8_t> unpack_int8(const Tensor& q, int64_t K) {
  EMBER_CHECK(q.defined() && q.dtype() == DType::i32 && q.dim() >= 1 && q.size(-1) == k4_of(K), "unpack_int8",
              "needs i32 (..., ", k4_of(K), ") for ", K, " values a row, got ",
              q.defined() ? detail::describe(q) : "undefined");
  Tensor h = contiguous(to_device(q.detach(), Device::cpu()));
  const int64_t K4 = k4_of(K), rows = h.numel() / std::max<int64_t>(K4, 1);
  std::vector<int8_t> out(static_cast<size_t>(rows * K));
  const auto* p = static_cast<const int32_t*>(h.data_ptr());
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(out.data() + r * K, reinterpret_cast<const int8_t*>(p + r * K4), static_cast<size_t>(K));
  return out;
}

Tensor dequantize_rows(const Tensor& q, const Tensor& scale, int64_t K) {
  std::vector<int8_t> v = unpack_int8(q, K);
  std::vector<float> f(v.begin(), v.end());
  Shape s = q.shape();
  s.back() = K;
  EMBER_CHECK(scale.defined() && scale.numel() * K == static_cast<int64_t>(v.size()), "dequantize_rows",
              "scale must hold one value per row of ", shape_str(s), ", got ",
              scale.defined() ? detail::describe(scale) : "undefined");
  Tensor values = from_vector(f, s);
  Tensor sc = reshape(to_dtype(to_device(scale.detach(), Device::cpu()), DType::f32), Shape{scale.numel(), 1});
  return to_device(reshape(mul(reshape(values, {-1, K}), sc), s), q.device());
}

}  // namespace ember::nn
