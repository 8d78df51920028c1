// Cross-entropy on CUDA (contracts in prim/primitives.h, mirroring src/cpu/loss.cpp).
//
// Forward, fused: one read of each row of logits (N, C) computes everything the loss needs:
// an online softmax state (running max m and sum of exp(z - m), the sum rescaled when the max
// grows), and, only with label smoothing, sum_c w[c] * z[c] and sum_c w[c]. The states of a
// row's threads merge by warp shuffles (and shared memory when a block holds the row). Then
//   lse = m + log(s),  loss = (1 - eps) * w[t] * (lse - z[t]) + (eps / C) * (lse * sum w - sum w z).
// A row of C <= 1024 classes goes to one warp (8 rows per block), a longer one to a block of
// 256 threads; rows whose target is ignore_index are skipped by the whole group at once.
// Backward: its own elementwise kernel over the (N, C) gradient, grid-stride:
//   grad[i, c] = grad_loss[i] * (S_i * exp(z[i, c] - lse[i]) - q_i[c])
// with q and S as in include/ember/ops/loss_ops.h; sum(weight) comes in as a 0-d device tensor.
// Accumulators: float for f16/bf16/f32 logits, double for f64.
#include <limits>

#include "common.cuh"
#include "cuda/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"
#include "row_reduce.cuh"

