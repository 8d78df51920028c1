// CPU loop helpers shared by the kernels: dtype dispatch, a thresholded OpenMP parallel_for,
// and a strided row iterator that coalesces dims so the inner loop is as long as possible.
#pragma once
#include <omp.h>

#include <array>
#include <cstdint>

#include "ember/core/error.h"
#include "ember/core/tensor.h"

namespace ember::cpu {

// Below this many elements a loop stays on one thread (thread start-up costs more).
constexpr int64_t kParallelGrain = 32768;

template <class F>
void parallel_for(int64_t n, int64_t work_per_item, F&& f) {
  if (n <= 0) return;
  if (n * work_per_item < kParallelGrain || n == 1 || omp_in_parallel()) {
    f(int64_t{0}, n);
    return;
  }
#pragma omp parallel
  {
    int nt = omp_get_num_threads(), t = omp_get_thread_num();
    int64_t chunk = (n + nt - 1) / nt;
    int64_t b = t * chunk, e = std::min(n, b + chunk);
    if (b < e) f(b, e);
  }
}

// Calls row(out_linear_start, offsets[N], count, inner_strides[N]) for every run of
// elements along the (coalesced) innermost dim. Offsets are in elements, relative to each
// operand's data_ptr(). Rows are split across threads.
template <size_t N, class RowFn>
void for_each_row(const Shape& shape_in, const std::array<Shape, N>& strides_in, RowFn&& row) {
  // Coalesce: merge dim d into d+1 when every operand is contiguous across them; drop size-1 dims.
  Shape shape;
  std::array<Shape, N> st;
  for (size_t d = 0; d < shape_in.size(); ++d) {
    if (shape_in[d] == 1) continue;
    bool merge = !shape.empty();
    for (size_t k = 0; k < N && merge; ++k) merge = st[k].back() == strides_in[k][d] * shape_in[d];
    if (merge) {
      shape.back() *= shape_in[d];
      for (size_t k = 0; k < N; ++k) st[k].back() = strides_in[k][d];
    } else {
      shape.push_back(shape_in[d]);
      for (size_t k = 0; k < N; ++k) st[k].push_back(strides_in[k][d]);
    }
  }
  std::array<int64_t, N> zero{};
  if (shape.empty()) {
    if (numel_of(shape_in) == 0) return;
    row(int64_t{0}, zero, int64_t{1}, zero);
    return;
  }
  const int64_t nd = static_cast<int64_t>(shape.size());
  const int64_t inner = shape.back();
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < nd; ++d) rows *= shape[d];
  if (inner == 0 || rows == 0) return;
  std::array<int64_t, N> inner_st;
  for (size_t k = 0; k < N; ++k) inner_st[k] = st[k].back();
  parallel_for(rows, inner, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      std::array<int64_t, N> off{};
      int64_t rem = r;
      for (int64_t d = nd - 2; d >= 0; --d) {
        int64_t i = rem % shape[d];
        rem /= shape[d];
        for (size_t k = 0; k < N; ++k) off[k] += i * st[k][d];
      }
      row(r * inner, off, inner, inner_st);
    }
  });
}

}  // namespace ember::cpu

// Dispatch on a compute dtype (f32 f64 i32 i64 bool): defines `scalar_t` inside __VA_ARGS__.
#define EMBER_DISPATCH_CASE(ENUM, TYPE, ...) \
  case ::ember::DType::ENUM: {               \
    using scalar_t = TYPE;                   \
    __VA_ARGS__();                           \
    break;                                   \
  }
#define EMBER_DISPATCH_ALL(dt, op, ...)                                                  \
  switch (dt) {                                                                          \
    EMBER_DISPATCH_CASE(f32, float, __VA_ARGS__)                                         \
    EMBER_DISPATCH_CASE(f64, double, __VA_ARGS__)                                        \
    EMBER_DISPATCH_CASE(i32, int32_t, __VA_ARGS__)                                       \
    EMBER_DISPATCH_CASE(i64, int64_t, __VA_ARGS__)                                       \
    EMBER_DISPATCH_CASE(boolean, bool, __VA_ARGS__)                                      \
    default: EMBER_FAIL(op, "dtype ", dt, " has no CPU kernel (f16/bf16 compute in f32)"); \
  }
#define EMBER_DISPATCH_FLOAT(dt, op, ...)                      \
  switch (dt) {                                                \
    EMBER_DISPATCH_CASE(f32, float, __VA_ARGS__)               \
    EMBER_DISPATCH_CASE(f64, double, __VA_ARGS__)              \
    default: EMBER_FAIL(op, "expected a float tensor, got ", dt); \
  }
#define EMBER_DISPATCH_NUMERIC(dt, op, ...)                                    \
  switch (dt) {                                                                \
    EMBER_DISPATCH_CASE(f32, float, __VA_ARGS__)                               \
    EMBER_DISPATCH_CASE(f64, double, __VA_ARGS__)                              \
    EMBER_DISPATCH_CASE(i32, int32_t, __VA_ARGS__)                             \
    EMBER_DISPATCH_CASE(i64, int64_t, __VA_ARGS__)                             \
    default: EMBER_FAIL(op, "dtype ", dt, " not supported here"); \
  }
