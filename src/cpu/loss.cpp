// Cross-entropy on the CPU: one row of logits at a time, rows split across OpenMP threads.
//
// Forward per row: the max, then in one more pass the sum of exp(z - max) (log-sum-exp) and,
// only with label smoothing, sum_c w[c] * z[c] and sum_c w[c], so that
//   loss = (1 - eps) * w[t] * (lse - z[t]) + (eps / C) * (lse * sum_c w[c] - sum_c w[c] * z[c]).
// Sums are in double (for f32 rows too): a row of 50k classes keeps its digits.
// Backward per element: grad = grad_loss[i] * (S * exp(z - lse) - q[c]), S = sum_c q[c]
// (see include/ember/ops/loss_ops.h); the softmax is recomputed from the saved log-sum-exp.
#include "cpu/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"

#include <cmath>

#include "cpu/loops.h"

namespace ember::cpu {
namespace {

template <class T>
void forward_rows(const T* z, const int64_t* target, const T* w, int64_t ignore_index, double eps, T* loss, T* tw,
                  T* lse_out, int64_t N, int64_t C) {
  parallel_for(N, 2 * C, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t t = target[i];
      if (t == ignore_index) {
        loss[i] = tw[i] = lse_out[i] = T(0);
        continue;
      }
      const T* zr = z + i * C;  // (C)
      T mx = zr[0];
      for (int64_t c = 1; c < C; ++c) mx = zr[c] > mx || std::isnan(zr[c]) ? zr[c] : mx;
      double se = 0, wz = 0, wsum = 0;
      for (int64_t c = 0; c < C; ++c) se += std::exp(static_cast<double>(zr[c]) - mx);
      if (eps > 0)
        for (int64_t c = 0; c < C; ++c) {
          const double wc = w ? static_cast<double>(w[c]) : 1.0;
          wz += wc * zr[c];
          wsum += wc;
        }
      const double lse = mx + std::log(se);
      const double wt = w ? static_cast<double>(w[t]) : 1.0;
      double l = (1.0 - eps) * wt * (lse - zr[t]);
      if (eps > 0) l += eps / static_cast<double>(C) * (lse * wsum - wz);
      loss[i] = static_cast<T>(l);
      tw[i] = static_cast<T>(wt);
      lse_out[i] = static_cast<T>(lse);
    }
  });
}

template <class T>
void backward_rows(const T* g, const T* z, const int64_t* target, const T* w, double wsum, const T* lse,
                   int64_t ignore_index, double eps, T* dz, int64_t N, int64_t C) {
  const double smooth = eps / static_cast<double>(C);
  parallel_for(N, 2 * C, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T* dr = dz + i * C;  // (C)
      const int64_t t = target[i];
      if (t == ignore_index) {
        for (int64_t c = 0; c < C; ++c) dr[c] = T(0);
        continue;
      }
      const T* zr = z + i * C;  // (C)
      const double wt = w ? static_cast<double>(w[t]) : 1.0;
      const double hard = (1.0 - eps) * wt;        // q[t] without its smoothing share
      const double s = hard + smooth * wsum;       // S = sum_c q[c]
      const double gi = g[i], li = lse[i];
      for (int64_t c = 0; c < C; ++c) {
        const double q = (c == t ? hard : 0.0) + smooth * (w ? static_cast<double>(w[c]) : 1.0);
        dr[c] = static_cast<T>(gi * (s * std::exp(static_cast<double>(zr[c]) - li) - q));
      }
    }
  });
}


}  // namespace

void cross_entropy_forward(const Tensor& logits, const Tensor& target, const Tensor& weight, int64_t ignore_index,
                           double label_smoothing, const Tensor& loss, const Tensor& target_weight,
                           const Tensor& logsumexp, int64_t N, int64_t C) {
  EMBER_DISPATCH_FLOAT(logits.dtype(), "cross_entropy", [&] {
    forward_rows<scalar_t>(static_cast<const scalar_t*>(logits.data_ptr()), target.data<int64_t>(),
                           ptr_or_null<scalar_t>(weight), ignore_index, label_smoothing,
                           static_cast<scalar_t*>(loss.data_ptr()), static_cast<scalar_t*>(target_weight.data_ptr()),
                           static_cast<scalar_t*>(logsumexp.data_ptr()), N, C);
  });
}

void cross_entropy_backward(const Tensor& grad_loss, const Tensor& logits, const Tensor& target,
                            const Tensor& weight, const Tensor& weight_sum, const Tensor& logsumexp,
                            int64_t ignore_index, double label_smoothing, const Tensor& grad_logits, int64_t N,
                            int64_t C) {
  EMBER_DISPATCH_FLOAT(logits.dtype(), "cross_entropy_backward", [&] {
    const double wsum = weight_sum.defined() ? static_cast<double>(*static_cast<const scalar_t*>(weight_sum.data_ptr()))
                                             : static_cast<double>(C);
    backward_rows<scalar_t>(static_cast<const scalar_t*>(grad_loss.data_ptr()),
                            static_cast<const scalar_t*>(logits.data_ptr()), target.data<int64_t>(),
                            ptr_or_null<scalar_t>(weight), wsum, static_cast<const scalar_t*>(logsumexp.data_ptr()),
                            ignore_index, label_smoothing, static_cast<scalar_t*>(grad_logits.data_ptr()), N, C);
  });
}

void register_loss_kernels() {
  prim::define<prim::cross_entropy_forward>(prim::Backend::cpu, &cross_entropy_forward);
  prim::define<prim::cross_entropy_backward>(prim::Backend::cpu, &cross_entropy_backward);
}

}  // namespace ember::cpu
