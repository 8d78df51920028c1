// The device-parity table: every op of ember/ops/ops.h on each available device against the CPU
// backend on the same random inputs, as rows of the op harness run in its devices mode
// (op_harness.h): the stand-in device fake:0 always, cuda:0 too on a GPU machine, so this suite
// runs whole in CI. Elementwise ops (comparisons, where, masked_fill, clamp, pow, in-place ops
// and copies into strided views), reductions with dims and keepdim, softmax, arg-reductions,
// matmul/bmm/linear under both GEMM backends, indexing, joining, views, and to_dtype between
// every pair of dtypes; in f32, f64, f16, bf16 and the integer dtypes; on contiguous, transposed
// and strided-slice inputs built on the device, with poisoned allocations.
//
// Tolerances by result dtype (f32 ~1e-5 relative, f16 ~1e-2, bf16 ~3e-2, integers and bool
// exact); sums over K terms (Sum::gemm, Sum::reduce, Sum::given) also get an absolute slack that
// grows with sqrt(K), the typical size of such a sum of N(0, 1) terms.
// EMBER_TEST_OP=name[,name*] runs only the named entries (as in the op harness).
//
// The device's other behaviour is in test_cuda_device.cpp (copies, creation, mixed-device
// errors, memory, the stand-in) and test_cuda_train.cpp (gradients, Module::to and training,
// random streams); the CUDA runtime API in test_cuda_runtime.cpp.
#include <doctest/doctest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "device_util.h"
#include "op_harness.h"
#include "test_util.h"

using namespace ember;
using ember_test::device_case;
using ember_test::Dist;
using ember_test::kNoLayouts;
using ember_test::Mode;
using ember_test::OpCase;
using ember_test::run_cases;
using ember_test::ShapeSet;
using ember_test::Sum;
namespace ecuda = ember::cuda;
using V = std::vector<Tensor>;

