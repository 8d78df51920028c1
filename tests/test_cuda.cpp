// The device suite: every op of ember/ops/ops.h on the device under test against the CPU
// backend on the same random inputs (drawn on the CPU, copied with .to(device)), plus
// cross-device copies, gradients, Module::to and a training step, random streams, mixed-device
// errors and out-of-memory errors. The device under test is cuda:0 on a GPU machine and the
// stand-in device fake:0 everywhere else (ember_test::test_device(), tests/device_util.h), so
// this suite runs whole in CI: no case skips. The CUDA runtime API itself (streams, events,
// pinned memory, the caching allocator, the two GEMM backends) is in tests/test_cuda_runtime.cpp.
//
// How a parity check works: inputs are drawn in f64 on the CPU and rounded to the dtype under
// test there, so both devices see identical values. The CPU reference runs on contiguous
// inputs; the device op runs on the same values laid out as contiguous, transposed (a
// transposed view of a transposed buffer) and strided-slice (step 2, offset 1) views built on
// the device, so kernels meet real strides. Fresh device allocations are poisoned (0xFF bytes,
// NaN): on CUDA through set_poison_allocations, on the stand-in always, so an output element a
// kernel forgot to write fails the comparison.
//
// Tolerances by result dtype (f32 ~1e-5 relative, f16 ~1e-2, bf16 ~3e-2, integers and bool
// exact); sums over K terms (GEMM, reductions, scatter) also get an absolute slack that grows
// with sqrt(K), the typical size of such a sum of N(0, 1) terms.
// EMBER_TEST_OP=name[,name*] runs only the named parity entries (as in the op harness).
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "device_util.h"
#include "op_harness.h"
#include "test_util.h"

using namespace ember;
using ember_test::close_ratio;
using ember_test::Dist;
using ember_test::ShapeSet;
namespace ecuda = ember::cuda;
using V = std::vector<Tensor>;

