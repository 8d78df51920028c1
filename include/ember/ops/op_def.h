// Every op ember runs, described once: its name and its mixed-precision category. An op call
// goes through one path (src/ops/op_call.h): checks, the autocast hook (driven by the category
// below, not by lists of names), allocation, the kernel (src/prim/registry.h), the autograd
// record, then the op observers (ember/ops/observe.h: a profiler, a tracer, an exporter), which
// see the op's OpDef, its inputs, its typed attributes and its outputs.
//
// Adding an op: one X(...) row here, its function beside its family (src/ops/<family>.cpp), its
// kernels under src/cpu and kernels/ (see docs/adding-an-op.md).
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "ember/core/dtype.h"

namespace ember {

// What autocast does with an op's floating inputs (ember/amp.h):
//   lower  - cast to the region's low dtype (bf16 or f16): the GEMM-bound ops;
//   f32    - cast low-precision inputs to f32: ops whose range or accumulation needs it;
//   widest - cast every float input to the widest float dtype among them;
//   keep   - run as given (views, copies, indexing, elementwise ops that are exact enough, and
//            the backward primitives, which take the dtypes their forward produced).
enum class Precision : uint8_t { keep, lower, f32, widest };
const char* precision_name(Precision p);

// X(name, precision): the op table. The name is the op's public function (ember::name, or
// ember::nn::name for the functional losses and pools) and what observers report.
#define EMBER_OPS(X)                                                                                     \
  /* creation */                                                                                         \
  X(empty, keep) X(full, keep) X(arange, keep) X(linspace, keep) X(from_vector, keep) X(uniform, keep)   \
  X(randn, keep) X(randint, keep) X(bernoulli, keep)                                                     \
  /* copies and conversions */                                                                           \
  X(contiguous, keep) X(clone, keep) X(to_dtype, keep) X(to_device, keep)                                \
  /* views */                                                                                            \
  X(view, keep) X(reshape, keep) X(flatten, keep) X(permute, keep) X(transpose, keep) X(slice, keep)     \
  X(narrow, keep) X(select, keep) X(expand, keep) X(broadcast_to, keep) X(unfold, keep)                  \
  X(squeeze, keep) X(unsqueeze, keep)                                                                    \
  /* elementwise */                                                                                      \
  X(add, widest) X(sub, widest) X(mul, widest) X(div, widest) X(pow, f32) X(maximum, widest)             \
  X(minimum, widest) X(eq, widest) X(ne, widest) X(lt, widest) X(le, widest) X(gt, widest)               \
  X(ge, widest) X(logical_and, keep) X(logical_or, keep) X(logical_not, keep) X(neg, keep) X(exp, f32)   \
  X(log, f32) X(log1p, f32) X(erf, f32) X(expm1, f32) X(softplus, f32) X(sqrt, keep) X(rsqrt, f32)       \
  X(abs, keep) X(tanh, keep) X(sigmoid, keep) X(relu, keep) X(gelu, keep) X(silu, keep) X(clamp, keep)   \
  X(where, widest) X(masked_fill, keep) X(dropout, keep)                                                 \
  /* reductions */                                                                                       \
  X(sum, f32) X(mean, f32) X(prod, f32) X(var, f32) X(amax, keep) X(amin, keep) X(max, keep)             \
  X(min, keep) X(argmax, keep) X(argmin, keep) X(softmax, f32) X(log_softmax, f32)                       \
  /* products */                                                                                         \
  X(matmul, lower) X(bmm, lower) X(linear, lower)                                                        \
  X(quantize_rows, keep) X(linear_int8, keep)                                                            \
  /* indexing and joining */                                                                             \
  X(gather, keep) X(scatter_add, widest) X(index_select, keep) X(index_add, widest) X(embedding, keep)   \
  X(one_hot, keep) X(cat, widest) X(stack, widest) X(split, keep) X(split_sizes, keep) X(chunk, keep)    \
  X(pad, keep)                                                                                           \
  /* sequence layers */                                                                                  \
  X(conv1d, lower) X(conv1d_backward_input, keep) X(conv1d_backward_weight, keep)                      \
  X(scaled_dot_product_attention, lower) X(sdpa_forward, lower) X(sdpa_backward, keep)                  \
  X(rnn_recurrence, lower) X(rnn_recurrence_forward, lower) X(rnn_recurrence_backward, keep)            \
  X(max_pool1d, keep) X(avg_pool1d, keep) X(global_max_pool1d, keep) X(global_avg_pool1d, keep)          \
  /* normalisation and losses */                                                                         \
  X(layer_norm, f32) X(layer_norm_forward, f32) X(layer_norm_backward, keep) X(cross_entropy, f32)        \
  X(nll_loss, f32) X(binary_cross_entropy_with_logits, f32) X(mse_loss, f32) X(cross_entropy_rows, f32)  \
  X(cross_entropy_backward, keep) X(bce_with_logits_elements, f32) X(hsoftmax_nll, f32)                   \
  X(hsoftmax_nll_backward, keep) X(hsoftmax_log_prob, f32) X(hsoftmax_full_log_prob, f32)                 \
  X(hsoftmax_tree_log_prob, f32) X(hsoftmax_topk, f32)

enum class OpId : uint16_t {
#define EMBER_OP_ID(name, precision) name,
  EMBER_OPS(EMBER_OP_ID)
#undef EMBER_OP_ID
};

struct OpDef {
  OpId id;
  const char* name;
  Precision precision;
};

const OpDef& op_def(OpId id);
std::span<const OpDef> op_defs();                     // every row of the table, in order
std::optional<OpId> find_op(std::string_view name);  // by name; nullopt when there is none

// An op's attributes (its non-tensor arguments), typed so that a tracer or an exporter can read
// them: none (an optional left empty), bool, integer, real, text, integer list, dtype.
using AttrValue = std::variant<std::monostate, bool, int64_t, double, std::string, std::vector<int64_t>, DType>;
struct Attr {
  const char* name;
  AttrValue value;

  Attr(const char* n, bool v) : name(n), value(v) {}
  Attr(const char* n, int v) : name(n), value(int64_t{v}) {}
  Attr(const char* n, int64_t v) : name(n), value(v) {}
  Attr(const char* n, double v) : name(n), value(v) {}
  Attr(const char* n, const char* v) : name(n), value(std::string(v)) {}
  Attr(const char* n, std::string v) : name(n), value(std::move(v)) {}
  Attr(const char* n, std::vector<int64_t> v) : name(n), value(std::move(v)) {}
  Attr(const char* n, DType v) : name(n), value(v) {}
  template <class T>  // none when empty
  Attr(const char* n, const std::optional<T>& v) : name(n), value(v ? Attr(n, *v).value : AttrValue{}) {}
};
using Attrs = std::vector<Attr>;

}  // namespace ember
