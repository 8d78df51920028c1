// The CUDA backend: the same primitives as src/cpu/cpu.h, with the same contracts, on CUDA
// tensors. Kernels (kernels/*.cu) launch on the current stream and check every launch.
// Unlike the CPU backend, f16 and bf16 tensors arrive as they are (computed in f32 inside).
#pragma once
#include <cstdint>

#include "ember/core/tensor.h"
#include "ops/elementwise_math.h"
#include "ops/kinds.h"

namespace ember::cuda {

// dst[i] = convert(src[i]); same shape (src may be broadcast with zero strides), any dtypes,
// any strides.
void copy(const Tensor& src, const Tensor& dst);
void fill(const Tensor& dst, double value);
// out = op(x); x and out share a compute dtype (f32 f64 i32 i64, bool for logical_not).
void unary(UnaryOp op, const Tensor& x, const Tensor& out, UnaryArgs args);
// out = op(a, b); a and b share a compute dtype and have out's shape (broadcast by strides);
// out has that dtype, or bool for comparisons. out may alias a (in-place).
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, double alpha);
// out = cond ? a : b; all of out's shape (broadcast by strides), a/b/out share a dtype.
void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out);

// x contiguous (M, R) -> out contiguous (M): reduce each row.
void reduce_rows(ReduceOp op, const Tensor& x, const Tensor& out, int64_t M, int64_t R);
// x contiguous (R, M) -> out (M): reduce each column (sum only).
void sum_cols(const Tensor& x, const Tensor& out, int64_t R, int64_t M);
// x contiguous (M, R): values (M) and i64 indices (M) of each row's max (is_max) or min;
// the first index wins ties.
void arg_reduce_rows(bool is_max, const Tensor& x, const Tensor& values, const Tensor& indices,
                     int64_t M, int64_t R);
// x, out contiguous (M, R): softmax or log-softmax of each row.
void softmax_rows(bool log, const Tensor& x, const Tensor& out, int64_t M, int64_t R);

// out (B, n, m) contiguous = a (B, n, k) @ b (B, k, m) [+ bias]. a and b may be strided; each
// matrix must have unit stride in one of its two dims (callers make it so). bias, when defined,
// is contiguous (m) of out's dtype and is added to every row (Linear's fused bias).
void bmm(const Tensor& a, const Tensor& b, const Tensor& out, const Tensor& bias = Tensor());

// All index tensors are contiguous i64; x, src, out are contiguous unless noted.
void gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
void scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);
void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, double alpha);
void one_hot(const Tensor& index, const Tensor& out, int64_t classes);

// Fills contiguous out from the Philox stream (seed, block offset): see core/generator.h.
void random_fill(RandomKind kind, const Tensor& out, uint64_t seed, uint64_t offset, double a, double b);

}  // namespace ember::cpu
