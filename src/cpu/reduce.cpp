// Row and column reductions and softmax on the CPU. Eigen maps do the vectorised inner loops,
// except for float sums, which have their own summation scheme:
//
// Float sums (f32; f16/bf16 reach the CPU backend already widened to f32) add the input in
// small pairwise trees in float and the tree results in double. A row is read in steps of
// 64 elements, 8 vector lanes x 8 values: each lane adds its 8 values as a balanced tree
// ((a+b)+(c+d))+(...), three roundings deep, then widens to double and joins one of 8 double
// lane accumulators. A column sum does the same across rows: 8 rows at a time in a tree per
// column, then into a double per column. So every float sum is a 3-level pairwise sum of
// 8 values followed by a double sum, whose own error is ~1e-16 per term: a sum of 10^7 equal
// floats comes out correctly rounded (the old 1024-element float blocks carried the same
// rounding error into every block, 1e-5 relative at 10^7). The float trees keep the speed of
// a float loop (7 float adds + 1 widening add per 8 values), and the result does not depend
// on the thread count: chunk boundaries fall on whole trees, so threads change only the order
// of double additions. f64 sums use Eigen's vectorised sum; integer sums are exact.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"
#include "cpu/loops.h"

namespace ember::cpu {

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace {
constexpr int64_t kLanes = 8;                 // float lanes added side by side (one AVX register)
constexpr int64_t kTree = 8;                  // values per lane in one pairwise tree
constexpr int64_t kStep = kLanes * kTree;     // elements per row step
constexpr int64_t kMinRowChunk = 1 << 16;     // shortest piece of a row split across threads
constexpr int64_t kColTile = 512;             // columns whose double totals stay in L1

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Sum of p[0, n) in double, from float trees (see the file comment).
double pairwise_sum(const float* __restrict p, int64_t n) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kStep <= n; i += kStep) {
    const float* q = p + i;
    for (int64_t l = 0; l < kLanes; ++l) {  // lane l adds q[l], q[l + 8], ..., q[l + 56]
      const float t = ((q[l] + q[l + 8]) + (q[l + 16] + q[l + 24])) + ((q[l + 32] + q[l + 40]) + (q[l + 48] + q[l + 56]));
      acc[l] += t;
    }
  }
  double tail = 0;
  for (; i < n; ++i) tail += p[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

template <class T>
T row_sum(const T* p, int64_t R) {
  if constexpr (std::is_same_v<T, float>) {
    return static_cast<float>(pairwise_sum(p, R));
  } else {
    return R ? Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(p, R).sum() : T(0);
  }
}

// out[m] = sum of row m of x (M, R). Rows are spread over threads; when there are fewer rows
// than threads (M = 1 is a full sum), each row is also cut into chunks of whole kSteps whose
// double partials are added in chunk order.
void sum_rows_f32(const float* x, float* out, int64_t M, int64_t R) {
  const int64_t threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  int64_t chunks = 1;
  if (M < threads && R >= 2 * kMinRowChunk) chunks = std::min(ceil_div(threads, M), R / kMinRowChunk);
  if (chunks == 1) {
    parallel_for(M, R, [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m) out[m] = static_cast<float>(pairwise_sum(x + m * R, R));
    });
    return;
  }
  const int64_t len = ceil_div(ceil_div(R, chunks), kStep) * kStep;
  std::vector<double> part(static_cast<size_t>(M * chunks));  // (M, chunks)
  parallel_for(M * chunks, len, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t begin = (s % chunks) * len, end = std::min(R, begin + len);
      part[s] = begin < end ? pairwise_sum(x + (s / chunks) * R + begin, end - begin) : 0.0;
    }
  });
  for (int64_t m = 0; m < M; ++m) {
    double t = 0;
    for (int64_t c = 0; c < chunks; ++c) t += part[m * chunks + c];
    out[m] = static_cast<float>(t);
  }
}

// acc[0, w) += column sums over rows [r0, r1) of columns [c0, c0 + w) of x (R, M): rows are
// added kTree at a time in a float tree per column, the tree results in double.
void add_col_sums_f32(const float* __restrict x, int64_t M, int64_t r0, int64_t r1, int64_t c0, int64_t w,
                      double* __restrict acc) {
  int64_t r = r0;
  for (; r + kTree <= r1; r += kTree) {
    const float* p = x + r * M + c0;
    for (int64_t c = 0; c < w; ++c) {
      const float t = ((p[c] + p[c + M]) + (p[c + 2 * M] + p[c + 3 * M])) +
                      ((p[c + 4 * M] + p[c + 5 * M]) + (p[c + 6 * M] + p[c + 7 * M]));
      acc[c] += t;
    }
  }
  for (; r < r1; ++r)
    for (int64_t c = 0; c < w; ++c) acc[c] += x[r * M + c0 + c];
}