namespace ember::cuda {
namespace {

constexpr int64_t kWarpRowMax = 1024;            // longest row a single warp handles
constexpr int kRowsPerBlock = kThreads / kWarp;  // warp-per-row layout

// Partial results over part of a row.
template <class A>
struct CeState {
  A m;     // max so far (-inf: nothing seen)
  A s;     // sum of exp(z - m)
  A wz;    // sum of w[c] * z[c]   (label smoothing only)
  A wsum;  // sum of w[c]          (label smoothing only)
};

template <class A>
__device__ __forceinline__ CeState<A> ce_push(CeState<A> st, A z) {
  if (z > st.m) {
    st.s = st.s * exp(st.m - z) + A(1);  // rescale the old sum to the new max
    st.m = z;
  } else if (!(z == -std::numeric_limits<A>::infinity())) {  // -inf adds 0; skip -inf - -inf = NaN
    st.s += exp(z - st.m);  // a NaN z makes s NaN, which propagates to the row's loss
  }
  return st;
}

// Merges two partial states (commutative); the combine of the row all-reduce.
struct CeMergeFn {
  template <class A>
  __device__ __forceinline__ CeState<A> operator()(const CeState<A>& a, const CeState<A>& b) const {
    const A m = a.m > b.m ? a.m : b.m;
    CeState<A> r{m, A(0), a.wz + b.wz, a.wsum + b.wsum};
    if (m == -std::numeric_limits<A>::infinity()) r.s = a.s + b.s;
    else r.s = a.s * exp(a.m - m) + b.s * exp(b.m - m);
    return r;
  }
};

// Found by row_reduce.cuh's warp_allreduce through argument-dependent lookup.
template <class A>
__device__ __forceinline__ CeState<A> shfl_xor(CeState<A> v, int mask) {
  return {__shfl_xor_sync(0xffffffffu, v.m, mask), __shfl_xor_sync(0xffffffffu, v.s, mask),
          __shfl_xor_sync(0xffffffffu, v.wz, mask), __shfl_xor_sync(0xffffffffu, v.wsum, mask)};
}

// loss[i], target_weight[i], lse[i] for each row i (all 0 for ignored rows). w may be null (1).
template <class T, bool kBlockPerRow>
__global__ void cross_entropy_forward_kernel(const T* __restrict__ z, const int64_t* __restrict__ target,
                                             const acc_t<T>* __restrict__ w, int64_t ignore_index, acc_t<T> eps,
                                             T* __restrict__ loss, acc_t<T>* __restrict__ target_weight,
                                             acc_t<T>* __restrict__ lse_out, int64_t N, int64_t C) {
  using A = acc_t<T>;
  using G = RowGroup<kBlockPerRow>;
  __shared__ CeState<A> scratch[kWarp];
  const bool smoothing = eps > A(0);
  for (int64_t i = G::first_row(); i < N; i += G::row_step()) {
    const int64_t t = target[i];
    if (t == ignore_index) {  // the same for the whole group: nobody reaches the all-reduce
      if (G::lane() == 0) {
        loss[i] = from_acc<T>(A(0));
        target_weight[i] = A(0);
        lse_out[i] = A(0);
      }
      continue;
    }
    const T* zr = z + i * C;  // (C)
    CeState<A> st{-std::numeric_limits<A>::infinity(), A(0), A(0), A(0)};
    for (int64_t c = G::lane(); c < C; c += G::width()) {
      const A v = to_acc(zr[c]);
      st = ce_push(st, v);
      if (smoothing) {
        const A wc = w ? w[c] : A(1);
        st.wz += wc * v;
        st.wsum += wc;
      }
    }
    st = G::allreduce(st, CeMergeFn{}, scratch);
    if (G::lane() == 0) {
      const A lse = st.m + log(st.s);
      const A wt = w ? w[t] : A(1);
      A l = (A(1) - eps) * wt * (lse - to_acc(zr[t]));
      if (smoothing) l += eps / static_cast<A>(C) * (lse * st.wsum - st.wz);
      loss[i] = from_acc<T>(l);
      target_weight[i] = wt;
      lse_out[i] = lse;
    }
  }
}

// grad[i, c] = g[i] * (S_i * exp(z[i, c] - lse[i]) - q_i[c]); 0 in ignored rows. w may be null
// (1, and sum(w) = C); wsum (a device scalar) may be null when w is or eps == 0.
template <class T>
__global__ void cross_entropy_backward_kernel(const T* __restrict__ g, const T* __restrict__ z,
                                              const int64_t* __restrict__ target, const acc_t<T>* __restrict__ w,
                                              const acc_t<T>* __restrict__ wsum, const acc_t<T>* __restrict__ lse,
                                              int64_t ignore_index, acc_t<T> eps, T* __restrict__ grad, int64_t N,
                                              int64_t C) {
  using A = acc_t<T>;
  const A smooth = eps / static_cast<A>(C);
  const A total_w = wsum ? *wsum : static_cast<A>(C);
  const int64_t n = N * C;
  for (int64_t k = grid_start(); k < n; k += grid_step()) {
    const int64_t i = k / C, c = k - i * C;
    const int64_t t = target[i];
    if (t == ignore_index) {
      grad[k] = from_acc<T>(A(0));
      continue;
    }
    const A wt = w ? w[t] : A(1);
    const A hard = (A(1) - eps) * wt;  // q[t] without its smoothing share
    const A s = hard + smooth * total_w;
    const A q = (c == t ? hard : A(0)) + smooth * (w ? w[c] : A(1));
    grad[k] = from_acc<T>(to_acc(g[i]) * (s * exp(to_acc(z[k]) - lse[i]) - q));
  }
}


}  // namespace

void cross_entropy_forward(const Tensor& logits, const Tensor& target, const Tensor& weight, int64_t ignore_index,
                           double label_smoothing, const Tensor& loss, const Tensor& target_weight,
                           const Tensor& logsumexp, int64_t N, int64_t C) {
  if (N == 0) return;
  DeviceScope scope(loss);
  const bool block_per_row = C > kWarpRowMax;
  EMBER_CUDA_DISPATCH_FLOAT(logits.dtype(), "cross_entropy", T, [&] {
    using A = acc_t<T>;
    const T* pz = static_cast<const T*>(logits.data_ptr());
    const int64_t* pt = static_cast<const int64_t*>(target.data_ptr());
    const A* pw = ptr_or_null<A>(weight);
    T* pl = static_cast<T*>(loss.data_ptr());
    A* ptw = static_cast<A*>(target_weight.data_ptr());
    A* plse = static_cast<A*>(logsumexp.data_ptr());
    const A eps = static_cast<A>(label_smoothing);
    const unsigned grid = grid_for(N, block_per_row ? 1 : kRowsPerBlock);
    if (block_per_row)
      cross_entropy_forward_kernel<T, true><<<grid, kThreads, 0, scope.stream>>>(pz, pt, pw, ignore_index, eps, pl,
                                                                                 ptw, plse, N, C);
    else
      cross_entropy_forward_kernel<T, false><<<grid, kThreads, 0, scope.stream>>>(pz, pt, pw, ignore_index, eps, pl,
                                                                                  ptw, plse, N, C);
    EMBER_CUDA_LAUNCH_CHECK();
  });
}

void cross_entropy_backward(const Tensor& grad_loss, const Tensor& logits, const Tensor& target,
                            const Tensor& weight, const Tensor& weight_sum, const Tensor& logsumexp,
                            int64_t ignore_index, double label_smoothing, const Tensor& grad_logits, int64_t N,
                            int64_t C) {
  if (N == 0 || C == 0) return;
  DeviceScope scope(grad_logits);
  EMBER_CUDA_DISPATCH_FLOAT(logits.dtype(), "cross_entropy_backward", T, [&] {
    using A = acc_t<T>;
    cross_entropy_backward_kernel<T><<<grid_for(N * C, kThreads), kThreads, 0, scope.stream>>>(
        static_cast<const T*>(grad_loss.data_ptr()), static_cast<const T*>(logits.data_ptr()),
        static_cast<const int64_t*>(target.data_ptr()), ptr_or_null<A>(weight), ptr_or_null<A>(weight_sum),
        static_cast<const A*>(logsumexp.data_ptr()), ignore_index, static_cast<A>(label_smoothing),
        static_cast<T*>(grad_logits.data_ptr()), N, C);
    EMBER_CUDA_LAUNCH_CHECK();
  });
}

void register_loss_kernels() {
  prim::define<prim::cross_entropy_forward>(prim::Backend::cuda, &cross_entropy_forward);
  prim::define<prim::cross_entropy_backward>(prim::Backend::cuda, &cross_entropy_backward);
}

}  // namespace ember::cuda