namespace {

using namespace ember_test::device;
const std::vector<DType> kFloats = {DType::f32, DType::f64, DType::f16, DType::bf16};
const std::vector<DType> kNumeric = {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i32, DType::i64};
const std::vector<DType> kFloatsI64 = {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i64};


// --- layouts on the device ---------------------------------------------------------------------

enum class Layout { contiguous, transposed, sliced, mixed };
const char* layout_name(Layout l) {
  switch (l) {
    case Layout::contiguous: return "contiguous";
    case Layout::transposed: return "transposed";
    case Layout::sliced: return "sliced";
    case Layout::mixed: return "mixed";
  }
  return "?";
}

constexpr double kFiller = 777.25;  // what lies between the elements of a strided view

// x (a contiguous CPU tensor) on CUDA in the given layout. The buffer is prepared on the CPU
// and uploaded whole; the view is taken on the device, so only metadata changes there.
Tensor to_cuda(const Tensor& x, Layout l, size_t input_index) {
  if (l == Layout::mixed) l = input_index % 2 == 0 ? Layout::transposed : Layout::sliced;
  if (l == Layout::contiguous || x.dim() == 0 || x.numel() == 0) return x.to(kCuda);
  if (l == Layout::transposed) {
    if (x.dim() == 1) {  // column 1 of an (n, 3) buffer: stride 3, offset 1
      Tensor buf = full({x.size(0), 3}, kFiller, x.dtype());
      select(buf, 1, 1).copy_(x);
      return select(buf.to(kCuda), 1, 1);
    }
    return transpose(contiguous(transpose(x, -2, -1)).to(kCuda), -2, -1);
  }
  Shape big;
  for (int64_t s : x.shape()) big.push_back(2 * s + 1);
  Tensor buf = full(big, kFiller, x.dtype());
  auto slice_all = [&](Tensor t) {
    for (int64_t d = 0; d < x.dim(); ++d) t = slice(t, d, 1, 1 + 2 * x.size(d), 2);
    return t;
  };
  slice_all(buf).copy_(x);
  return slice_all(buf.to(kCuda));
}

// --- the parity runner -------------------------------------------------------------------------

enum class Sum { none, reduce, gemm, given };  // how many terms a result element sums

struct Parity {
  std::string name;
  std::vector<ShapeSet> sets;
  std::function<Tensor(const V&)> fn;  // the same lambda runs on both devices
  std::vector<DType> dtypes;
  std::vector<Dist> dists = {};
  Sum sum = Sum::none;
  double terms = 0;     // Sum::given: terms per output element
  bool layouts = true;  // false: contiguous inputs only (view needs compatible strides)
};

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

uint64_t name_seed(const std::string& s, size_t i) {
  uint64_t h = 1469598103934665603ULL;
  for (char ch : s) h = (h ^ static_cast<unsigned char>(ch)) * 1099511628211ULL;
  return h ^ (i * 0x9e3779b97f4a7c15ULL) ^ 0xc0da;
}

// f64 draws rounded to dt on the CPU; integers are the draws times 7, truncated.
Tensor as_dtype(const Tensor& x, DType dt) {
  if (dt == DType::boolean) return gt(x, scalar_tensor(0.0, DType::f64));
  if (is_floating(dt)) return to_dtype(x, dt);
  return to_dtype(x * 7.0, dt);
}

Tol tolerance(const Parity& c, const V& in, const Tensor& ref) {
  Tol t = base_tol(ref.dtype());
  if (t.rtol == 0) return t;
  double n = 0;
  if (c.sum == Sum::gemm && !in.empty()) n = in[0].dim() ? static_cast<double>(in[0].size(-1)) : 1.0;
  if (c.sum == Sum::reduce && !in.empty())
    n = static_cast<double>(in[0].numel()) / static_cast<double>(std::max<int64_t>(1, ref.numel()));
  if (c.sum == Sum::given) n = c.terms;
  if (n > 1) {
    t.atol += t.rtol * std::sqrt(n);
    t.rtol *= 4;  // summation order differs between the devices
  }
  return t;
}

void run_parity(const std::vector<Parity>& cases, const std::string& tag = "") {
  int ran = 0;
  for (const Parity& c : cases) {
    if (!ember_test::op_selected(c.name)) continue;
    ++ran;
    ember_test::OpCase draw;  // make_inputs reads only the distributions
    draw.dists = c.dists;
    for (size_t si = 0; si < c.sets.size(); ++si) {
      const ShapeSet& set = c.sets[si];
      for (DType dt : c.dtypes) {
        std::ostringstream base_ctx;
        base_ctx << c.name << tag << " [" << set.label << ", " << dtype_name(dt);
        V cpu_in;
        Tensor ref;
        try {
          for (const Tensor& x : ember_test::make_inputs(draw, set, name_seed(c.name, si))) cpu_in.push_back(as_dtype(x, dt));
          ref = c.fn(cpu_in);
        } catch (const std::exception& e) {
          FAIL_CHECK(base_ctx.str() << "] the CPU reference threw: " << e.what());
          continue;
        }
        std::vector<Layout> layouts = {Layout::contiguous};
        if (c.layouts) {
          layouts.push_back(Layout::transposed);
          layouts.push_back(Layout::sliced);
          if (cpu_in.size() > 1) layouts.push_back(Layout::mixed);
        }
        const Tol tol = tolerance(c, cpu_in, ref);
        for (Layout l : layouts) {
          const std::string ctx = base_ctx.str() + ", " + layout_name(l) + "]";
          try {
            V dev_in;
            for (size_t i = 0; i < cpu_in.size(); ++i) dev_in.push_back(to_cuda(cpu_in[i], l, i));
            const Tensor out = c.fn(dev_in);
            check_matches(ctx, out, ref, tol);
            for (size_t i = 0; i < dev_in.size(); ++i)  // ops must not write their inputs
              CHECK_MESSAGE(close_ratio(host_f64(dev_in[i]), host_f64(cpu_in[i]), 0, 0) <= 1.0,
                            ctx << ": input " << i << " was modified on CUDA");
          } catch (const std::exception& e) {
            FAIL_CHECK(ctx << " threw on CUDA: " << e.what());
          }
        }
      }
    }
  }
  if (std::getenv("EMBER_TEST_OP")) MESSAGE("EMBER_TEST_OP: ran " << ran << " of " << cases.size() << " entries");
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

std::vector<Parity> elementwise_cases() {
  const auto un = unary_sets();
  const auto bin = binary_sets();
  const Dist pos = Dist::positive, away = Dist::away_from_zero, normal = Dist::normal;
  auto bcast = [](const V& x) { return broadcast_shapes(x[0].shape(), x[1].shape(), "test"); };
  return {
      {"add", bin, [](const V& x) { return add(x[0], x[1]); }, kNumeric},
      {"add_alpha", bin, [](const V& x) { return add(x[0], x[1], -1.75); }, kFloats},
      {"sub", bin, [](const V& x) { return sub(x[0], x[1]); }, kNumeric},
      {"mul", bin, [](const V& x) { return mul(x[0], x[1]); }, kNumeric},
      {"div", bin, [](const V& x) { return div(x[0], x[1]); }, kFloatsI64, {normal, away}},
      {"pow", bin, [](const V& x) { return pow(x[0], x[1]); }, kFloats, {pos, normal}},
      {"pow_scalar", un, [](const V& x) { return pow(x[0], 2.5); }, kFloats, {pos}},
      {"pow_scalar_int", un, [](const V& x) { return pow(x[0], 3.0); }, kFloats},
      {"pow_scalar_neg", un, [](const V& x) { return pow(x[0], -1.5); }, kFloats, {pos}},
      {"maximum", bin, [](const V& x) { return maximum(x[0], x[1]); }, kNumeric},
      {"minimum", bin, [](const V& x) { return minimum(x[0], x[1]); }, kNumeric},
      // comparisons against a mix of equal and different values, so eq/le/ge see ties
      {"eq", bin, [=](const V& x) { return eq(x[0], where(mask_like(x[0], bcast(x), 31), x[0], x[1])); }, kNumeric},
      {"ne", bin, [=](const V& x) { return ne(x[0], where(mask_like(x[0], bcast(x), 32), x[0], x[1])); }, kNumeric},
      {"lt", bin, [](const V& x) { return lt(x[0], x[1]); }, kNumeric},
      {"le", bin, [=](const V& x) { return le(x[0], where(mask_like(x[0], bcast(x), 33), x[0], x[1])); }, kNumeric},
      {"gt", bin, [](const V& x) { return gt(x[0], x[1]); }, kNumeric},
      {"ge", bin, [=](const V& x) { return ge(x[0], where(mask_like(x[0], bcast(x), 34), x[0], x[1])); }, kNumeric},
      {"logical_and", bin, [](const V& x) { return logical_and(gt(x[0], zeros_like(x[0])), lt(x[1], zeros_like(x[1]))); }, {DType::f32}},
      {"logical_or", bin, [](const V& x) { return logical_or(gt(x[0], zeros_like(x[0])), lt(x[1], zeros_like(x[1]))); }, {DType::f32}},
      {"logical_not", un, [](const V& x) { return logical_not(gt(x[0], zeros_like(x[0]))); }, {DType::f32, DType::i64}},
      {"neg", un, [](const V& x) { return neg(x[0]); }, kNumeric},
      {"exp", un, [](const V& x) { return exp(x[0]); }, kFloats},
      {"exp_of_int", one("(7, 13)", {{7, 13}}), [](const V& x) { return exp(x[0]); }, {DType::i32, DType::i64}, {Dist::near_one}},
      {"log", un, [](const V& x) { return log(x[0]); }, kFloats, {pos}},
      {"log1p", un, [](const V& x) { return log1p(x[0]); }, kFloats, {pos}},
      {"sqrt", un, [](const V& x) { return sqrt(x[0]); }, kFloats, {pos}},
      {"rsqrt", un, [](const V& x) { return rsqrt(x[0]); }, kFloats, {pos}},
      {"abs", un, [](const V& x) { return abs(x[0]); }, kNumeric, {away}},
      {"tanh", un, [](const V& x) { return tanh(x[0]); }, kFloats},
      {"sigmoid", un, [](const V& x) { return sigmoid(x[0]); }, kFloats},
      {"relu", un, [](const V& x) { return relu(x[0]); }, kFloats, {away}},
      {"gelu", un, [](const V& x) { return gelu(x[0]); }, kFloats},
      {"silu", un, [](const V& x) { return silu(x[0]); }, kFloats},
      {"clamp", un, [](const V& x) { return clamp(x[0], -0.45, 0.55); }, kFloats},
      {"clamp_lo", un, [](const V& x) { return clamp(x[0], -0.45, std::nullopt); }, kFloats},
      {"clamp_hi", un, [](const V& x) { return clamp(x[0], std::nullopt, 0.55); }, kFloats},
      {"clamp_int", un, [](const V& x) { return clamp(x[0], -3.0, 4.0); }, {DType::i32, DType::i64}},
      {"where", bin, [=](const V& x) { return where(mask_like(x[0], bcast(x), 11), x[0], x[1]); }, kFloatsI64},
      {"where_broadcast_cond", bin,
       [=](const V& x) {
         Shape s = bcast(x);
         return where(mask_like(x[0], s.empty() ? Shape{} : Shape{s.back()}, 12), x[0], x[1]);
       },
       kFloatsI64},
      {"masked_fill", un, [](const V& x) { return masked_fill(x[0], mask_like(x[0], x[0].shape(), 13), -2.5); }, kFloatsI64},
      {"masked_fill_broadcast", un,
       [](const V& x) {
         Shape ms = x[0].dim() == 0 ? Shape{} : Shape{x[0].size(-1)};
         return masked_fill(x[0], mask_like(x[0], ms, 14), 0.75);
       },
       kFloats},
      {"operators", bin, [](const V& x) { return x[0] * x[1] + x[0] / x[1] - (-x[0]) - x[1]; }, kFloats, {normal, away}},
      {"scalar_ops", un, [](const V& x) { return ((x[0] + 0.5) * 1.5 - 2.0) / 4.0 + (3.0 - x[0]) + 2.0 * x[0]; }, kFloats},
      {"scalar_rdiv", un, [](const V& x) { return 1.5 / x[0]; }, kFloats, {away}},
      {"cpu_scalar_tensor_operand", un, [](const V& x) { return x[0] * scalar_tensor(-1.25, x[0].dtype()) + scalar_tensor(0.5, x[0].dtype()); }, kFloats},
      {"expanded_input", one("(1, 13) (7, 13)", {{1, 13}, {7, 13}}), [](const V& x) { return mul(expand(x[0], {7, -1}), x[1]); }, kNumeric},
      // in-place ops write straight into device memory, including strided views
      {"inplace_add_mul", bin,
       [](const V& x) {
         Tensor y = contiguous(expand(x[0], broadcast_shapes(x[0].shape(), x[1].shape(), "test"))).clone();
         y.add_(x[1], 0.5);
         y.mul_(x[1]);
         y.mul_(1.5);
         return y;
       },
       kFloats},
      {"inplace_fill_zero", un,
       [](const V& x) {
         Tensor y = x[0].clone();
         y.fill_(0.25);
         y.add_(x[0]);
         Tensor z = x[0].clone();
         z.zero_();
         return y - z;
       },
       kNumeric},
      {"copy_into_strided_view", one("(7, 13)", {{7, 13}}),
       [](const V& x) {
         Tensor buf = zeros({7, 29}, TensorOptions(x[0].dtype()).with_device(x[0].device()));
         narrow(buf, 1, 5, 13).copy_(x[0]);
         slice(buf, 1, 20, 27, 1).copy_(narrow(x[0], 1, 0, 7).t().contiguous().t());
         return buf;
       },
       kNumeric},
      {"copy_converts_and_broadcasts", one("(13)", {{13}}),
       [](const V& x) {
         Tensor y = zeros({5, 13}, TensorOptions(DType::f64).with_device(x[0].device()));
         y.copy_(x[0]);
         return y;
       },
       kNumeric},
  };
}

std::vector<Parity> reduction_cases() {
  const auto r = reduce_sets();
  const auto small = ember_test::reduce_shapes();
  const Dist near1 = Dist::near_one;
  const Sum red = Sum::reduce;
  return {
      {"sum", r, [](const V& x) { return sum(x[0]); }, kNumeric, {}, red},
      {"sum_dim", r, [](const V& x) { return sum(x[0], {1}); }, kNumeric, {}, red},
      {"sum_dims_keepdim", r, [](const V& x) { return sum(x[0], {0, 2}, true); }, kFloatsI64, {}, red},
      {"sum_first_dim", r, [](const V& x) { return sum(x[0], {0}); }, kFloats, {}, red},
      {"sum_neg_dim", r, [](const V& x) { return sum(x[0], {-1}); }, kFloats, {}, red},
      {"sum_empty", one("(0, 5)", {{0, 5}}), [](const V& x) { return sum(x[0], {0}); }, kFloats},
      {"mean", r, [](const V& x) { return mean(x[0]); }, kFloats, {}, red},
      {"mean_dims", r, [](const V& x) { return mean(x[0], {0, 2}); }, kFloats, {}, red},
      {"mean_keepdim", r, [](const V& x) { return mean(x[0], {1}, true); }, kFloats, {}, red},
      {"prod", small, [](const V& x) { return prod(x[0]); }, kFloats, {near1}, red},
      {"prod_dim", small, [](const V& x) { return prod(x[0], {1}); }, kFloats, {near1}, red},
      {"prod_keepdim", small, [](const V& x) { return prod(x[0], {2}, true); }, kFloats, {near1}, red},
      {"var", r, [](const V& x) { return var(x[0]); }, kFloats, {}, red},
      {"var_dims", r, [](const V& x) { return var(x[0], {1, 2}); }, kFloats, {}, red},
      {"var_correction0_keepdim", r, [](const V& x) { return var(x[0], {2}, 0, true); }, kFloats, {}, red},
      {"amax", r, [](const V& x) { return amax(x[0]); }, kFloatsI64},
      {"amax_dims_keepdim", r, [](const V& x) { return amax(x[0], {0, 2}, true); }, kFloatsI64},
      {"amin", r, [](const V& x) { return amin(x[0], {1}); }, kFloatsI64},
      {"max_dim_values", r, [](const V& x) { return max(x[0], 1).values; }, kFloatsI64},
      {"max_dim_indices", r, [](const V& x) { return max(x[0], 1).indices; }, kFloatsI64},
      {"max_dim_keepdim", r, [](const V& x) { return max(x[0], -1, true).indices; }, kFloats},
      {"min_dim_values", r, [](const V& x) { return min(x[0], 0).values; }, kFloatsI64},
      {"min_dim_indices", r, [](const V& x) { return min(x[0], 0).indices; }, kFloatsI64},
      {"max_all", r, [](const V& x) { return max(x[0]); }, kFloatsI64},
      {"min_all", r, [](const V& x) { return min(x[0]); }, kFloatsI64},
      // f16/bf16 and integers round many values onto the same one: the first index must win
      {"argmax_all", r, [](const V& x) { return argmax(x[0]); }, kFloatsI64},
      {"argmax_dim", r, [](const V& x) { return argmax(x[0], 2); }, kFloatsI64},
      {"argmax_keepdim", r, [](const V& x) { return argmax(x[0], 1, true); }, kFloatsI64},
      {"argmin_dim", r, [](const V& x) { return argmin(x[0], 0); }, kFloatsI64},
      {"softmax", r, [](const V& x) { return softmax(x[0], -1); }, kFloats},
      {"softmax_dim0", r, [](const V& x) { return softmax(x[0], 0); }, kFloats},
      {"softmax_large_values", one("(7, 1031)", {{7, 1031}}), [](const V& x) { return softmax(x[0] * 30.0, 1); }, kFloats},
      {"log_softmax", r, [](const V& x) { return log_softmax(x[0], -1); }, kFloats},
      {"log_softmax_dim1", r, [](const V& x) { return log_softmax(x[0], 1); }, kFloats},
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

std::vector<Parity> gemm_cases() {
  const Sum g = Sum::gemm;
  return {
      {"matmul", matmul_sets(), [](const V& x) { return matmul(x[0], x[1]); }, kFloats, {}, g},
      {"matmul_a_transposed", {{"(53, 37)^T @ (53, 29)", {{53, 37}, {53, 29}}}, {"(129, 257)^T @ (129, 65)", {{129, 257}, {129, 65}}}},
       [](const V& x) { return matmul(x[0].t(), x[1]); }, kFloats, {}, Sum::given, 129},
      {"matmul_b_transposed", {{"(37, 53) @ (29, 53)^T", {{37, 53}, {29, 53}}}, {"(257, 129) @ (65, 129)^T", {{257, 129}, {65, 129}}}},
       [](const V& x) { return matmul(x[0], x[1].t()); }, kFloats, {}, g},
      {"matmul_both_transposed", one("(53, 37)^T @ (29, 53)^T", {{53, 37}, {29, 53}}),
       [](const V& x) { return matmul(x[0].t(), x[1].t()); }, kFloats, {}, Sum::given, 53},
      {"linear",
       {{"odd (37, 53) W (29, 53) b (29)", {{37, 53}, {29, 53}, {29}}},
        {"tensor-core shapes (3, 64, 128) W (96, 128) b (96)", {{3, 64, 128}, {96, 128}, {96}}},
        {"1-D (53) W (29, 53) b (29)", {{53}, {29, 53}, {29}}}},
       [](const V& x) { return linear(x[0], x[1], x[2]); }, kFloats, {}, g},
      {"linear_no_bias", one("(257, 129) W (65, 129)", {{257, 129}, {65, 129}}),
       [](const V& x) { return linear(x[0], x[1]); }, kFloats, {}, g},
      {"matmul_sliced_rows", one("(74, 53)[::2] @ (53, 29)", {{74, 53}, {53, 29}}),
       [](const V& x) { return matmul(slice(x[0], 0, 0, 74, 2), x[1]); }, kFloats, {}, g},
      {"bmm",
       {{"(3, 4, 5) @ (3, 5, 2)", {{3, 4, 5}, {3, 5, 2}}},
        {"size-1 (1, 7, 3) @ (1, 3, 13)", {{1, 7, 3}, {1, 3, 13}}},
        {"odd (5, 37, 53) @ (5, 53, 29)", {{5, 37, 53}, {5, 53, 29}}},
        {"larger (2, 257, 129) @ (2, 129, 65)", {{2, 257, 129}, {2, 129, 65}}}},
       [](const V& x) { return bmm(x[0], x[1]); }, kFloats, {}, g},
      {"bmm_transposed_batch", one("(53, 5, 37) -> (5, 37, 53) @ (5, 53, 29)", {{53, 5, 37}, {5, 53, 29}}),
       [](const V& x) { return bmm(permute(x[0], {1, 2, 0}), x[1]); }, kFloats, {}, Sum::given, 53},
      {"linear_chain", one("(37, 53) (53, 29) (29)", {{37, 53}, {53, 29}, {29}}),
       [](const V& x) { return tanh(matmul(x[0], x[1]) * 0.1 + x[2]); }, kFloats, {}, g},
  };
}

std::vector<Parity> indexing_cases() {
  const std::vector<ShapeSet> g2 = {{"(4, 5)", {{4, 5}}}, {"prime (7, 13)", {{7, 13}}}, {"size-1 (1, 6)", {{1, 6}}},
                                    {"large (1031, 67)", {{1031, 67}}}};
  const std::vector<DType> f32_f64 = {DType::f32, DType::f64};
  return {
      {"gather_dim1", g2, [](const V& x) { return gather(x[0], 1, index_like(x[0], x[0].size(1), {x[0].size(0), 3}, 21)); }, kFloatsI64},
      {"gather_dim0", g2, [](const V& x) { return gather(x[0], 0, index_like(x[0], x[0].size(0), {5, x[0].size(1)}, 22)); }, kFloatsI64},
      {"index_select_dim0", g2,
       [](const V& x) {
         int64_t n = x[0].size(0);
         return index_select(x[0], 0, ids_like(x[0], {n - 1, 0, (n - 1) / 2, n - 1}));
       },
       kFloatsI64},
      {"index_select_dim1", g2, [](const V& x) { return index_select(x[0], 1, index_like(x[0], x[0].size(1), {7}, 23)); }, kFloatsI64},
      {"embedding", {{"(7, 3)", {{7, 3}}}, {"(13, 5)", {{13, 5}}}, {"large (1000, 64)", {{1000, 64}}}},
       [](const V& x) { return embedding(x[0], index_like(x[0], x[0].size(0), {37, 11}, 26)); }, kFloats},
      {"embedding_1d_index", one("(6, 4)", {{6, 4}}), [](const V& x) { return embedding(x[0], ids_like(x[0], {5, 1, 1})); }, kFloats},
      {"scatter_add", {{"(4, 5) src (4, 3)", {{4, 5}, {4, 3}}}, {"(7, 13) src (7, 13)", {{7, 13}, {7, 13}}}},
       [](const V& x) { return scatter_add(x[0], 1, index_like(x[0], x[0].size(1), x[1].shape(), 24), x[1]); }, kFloats},
      {"scatter_add_dim0", one("(3, 4) src (6, 4)", {{3, 4}, {6, 4}}),
       [](const V& x) { return scatter_add(x[0], 0, index_like(x[0], x[0].size(0), x[1].shape(), 25), x[1]); }, kFloats},
      // about 80 sources per slot: atomics on the device, a different order from the CPU
      {"scatter_add_many_duplicates", one("(7, 13) src (7, 1031)", {{7, 13}, {7, 1031}}),
       [](const V& x) { return scatter_add(x[0], 1, index_like(x[0], 13, x[1].shape(), 27), x[1]); }, f32_f64, {}, Sum::given, 80},
      {"index_add", {{"(5, 3) src (4, 3)", {{5, 3}, {4, 3}}}, {"(7, 2) src (4, 2)", {{7, 2}, {4, 2}}}},
       [](const V& x) { return index_add(x[0], 0, ids_like(x[0], {0, 2, 2, 4}), x[1], 0.7); }, kFloats},
      {"index_add_dim1", one("(3, 6) src (3, 4)", {{3, 6}, {3, 4}}),
       [](const V& x) { return index_add(x[0], 1, ids_like(x[0], {5, 1, 1, 0}), x[1]); }, kFloats},
      {"index_add_many_duplicates", one("(11, 65) src (1031, 65)", {{11, 65}, {1031, 65}}),
       [](const V& x) { return index_add(x[0], 0, index_like(x[0], 11, {1031}, 28), x[1], -0.5); }, f32_f64, {}, Sum::given, 100},
      {"one_hot", {{"(13)", {{13}}}, {"(7, 13)", {{7, 13}}}},
       [](const V& x) { return one_hot(index_like(x[0], 11, x[0].shape(), 29), 11); }, {DType::f32}},
  };
}

std::vector<Parity> join_cases() {
  return {
      {"cat_dim0", one("(2, 3) (4, 3) (1, 3)", {{2, 3}, {4, 3}, {1, 3}}), [](const V& x) { return cat({x[0], x[1], x[2]}, 0); }, kNumeric},
      {"cat_dim1", {{"(3, 2) (3, 5)", {{3, 2}, {3, 5}}}, {"large (129, 1031) (129, 17)", {{129, 1031}, {129, 17}}}},
       [](const V& x) { return cat({x[0], x[1]}, 1); }, kNumeric},
      {"cat_neg_dim", one("(2, 3, 2) (2, 3, 3)", {{2, 3, 2}, {2, 3, 3}}), [](const V& x) { return cat({x[1], x[0], x[1]}, -1); }, kFloats},
      {"cat_with_empty", one("(0, 3) (4, 3)", {{0, 3}, {4, 3}}), [](const V& x) { return cat({x[0], x[1]}, 0); }, kFloats},
      {"stack_dim0", one("3 x (3, 4)", {{3, 4}, {3, 4}, {3, 4}}), [](const V& x) { return stack(x, 0); }, kNumeric},
      {"stack_dim1", one("2 x (7, 3)", {{7, 3}, {7, 3}}), [](const V& x) { return stack(x, 1); }, kFloats},
      {"stack_last", one("2 x (2, 5)", {{2, 5}, {2, 5}}), [](const V& x) { return stack(x, -1); }, kFloats},
      {"split", one("(3, 7)", {{3, 7}}),
       [](const V& x) {
         auto p = split(x[0], 3, 1);
         return cat({p.at(2) * 3.0, p.at(0), p.at(1) * 2.0}, 1);
       },
       kFloats},
      {"split_sizes", one("(3, 7)", {{3, 7}}),
       [](const V& x) {
         auto p = split_sizes(x[0], {2, 4, 1}, 1);
         return cat({p.at(1) * -1.5, p.at(2), p.at(0) * 2.0}, 1);
       },
       kFloats},
      {"chunk", one("(7, 4)", {{7, 4}}),
       [](const V& x) {
         auto p = chunk(x[0], 3, 0);
         return cat({p.at(1) * 0.5, p.at(2) * 3.0, p.at(0)}, 0);
       },
       kFloats},
      {"split_views_contiguous", one("(13, 5)", {{13, 5}}),
       [](const V& x) {
         auto p = split(x[0], 4, 0);
         return contiguous(p.at(1)) + contiguous(p.at(2));
       },
       kNumeric},
      {"pad_last", {{"(3, 4)", {{3, 4}}}, {"1-D (5)", {{5}}}}, [](const V& x) { return pad(x[0], {1, 2}); }, kNumeric},
      {"pad_two_dims", {{"(3, 4)", {{3, 4}}}, {"3-D (2, 3, 5)", {{2, 3, 5}}}}, [](const V& x) { return pad(x[0], {1, 2, 2, 0}, 0.5); }, kFloats},
      {"pad_large", one("(129, 1031)", {{129, 1031}}), [](const V& x) { return pad(x[0], {3, 0, 0, 5}, -1.0); }, kFloats},
  };
}

std::vector<Parity> view_cases() {
  const auto un = ember_test::unary_shapes();
  std::vector<DType> all = kNumeric;
  all.push_back(DType::boolean);
  auto c = [](const Tensor& t) { return contiguous(t); };
  return {
      {"view_merge", one("(3, 4)", {{3, 4}}), [=](const V& x) { return c(view(x[0], {2, 6})); }, all, {}, Sum::none, 0, false},
      {"view_infer", one("(3, 4)", {{3, 4}}), [=](const V& x) { return c(view(x[0], {-1})); }, all, {}, Sum::none, 0, false},
      {"view_split_last", {{"(3, 4)", {{3, 4}}}, {"(5, 6)", {{5, 6}}}}, [=](const V& x) { return c(view(x[0], {x[0].size(0), 2, -1})); }, all},
      {"reshape", {{"(3, 4)", {{3, 4}}}, {"(2, 6)", {{2, 6}}}}, [=](const V& x) { return c(reshape(x[0], {4, -1})); }, all},
      {"reshape_flat", un, [=](const V& x) { return c(reshape(x[0], {-1})); }, all},
      {"permute", {{"(2, 3, 4)", {{2, 3, 4}}}, {"large (33, 65, 17)", {{33, 65, 17}}}}, [=](const V& x) { return c(permute(x[0], {2, 0, 1})); }, all},
      {"transpose", one("(2, 3, 4)", {{2, 3, 4}}), [=](const V& x) { return c(transpose(x[0], 0, 2)); }, all},
      {"t", {{"(3, 5)", {{3, 5}}}, {"large (1031, 129)", {{1031, 129}}}}, [=](const V& x) { return c(x[0].t()); }, all},
      {"narrow", one("(5, 7)", {{5, 7}}), [=](const V& x) { return c(narrow(x[0], 1, 2, 3)); }, all},
      {"slice_step3", one("(4, 13)", {{4, 13}}), [=](const V& x) { return c(slice(x[0], 1, 0, 13, 3)); }, all},
      {"select", one("(4, 5, 3)", {{4, 5, 3}}), [=](const V& x) { return c(select(x[0], 1, 2)); }, all},
      {"expand", {{"(3, 1)", {{3, 1}}}, {"(1, 1)", {{1, 1}}}}, [=](const V& x) { return c(expand(x[0], {x[0].size(0), 4})); }, all},
      {"expand_new_dims", one("(1, 3)", {{1, 3}}), [=](const V& x) { return c(expand(x[0], {2, 4, 3})); }, all},
      {"broadcast_to", {{"(4, 1)", {{4, 1}}}, {"0-D", {{}}}}, [=](const V& x) { return c(broadcast_to(x[0], {2, 4, 3})); }, all},
      {"squeeze_all", one("(3, 1, 4, 1)", {{3, 1, 4, 1}}), [=](const V& x) { return c(squeeze(x[0])); }, all},
      {"squeeze_dim", one("(3, 1, 4, 1)", {{3, 1, 4, 1}}), [=](const V& x) { return c(squeeze(x[0], 1)); }, all},
      {"select_neg_index", one("(4, 5)", {{4, 5}}), [=](const V& x) { return c(select(x[0], 0, -1)); }, all},
      {"flatten_all", un, [=](const V& x) { return c(flatten(x[0])); }, all},
      {"unsqueeze", un, [=](const V& x) { return c(unsqueeze(x[0], 0)); }, all},
      {"flatten_range", one("(2, 3, 2, 3)", {{2, 3, 2, 3}}), [=](const V& x) { return c(flatten(x[0], 1, 2)); }, all},
      {"clone", un, [](const V& x) { return clone(x[0]); }, all},
      {"view_then_math", one("(4, 6)", {{4, 6}}), [](const V& x) { return narrow(x[0], 0, 1, 2).t() * select(x[0], 1, 3).narrow(0, 0, 2); }, kNumeric},
  };
}

// to_dtype between every pair of dtypes (the source dtype is the case's dtype).
std::vector<Parity> conversion_cases() {
  const std::vector<DType> all = {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i32, DType::i64, DType::boolean};
  const std::vector<ShapeSet> sets = {{"(7, 13)", {{7, 13}}}, {"large (129, 1031)", {{129, 1031}}}, {"0-D", {{}}}};
  std::vector<Parity> out;
  for (DType to : all) {
    out.push_back({std::string("to_dtype_") + dtype_name(to), sets, [to](const V& x) { return to_dtype(x[0], to); }, all});
  }
  return out;
}


// Runs loss_fn on both sets of leaves, backward, and compares loss and every leaf's .grad().
void check_grads(const std::string& what, DType dt, Leaves& l, const std::function<Tensor(const V&)>& loss_fn) {
  const Tol tol = grad_tol(dt);
  Tensor loss_cpu = loss_fn(l.cpu);
  Tensor loss_dev = loss_fn(l.dev);
  check_matches(what + ": loss", loss_dev, loss_cpu, tol);
  loss_cpu.backward();
  loss_dev.backward();
  for (size_t i = 0; i < l.cpu.size(); ++i) {
    if (!l.cpu[i].requires_grad()) continue;
    const std::string ctx = what + ": grad of leaf " + std::to_string(i);
    REQUIRE_MESSAGE(l.cpu[i].grad().defined(), ctx << " missing on the CPU");
    REQUIRE_MESSAGE(l.dev[i].grad().defined(), ctx << " missing on CUDA");
    check_matches(ctx, l.dev[i].grad(), l.cpu[i].grad(), tol);
  }
}

}  // namespace

TEST_SUITE("cuda") {
  // Always runs: without a GPU (CI, or a CPU-only build) a CUDA request must raise a clear
  // ember::Error, never crash; with one, so must a device index past the last.
  TEST_CASE("without a GPU, CUDA tensors raise a clear ember::Error") {
    if (!ecuda::is_available()) {
      const std::string built = ecuda::built_with_cuda() ? "built" : "not built";
      MESSAGE("no CUDA GPU available (this build: CUDA backend " << built
                                                                  << "): the cases that need one report themselves skipped");
      CHECK(ecuda::device_count() == 0);
      Tensor x = randn({3, 4});
      const std::vector<std::function<void()>> attempts = {
          [] { (void)zeros({3, 4}, on(Device::cuda(0))); },
          [&] { (void)x.to(Device::cuda()); },
          [&] { (void)to_device(x, Device::cuda(0)); },
          [] { (void)empty({5}, on(Device::cuda(1))); },
          [] { (void)ecuda::memory_stats(0); },
          [] { ecuda::synchronize(); },
          [&] { (void)ecuda::pin_memory(x); },
      };
      for (size_t i = 0; i < attempts.size(); ++i) {
        std::string msg;
        bool ember_error = false;
        try {
          attempts[i]();
        } catch (const ember::Error& e) {
          ember_error = true;
          msg = e.what();
        } catch (const std::exception& e) {
          msg = std::string("non-ember exception: ") + e.what();
        }
        CHECK_MESSAGE(ember_error, "attempt " << i << ": expected ember::Error, got " << (msg.empty() ? "nothing" : msg));
        CHECK_MESSAGE(lower(msg).find("cuda") != std::string::npos, "attempt " << i << ": message does not mention CUDA: " << msg);
      }
      // The model stays usable on the CPU after a failed move.
      nn::Linear lin(4, 3);
      CHECK_THROWS_AS(lin.to(Device::cuda()), ember::Error);
      CHECK(lin.weight.device().is_cpu());
      CHECK(lin(x).shape() == Shape{3, 3});
    } else {
      const int n = ecuda::device_count();
      CHECK(n >= 1);
      ember_test::check_error([&] { (void)zeros({3}, on(Device::cuda(n))); }, "tensor on a missing device",
                              {"cuda:" + std::to_string(n)});
    }
  }

  TEST_CASE("Module::to(cpu) keeps the same parameter objects") {
    Generator g(3);
    nn::Linear lin(5, 3, true, &g);
    const auto w_impl = lin.weight.impl_ptr();
    const auto w_storage = lin.weight.impl().storage;
    Tensor w = lin.parameters()[0];
    w.set_grad(ones_like(w));
    CHECK(&lin.to(Device::cpu()) == &lin);
    CHECK(lin.weight.impl_ptr() == w_impl);
    CHECK(lin.weight.impl().storage == w_storage);  // already there: no copy
    CHECK(w.grad().defined());                      // and the gradient stays
    CHECK(lin.weight.requires_grad());
  }

  TEST_CASE("elementwise ops match the CPU") {
    PoisonGuard poison;
    run_parity(elementwise_cases());
  }

  TEST_CASE("reductions, softmax and arg-reductions match the CPU") {
    PoisonGuard poison;
    run_parity(reduction_cases());
  }

  TEST_CASE("matmul and bmm match the CPU with both GEMM backends") {
    PoisonGuard poison;
    if (!kCuda.is_cuda()) {  // the stand-in runs the CPU's GEMM: no backend switch
      run_parity(gemm_cases());
      return;
    }
    for (ecuda::GemmBackend b : {ecuda::GemmBackend::ember, ecuda::GemmBackend::cublas}) {
      GemmGuard gemm(b);
      CHECK(ecuda::gemm_backend() == b);
      run_parity(gemm_cases(), std::string(" (") + backend_name(b) + ")");
    }
  }

  TEST_CASE("gather, scatter, index_select, index_add, embedding, one_hot match the CPU") {
    PoisonGuard poison;
    run_parity(indexing_cases());
  }

  TEST_CASE("cat, stack, split, chunk, pad match the CPU") {
    PoisonGuard poison;
    run_parity(join_cases());
  }

  TEST_CASE("views then contiguous match the CPU") {
    PoisonGuard poison;
    run_parity(view_cases());
  }

  TEST_CASE("to_dtype between every pair of dtypes matches the CPU") {
    PoisonGuard poison;
    run_parity(conversion_cases());
  }

  TEST_CASE("copies between CPU and CUDA are exact in every dtype and layout") {
    PoisonGuard poison;
    Generator g(17);
    for (DType dt : {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i32, DType::i64, DType::boolean}) {
      const Tensor x = as_dtype(randn({37, 53}, DType::f64, &g), dt);
      const std::string name = dtype_name(dt);
      check_same(name + " round trip", x.to(kCuda).to(kCpu), x);
      check_same(name + " from a transposed CPU view", x.t().to(kCuda).to(kCpu), x.t());
      check_same(name + " from a sliced CPU view", slice(x, 1, 1, 50, 3).to(kCuda).to(kCpu), slice(x, 1, 1, 50, 3));
      const Tensor d = x.to(kCuda);
      CHECK(d.device() == kCuda);
      CHECK(d.is_contiguous());
      check_same(name + " from a transposed CUDA view", d.t().to(kCpu), x.t());
      check_same(name + " from a sliced CUDA view", slice(d, 0, 2, 37, 5).to(kCpu), slice(x, 0, 2, 37, 5));
      check_same(name + " CUDA to CUDA", d.to(kCuda).to(kCpu), x);
      // copy_ crosses devices in both directions, into strided destinations too
      check_same(name + " copy_ from the CPU into a transposed device view", [&] {
        Tensor y = zeros({53, 37}, on(kCuda, dt));
        y.t().copy_(x);
        return y.t();
      }(), x);
      check_same(name + " copy_ from a sliced device view into a CPU tensor", [&] {
        Tensor y = zeros({7, 53}, dt);
        y.copy_(slice(d, 0, 2, 37, 5));
        return y;
      }(), slice(x, 0, 2, 37, 5));
      if (dt != DType::boolean)
        check_same(name + " copy_ converting f64 CPU into a device tensor", [&] {
          Tensor y = zeros({37, 53}, on(kCuda, dt));
          y.copy_(to_dtype(x, DType::f64));
          return y;
        }(), x);
      if (kCuda.is_fake())  // two devices of one kind: a cross-device copy like any other
        check_same(name + " fake:0 to fake:1, transposed", d.t().to(Device::fake(1)).to(kCpu), x.t());
      CHECK(d.to(kCuda).is_same(d));  // already there: the same tensor
      check_same(name + " clone on CUDA", d.clone().to(kCpu), x);
      check_same(name + " broadcast CPU source into a CUDA tensor", [&] {
        Tensor y = zeros({4, 53}, on(kCuda, dt));
        y.copy_(select(x, 0, 3));
        return y;
      }(), expand(select(x, 0, 3), {4, 53}).contiguous());
    }
  }

  TEST_CASE("creation ops on CUDA match the CPU") {
    PoisonGuard poison;
    for (DType dt : {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i32, DType::i64}) {
      const std::string n = dtype_name(dt);
      check_same(n + " zeros", zeros({7, 13}, on(kCuda, dt)), zeros({7, 13}, dt));
      check_same(n + " ones", ones({1031}, on(kCuda, dt)), ones({1031}, dt));
      check_same(n + " full", full({3, 5, 7}, -3.0, on(kCuda, dt)), full({3, 5, 7}, -3.0, dt));
      check_same(n + " scalar_tensor", scalar_tensor(2.0, on(kCuda, dt)), scalar_tensor(2.0, dt));
      check_same(n + " arange", arange(-5, 17, 2, on(kCuda, dt)), arange(-5, 17, 2, dt));
      check_same(n + " from_vector", from_vector<double>({1, -2, 3, 4, -5, 6}, {2, 3}, on(kCuda, dt)),
                 from_vector<double>({1, -2, 3, 4, -5, 6}, {2, 3}, dt));
      const Tensor d = full({4, 3}, 1.5, on(kCuda, dt));
      check_same(n + " zeros_like", zeros_like(d), zeros({4, 3}, dt));
      check_same(n + " ones_like", ones_like(d), ones({4, 3}, dt));
      CHECK(empty_like(d).device() == kCuda);
    }
    check_matches("linspace", linspace(-1.0, 2.0, 1001, on(kCuda)), linspace(-1.0, 2.0, 1001), base_tol(DType::f32));
    check_same("tensor literal", tensor({{1.0, 2.5}, {-3.0, 4.0}}, on(kCuda)), tensor({{1.0, 2.5}, {-3.0, 4.0}}));
    check_same("bool from_vector", from_vector<bool>({true, false, true}, {3}, on(kCuda, DType::boolean)),
               from_vector<bool>({true, false, true}, {3}, DType::boolean));
    // comparison helpers accept CUDA tensors
    const Tensor a = randn({7, 13}, on(kCuda));
    CHECK(equal(a, a.clone()));
    CHECK(allclose(a, a + 1e-9));
    CHECK_FALSE(allclose(a, a + 1.0));
  }

  // The bug class the stand-in exists to catch: an op given one CPU and one device tensor
  // throws an ember::Error naming both devices (on a GPU machine: cpu and cuda:0; in CI: cpu
  // and fake:0).
  TEST_CASE("mixing CPU and device operands raises a clear error naming both devices") {
    PoisonGuard poison;
    const std::string dev = kCuda.str();
    const Tensor c = randn({3, 4}), d = randn({3, 4}, on(kCuda));
    CHECK_EMBER_ERROR(add(c, d), "cpu", dev);
    CHECK_EMBER_ERROR(matmul(d, c.t()), "cpu", dev);
    CHECK_EMBER_ERROR(cat({c, d}, 0), "cpu", dev);
    CHECK_EMBER_ERROR(where(gt(c, scalar_tensor(0.0)), d, d), "where", "cpu", dev);
    CHECK_EMBER_ERROR(gather(d, 1, from_vector<int64_t>({0, 1, 2}, {3, 1})), "gather", "cpu", dev);
    CHECK_EMBER_ERROR(nn::cross_entropy(d, from_vector<int64_t>({0, 1, 2}, {3})), "cpu", dev);
    CHECK_EMBER_ERROR(layer_norm(d, {4}, ones({4}), Tensor()), "cpu", dev);
    CHECK_EMBER_ERROR(index_select(d, 0, from_vector<int64_t>({0, 9}, {2}).to(kCuda)), "index_select");  // out of range
    // a module on the device given a CPU batch
    nn::Linear lin(4, 2);
    lin.to(kCuda);
    CHECK_EMBER_ERROR(lin(c), "cpu", dev);
    // two devices of one kind are two devices
    if (kCuda.is_fake()) CHECK_EMBER_ERROR(add(d, randn({3, 4}, on(Device::fake(1)))), "fake:0", "fake:1");
    // a 0-d CPU tensor acts as a scalar next to a device tensor
    check_matches("0-d CPU scalar operand", d * scalar_tensor(2.0), d.to(kCpu) * 2.0, base_tol(DType::f32));
  }

  // Every tensor a backward formula makes lives on its input's device; the engine checks each
  // gradient it routes against the device of the tensor it belongs to.
  TEST_CASE("backward formulas make their gradients on the input's device; the engine rejects one that does not") {
    PoisonGuard poison;
    Generator g(5);
    const Tensor v = randn({5, 7}, DType::f32, &g);
    const Tensor ids = from_vector<int64_t>({4, 0, 4}, {3});
    const std::vector<std::pair<std::string, std::function<Tensor(const Tensor&)>>> fns = {
        {"gather", [&](const Tensor& x) { return gather(x, 1, from_vector<int64_t>({1, 6, 0, 2, 2}, {5, 1}).to(x.device())); }},
        {"index_select", [&](const Tensor& x) { return index_select(x, 0, ids.to(x.device())); }},
        {"embedding", [&](const Tensor& x) { return embedding(x, ids.to(x.device())); }},
        {"slice", [](const Tensor& x) { return slice(x, 1, 1, 6, 2); }},
        {"select", [](const Tensor& x) { return select(x, 0, 3); }},
        {"narrow", [](const Tensor& x) { return x.narrow(0, 1, 2); }},
        {"max over a dim", [](const Tensor& x) { return max(x, 1).values; }},
        {"min over a dim", [](const Tensor& x) { return min(x, 0, true).values; }},
        {"amax", [](const Tensor& x) { return amax(x, {0}); }},
        {"scatter_add (source)", [&](const Tensor& x) {
           return scatter_add(zeros({5, 9}, on(x.device())), 1, from_vector<int64_t>({8, 0, 3, 3, 1, 2, 7}, {1, 7}).to(x.device()),
                              x.narrow(0, 0, 1));
         }},
        {"index_add (source)", [&](const Tensor& x) {
           return index_add(zeros({6, 7}, on(x.device())), 0, ids.to(x.device()), x.narrow(0, 0, 3));
         }},
        {"pad", [](const Tensor& x) { return pad(x, {2, 1}); }},
        {"split", [](const Tensor& x) { return split(x, 3, 1)[1]; }},
        {"to(cpu) and back", [](const Tensor& x) { return x.to(kCpu).to(x.device()) * 2.0; }},
    };
    for (const auto& [name, fn] : fns) {
      Tensor xc = v.clone().requires_grad_(true), xd = v.to(kCuda).requires_grad_(true);
      try {
        sum(fn(xc) * fn(xc)).backward();
        sum(fn(xd) * fn(xd)).backward();
        REQUIRE_MESSAGE(xd.grad().defined(), name << ": no gradient on the device");
        CHECK_MESSAGE(xd.grad().device() == kCuda, name << ": gradient on " << xd.grad().device());
        check_matches(name + " gradient", xd.grad(), xc.grad(), grad_tol(DType::f32));
      } catch (const std::exception& e) {
        FAIL_CHECK(name << " threw: " << e.what());
      }
    }
    // A backward formula that makes its result on the CPU is stopped by the engine, naming both.
    Tensor x = v.to(kCuda).requires_grad_(true);
    Tensor y = empty(x.shape(), on(kCuda));
    y.copy_(x.detach());
    record("cpu_grad_op", {x}, {y}, [](const std::vector<Tensor>& gs, const std::vector<Tensor>&, const std::vector<bool>&) {
      return std::vector<Tensor>{zeros(gs[0].shape())};  // the bug: no device
    });
    ember_test::check_error([&] { sum(y).backward(); }, "backward through cpu_grad_op", {"cpu_grad_op", "cpu", kCuda.str(), "wrong device"});
  }

  TEST_CASE("gradients on CUDA match the CPU") {
    PoisonGuard poison;
    for (DType dt : {DType::f32, DType::f64}) {
      const std::string n = dtype_name(dt);
      // A two-layer classifier: matmul + bias + relu + log_softmax + gather NLL.
      {
        Leaves l = make_leaves({{16, 37}, {37, 29}, {29}, {29, 11}, {11}}, dt, 7);
        l.cpu[0].requires_grad_(false);
        l.dev[0].requires_grad_(false);
        const Tensor labels = ember_test::random_index(11, {16, 1}, 8);
        check_grads(n + " classifier", dt, l, [&](const V& p) {
          const Tensor h = relu(matmul(p[0], p[1]) + p[2]);
          const Tensor lp = log_softmax(matmul(h, p[3]) + p[4], 1);
          return neg(mean(gather(lp, 1, labels.to(p[0].device()))));
        });
      }
      // Many ops in one graph, leaves used several times, transposed and broadcast operands.
      {
        Leaves l = make_leaves({{6, 7}, {7}, {6, 7}, {7, 5}}, dt, 9);
        const Tensor mask = ember_test::random_mask({6, 7}, 10);
        const Tensor idx = from_vector<int64_t>({5, 0, 2, 2}, {4});
        check_grads(n + " many ops", dt, l, [&](const V& p) {
          const Device dev = p[0].device();
          const Tensor a = p[0], b = p[1], c = p[2], w = p[3];
          Tensor y = tanh(a) * sigmoid(b) + silu(c) - gelu(a) * 0.5 + pow(abs(a) + 0.5, 1.5) / (exp(-abs(c)) + 1.0);
          y = y + where(mask.to(dev), a, c) + masked_fill(c, logical_not(mask.to(dev)), 0.5) + clamp(a, -0.5, 0.5);
          y = y + maximum(a, c) - minimum(a, b) + sqrt(abs(b) + 1.0) * log1p(abs(c));
          const Tensor z = cat({y, softmax(a, 0), log_softmax(c, 1)}, 1);  // (6, 21)
          const auto parts = split(z, 7, 1);
          Tensor s = sum(parts[0] * parts[1], {1}) + amax(parts[2], {1}) + var(a, {1}) + max(c, 1).values;
          s = s + sum(matmul(y, w), {1}) + sum(matmul(c.t(), y), {0}).narrow(0, 0, 6);
          s = s + sum(index_select(a, 0, idx.to(dev)), {1}).sum() + mean(pad(c, {1, 2}), {1});
          s = s + sum(bmm(stack({a, c}, 0), stack({w, w * 2.0}, 0)), {0, 2}) + prod(clamp(b, 0.5, 1.5), {}) * 0.1;
          return sum(s * s) / 100.0 + mean(expand(b, {6, 7}) * a.t().contiguous().t());
        });
      }
      // Embedding and scatter: gradients accumulate over repeated indices.
      {
        Leaves l = make_leaves({{13, 5}, {4, 6}}, dt, 11);
        const Tensor ids = from_vector<int64_t>({3, 3, 12, 0, 3, 7}, {2, 3});
        const Tensor sidx = ember_test::random_index(6, {4, 6}, 12);
        check_grads(n + " embedding and scatter_add", dt, l, [&](const V& p) {
          const Device dev = p[0].device();
          const Tensor e = embedding(p[0], ids.to(dev));  // (2, 3, 5)
          const Tensor s = scatter_add(zeros({4, 6}, on(dev, p[1].dtype())), 1, sidx.to(dev), p[1] * p[1]);
          return sum(e * e) + sum(s * s) + sum(index_add(p[1], 0, from_vector<int64_t>({1, 1}, {2}).to(dev), p[1].narrow(0, 0, 2)));
        });
      }
    }
    // copy_ from a device tensor that requires grad into a CPU tensor: the gradient flows back
    // to the device.
    {
      Generator g(14);
      const Tensor v = randn({4, 6}, DType::f32, &g);
      Tensor src = v.to(kCuda).requires_grad_(true);
      Tensor dst = zeros({4, 6});
      dst.copy_(src * 2.0);
      sum(dst * dst).backward();
      REQUIRE(src.grad().defined());
      CHECK(src.grad().device() == kCuda);
      check_matches("grad through a cross-device copy_", src.grad(), v * 8.0, grad_tol(DType::f32));
    }
    // A CPU leaf moved to CUDA: its gradient comes back to the CPU.
    {
      Generator g(13);
      const Tensor v = randn({7, 13}, DType::f32, &g);
      Tensor x_cpu = v.clone().requires_grad_(true), x_ref = v.clone().requires_grad_(true);
      sum(tanh(x_cpu.to(kCuda)) * 3.0).backward();
      sum(tanh(x_ref) * 3.0).backward();
      REQUIRE(x_cpu.grad().defined());
      CHECK(x_cpu.grad().device().is_cpu());
      check_matches("grad through to(cuda)", x_cpu.grad(), x_ref.grad(), grad_tol(DType::f32), false);
    }
  }

  TEST_CASE("Module::to(cuda) moves parameters in place; a training step matches the CPU") {
    PoisonGuard poison;
    auto build = [] {
      Generator g(21);
      auto m = std::make_shared<nn::Sequential>();
      m->add(std::make_shared<nn::Linear>(37, 29, true, &g)).add(std::make_shared<nn::ReLU>()).add(std::make_shared<nn::Linear>(29, 11, true, &g));
      return m;
    };
    auto cpu_model = build();
    auto dev_model = build();
    std::vector<Tensor> handles = dev_model->parameters();
    std::vector<std::shared_ptr<TensorImpl>> impls;
    for (const Tensor& p : handles) {
      impls.push_back(p.impl_ptr());
      p.set_grad(ones_like(p));
    }
    CHECK(&dev_model->to(kCuda) == dev_model.get());
    const auto cpu_params = cpu_model->parameters();
    for (size_t i = 0; i < handles.size(); ++i) {
      const std::string ctx = "parameter " + std::to_string(i);
      CHECK_MESSAGE(handles[i].impl_ptr() == impls[i], ctx << ": a new TensorImpl");
      CHECK_MESSAGE(handles[i].device() == kCuda, ctx << " is on " << handles[i].device());
      CHECK_MESSAGE(handles[i].requires_grad(), ctx << " lost requires_grad");
      if (kCuda.is_cuda()) CHECK_MESSAGE(!handles[i].grad().defined(), ctx << " kept its CPU gradient");
      CHECK(handles[i].is_leaf());
      check_same(ctx + " values", handles[i], cpu_params[i]);
    }
    // A few SGD steps on the same batch on both devices.
    Generator g(22);
    const Tensor x = randn({16, 37}, DType::f32, &g);
    const Tensor y = ember_test::random_index(11, {16}, 23);
    optim::SGD opt_cpu(cpu_model->parameters(), {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4});
    optim::SGD opt_dev(dev_model->parameters(), {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4});
    for (int step = 0; step < 3; ++step) {
      const Tensor loss_cpu = nn::cross_entropy((*cpu_model)(x), y);
      const Tensor loss_dev = nn::cross_entropy((*dev_model)(x.to(kCuda)), y.to(kCuda));
      check_matches("step " + std::to_string(step) + " loss", loss_dev, loss_cpu, {1e-4, 1e-5});
      opt_cpu.zero_grad();
      opt_dev.zero_grad();
      loss_cpu.backward();
      loss_dev.backward();
      for (size_t i = 0; i < handles.size(); ++i)
        check_matches("step " + std::to_string(step) + " grad " + std::to_string(i), handles[i].grad(), cpu_params[i].grad(), {1e-4, 1e-5});
      opt_cpu.step();
      opt_dev.step();
    }
    for (size_t i = 0; i < handles.size(); ++i)
      check_matches("parameter " + std::to_string(i) + " after 3 steps", handles[i], cpu_params[i], {1e-4, 1e-5});
    // and back
    dev_model->to(kCpu);
    for (size_t i = 0; i < handles.size(); ++i) {
      CHECK(handles[i].device().is_cpu());
      CHECK(handles[i].impl_ptr() == impls[i]);
    }
    CHECK((*dev_model)(x).device().is_cpu());
  }

  TEST_CASE("random streams: the same seed gives the same numbers on CUDA and CPU") {
    PoisonGuard poison;
    for (const Shape& shape : std::vector<Shape>{{1001}, {7, 13}, {3}, {}}) {
      const std::string s = shape_str(shape);
      auto both = [&](const std::string& what, const std::function<Tensor(Generator&, Device)>& draw, bool exact, Tol tol = {0, 0}) {
        Generator gc(1234), gd(1234);
        gc.set_offset(5);
        gd.set_offset(5);
        const Tensor c = draw(gc, kCpu), d = draw(gd, kCuda);
        if (exact) {
          check_same(what + " " + s, d, c);
        } else {
          check_matches(what + " " + s, d, c, tol);
        }
        CHECK_MESSAGE(gc.offset() == gd.offset(), what << " " << s << ": generator offsets differ");
        CHECK(d.device() == kCuda);
      };
      for (DType dt : kFloats) {
        const std::string n = dtype_name(dt);
        both(n + " rand", [&](Generator& g, Device dev) { return rand(shape, on(dev, dt), &g); }, true);
        both(n + " bernoulli", [&](Generator& g, Device dev) { return bernoulli(shape, 0.3, on(dev, dt), &g); }, true);
      }
      for (DType dt : {DType::f32, DType::f64}) {
        const std::string n = dtype_name(dt);
        both(n + " uniform", [&](Generator& g, Device dev) { return uniform(shape, -2.0, 3.0, on(dev, dt), &g); }, true);
        both(n + " randn", [&](Generator& g, Device dev) { return randn(shape, on(dev, dt), &g); }, false,
             dt == DType::f64 ? Tol{1e-12, 1e-14} : Tol{1e-6, 1e-7});
      }
      for (DType dt : {DType::i32, DType::i64}) {
        both(std::string(dtype_name(dt)) + " randint", [&](Generator& g, Device dev) { return randint(-5, 17, shape, on(dev, dt), &g); }, true);
      }
      both("bool bernoulli", [&](Generator& g, Device dev) { return bernoulli(shape, 0.5, on(dev, DType::boolean), &g); }, true);
      // two draws in a row: the second starts where the first stopped on both devices
      both("rand after rand", [&](Generator& g, Device dev) { (void)rand({5}, on(dev), &g); return rand(shape, on(dev), &g); }, true);
    }
    // dropout: the same mask for the same generator
    Generator gx(5);
    const Tensor x = uniform({129, 31}, 0.5, 2.0, DType::f32, &gx);
    for (double p : {0.1, 0.5, 0.9}) {
      Generator gc(77), gd(77);
      const Tensor c = dropout(x, p, true, &gc);
      const Tensor d = dropout(x.to(kCuda), p, true, &gd);
      check_same("dropout mask p=" + std::to_string(p), eq(d, zeros_like(d)), eq(c, zeros_like(c)));
      check_matches("dropout values p=" + std::to_string(p), d, c, base_tol(DType::f32));
    }
    check_same("dropout in eval mode", dropout(x.to(kCuda), 0.5, false), x);
  }

  TEST_CASE("an absurd allocation throws ember::Error naming the size and the device; the device stays usable") {
    PoisonGuard poison;
    // What the device under test reports as in use (the CUDA caching allocator, or the
    // stand-in's own accounting).
    auto in_use = [] { return kCuda.is_cuda() ? ecuda::memory_stats(kCuda.index).allocated : fake::memory_stats(kCuda.index).allocated; };
    const size_t before = in_use();
    // 2^40 f32 = 4 TiB = 4398046511104 bytes
    CHECK_EMBER_ERROR(zeros({int64_t{1} << 40}, on(kCuda)), "4398046511104", kCuda.str());
    CHECK(in_use() == before);
    const Tensor ok = full({1000}, 2.0, on(kCuda));
    CHECK(in_use() > before);
    CHECK(sum(ok).item<double>() == 2000.0);
  }

  TEST_CASE("the stand-in device: its own identity, host memory, poisoned allocations, capacity") {
    const Device f0 = Device::fake(0), f1 = Device("fake:1");
    CHECK(Device("fake") == f0);
    CHECK(f1.str() == "fake:1");
    CHECK(f0.is_fake());
    CHECK(f0.is_host_memory());
    CHECK_FALSE(f0 == Device::cpu());
    // every fresh allocation is filled with 0xFF bytes: NaN in every float element
    const Tensor e = empty({5, 3}, on(f0));
    for (double v : host_f64(e)) CHECK(std::isnan(v));
    // the accounting follows tensors' lifetimes
    const fake::MemoryStats s0 = fake::memory_stats(1);
    {
      const Tensor t = zeros({1000}, on(f1, DType::f64));
      const fake::MemoryStats s1 = fake::memory_stats(1);
      CHECK(s1.allocated == s0.allocated + 8000);
      CHECK(s1.peak_allocated >= s1.allocated);
      CHECK(s1.allocations == s0.allocations + 1);
    }
    CHECK(fake::memory_stats(1).allocated == s0.allocated);
    // a capacity: out of memory is an ember::Error naming the device and the size
    fake::set_capacity(1 << 20);
    CHECK_EMBER_ERROR(zeros({1 << 19}, on(f1)), "fake:1", "2097152", "out of memory");
    const Tensor small = ones({1000}, on(f1));  // still usable
    fake::set_capacity(0);
    CHECK(sum(small).item<double>() == 1000.0);
    CHECK_EMBER_ERROR(Device("fake:x"), "fake:N");
    CHECK_EMBER_ERROR(fake::memory_stats(-1), "fake");
  }
}