// out[c] = sum over rows of column c of x (R, M). Wide matrices split the columns across
// threads; narrow ones (fewer than 16 columns per thread) split the rows into chunks of whole
// trees, each with its own double totals, added in chunk order. One column is one row.
void sum_cols_f32(const float* x, float* out, int64_t R, int64_t M) {
  if (M == 1) return sum_rows_f32(x, out, 1, R);
  const int64_t threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  int64_t chunks = 1;
  if (M < 16 * threads && M * R >= kParallelGrain) chunks = std::min(threads, ceil_div(R, kTree));
  if (chunks == 1) {
    parallel_for(M, R, [&](int64_t c0, int64_t c1) {
      double acc[kColTile];
      for (int64_t t0 = c0; t0 < c1; t0 += kColTile) {
        const int64_t w = std::min(kColTile, c1 - t0);
        std::fill(acc, acc + w, 0.0);
        add_col_sums_f32(x, M, 0, R, t0, w, acc);
        for (int64_t c = 0; c < w; ++c) out[t0 + c] = static_cast<float>(acc[c]);
      }
    });
    return;
  }
  const int64_t rows = ceil_div(ceil_div(R, chunks), kTree) * kTree;
  std::vector<double> part(static_cast<size_t>(chunks * M), 0.0);  // (chunks, M)
  parallel_for(chunks, rows * M, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k)
      for (int64_t t0 = 0; t0 < M; t0 += kColTile)
        add_col_sums_f32(x, M, std::min(R, k * rows), std::min(R, k * rows + rows), t0, std::min(kColTile, M - t0),
                         part.data() + k * M + t0);
  });
  for (int64_t c = 0; c < M; ++c) {
    double t = 0;
    for (int64_t k = 0; k < chunks; ++k) t += part[k * M + c];
    out[c] = static_cast<float>(t);
  }
}
}  // namespace

void reduce_rows(ReduceOp op, const Tensor& x, const Tensor& out, int64_t M, int64_t R) {
  if (op == ReduceOp::sum && x.dtype() == DType::f32)
    return sum_rows_f32(static_cast<const float*>(x.data_ptr()), static_cast<float*>(out.data_ptr()), M, R);
  EMBER_DISPATCH_NUMERIC(x.dtype(), "reduce", [&] {
    const scalar_t* px = static_cast<const scalar_t*>(x.data_ptr());
    scalar_t* po = static_cast<scalar_t*>(out.data_ptr());
    parallel_for(M, R, [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m) {
        Eigen::Map<const Eigen::Matrix<scalar_t, Eigen::Dynamic, 1>> row(px + m * R, R);
        switch (op) {
          case ReduceOp::sum: po[m] = row_sum(px + m * R, R); break;
          case ReduceOp::prod: po[m] = R ? row.prod() : scalar_t(1); break;
          case ReduceOp::max: po[m] = row.maxCoeff(); break;
          case ReduceOp::min: po[m] = row.minCoeff(); break;
        }
      }
    });
  });
}

void sum_cols(const Tensor& x, const Tensor& out, int64_t R, int64_t M) {
  if (x.dtype() == DType::f32)
    return sum_cols_f32(static_cast<const float*>(x.data_ptr()), static_cast<float*>(out.data_ptr()), R, M);
  EMBER_DISPATCH_NUMERIC(x.dtype(), "sum", [&] {
    const scalar_t* px = static_cast<const scalar_t*>(x.data_ptr());
    scalar_t* po = static_cast<scalar_t*>(out.data_ptr());
    // f64 and integers: each thread adds the rows of its slice of columns in scalar_t.
    using Vec = Eigen::Matrix<scalar_t, Eigen::Dynamic, 1>;
    parallel_for(M, R, [&](int64_t c0, int64_t c1) {
      Eigen::Map<Vec> total(po + c0, c1 - c0);
      total.setZero();
      for (int64_t r = 0; r < R; ++r) total += Eigen::Map<const Vec>(px + r * M + c0, c1 - c0);
    });
  });
}

void arg_reduce_rows(bool is_max, const Tensor& x, const Tensor& values, const Tensor& indices,
                     int64_t M, int64_t R) {
  EMBER_DISPATCH_NUMERIC(x.dtype(), is_max ? "max" : "min", [&] {
    const scalar_t* px = static_cast<const scalar_t*>(x.data_ptr());
    scalar_t* pv = static_cast<scalar_t*>(values.data_ptr());
    int64_t* pi = indices.data<int64_t>();
    parallel_for(M, R, [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m) {
        const scalar_t* row = px + m * R;
        int64_t best = 0;
        for (int64_t r = 1; r < R; ++r) {
          // NaN wins (propagates), like max over floats in most frameworks.
          bool better = is_max ? (row[r] > row[best]) : (row[r] < row[best]);
          if constexpr (std::is_floating_point_v<scalar_t>)
            better = better || (std::isnan(row[r]) && !std::isnan(row[best]));
          if (better) best = r;
        }
        pv[m] = row[best];
        pi[m] = best;
      }
    });
  });
}

void softmax_rows(bool log, const Tensor& x, const Tensor& out, int64_t M, int64_t R) {
  EMBER_DISPATCH_FLOAT(x.dtype(), log ? "log_softmax" : "softmax", [&] {
    const scalar_t* px = static_cast<const scalar_t*>(x.data_ptr());
    scalar_t* po = static_cast<scalar_t*>(out.data_ptr());
    parallel_for(M, R * 4, [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m) {
        Eigen::Map<const Eigen::Array<scalar_t, Eigen::Dynamic, 1>> in(px + m * R, R);
        Eigen::Map<Eigen::Array<scalar_t, Eigen::Dynamic, 1>> o(po + m * R, R);
        const scalar_t mx = in.maxCoeff();
        o = (in - mx).exp();
        const scalar_t s = row_sum(po + m * R, R);  // pairwise for float: long rows keep their digits
        if (log) o = in - mx - std::log(s);
        else o /= s;
      }
    });
  });
}

void register_reduce_kernels() {
  prim::define<prim::reduce_rows>(prim::Backend::cpu, &reduce_rows);
  prim::define<prim::sum_cols>(prim::Backend::cpu, &sum_cols);
  prim::define<prim::arg_reduce_rows>(prim::Backend::cpu, &arg_reduce_rows);
  prim::define<prim::softmax_rows>(prim::Backend::cpu, &softmax_rows);
}

}  // namespace ember::cpu
