// Row and column reductions and softmax on the CPU. Eigen maps do the vectorised inner loops.
#include <Eigen/Core>
#include <cmath>
#include <limits>

#include "cpu/cpu.h"
#include "cpu/loops.h"

namespace ember::cpu {

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace {
// Float sums add blocks of kBlock elements in the vector unit, then the block sums in double:
// long rows stay accurate (a plain float accumulator drifts by ~1% over 1M elements).
constexpr int64_t kBlock = 1024;
template <class T>
T row_sum(const T* p, int64_t R) {
  using Vec = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>;
  if constexpr (std::is_same_v<T, float>) {
    double acc = 0;
    for (int64_t b = 0; b < R; b += kBlock) acc += Vec(p + b, std::min(kBlock, R - b)).sum();
    return static_cast<T>(acc);
  } else {
    return R ? Vec(p, R).sum() : T(0);
  }
}
}  // namespace

void reduce_rows(ReduceOp op, const Tensor& x, const Tensor& out, int64_t M, int64_t R) {
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
  EMBER_DISPATCH_NUMERIC(x.dtype(), "sum", [&] {
    const scalar_t* px = static_cast<const scalar_t*>(x.data_ptr());
    scalar_t* po = static_cast<scalar_t*>(out.data_ptr());
    // Split the columns across threads; each thread walks all rows of its slice, adding
    // blocks of rows in scalar_t and the block results in a wider accumulator for floats.
    using Acc = std::conditional_t<std::is_same_v<scalar_t, float>, double, scalar_t>;
    using Vec = Eigen::Matrix<scalar_t, Eigen::Dynamic, 1>;
    parallel_for(M, R, [&](int64_t c0, int64_t c1) {
      const int64_t w = c1 - c0;
      Eigen::Matrix<Acc, Eigen::Dynamic, 1> total = Eigen::Matrix<Acc, Eigen::Dynamic, 1>::Zero(w);
      Vec block(w);
      for (int64_t r0 = 0; r0 < R; r0 += kBlock) {
        block.setZero();
        for (int64_t r = r0; r < std::min(R, r0 + kBlock); ++r)
          block += Eigen::Map<const Vec>(px + r * M + c0, w);
        total += block.template cast<Acc>();
      }
      Eigen::Map<Vec>(po + c0, w) = total.template cast<scalar_t>();
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
        if (log) {
          o = in - mx;
          const scalar_t lse = std::log(o.exp().sum());
          o -= lse;
        } else {
          o = (in - mx).exp();
          o /= o.sum();
        }
      }
    });
  });
}

}  // namespace ember::cpu
