// Row and column reductions and softmax on the CPU. Eigen maps do the vectorised inner loops.
#include <Eigen/Core>
#include <cmath>
#include <limits>

#include "cpu/cpu.h"
#include "cpu/loops.h"

namespace ember::cpu {

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

void reduce_rows(ReduceOp op, const Tensor& x, const Tensor& out, int64_t M, int64_t R) {
  EMBER_DISPATCH_NUMERIC(x.dtype(), "reduce", [&] {
    const scalar_t* px = static_cast<const scalar_t*>(x.data_ptr());
    scalar_t* po = static_cast<scalar_t*>(out.data_ptr());
    parallel_for(M, R, [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m) {
        Eigen::Map<const Eigen::Matrix<scalar_t, Eigen::Dynamic, 1>> row(px + m * R, R);
        switch (op) {
          case ReduceOp::sum: po[m] = R ? row.sum() : scalar_t(0); break;
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
    // Split the columns across threads; each thread walks all rows of its slice.
    parallel_for(M, R, [&](int64_t c0, int64_t c1) {
      Eigen::Map<Eigen::Matrix<scalar_t, Eigen::Dynamic, 1>> acc(po + c0, c1 - c0);
      acc.setZero();
      for (int64_t r = 0; r < R; ++r)
        acc += Eigen::Map<const Eigen::Matrix<scalar_t, Eigen::Dynamic, 1>>(px + r * M + c0, c1 - c0);
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
