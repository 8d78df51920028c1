// The op table: every differentiable op in ember/ops/ops.h, run through the harness
// (layouts + gradcheck in f64, and f16/bf16 against f32 for elementwise ops).
// EMBER_TEST_OP=name runs one case; see op_harness.h.
#include <doctest/doctest.h>

#include "op_harness.h"
#include "test_util.h"

using namespace ember;
using ember_test::Dist;
using ember_test::kLowPrecision;
using ember_test::kNoLayouts;
using ember_test::OpCase;
using ember_test::ShapeSet;
using V = std::vector<Tensor>;

namespace {

std::vector<ShapeSet> one(const std::string& label, std::vector<Shape> shapes) {
  return {{label, std::move(shapes)}};
}

std::vector<OpCase> elementwise_cases() {
  auto un = ember_test::unary_shapes();
  auto bin = ember_test::binary_shapes();
  const unsigned lp = kLowPrecision;
  const Dist pos = Dist::positive, away = Dist::away_from_zero, normal = Dist::normal;
  return {
      {"add", bin, [](const V& x) { return add(x[0], x[1]); }, lp},
      {"add_alpha", bin, [](const V& x) { return add(x[0], x[1], -1.75); }, lp},
      {"sub", bin, [](const V& x) { return sub(x[0], x[1]); }, lp},
      {"mul", bin, [](const V& x) { return mul(x[0], x[1]); }, lp},
      {"div", bin, [](const V& x) { return div(x[0], x[1]); }, lp, {normal, away}},
      {"pow", bin, [](const V& x) { return pow(x[0], x[1]); }, lp, {pos, normal}},
      {"pow_scalar", un, [](const V& x) { return pow(x[0], 2.5); }, lp, {pos}},
      {"pow_scalar_int", un, [](const V& x) { return pow(x[0], 3.0); }, lp},
      {"pow_scalar_neg", un, [](const V& x) { return pow(x[0], -1.5); }, lp, {pos}},
      {"maximum", bin, [](const V& x) { return maximum(x[0], x[1]); }, lp},
      {"minimum", bin, [](const V& x) { return minimum(x[0], x[1]); }, lp},
      {"neg", un, [](const V& x) { return neg(x[0]); }, lp},
      {"exp", un, [](const V& x) { return exp(x[0]); }, lp},
      {"log", un, [](const V& x) { return log(x[0]); }, lp, {pos}},
      {"log1p", un, [](const V& x) { return log1p(x[0]); }, lp, {pos}},
      {"sqrt", un, [](const V& x) { return sqrt(x[0]); }, lp, {pos}},
      {"rsqrt", un, [](const V& x) { return rsqrt(x[0]); }, lp, {pos}},
      {"abs", un, [](const V& x) { return abs(x[0]); }, lp, {away}},
      {"tanh", un, [](const V& x) { return tanh(x[0]); }, lp},
      {"sigmoid", un, [](const V& x) { return sigmoid(x[0]); }, lp},
      {"relu", un, [](const V& x) { return relu(x[0]); }, lp, {away}},
      {"gelu", un, [](const V& x) { return gelu(x[0]); }, lp},
      {"gelu_tanh", un, [](const V& x) { return gelu(x[0], "tanh"); }, lp},
      {"silu", un, [](const V& x) { return silu(x[0]); }, lp},
      {"erf", un, [](const V& x) { return erf(x[0]); }, lp},
      {"expm1", un, [](const V& x) { return expm1(x[0]); }, lp},
      {"softplus", un, [](const V& x) { return softplus(x[0]); }, lp},
      {"clamp", un, [](const V& x) { return clamp(x[0], -0.45, 0.55); }, lp},
      {"clamp_lo", un, [](const V& x) { return clamp(x[0], -0.45, std::nullopt); }, lp},
      {"clamp_hi", un, [](const V& x) { return clamp(x[0], std::nullopt, 0.55); }, lp},
      {"where", bin,
       [](const V& x) {
         Shape s = broadcast_shapes(x[0].shape(), x[1].shape(), "test");
         return where(ember_test::random_mask(s, 11).to(x[0].device()), x[0], x[1]);
       },
       lp},
      {"where_broadcast_cond", bin,
       [](const V& x) {  // cond (last dim) broadcasts against both branches
         Shape s = broadcast_shapes(x[0].shape(), x[1].shape(), "test");
         Shape cs = s.empty() ? Shape{} : Shape{s.back()};
         return where(ember_test::random_mask(cs, 12).to(x[0].device()), x[0], x[1]);
       },
       lp},
      {"masked_fill", un, [](const V& x) { return masked_fill(x[0], ember_test::random_mask(x[0].shape(), 13).to(x[0].device()), -2.5); }, lp},
      {"masked_fill_broadcast", un,
       [](const V& x) {  // mask over the last dim only
         Shape ms = x[0].dim() == 0 ? Shape{} : Shape{x[0].size(-1)};
         return masked_fill(x[0], ember_test::random_mask(ms, 14).to(x[0].device()), 0.75);
       },
       lp},
      // operator sugar and scalar forms (composites: intermediate rounding, so no low-precision mode)
      {"operators", bin, [](const V& x) { return x[0] * x[1] + x[0] / x[1] - (-x[0]) - x[1]; }, 0, {normal, away}},
      {"scalar_ops", un, [](const V& x) { return ((x[0] + 0.5) * 1.5 - 2.0) / 4.0 + (3.0 - x[0]) + 2.0 * x[0] + (1.0 + x[0]); }},
      {"scalar_rdiv", un, [](const V& x) { return 1.5 / x[0]; }, lp, {away}},
      // an input used several times: gradients must sum
      {"reuse", un, [](const V& x) { return x[0] * x[0] + exp(x[0]) * x[0] - tanh(x[0]); }},
  };
}

std::vector<OpCase> reduction_cases() {
  auto r = ember_test::reduce_shapes();
  const Dist near1 = Dist::near_one;
  return {
      {"sum", r, [](const V& x) { return sum(x[0]); }},
      {"sum_dim", r, [](const V& x) { return sum(x[0], {1}); }},
      {"sum_dims_keepdim", r, [](const V& x) { return sum(x[0], {0, 2}, true); }},
      {"sum_neg_dim", r, [](const V& x) { return sum(x[0], {-1}); }},
      {"sum_method", r, [](const V& x) { return x[0].sum(); }},
      {"mean", r, [](const V& x) { return mean(x[0]); }},
      {"mean_dims", r, [](const V& x) { return mean(x[0], {0, 2}); }},
      {"mean_keepdim", r, [](const V& x) { return mean(x[0], {1}, true); }},
      {"prod", r, [](const V& x) { return prod(x[0]); }, 0, {near1}},
      {"prod_dim", r, [](const V& x) { return prod(x[0], {1}); }, 0, {near1}},
      {"prod_keepdim", r, [](const V& x) { return prod(x[0], {2}, true); }, 0, {near1}},
      {"var", r, [](const V& x) { return var(x[0]); }},
      {"var_dims", r, [](const V& x) { return var(x[0], {1, 2}); }},
      {"var_correction0_keepdim", r, [](const V& x) { return var(x[0], {2}, 0, true); }},
      {"amax", r, [](const V& x) { return amax(x[0]); }},
      {"amax_dims_keepdim", r, [](const V& x) { return amax(x[0], {0, 2}, true); }},
      {"amin", r, [](const V& x) { return amin(x[0], {1}); }},
      {"max_dim", r, [](const V& x) { return max(x[0], 1).values; }},
      {"max_dim_keepdim", r, [](const V& x) { return max(x[0], -1, true).values; }},
      {"min_dim", r, [](const V& x) { return min(x[0], 0).values; }},
      {"max_all", r, [](const V& x) { return max(x[0]); }},
      {"min_all", r, [](const V& x) { return min(x[0]); }},
      {"softmax", r, [](const V& x) { return softmax(x[0], -1); }},
      {"softmax_dim0", r, [](const V& x) { return softmax(x[0], 0); }},
      {"log_softmax", r, [](const V& x) { return log_softmax(x[0], -1); }},
      {"log_softmax_dim1", r, [](const V& x) { return log_softmax(x[0], 1); }},
  };
}

std::vector<OpCase> linalg_cases() {
  std::vector<ShapeSet> mm = {
      {"2-D (3, 4) @ (4, 5)", {{3, 4}, {4, 5}}},
      {"prime (7, 13) @ (13, 3)", {{7, 13}, {13, 3}}},
      {"size-1 (1, 4) @ (4, 1)", {{1, 4}, {4, 1}}},
      {"1-D dot (5) @ (5)", {{5}, {5}}},
      {"1-D @ 2-D (4) @ (4, 3)", {{4}, {4, 3}}},
      {"2-D @ 1-D (3, 4) @ (4)", {{3, 4}, {4}}},
      {"batched (2, 3, 4) @ (2, 4, 5)", {{2, 3, 4}, {2, 4, 5}}},
      {"broadcast batch (2, 1, 3, 4) @ (5, 4, 2)", {{2, 1, 3, 4}, {5, 4, 2}}},
      {"batched @ 2-D (2, 3, 4) @ (4, 5)", {{2, 3, 4}, {4, 5}}},
      {"batched @ 1-D (2, 3, 4) @ (4)", {{2, 3, 4}, {4}}},
      {"1-D @ batched (4) @ (2, 4, 3)", {{4}, {2, 4, 3}}},
  };
  return {
      {"matmul", mm, [](const V& x) { return matmul(x[0], x[1]); }},
      {"bmm",
       {{"(3, 4, 5) @ (3, 5, 2)", {{3, 4, 5}, {3, 5, 2}}}, {"size-1 (1, 7, 3) @ (1, 3, 13)", {{1, 7, 3}, {1, 3, 13}}}},
       [](const V& x) { return bmm(x[0], x[1]); }},
      {"linear",
       {{"(4, 3) W (5, 3) b (5)", {{4, 3}, {5, 3}, {5}}},
        {"3-D (2, 3, 4) W (5, 4) b (5)", {{2, 3, 4}, {5, 4}, {5}}},
        {"1-D (3) W (2, 3) b (2)", {{3}, {2, 3}, {2}}},
        {"size-1 (1, 1) W (1, 1) b (1)", {{1, 1}, {1, 1}, {1}}}},
       [](const V& x) { return linear(x[0], x[1], x[2]); }},
      {"linear_no_bias", one("(4, 3) W (5, 3)", {{4, 3}, {5, 3}}), [](const V& x) { return linear(x[0], x[1]); }},
      {"linear_chain", one("(4, 3) (3, 5) (5)", {{4, 3}, {3, 5}, {5}}),
       [](const V& x) { return sum(tanh(matmul(x[0], x[1]) + x[2]) * matmul(x[0], x[1]), {1}); }},
  };
}

std::vector<OpCase> indexing_cases() {
  std::vector<ShapeSet> g2 = {{"(4, 5)", {{4, 5}}}, {"prime (7, 13)", {{7, 13}}}, {"size-1 (1, 6)", {{1, 6}}}};
  return {
      {"gather_dim1", g2,
       [](const V& x) { return gather(x[0], 1, ember_test::random_index(x[0].size(1), {x[0].size(0), 3}, 21).to(x[0].device())); }},
      {"gather_dim0", g2,
       [](const V& x) { return gather(x[0], 0, ember_test::random_index(x[0].size(0), {5, x[0].size(1)}, 22).to(x[0].device())); }},
      {"index_select_dim0", g2,
       [](const V& x) {
         int64_t n = x[0].size(0);  // repeats on purpose: gradients must accumulate
         return index_select(x[0], 0, from_vector<int64_t>({n - 1, 0, (n - 1) / 2, n - 1}, {4}).to(x[0].device()));
       }},
      {"index_select_dim1", g2,
       [](const V& x) { return index_select(x[0], 1, ember_test::random_index(x[0].size(1), {7}, 23).to(x[0].device())); }},
      {"embedding", {{"(7, 3)", {{7, 3}}}, {"(13, 5)", {{13, 5}}}, {"size-1 (1, 4)", {{1, 4}}}},
       [](const V& x) {
         int64_t n = x[0].size(0);
         std::vector<int64_t> idx = {0, 6, 2, 2, 5, 0, 1, 3};
         for (int64_t& i : idx) i %= n;
         return embedding(x[0], from_vector<int64_t>(idx, {2, 4}).to(x[0].device()));
       }},
      {"embedding_1d_index", one("(6, 4)", {{6, 4}}),
       [](const V& x) { return embedding(x[0], from_vector<int64_t>({5, 1, 1}, {3}).to(x[0].device())); }},
      {"scatter_add", {{"(4, 5) src (4, 3)", {{4, 5}, {4, 3}}}, {"(7, 13) src (7, 13)", {{7, 13}, {7, 13}}}},
       [](const V& x) {
         return scatter_add(x[0], 1, ember_test::random_index(x[0].size(1), x[1].shape(), 24).to(x[0].device()), x[1]);
       }},
      {"scatter_add_dim0", one("(3, 4) src (6, 4)", {{3, 4}, {6, 4}}),
       [](const V& x) {
         return scatter_add(x[0], 0, ember_test::random_index(x[0].size(0), x[1].shape(), 25).to(x[0].device()), x[1]);
       }},
      {"index_add", {{"(5, 3) src (4, 3)", {{5, 3}, {4, 3}}}, {"(7, 2) src (4, 2)", {{7, 2}, {4, 2}}}},
       [](const V& x) { return index_add(x[0], 0, from_vector<int64_t>({0, 2, 2, 4}, {4}).to(x[0].device()), x[1], 0.7); }},
      {"index_add_dim1", one("(3, 6) src (3, 4)", {{3, 6}, {3, 4}}),
       [](const V& x) { return index_add(x[0], 1, from_vector<int64_t>({5, 1, 1, 0}, {4}).to(x[0].device()), x[1]); }},
  };
}

std::vector<OpCase> join_cases() {
  return {
      {"cat_dim0", one("(2, 3) (4, 3) (1, 3)", {{2, 3}, {4, 3}, {1, 3}}),
       [](const V& x) { return cat({x[0], x[1], x[2]}, 0); }},
      {"cat_dim1", one("(3, 2) (3, 5)", {{3, 2}, {3, 5}}), [](const V& x) { return cat({x[0], x[1]}, 1); }},
      {"cat_neg_dim", one("(2, 3, 2) (2, 3, 3)", {{2, 3, 2}, {2, 3, 3}}),
       [](const V& x) { return cat({x[1], x[0], x[1]}, -1); }},
      {"stack_dim0", one("3 x (3, 4)", {{3, 4}, {3, 4}, {3, 4}}), [](const V& x) { return stack(x, 0); }},
      {"stack_dim1", one("2 x (7, 3)", {{7, 3}, {7, 3}}), [](const V& x) { return stack(x, 1); }},
      {"stack_last", one("2 x (2, 5)", {{2, 5}, {2, 5}}), [](const V& x) { return stack(x, -1); }},
      {"split", one("(3, 7)", {{3, 7}}),
       [](const V& x) {
         auto p = split(x[0], 3, 1);  // widths 3, 3, 1
         return cat({p.at(2) * 3.0, p.at(0), p.at(1) * 2.0}, 1);
       }},
      {"split_sizes", one("(3, 7)", {{3, 7}}),
       [](const V& x) {
         auto p = split_sizes(x[0], {2, 4, 1}, 1);
         return cat({p.at(1) * -1.5, p.at(2), p.at(0) * 2.0}, 1);
       }},
      {"chunk", one("(7, 4)", {{7, 4}}),
       [](const V& x) {
         auto p = chunk(x[0], 3, 0);  // rows 3, 3, 1
         return cat({p.at(1) * 0.5, p.at(2) * 3.0, p.at(0)}, 0);
       }},
      {"pad_last", {{"(3, 4)", {{3, 4}}}, {"1-D (5)", {{5}}}}, [](const V& x) { return pad(x[0], {1, 2}); }},
      {"pad_two_dims", {{"(3, 4)", {{3, 4}}}, {"3-D (2, 3, 5)", {{2, 3, 5}}}},
       [](const V& x) { return pad(x[0], {1, 2, 2, 0}, 0.5); }},
      {"dropout", ember_test::unary_shapes(),
       [](const V& x) {
         Generator g(1234);  // a fresh generator per call: every call draws the same mask
         return dropout(x[0], 0.3, true, &g);
       }},
      {"dropout_eval", ember_test::unary_shapes(), [](const V& x) { return dropout(x[0], 0.3, false); }},
  };
}

std::vector<OpCase> view_cases() {
  auto un = ember_test::unary_shapes();
  return {
      {"view_merge", one("(3, 4)", {{3, 4}}), [](const V& x) { return view(x[0], {2, 6}); }, kNoLayouts},
      {"view_infer", one("(3, 4)", {{3, 4}}), [](const V& x) { return view(x[0], {-1}); }, kNoLayouts},
      {"view_split_last", {{"(3, 4)", {{3, 4}}}, {"(5, 6)", {{5, 6}}}, {"(1, 8)", {{1, 8}}}},
       [](const V& x) { return view(x[0], {x[0].size(0), 2, -1}); }},
      {"reshape", {{"(3, 4)", {{3, 4}}}, {"(2, 6)", {{2, 6}}}}, [](const V& x) { return reshape(x[0], {4, -1}); }},
      {"reshape_flat", un, [](const V& x) { return reshape(x[0], {-1}); }},
      {"permute", one("(2, 3, 4)", {{2, 3, 4}}), [](const V& x) { return permute(x[0], {2, 0, 1}); }},
      {"transpose", one("(2, 3, 4)", {{2, 3, 4}}), [](const V& x) { return transpose(x[0], 0, 2); }},
      {"t", {{"(3, 5)", {{3, 5}}}, {"(1, 7)", {{1, 7}}}}, [](const V& x) { return x[0].t(); }},
      {"narrow", one("(5, 7)", {{5, 7}}), [](const V& x) { return narrow(x[0], 1, 2, 3); }},
      {"slice_step", one("(7, 5)", {{7, 5}}), [](const V& x) { return slice(x[0], 0, 1, 6, 2); }},
      {"slice_step3", one("(4, 13)", {{4, 13}}), [](const V& x) { return slice(x[0], 1, 0, 13, 3); }},
      {"unfold_overlap", one("(3, 11)", {{3, 11}}), [](const V& x) { return unfold(x[0], 1, 4, 2); }},
      {"unfold_gap", one("(2, 3, 13)", {{2, 3, 13}}), [](const V& x) { return unfold(x[0], 2, 2, 3); }},
      {"select", one("(4, 5, 3)", {{4, 5, 3}}), [](const V& x) { return select(x[0], 1, 2); }},
      {"select_neg_index", one("(4, 5)", {{4, 5}}), [](const V& x) { return select(x[0], 0, -1); }},
      {"expand", {{"(3, 1)", {{3, 1}}}, {"(1, 1)", {{1, 1}}}}, [](const V& x) { return expand(x[0], {x[0].size(0), 4}); }},
      {"expand_new_dims", one("(1, 3)", {{1, 3}}), [](const V& x) { return expand(x[0], {2, 4, 3}); }},
      {"expand_keep", one("(3, 1)", {{3, 1}}), [](const V& x) { return expand(x[0], {-1, 5}); }},
      {"broadcast_to", {{"(4, 1)", {{4, 1}}}, {"0-D", {{}}}}, [](const V& x) { return broadcast_to(x[0], {2, 4, 3}); }},
      {"squeeze_all", one("(3, 1, 4, 1)", {{3, 1, 4, 1}}), [](const V& x) { return squeeze(x[0]); }},
      {"squeeze_dim", one("(3, 1, 4, 1)", {{3, 1, 4, 1}}), [](const V& x) { return squeeze(x[0], 1); }},
      {"unsqueeze", un, [](const V& x) { return unsqueeze(x[0], 0); }},
      {"unsqueeze_last", un, [](const V& x) { return unsqueeze(x[0], -1); }},
      {"flatten_range", one("(2, 3, 2, 3)", {{2, 3, 2, 3}}), [](const V& x) { return flatten(x[0], 1, 2); }},
      {"flatten_all", un, [](const V& x) { return flatten(x[0]); }},
      {"contiguous", un, [](const V& x) { return contiguous(x[0]); }},
      {"clone", un, [](const V& x) { return clone(x[0]); }},
      {"to_dtype_f64", un, [](const V& x) { return to_dtype(x[0], DType::f64); }},
      // a view followed by arithmetic: gradients flow back through the view into the base
      {"view_then_math", one("(4, 6)", {{4, 6}}),
       [](const V& x) { return narrow(x[0], 0, 1, 2).t() * select(x[0], 1, 3).narrow(0, 0, 2); }},
  };
}

}  // namespace