namespace {

using namespace ember_test::device;

// Index tensors and masks for lambdas: drawn on the CPU with a fixed seed, moved next to x.
Tensor index_like(const Tensor& x, int64_t bound, const Shape& shape, uint64_t seed) {
  return ember_test::random_index(bound, shape, seed).to(x.device());
}
Tensor mask_like(const Tensor& x, const Shape& shape, uint64_t seed) {
  return ember_test::random_mask(shape, seed).to(x.device());
}
Tensor ids_like(const Tensor& x, const std::vector<int64_t>& v) {
  return from_vector<int64_t>(v, {static_cast<int64_t>(v.size())}).to(x.device());
}

std::vector<ShapeSet> one(const std::string& label, std::vector<Shape> shapes) { return {{label, std::move(shapes)}}; }

std::vector<ShapeSet> unary_sets() {
  auto s = ember_test::unary_shapes();
  s.push_back({"large (129, 1031)", {{129, 1031}}});
  s.push_back({"empty (0, 5)", {{0, 5}}});
  return s;
}
std::vector<ShapeSet> binary_sets() {
  auto s = ember_test::binary_shapes();
  s.push_back({"large (129, 1031) (129, 1031)", {{129, 1031}, {129, 1031}}});
  s.push_back({"large broadcast (129, 1) (1, 1031)", {{129, 1}, {1, 1031}}});
  s.push_back({"empty (0, 5) (1, 5)", {{0, 5}, {1, 5}}});
  return s;
}
std::vector<ShapeSet> reduce_sets() {
  auto s = ember_test::reduce_shapes();
  s.push_back({"long rows (3, 5, 4099)", {{3, 5, 4099}}});
  s.push_back({"long middle (3, 4099, 5)", {{3, 4099, 5}}});
  s.push_back({"long first (4099, 3, 2)", {{4099, 3, 2}}});
  return s;
}

// --- the op tables -----------------------------------------------------------------------------

std::vector<OpCase> elementwise_cases() {
  const auto un = unary_sets();
  const auto bin = binary_sets();
  const Dist pos = Dist::positive, away = Dist::away_from_zero, normal = Dist::normal;
  auto bcast = [](const V& x) { return broadcast_shapes(x[0].shape(), x[1].shape(), "test"); };
  return {
      device_case("add", bin, [](const V& x) { return add(x[0], x[1]); }, kNumeric),
      device_case("add_alpha", bin, [](const V& x) { return add(x[0], x[1], -1.75); }, kFloats),
      device_case("sub", bin, [](const V& x) { return sub(x[0], x[1]); }, kNumeric),
      device_case("mul", bin, [](const V& x) { return mul(x[0], x[1]); }, kNumeric),
      device_case("div", bin, [](const V& x) { return div(x[0], x[1]); }, kFloatsI64, {normal, away}),
      device_case("pow", bin, [](const V& x) { return pow(x[0], x[1]); }, kFloats, {pos, normal}),
      device_case("pow_scalar", un, [](const V& x) { return pow(x[0], 2.5); }, kFloats, {pos}),
      device_case("pow_scalar_int", un, [](const V& x) { return pow(x[0], 3.0); }, kFloats),
      device_case("pow_scalar_neg", un, [](const V& x) { return pow(x[0], -1.5); }, kFloats, {pos}),
      device_case("maximum", bin, [](const V& x) { return maximum(x[0], x[1]); }, kNumeric),
      device_case("minimum", bin, [](const V& x) { return minimum(x[0], x[1]); }, kNumeric),
      // comparisons against a mix of equal and different values, so eq/le/ge see ties
      device_case("eq", bin, [=](const V& x) { return eq(x[0], where(mask_like(x[0], bcast(x), 31), x[0], x[1])); }, kNumeric),
      device_case("ne", bin, [=](const V& x) { return ne(x[0], where(mask_like(x[0], bcast(x), 32), x[0], x[1])); }, kNumeric),
      device_case("lt", bin, [](const V& x) { return lt(x[0], x[1]); }, kNumeric),
      device_case("le", bin, [=](const V& x) { return le(x[0], where(mask_like(x[0], bcast(x), 33), x[0], x[1])); }, kNumeric),
      device_case("gt", bin, [](const V& x) { return gt(x[0], x[1]); }, kNumeric),
      device_case("ge", bin, [=](const V& x) { return ge(x[0], where(mask_like(x[0], bcast(x), 34), x[0], x[1])); }, kNumeric),
      device_case("logical_and", bin, [](const V& x) { return logical_and(gt(x[0], zeros_like(x[0])), lt(x[1], zeros_like(x[1]))); }, {DType::f32}),
      device_case("logical_or", bin, [](const V& x) { return logical_or(gt(x[0], zeros_like(x[0])), lt(x[1], zeros_like(x[1]))); }, {DType::f32}),
      device_case("logical_not", un, [](const V& x) { return logical_not(gt(x[0], zeros_like(x[0]))); }, {DType::f32, DType::i64}),
      device_case("neg", un, [](const V& x) { return neg(x[0]); }, kNumeric),
      device_case("exp", un, [](const V& x) { return exp(x[0]); }, kFloats),
      device_case("exp_of_int", one("(7, 13)", {{7, 13}}), [](const V& x) { return exp(x[0]); }, {DType::i32, DType::i64}, {Dist::near_one}),
      device_case("log", un, [](const V& x) { return log(x[0]); }, kFloats, {pos}),
      device_case("log1p", un, [](const V& x) { return log1p(x[0]); }, kFloats, {pos}),
      device_case("sqrt", un, [](const V& x) { return sqrt(x[0]); }, kFloats, {pos}),
      device_case("rsqrt", un, [](const V& x) { return rsqrt(x[0]); }, kFloats, {pos}),
      device_case("abs", un, [](const V& x) { return abs(x[0]); }, kNumeric, {away}),
      device_case("tanh", un, [](const V& x) { return tanh(x[0]); }, kFloats),
      device_case("sigmoid", un, [](const V& x) { return sigmoid(x[0]); }, kFloats),
      device_case("relu", un, [](const V& x) { return relu(x[0]); }, kFloats, {away}),
      device_case("gelu", un, [](const V& x) { return gelu(x[0]); }, kFloats),
      device_case("gelu_tanh", un, [](const V& x) { return gelu(x[0], "tanh"); }, kFloats),
      device_case("silu", un, [](const V& x) { return silu(x[0]); }, kFloats),
      device_case("clamp", un, [](const V& x) { return clamp(x[0], -0.45, 0.55); }, kFloats),
      device_case("clamp_lo", un, [](const V& x) { return clamp(x[0], -0.45, std::nullopt); }, kFloats),
      device_case("clamp_hi", un, [](const V& x) { return clamp(x[0], std::nullopt, 0.55); }, kFloats),
      device_case("clamp_int", un, [](const V& x) { return clamp(x[0], -3.0, 4.0); }, {DType::i32, DType::i64}),
      device_case("where", bin, [=](const V& x) { return where(mask_like(x[0], bcast(x), 11), x[0], x[1]); }, kFloatsI64),
      device_case("where_broadcast_cond", bin,
       [=](const V& x) {
         Shape s = bcast(x);
         return where(mask_like(x[0], s.empty() ? Shape{} : Shape{s.back()}, 12), x[0], x[1]);
       },
       kFloatsI64),
      device_case("masked_fill", un, [](const V& x) { return masked_fill(x[0], mask_like(x[0], x[0].shape(), 13), -2.5); }, kFloatsI64),
      device_case("masked_fill_broadcast", un,
       [](const V& x) {
         Shape ms = x[0].dim() == 0 ? Shape{} : Shape{x[0].size(-1)};
         return masked_fill(x[0], mask_like(x[0], ms, 14), 0.75);
       },
       kFloats),
      device_case("operators", bin, [](const V& x) { return x[0] * x[1] + x[0] / x[1] - (-x[0]) - x[1]; }, kFloats, {normal, away}),
      device_case("scalar_ops", un, [](const V& x) { return ((x[0] + 0.5) * 1.5 - 2.0) / 4.0 + (3.0 - x[0]) + 2.0 * x[0]; }, kFloats),
      device_case("scalar_rdiv", un, [](const V& x) { return 1.5 / x[0]; }, kFloats, {away}),
      device_case("cpu_scalar_tensor_operand", un,
       [](const V& x) { return x[0] * scalar_tensor(-1.25, x[0].dtype()) + scalar_tensor(0.5, x[0].dtype()); }, kFloats),
      device_case("expanded_input", one("(1, 13) (7, 13)", {{1, 13}, {7, 13}}),
       [](const V& x) { return mul(expand(x[0], {7, -1}), x[1]); }, kNumeric),
      // in-place ops write straight into device memory, including strided views
      device_case("inplace_add_mul", bin,
       [](const V& x) {
         Tensor y = contiguous(expand(x[0], broadcast_shapes(x[0].shape(), x[1].shape(), "test"))).clone();
         y.add_(x[1], 0.5);
         y.mul_(x[1]);
         y.mul_(1.5);
         return y;
       },
       kFloats),
      device_case("inplace_fill_zero", un,
       [](const V& x) {
         Tensor y = x[0].clone();
         y.fill_(0.25);
         y.add_(x[0]);
         Tensor z = x[0].clone();
         z.zero_();
         return y - z;
       },
       kNumeric),
      device_case("copy_into_strided_view", one("(7, 13)", {{7, 13}}),
       [](const V& x) {
         Tensor buf = zeros({7, 29}, TensorOptions(x[0].dtype()).with_device(x[0].device()));
         narrow(buf, 1, 5, 13).copy_(x[0]);
         slice(buf, 1, 20, 27, 1).copy_(narrow(x[0], 1, 0, 7).t().contiguous().t());
         return buf;
       },
       kNumeric),
      device_case("copy_converts_and_broadcasts", one("(13)", {{13}}),
       [](const V& x) {
         Tensor y = zeros({5, 13}, TensorOptions(DType::f64).with_device(x[0].device()));
         y.copy_(x[0]);
         return y;
       },
       kNumeric),
  };
}

std::vector<OpCase> reduction_cases() {
  const auto r = reduce_sets();
  const auto small = ember_test::reduce_shapes();
  const Dist near1 = Dist::near_one;
  const Sum red = Sum::reduce;
  return {
      device_case("sum", r, [](const V& x) { return sum(x[0]); }, kNumeric, {}, red),
      device_case("sum_dim", r, [](const V& x) { return sum(x[0], {1}); }, kNumeric, {}, red),
      device_case("sum_dims_keepdim", r, [](const V& x) { return sum(x[0], {0, 2}, true); }, kFloatsI64, {}, red),
      device_case("sum_first_dim", r, [](const V& x) { return sum(x[0], {0}); }, kFloats, {}, red),
      device_case("sum_neg_dim", r, [](const V& x) { return sum(x[0], {-1}); }, kFloats, {}, red),
      device_case("sum_empty", one("(0, 5)", {{0, 5}}), [](const V& x) { return sum(x[0], {0}); }, kFloats),
      device_case("mean", r, [](const V& x) { return mean(x[0]); }, kFloats, {}, red),
      device_case("mean_dims", r, [](const V& x) { return mean(x[0], {0, 2}); }, kFloats, {}, red),
      device_case("mean_keepdim", r, [](const V& x) { return mean(x[0], {1}, true); }, kFloats, {}, red),
      device_case("prod", small, [](const V& x) { return prod(x[0]); }, kFloats, {near1}, red),
      device_case("prod_dim", small, [](const V& x) { return prod(x[0], {1}); }, kFloats, {near1}, red),
      device_case("prod_keepdim", small, [](const V& x) { return prod(x[0], {2}, true); }, kFloats, {near1}, red),
      device_case("var", r, [](const V& x) { return var(x[0]); }, kFloats, {}, red),
      device_case("var_dims", r, [](const V& x) { return var(x[0], {1, 2}); }, kFloats, {}, red),
      device_case("var_correction0_keepdim", r, [](const V& x) { return var(x[0], {2}, 0, true); }, kFloats, {}, red),
      device_case("amax", r, [](const V& x) { return amax(x[0]); }, kFloatsI64),
      device_case("amax_dims_keepdim", r, [](const V& x) { return amax(x[0], {0, 2}, true); }, kFloatsI64),
      device_case("amin", r, [](const V& x) { return amin(x[0], {1}); }, kFloatsI64),
      device_case("max_dim_values", r, [](const V& x) { return max(x[0], 1).values; }, kFloatsI64),
      device_case("max_dim_indices", r, [](const V& x) { return max(x[0], 1).indices; }, kFloatsI64),
      device_case("max_dim_keepdim", r, [](const V& x) { return max(x[0], -1, true).indices; }, kFloats),
      device_case("min_dim_values", r, [](const V& x) { return min(x[0], 0).values; }, kFloatsI64),
      device_case("min_dim_indices", r, [](const V& x) { return min(x[0], 0).indices; }, kFloatsI64),
      device_case("max_all", r, [](const V& x) { return max(x[0]); }, kFloatsI64),
      device_case("min_all", r, [](const V& x) { return min(x[0]); }, kFloatsI64),
      // f16/bf16 and integers round many values onto the same one: the first index must win
      device_case("argmax_all", r, [](const V& x) { return argmax(x[0]); }, kFloatsI64),
      device_case("argmax_dim", r, [](const V& x) { return argmax(x[0], 2); }, kFloatsI64),
      device_case("argmax_keepdim", r, [](const V& x) { return argmax(x[0], 1, true); }, kFloatsI64),
      device_case("argmin_dim", r, [](const V& x) { return argmin(x[0], 0); }, kFloatsI64),
      device_case("softmax", r, [](const V& x) { return softmax(x[0], -1); }, kFloats),
      device_case("softmax_dim0", r, [](const V& x) { return softmax(x[0], 0); }, kFloats),
      device_case("softmax_large_values", one("(7, 1031)", {{7, 1031}}), [](const V& x) { return softmax(x[0] * 30.0, 1); }, kFloats),
      device_case("log_softmax", r, [](const V& x) { return log_softmax(x[0], -1); }, kFloats),
      device_case("log_softmax_dim1", r, [](const V& x) { return log_softmax(x[0], 1); }, kFloats),
  };
}

std::vector<ShapeSet> matmul_sets() {
  return {
      {"2-D (3, 4) @ (4, 5)", {{3, 4}, {4, 5}}},
      {"size-1 (1, 4) @ (4, 1)", {{1, 4}, {4, 1}}},
      {"K=1 (37, 1) @ (1, 29)", {{37, 1}, {1, 29}}},
      {"1-D dot (53) @ (53)", {{53}, {53}}},
      {"1-D @ 2-D (53) @ (53, 29)", {{53}, {53, 29}}},
      {"2-D @ 1-D (37, 53) @ (53)", {{37, 53}, {53}}},
      {"odd (37, 53) @ (53, 29)", {{37, 53}, {53, 29}}},
      {"larger (257, 129) @ (129, 65)", {{257, 129}, {129, 65}}},
      {"long K (5, 2051) @ (2051, 7)", {{5, 2051}, {2051, 7}}},
      {"tall (1025, 64) @ (64, 3)", {{1025, 64}, {64, 3}}},
      {"batched (3, 37, 53) @ (3, 53, 29)", {{3, 37, 53}, {3, 53, 29}}},
      {"broadcast batch (2, 1, 37, 53) @ (3, 53, 29)", {{2, 1, 37, 53}, {3, 53, 29}}},
      {"batched @ 2-D (3, 37, 53) @ (53, 29)", {{3, 37, 53}, {53, 29}}},
      {"batched @ 1-D (3, 37, 53) @ (53)", {{3, 37, 53}, {53}}},
      {"1-D @ batched (53) @ (3, 53, 29)", {{53}, {3, 53, 29}}},
  };
}

std::vector<OpCase> gemm_cases() {
  const Sum g = Sum::gemm;
  return {
      device_case("matmul", matmul_sets(), [](const V& x) { return matmul(x[0], x[1]); }, kFloats, {}, g),
      device_case("matmul_a_transposed", {{"(53, 37)^T @ (53, 29)", {{53, 37}, {53, 29}}}, {"(129, 257)^T @ (129, 65)", {{129, 257}, {129, 65}}}},
       [](const V& x) { return matmul(x[0].t(), x[1]); }, kFloats, {}, Sum::given, 129),
      device_case("matmul_b_transposed", {{"(37, 53) @ (29, 53)^T", {{37, 53}, {29, 53}}}, {"(257, 129) @ (65, 129)^T", {{257, 129}, {65, 129}}}},
       [](const V& x) { return matmul(x[0], x[1].t()); }, kFloats, {}, g),
      device_case("matmul_both_transposed", one("(53, 37)^T @ (29, 53)^T", {{53, 37}, {29, 53}}),
       [](const V& x) { return matmul(x[0].t(), x[1].t()); }, kFloats, {}, Sum::given, 53),
      device_case("linear",
       {{"odd (37, 53) W (29, 53) b (29)", {{37, 53}, {29, 53}, {29}}},
        {"tensor-core shapes (3, 64, 128) W (96, 128) b (96)", {{3, 64, 128}, {96, 128}, {96}}},
        {"1-D (53) W (29, 53) b (29)", {{53}, {29, 53}, {29}}}},
       [](const V& x) { return linear(x[0], x[1], x[2]); }, kFloats, {}, g),
      device_case("linear_no_bias", one("(257, 129) W (65, 129)", {{257, 129}, {65, 129}}),
       [](const V& x) { return linear(x[0], x[1]); }, kFloats, {}, g),
      device_case("matmul_sliced_rows", one("(74, 53)[::2] @ (53, 29)", {{74, 53}, {53, 29}}),
       [](const V& x) { return matmul(slice(x[0], 0, 0, 74, 2), x[1]); }, kFloats, {}, g),
      device_case("bmm",
       {{"(3, 4, 5) @ (3, 5, 2)", {{3, 4, 5}, {3, 5, 2}}},
        {"size-1 (1, 7, 3) @ (1, 3, 13)", {{1, 7, 3}, {1, 3, 13}}},
        {"odd (5, 37, 53) @ (5, 53, 29)", {{5, 37, 53}, {5, 53, 29}}},
        {"larger (2, 257, 129) @ (2, 129, 65)", {{2, 257, 129}, {2, 129, 65}}}},
       [](const V& x) { return bmm(x[0], x[1]); }, kFloats, {}, g),
      device_case("bmm_transposed_batch", one("(53, 5, 37) -> (5, 37, 53) @ (5, 53, 29)", {{53, 5, 37}, {5, 53, 29}}),
       [](const V& x) { return bmm(permute(x[0], {1, 2, 0}), x[1]); }, kFloats, {}, Sum::given, 53),
      device_case("linear_chain", one("(37, 53) (53, 29) (29)", {{37, 53}, {53, 29}, {29}}),
       [](const V& x) { return tanh(matmul(x[0], x[1]) * 0.1 + x[2]); }, kFloats, {}, g),
  };
}

std::vector<OpCase> indexing_cases() {
  const std::vector<ShapeSet> g2 = {{"(4, 5)", {{4, 5}}}, {"prime (7, 13)", {{7, 13}}}, {"size-1 (1, 6)", {{1, 6}}},
                                    {"large (1031, 67)", {{1031, 67}}}};
  const std::vector<DType> f32_f64 = {DType::f32, DType::f64};
  return {
      device_case("gather_dim1", g2, [](const V& x) { return gather(x[0], 1, index_like(x[0], x[0].size(1), {x[0].size(0), 3}, 21)); }, kFloatsI64),
      device_case("gather_dim0", g2, [](const V& x) { return gather(x[0], 0, index_like(x[0], x[0].size(0), {5, x[0].size(1)}, 22)); }, kFloatsI64),
      device_case("index_select_dim0", g2,
       [](const V& x) {
         int64_t n = x[0].size(0);
         return index_select(x[0], 0, ids_like(x[0], {n - 1, 0, (n - 1) / 2, n - 1}));
       },
       kFloatsI64),
      device_case("index_select_dim1", g2, [](const V& x) { return index_select(x[0], 1, index_like(x[0], x[0].size(1), {7}, 23)); }, kFloatsI64),
      device_case("embedding", {{"(7, 3)", {{7, 3}}}, {"(13, 5)", {{13, 5}}}, {"large (1000, 64)", {{1000, 64}}}},
       [](const V& x) { return embedding(x[0], index_like(x[0], x[0].size(0), {37, 11}, 26)); }, kFloats),
      device_case("embedding_1d_index", one("(6, 4)", {{6, 4}}), [](const V& x) { return embedding(x[0], ids_like(x[0], {5, 1, 1})); }, kFloats),
      device_case("scatter_add", {{"(4, 5) src (4, 3)", {{4, 5}, {4, 3}}}, {"(7, 13) src (7, 13)", {{7, 13}, {7, 13}}}},
       [](const V& x) { return scatter_add(x[0], 1, index_like(x[0], x[0].size(1), x[1].shape(), 24), x[1]); }, kFloats),
      device_case("scatter_add_dim0", one("(3, 4) src (6, 4)", {{3, 4}, {6, 4}}),
       [](const V& x) { return scatter_add(x[0], 0, index_like(x[0], x[0].size(0), x[1].shape(), 25), x[1]); }, kFloats),
      // about 80 sources per slot: atomics on the device, a different order from the CPU
      device_case("scatter_add_many_duplicates", one("(7, 13) src (7, 1031)", {{7, 13}, {7, 1031}}),
       [](const V& x) { return scatter_add(x[0], 1, index_like(x[0], 13, x[1].shape(), 27), x[1]); }, f32_f64, {}, Sum::given, 80),
      device_case("index_add", {{"(5, 3) src (4, 3)", {{5, 3}, {4, 3}}}, {"(7, 2) src (4, 2)", {{7, 2}, {4, 2}}}},
       [](const V& x) { return index_add(x[0], 0, ids_like(x[0], {0, 2, 2, 4}), x[1], 0.7); }, kFloats),
      device_case("index_add_dim1", one("(3, 6) src (3, 4)", {{3, 6}, {3, 4}}),
       [](const V& x) { return index_add(x[0], 1, ids_like(x[0], {5, 1, 1, 0}), x[1]); }, kFloats),
      device_case("index_add_many_duplicates", one("(11, 65) src (1031, 65)", {{11, 65}, {1031, 65}}),
       [](const V& x) { return index_add(x[0], 0, index_like(x[0], 11, {1031}, 28), x[1], -0.5); }, f32_f64, {}, Sum::given, 100),
      device_case("one_hot", {{"(13)", {{13}}}, {"(7, 13)", {{7, 13}}}},
       [](const V& x) { return one_hot(index_like(x[0], 11, x[0].shape(), 29), 11); }, {DType::f32}),
  };
}

std::vector<OpCase> join_cases() {
  return {
      device_case("cat_dim0", one("(2, 3) (4, 3) (1, 3)", {{2, 3}, {4, 3}, {1, 3}}), [](const V& x) { return cat({x[0], x[1], x[2]}, 0); }, kNumeric),
      device_case("cat_dim1", {{"(3, 2) (3, 5)", {{3, 2}, {3, 5}}}, {"large (129, 1031) (129, 17)", {{129, 1031}, {129, 17}}}},
       [](const V& x) { return cat({x[0], x[1]}, 1); }, kNumeric),
      device_case("cat_neg_dim", one("(2, 3, 2) (2, 3, 3)", {{2, 3, 2}, {2, 3, 3}}), [](const V& x) { return cat({x[1], x[0], x[1]}, -1); }, kFloats),
      device_case("cat_with_empty", one("(0, 3) (4, 3)", {{0, 3}, {4, 3}}), [](const V& x) { return cat({x[0], x[1]}, 0); }, kFloats),
      device_case("stack_dim0", one("3 x (3, 4)", {{3, 4}, {3, 4}, {3, 4}}), [](const V& x) { return stack(x, 0); }, kNumeric),
      device_case("stack_dim1", one("2 x (7, 3)", {{7, 3}, {7, 3}}), [](const V& x) { return stack(x, 1); }, kFloats),
      device_case("stack_last", one("2 x (2, 5)", {{2, 5}, {2, 5}}), [](const V& x) { return stack(x, -1); }, kFloats),
      device_case("split", one("(3, 7)", {{3, 7}}),
       [](const V& x) {
         auto p = split(x[0], 3, 1);
         return cat({p.at(2) * 3.0, p.at(0), p.at(1) * 2.0}, 1);
       },
       kFloats),
      device_case("split_sizes", one("(3, 7)", {{3, 7}}),
       [](const V& x) {
         auto p = split_sizes(x[0], {2, 4, 1}, 1);
         return cat({p.at(1) * -1.5, p.at(2), p.at(0) * 2.0}, 1);
       },
       kFloats),
      device_case("chunk", one("(7, 4)", {{7, 4}}),
       [](const V& x) {
         auto p = chunk(x[0], 3, 0);
         return cat({p.at(1) * 0.5, p.at(2) * 3.0, p.at(0)}, 0);
       },
       kFloats),
      device_case("split_views_contiguous", one("(13, 5)", {{13, 5}}),
       [](const V& x) {
         auto p = split(x[0], 4, 0);
         return contiguous(p.at(1)) + contiguous(p.at(2));
       },
       kNumeric),
      device_case("pad_last", {{"(3, 4)", {{3, 4}}}, {"1-D (5)", {{5}}}}, [](const V& x) { return pad(x[0], {1, 2}); }, kNumeric),
      device_case("pad_two_dims", {{"(3, 4)", {{3, 4}}}, {"3-D (2, 3, 5)", {{2, 3, 5}}}},
       [](const V& x) { return pad(x[0], {1, 2, 2, 0}, 0.5); }, kFloats),
      device_case("pad_large", one("(129, 1031)", {{129, 1031}}), [](const V& x) { return pad(x[0], {3, 0, 0, 5}, -1.0); }, kFloats),
  };
}

std::vector<OpCase> view_cases() {
  const auto un = ember_test::unary_shapes();
  std::vector<DType> all = kNumeric;
  all.push_back(DType::boolean);
  auto c = [](const Tensor& t) { return contiguous(t); };
  return {
      device_case("view_merge", one("(3, 4)", {{3, 4}}), [=](const V& x) { return c(view(x[0], {2, 6})); }, all, {}, Sum::none, 0, kNoLayouts),
      device_case("view_infer", one("(3, 4)", {{3, 4}}), [=](const V& x) { return c(view(x[0], {-1})); }, all, {}, Sum::none, 0, kNoLayouts),
      device_case("view_split_last", {{"(3, 4)", {{3, 4}}}, {"(5, 6)", {{5, 6}}}},
       [=](const V& x) { return c(view(x[0], {x[0].size(0), 2, -1})); }, all),
      device_case("reshape", {{"(3, 4)", {{3, 4}}}, {"(2, 6)", {{2, 6}}}}, [=](const V& x) { return c(reshape(x[0], {4, -1})); }, all),
      device_case("reshape_flat", un, [=](const V& x) { return c(reshape(x[0], {-1})); }, all),
      device_case("permute", {{"(2, 3, 4)", {{2, 3, 4}}}, {"large (33, 65, 17)", {{33, 65, 17}}}},
       [=](const V& x) { return c(permute(x[0], {2, 0, 1})); }, all),
      device_case("transpose", one("(2, 3, 4)", {{2, 3, 4}}), [=](const V& x) { return c(transpose(x[0], 0, 2)); }, all),
      device_case("t", {{"(3, 5)", {{3, 5}}}, {"large (1031, 129)", {{1031, 129}}}}, [=](const V& x) { return c(x[0].t()); }, all),
      device_case("narrow", one("(5, 7)", {{5, 7}}), [=](const V& x) { return c(narrow(x[0], 1, 2, 3)); }, all),
      device_case("slice_step3", one("(4, 13)", {{4, 13}}), [=](const V& x) { return c(slice(x[0], 1, 0, 13, 3)); }, all),
      device_case("select", one("(4, 5, 3)", {{4, 5, 3}}), [=](const V& x) { return c(select(x[0], 1, 2)); }, all),
      device_case("expand", {{"(3, 1)", {{3, 1}}}, {"(1, 1)", {{1, 1}}}}, [=](const V& x) { return c(expand(x[0], {x[0].size(0), 4})); }, all),
      device_case("expand_new_dims", one("(1, 3)", {{1, 3}}), [=](const V& x) { return c(expand(x[0], {2, 4, 3})); }, all),
      device_case("broadcast_to", {{"(4, 1)", {{4, 1}}}, {"0-D", {{}}}}, [=](const V& x) { return c(broadcast_to(x[0], {2, 4, 3})); }, all),
      device_case("squeeze_all", one("(3, 1, 4, 1)", {{3, 1, 4, 1}}), [=](const V& x) { return c(squeeze(x[0])); }, all),
      device_case("squeeze_dim", one("(3, 1, 4, 1)", {{3, 1, 4, 1}}), [=](const V& x) { return c(squeeze(x[0], 1)); }, all),
      device_case("select_neg_index", one("(4, 5)", {{4, 5}}), [=](const V& x) { return c(select(x[0], 0, -1)); }, all),
      device_case("flatten_all", un, [=](const V& x) { return c(flatten(x[0])); }, all),
      device_case("unsqueeze", un, [=](const V& x) { return c(unsqueeze(x[0], 0)); }, all),
      device_case("flatten_range", one("(2, 3, 2, 3)", {{2, 3, 2, 3}}), [=](const V& x) { return c(flatten(x[0], 1, 2)); }, all),
      device_case("clone", un, [](const V& x) { return clone(x[0]); }, all),
      device_case("view_then_math", one("(4, 6)", {{4, 6}}),
       [](const V& x) { return narrow(x[0], 0, 1, 2).t() * select(x[0], 1, 3).narrow(0, 0, 2); }, kNumeric),
  };
}

// to_dtype between every pair of dtypes (the source dtype is the case's dtype).
std::vector<OpCase> conversion_cases() {
  const std::vector<DType> all = {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i32, DType::i64, DType::boolean};
  const std::vector<ShapeSet> sets = {{"(7, 13)", {{7, 13}}}, {"large (129, 1031)", {{129, 1031}}}, {"0-D", {{}}}};
  std::vector<OpCase> out;
  for (DType to : all) {
    out.push_back(device_case(std::string("to_dtype_") + dtype_name(to), sets, [to](const V& x) { return to_dtype(x[0], to); }, all));
  }
  return out;
}

}  // namespace

