// Layer norm on the CPU: one row at a time, rows split across OpenMP threads.
//
// Forward reads each row three times (sum, sum of squared deviations, output); a row is in
// cache after the first pass, and two passes keep the variance accurate when |mean| >> std
// (the one-pass sum-of-squares form loses digits there).
// Backward: the input gradient is per row; the weight and bias gradients are column sums over
// all rows. Rows are cut into a fixed number of chunks (not one per thread), each chunk sums
// its rows into its own partial row, and the partials are added in chunk order: the result
// does not depend on the thread count.
#include "cpu/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"

#include <cmath>
#include <vector>

#include "cpu/loops.h"

namespace ember::cpu {
namespace {

constexpr int64_t kGradChunks = 32;  // row chunks of the weight/bias gradient sums


template <class T>
void forward_rows(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, double eps, int64_t M, int64_t N) {
  const double inv_n = 1.0 / static_cast<double>(N);
  parallel_for(M, 3 * N, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * N;  // (N)
      T* yr = y + r * N;        // (N)
      double s = 0;
      for (int64_t j = 0; j < N; ++j) s += xr[j];
      const double mu = s * inv_n;
      double ss = 0;
      for (int64_t j = 0; j < N; ++j) {
        const double d = xr[j] - mu;
        ss += d * d;
      }
      const double rs = 1.0 / std::sqrt(ss * inv_n + eps);
      mean[r] = static_cast<T>(mu);
      rstd[r] = static_cast<T>(rs);
      for (int64_t j = 0; j < N; ++j) {
        double v = (xr[j] - mu) * rs;
        if (w) v *= w[j];
        if (b) v += b[j];
        yr[j] = static_cast<T>(v);
      }
    }
  });
}

template <class T>
void backward_rows(const T* dy, const T* x, const T* mean, const T* rstd, const T* w, T* dx, T* dw, T* db,
                   int64_t M, int64_t N) {
  const double inv_n = 1.0 / static_cast<double>(N);
  const bool params = dw || db;
  int64_t chunks = std::min(M, kGradChunks);
  const int64_t rows_per_chunk = (M + chunks - 1) / chunks;
  chunks = (M + rows_per_chunk - 1) / rows_per_chunk;  // no empty chunk
  // Per-chunk partial column sums: (chunks, N) each.
  std::vector<double> part_w(dw ? chunks * N : 0, 0.0), part_b(db ? chunks * N : 0, 0.0);
  parallel_for(chunks, rows_per_chunk * N, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double* pw = dw ? part_w.data() + c * N : nullptr;
      double* pb = db ? part_b.data() + c * N : nullptr;
      for (int64_t r = c * rows_per_chunk; r < std::min(M, (c + 1) * rows_per_chunk); ++r) {
        const T* dyr = dy + r * N;
        const T* xr = x + r * N;
        const double mu = mean[r], rs = rstd[r];
        if (dx) {
          double sum_g = 0, sum_gx = 0;  // sum_j g, sum_j g * xhat
          for (int64_t j = 0; j < N; ++j) {
            const double g = w ? static_cast<double>(dyr[j]) * w[j] : static_cast<double>(dyr[j]);
            sum_g += g;
            sum_gx += g * (xr[j] - mu) * rs;
          }
          const double mg = sum_g * inv_n, mgx = sum_gx * inv_n;
          T* dxr = dx + r * N;
          for (int64_t j = 0; j < N; ++j) {
            const double g = w ? static_cast<double>(dyr[j]) * w[j] : static_cast<double>(dyr[j]);
            dxr[j] = static_cast<T>(rs * (g - mg - (xr[j] - mu) * rs * mgx));
          }
        }
        if (params)
          for (int64_t j = 0; j < N; ++j) {
            if (pw) pw[j] += static_cast<double>(dyr[j]) * (xr[j] - mu) * rs;
            if (pb) pb[j] += dyr[j];
          }
      }
    }
  });
  if (!params) return;
  for (int64_t j = 0; j < N; ++j) {
    double sw = 0, sb = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      if (dw) sw += part_w[c * N + j];
      if (db) sb += part_b[c * N + j];
    }
    if (dw) dw[j] = static_cast<T>(sw);
    if (db) db[j] = static_cast<T>(sb);
  }
}

}  // namespace

void layer_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, const Tensor& out,
                        const Tensor& mean, const Tensor& rstd, int64_t M, int64_t N) {
  if (M == 0) return;
  EMBER_DISPATCH_FLOAT(x.dtype(), "layer_norm", [&] {
    forward_rows<scalar_t>(static_cast<const scalar_t*>(x.data_ptr()), ptr_or_null<scalar_t>(weight),
                           ptr_or_null<scalar_t>(bias), static_cast<scalar_t*>(out.data_ptr()),
                           static_cast<scalar_t*>(mean.data_ptr()), static_cast<scalar_t*>(rstd.data_ptr()), eps, M,
                           N);
  });
}

void layer_norm_backward(const Tensor& grad_out, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                         const Tensor& weight, const Tensor& grad_x, const Tensor& grad_weight,
                         const Tensor& grad_bias, int64_t M, int64_t N) {
  EMBER_DISPATCH_FLOAT(x.dtype(), "layer_norm_backward", [&] {
    scalar_t* dw = mut_ptr_or_null<scalar_t>(grad_weight);
    scalar_t* db = mut_ptr_or_null<scalar_t>(grad_bias);
    if (M == 0) {  // no rows: the parameter gradients are sums over nothing
      for (int64_t j = 0; j < N; ++j) {
        if (dw) dw[j] = scalar_t(0);
        if (db) db[j] = scalar_t(0);
      }
      return;
    }
    backward_rows<scalar_t>(static_cast<const scalar_t*>(grad_out.data_ptr()),
                            static_cast<const scalar_t*>(x.data_ptr()), static_cast<const scalar_t*>(mean.data_ptr()),
                            static_cast<const scalar_t*>(rstd.data_ptr()), ptr_or_null<scalar_t>(weight),
                            mut_ptr_or_null<scalar_t>(grad_x), dw, db, M, N);
  });
}

void register_norm_kernels() {
  prim::define<prim::layer_norm_forward>(prim::Backend::cpu, &layer_norm_forward);
  prim::define<prim::layer_norm_backward>(prim::Backend::cpu, &layer_norm_backward);
}

}  // namespace ember::cpu