TEST_SUITE("ops") {
  TEST_CASE("op harness: elementwise (gradcheck, layouts, f16/bf16)") { ember_test::run_cases(elementwise_cases()); }
  TEST_CASE("op harness: reductions") { ember_test::run_cases(reduction_cases()); }
  TEST_CASE("op harness: matmul and bmm") { ember_test::run_cases(linalg_cases()); }
  TEST_CASE("op harness: indexing") { ember_test::run_cases(indexing_cases()); }
  TEST_CASE("op harness: joining, splitting, padding, dropout") { ember_test::run_cases(join_cases()); }
  TEST_CASE("op harness: views and copies") { ember_test::run_cases(view_cases()); }

  // The same rows in the devices mode: every available device (the stand-in fake:0, and cuda:0
  // on a GPU) against the CPU; elementwise rows in every float dtype. A new op's one row here
  // is its gradcheck, layout, low-precision and device test (docs/adding-an-op.md).
  TEST_CASE("op harness: every row on every device") {
    const ember_test::RunOptions on_devices{.mode = ember_test::Mode::devices, .tag = "table"};
    for (auto cases : {elementwise_cases(), reduction_cases(), linalg_cases(), indexing_cases(), join_cases(),
                       view_cases()}) {
      for (OpCase& c : cases)
        if (c.flags & kLowPrecision) c.dtypes = {DType::f32, DType::f64, DType::f16, DType::bf16};
      ember_test::run_cases(cases, on_devices);
    }
  }
  TEST_CASE("op harness: EMBER_TEST_OP filter") {
    // The filter reads the environment on each call; only check it when nothing is set.
    if (!std::getenv("EMBER_TEST_OP")) {
      CHECK(ember_test::op_selected("add"));
      CHECK(ember_test::op_selected("index_add"));
    }
  }

  TEST_CASE("gradcheck catches a wrong backward") {
    // y = 2x recorded with a backward that returns 3g: gradcheck must say no.
    auto bad = [](const V& x) {
      Tensor out;
      {
        NoGradGuard ng;
        out = x[0] * 2.0;
      }
      out = out.detach();
      record("bad_double", {x[0]}, {out},
             [](const std::vector<Tensor>& g, const std::vector<Tensor>&, const std::vector<bool>&) { return std::vector<Tensor>{g[0] * 3.0}; });
      return out;
    };
    auto good = [](const V& x) {
      Tensor out;
      {
        NoGradGuard ng;
        out = x[0] * 2.0;
      }
      out = out.detach();
      record("good_double", {x[0]}, {out},
             [](const std::vector<Tensor>& g, const std::vector<Tensor>&, const std::vector<bool>&) { return std::vector<Tensor>{g[0] * 2.0}; });
      return out;
    };
    Generator gen(5);
    Tensor x = randn({3, 4}, DType::f64, &gen).requires_grad_(true);
    CHECK_FALSE(gradcheck(bad, {x}).ok);
    CHECK(gradcheck(good, {x}).ok);
    CHECK(gradcheck([](const V& v) { return v[0] * v[0]; }, {x}).ok);
  }
}