TEST_SUITE("cuda") {
  TEST_CASE("elementwise ops match the CPU") { run_cases(elementwise_cases(), {.mode = Mode::devices}); }

  TEST_CASE("reductions, softmax and arg-reductions match the CPU") {
    run_cases(reduction_cases(), {.mode = Mode::devices});
  }

  TEST_CASE("matmul and bmm match the CPU with both GEMM backends") {
    for (const Device& dev : ember_test::available_devices()) {
      if (!dev.is_cuda()) {  // the stand-in runs the CPU's GEMM: no backend switch
        run_cases(gemm_cases(), {.mode = Mode::devices, .devices = {dev}});
        continue;
      }
      for (ecuda::GemmBackend b : {ecuda::GemmBackend::ember, ecuda::GemmBackend::cublas}) {
        GemmGuard gemm(b);
        CHECK(ecuda::gemm_backend() == b);
        run_cases(gemm_cases(), {.mode = Mode::devices, .devices = {dev}, .tag = std::string(" (") + backend_name(b) + ")"});
      }
    }
  }

  TEST_CASE("gather, scatter, index_select, index_add, embedding, one_hot match the CPU") {
    run_cases(indexing_cases(), {.mode = Mode::devices});
  }

  TEST_CASE("cat, stack, split, chunk, pad match the CPU") { run_cases(join_cases(), {.mode = Mode::devices}); }

  TEST_CASE("views then contiguous match the CPU") { run_cases(view_cases(), {.mode = Mode::devices}); }

  TEST_CASE("to_dtype between every pair of dtypes matches the CPU") {
    run_cases(conversion_cases(), {.mode = Mode::devices});
  }
}
