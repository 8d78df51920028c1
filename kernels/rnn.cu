// RNN/LSTM/GRU recurrence on CUDA (contracts in prim/primitives.h, mirroring src/cpu/rnn.cpp).
//
// Forward, per step s (T launches of each):
//   1. hh (N, G*H) = h (N, H) @ W_hh^T through ember's batched GEMM entry point (cuda::bmm:
//      cuBLAS or ember's kernels, EMBER_GEMM), W_hh^T read as a column-major view: no copy.
//   2. the fused cell kernel: one thread per (n, j) element of the state. It reads the G gate
//      pre-activations of unit j (gates_x[t, n, g*H + j] + hh[n, g*H + j] + b_hh[g*H + j], G
//      coalesced loads across a warp), applies the nonlinearities in f32 (f64 for f64), updates
//      h[n, j] (and c[n, j]) in place, writes out[t, n, j] and, when training, the workspace
//      and h_prev of step s. No thread reads another's element, so updating h in place is safe
//      once the GEMM of the step has consumed it (stream order).
// Backward, per step s from last to first:
//   1. the fused cell-backward kernel: dh_total = dh[n, j] + dmm[n, j] + grad_out[t, n, j],
//      where dmm is the GEMM result of step s+1 (zeros at first); writes the gate gradients to
//      grad_gates_x (time order) and grad_gates_h (step order), dc[n, j] = dc_{t-1} and
//      dh[n, j] = the part of dh_{t-1} that bypasses W_hh (GRU: dh * z; otherwise 0).
//   2. dmm (N, H) = grad_gates_h[s] (N, G*H) @ W_hh (G*H, H) through cuda::bmm.
//   After the loop dh += dmm gives grad_h0. The weight gradient is one GEMM over all steps in
//   the op (src/ops/rnn.cpp), as on the CPU.
// Lengths: as on the CPU (inactive rows write zeros to out[s, n] / the gradients at (s, n) and
// pass their state and its gradient through).
// f16/bf16: h, the workspace and the GEMM operands are in the input dtype (the GEMM accumulates
// in f32 on tensor cores); the LSTM cell state (forward) and the carried gradients dh, dc
// (backward) stay in f32 between steps; every gate computation is in f32.
// Not here: a persistent kernel that keeps W_hh in shared memory/registers across steps for
// small batches (cuDNN's persistent RNN) -- each step is a GEMM launch plus a cell launch.
#include <algorithm>
#include <memory>
#include <type_traits>

#include "common.cuh"
#include "cuda/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"
#include "ember/core/storage.h"

namespace ember::cuda {

prim::bmm::Fn bmm;  // kernels/gemm.cu

namespace {

template <class A>
__device__ __forceinline__ A sigmoid_acc(A x) {
  return A(1) / (A(1) + exp(-x));
}

template <class T>
__device__ __forceinline__ acc_t<T> ld(const T* p, int64_t i) {
  return to_acc(p[i]);
}

// Geometry of one step shared by the kernels.
struct StepArgs {
  int64_t s, T, N, H;
  const int64_t* len;  // (N) or null
  bool reverse;
};

__device__ __forceinline__ int64_t seq_length(const StepArgs& a, int64_t n) { return a.len ? a.len[n] : a.T; }

template <class T, RNNMode kMode>
__global__ void rnn_cell_forward_kernel(StepArgs a, const T* __restrict__ gx, const T* __restrict__ hh,
                                        const T* __restrict__ b, T* __restrict__ h, acc_t<T>* __restrict__ c,
                                        T* __restrict__ y, T* __restrict__ ws, T* __restrict__ hp) {
  using A = acc_t<T>;
  const int64_t N = a.N, H = a.H, s = a.s;
  constexpr int64_t G = kMode == RNNMode::lstm ? 4 : kMode == RNNMode::gru ? 3 : 1;
  constexpr int64_t Wk = kMode == RNNMode::lstm ? 6 : kMode == RNNMode::gru ? 4 : 1;
  const int64_t GH = G * H;
  for (int64_t e = grid_start(); e < N * H; e += grid_step()) {
    const int64_t n = e / H, j = e - n * H;
    const int64_t L = seq_length(a, n);
    const int64_t srow = (s * N + n) * H + j;  // (s, n, j) of a (T, N, H) step-order buffer
    if (s >= L) {                              // (s, n) is a padding position
      y[srow] = from_acc<T>(A(0));
      if (hp) hp[srow] = from_acc<T>(A(0));
      continue;
    }
    const int64_t t = a.reverse ? L - 1 - s : s;
    const T* x = gx + (t * N + n) * GH;
    const T* q = hh + n * GH;
    auto pre = [&](int64_t g) {
      A v = ld(x, g * H + j) + ld(q, g * H + j);
      if (b) v += ld(b, g * H + j);
      return v;
    };
    const A h_old = ld(h, n * H + j);
    if (hp) hp[srow] = h[n * H + j];
    T* w = ws ? ws + (s * N + n) * (Wk * H) : nullptr;
    A h_new;
    if constexpr (kMode == RNNMode::lstm) {
      const A i = sigmoid_acc(pre(0)), f = sigmoid_acc(pre(1)), g = tanh(pre(2)), o = sigmoid_acc(pre(3));
      const A cp = c[n * H + j];
      const A cn = f * cp + i * g;
      const A tc = tanh(cn);
      h_new = o * tc;
      c[n * H + j] = cn;
      if (w) {
        w[j] = from_acc<T>(i);
        w[H + j] = from_acc<T>(f);
        w[2 * H + j] = from_acc<T>(g);
        w[3 * H + j] = from_acc<T>(o);
        w[4 * H + j] = from_acc<T>(cp);
        w[5 * H + j] = from_acc<T>(tc);
      }
    } else if constexpr (kMode == RNNMode::gru) {
      const A r = sigmoid_acc(pre(0)), z = sigmoid_acc(pre(1));
      A hn = ld(q, 2 * H + j);
      if (b) hn += ld(b, 2 * H + j);
      const A nn = tanh(ld(x, 2 * H + j) + r * hn);
      h_new = nn + z * (h_old - nn);  // (1 - z) n + z h
      if (w) {
        w[j] = from_acc<T>(r);
        w[H + j] = from_acc<T>(z);
        w[2 * H + j] = from_acc<T>(nn);
        w[3 * H + j] = from_acc<T>(hn);
      }
    } else {
      const A v = pre(0);
      h_new = kMode == RNNMode::rnn_relu ? (v > A(0) ? v : A(0)) : tanh(v);
      if (w) w[j] = from_acc<T>(h_new);
    }
    const T hv = from_acc<T>(h_new);
    h[n * H + j] = hv;
    y[(t * N + n) * H + j] = hv;
  }
}

template <class T, RNNMode kMode>
__global__ void rnn_cell_backward_kernel(StepArgs a, const T* __restrict__ go, const T* __restrict__ ws,
                                         const T* __restrict__ hp, const T* __restrict__ dmm,
                                         acc_t<T>* __restrict__ dh, acc_t<T>* __restrict__ dc, T* gx,
                                         T* gh) {  // gx may alias gh
  using A = acc_t<T>;
  const int64_t N = a.N, H = a.H, s = a.s;
  constexpr int64_t G = kMode == RNNMode::lstm ? 4 : kMode == RNNMode::gru ? 3 : 1;
  constexpr int64_t Wk = kMode == RNNMode::lstm ? 6 : kMode == RNNMode::gru ? 4 : 1;
  const int64_t GH = G * H;
  for (int64_t e = grid_start(); e < N * H; e += grid_step()) {
    const int64_t n = e / H, j = e - n * H;
    const int64_t L = seq_length(a, n);
    T* ghr = gh + (s * N + n) * GH;
    const A d_in = dh[n * H + j] + ld(dmm, n * H + j);
    if (s >= L) {  // pass the state gradient through; zero gate gradients at (s, n)
      dh[n * H + j] = d_in;
      T* gxr = gx + (s * N + n) * GH;
#pragma unroll
      for (int64_t g = 0; g < G; ++g) {
        ghr[g * H + j] = from_acc<T>(A(0));
        if (gx != gh) gxr[g * H + j] = from_acc<T>(A(0));
      }
      continue;
    }
    const int64_t t = a.reverse ? L - 1 - s : s;
    T* gxr = gx + (t * N + n) * GH;
    const T* w = ws + (s * N + n) * (Wk * H);
    const A d = d_in + ld(go, (t * N + n) * H + j);
    A dg[G];
    A dh_direct = A(0);
    if constexpr (kMode == RNNMode::lstm) {
      const A i = ld(w, j), f = ld(w, H + j), g = ld(w, 2 * H + j), o = ld(w, 3 * H + j);
      const A cp = ld(w, 4 * H + j), tc = ld(w, 5 * H + j);
      const A dcv = dc[n * H + j] + d * o * (A(1) - tc * tc);
      dg[0] = dcv * g * i * (A(1) - i);
      dg[1] = dcv * cp * f * (A(1) - f);
      dg[2] = dcv * i * (A(1) - g * g);
      dg[3] = d * tc * o * (A(1) - o);
      dc[n * H + j] = dcv * f;
    } else if constexpr (kMode == RNNMode::gru) {
      const A r = ld(w, j), z = ld(w, H + j), nn = ld(w, 2 * H + j), hn = ld(w, 3 * H + j);
      const A hprev = ld(hp, (s * N + n) * H + j);
      const A dn = d * (A(1) - z) * (A(1) - nn * nn);
      dg[0] = dn * hn * r * (A(1) - r);
      dg[1] = d * (hprev - nn) * z * (A(1) - z);
      dg[2] = dn;
      dh_direct = d * z;
      ghr[2 * H + j] = from_acc<T>(dn * r);  // hh_n enters as r * hh_n
    } else {
      const A hy = ld(w, j);
      dg[0] = kMode == RNNMode::rnn_relu ? (hy > A(0) ? d : A(0)) : d * (A(1) - hy * hy);
    }
#pragma unroll
    for (int64_t g = 0; g < G; ++g) {
      gxr[g * H + j] = from_acc<T>(dg[g]);
      if (gx != gh && !(kMode == RNNMode::gru && g == 2)) ghr[g * H + j] = from_acc<T>(dg[g]);
    }
    dh[n * H + j] = dh_direct;
  }
}

// dst = src (+ add, when given), converted between the storage and accumulator types.
template <class D, class S, class T>
__global__ void convert_kernel(D* __restrict__ dst, const S* __restrict__ src, const T* __restrict__ add, int64_t n) {
  for (int64_t e = grid_start(); e < n; e += grid_step()) {
    acc_t<T> v = static_cast<acc_t<T>>(to_acc(src[e]));
    if (add) v += to_acc(add[e]);
    if constexpr (std::is_same_v<D, T>) dst[e] = from_acc<T>(v);
    else dst[e] = v;
  }
}

// --- host side ---------------------------------------------------------------------------------

// A tensor over `storage` (shared) with the given geometry; no autograd, no copy.
Tensor view_on(const std::shared_ptr<Storage>& storage, DType dt, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = storage;
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = dt;
  return Tensor(impl);
}
Tensor view_of(const Tensor& t, Shape shape, Shape strides, int64_t extra_offset = 0) {
  return view_on(t.impl().storage, t.dtype(), std::move(shape), std::move(strides), t.offset() + extra_offset);
}
// A fresh contiguous (1, rows, cols) scratch matrix from the caching allocator.
Tensor scratch(DType dt, Device dev, int64_t rows, int64_t cols) {
  auto st = std::make_shared<Storage>(static_cast<size_t>(std::max<int64_t>(rows * cols, 1)) * dtype_size(dt), dev);
  return view_on(st, dt, {1, rows, cols}, {rows * cols, cols, 1}, 0);
}

template <class T, RNNMode kMode>
void forward_mode(cudaStream_t stream, bool reverse, const Tensor& gates_x, const Tensor& w_hh, const Tensor& b_hh,
                  const Tensor& lengths, const Tensor& out, const Tensor& h_n, const Tensor& c_n,
                  const Tensor& workspace, const Tensor& h_prev) {
  const int64_t T_ = gates_x.size(0), N = gates_x.size(1), H = w_hh.size(1), GH = w_hh.size(0);
  const Tensor hh = scratch(gates_x.dtype(), gates_x.device(), N, GH);  // (1, N, G*H)
  const Tensor h_mat = view_of(h_n, {1, N, H}, {N * H, H, 1});
  const Tensor w_t = view_of(w_hh, {1, H, GH}, {GH * H, 1, H});  // W_hh^T, column-major
  const unsigned grid = grid_for(N * H, kThreads);
  // The LSTM cell state is carried in the accumulator type (f32 for f16/bf16): it integrates
  // over all steps, and rounding it to 16 bits at every step would drift.
  using A = acc_t<T>;
  A* c = nullptr;
  std::shared_ptr<Storage> c_acc;
  if (c_n.defined()) {
    if constexpr (std::is_same_v<A, T>) {
      c = mut_ptr_or_null<T>(c_n);
    } else {
      c_acc = std::make_shared<Storage>(static_cast<size_t>(N * H) * sizeof(A), c_n.device());
      c = static_cast<A*>(c_acc->data());
      convert_kernel<A, T, T><<<grid, kThreads, 0, stream>>>(c, ptr_or_null<T>(c_n), nullptr, N * H);
      EMBER_CUDA_LAUNCH_CHECK();
    }
  }
  for (int64_t s = 0; s < T_; ++s) {
    bmm(h_mat, w_t, hh, Tensor());
    const StepArgs a{s, T_, N, H, ptr_or_null<int64_t>(lengths), reverse};
    rnn_cell_forward_kernel<T, kMode><<<grid, kThreads, 0, stream>>>(
        a, ptr_or_null<T>(gates_x), ptr_or_null<T>(hh), ptr_or_null<T>(b_hh), mut_ptr_or_null<T>(h_n), c, mut_ptr_or_null<T>(out), mut_ptr_or_null<T>(workspace),
        mut_ptr_or_null<T>(h_prev));
    EMBER_CUDA_LAUNCH_CHECK();
  }
  if (c_acc) {
    convert_kernel<T, A, T><<<grid, kThreads, 0, stream>>>(mut_ptr_or_null<T>(c_n), c, nullptr, N * H);
    EMBER_CUDA_LAUNCH_CHECK();
  }
}

template <class T, RNNMode kMode>
void backward_mode(cudaStream_t stream, bool reverse, const Tensor& grad_out, const Tensor& w_hh,
                   const Tensor& workspace, const Tensor& h_prev, const Tensor& lengths, const Tensor& dh,
                   const Tensor& dc, const Tensor& grad_gates_x, const Tensor& grad_gates_h) {
  const int64_t T_ = grad_out.size(0), N = grad_out.size(1), H = w_hh.size(1), GH = w_hh.size(0);
  const Tensor dmm = scratch(grad_out.dtype(), grad_out.device(), N, H);  // (1, N, H)
  EMBER_CUDA_CHECK(cudaMemsetAsync(dmm.data_ptr(), 0, static_cast<size_t>(N * H) * dtype_size(dmm.dtype()), stream));
  const Tensor w = view_of(w_hh, {1, GH, H}, {GH * H, H, 1});
  const unsigned grid = grid_for(N * H, kThreads);
  // The carried gradients dh and dc stay in the accumulator type across steps (f32 for
  // f16/bf16); only the GEMM operand dgates_h and its result dmm are in T.
  using A = acc_t<T>;
  std::shared_ptr<Storage> acc;
  A* dh_acc = nullptr;
  A* dc_acc = nullptr;
  if constexpr (std::is_same_v<A, T>) {
    dh_acc = mut_ptr_or_null<T>(dh);
    dc_acc = mut_ptr_or_null<T>(dc);
  } else {
    acc = std::make_shared<Storage>(static_cast<size_t>(2 * N * H) * sizeof(A), dh.device());
    dh_acc = static_cast<A*>(acc->data());
    convert_kernel<A, T, T><<<grid, kThreads, 0, stream>>>(dh_acc, ptr_or_null<T>(dh), nullptr, N * H);
    EMBER_CUDA_LAUNCH_CHECK();
    if (dc.defined()) {
      dc_acc = dh_acc + N * H;
      convert_kernel<A, T, T><<<grid, kThreads, 0, stream>>>(dc_acc, ptr_or_null<T>(dc), nullptr, N * H);
      EMBER_CUDA_LAUNCH_CHECK();
    }
  }
  for (int64_t s = T_ - 1; s >= 0; --s) {
    const StepArgs a{s, T_, N, H, ptr_or_null<int64_t>(lengths), reverse};
    rnn_cell_backward_kernel<T, kMode><<<grid, kThreads, 0, stream>>>(
        a, ptr_or_null<T>(grad_out), ptr_or_null<T>(workspace), ptr_or_null<T>(h_prev), ptr_or_null<T>(dmm), dh_acc, dc_acc,
        mut_ptr_or_null<T>(grad_gates_x), mut_ptr_or_null<T>(grad_gates_h));
    EMBER_CUDA_LAUNCH_CHECK();
    bmm(view_of(grad_gates_h, {1, N, GH}, {N * GH, GH, 1}, s * N * GH), w, dmm, Tensor());
  }
  // grad_h0 = dh + dmm (the last GEMM's result); grad_c0 = dc.
  convert_kernel<T, A, T><<<grid, kThreads, 0, stream>>>(mut_ptr_or_null<T>(dh), dh_acc, ptr_or_null<T>(dmm), N * H);
  EMBER_CUDA_LAUNCH_CHECK();
  if (dc.defined() && !std::is_same_v<A, T>) {
    convert_kernel<T, A, T><<<grid, kThreads, 0, stream>>>(mut_ptr_or_null<T>(dc), dc_acc, nullptr, N * H);
    EMBER_CUDA_LAUNCH_CHECK();
  }
}

// Calls F<T, mode>(...) with the mode as a compile-time constant.
#define EMBER_RNN_MODE_SWITCH(mode, FN, ...)                                     \
  switch (mode) {                                                                \
    case RNNMode::rnn_tanh: FN<T, RNNMode::rnn_tanh>(__VA_ARGS__); break;        \
    case RNNMode::rnn_relu: FN<T, RNNMode::rnn_relu>(__VA_ARGS__); break;        \
    case RNNMode::lstm: FN<T, RNNMode::lstm>(__VA_ARGS__); break;                \
    case RNNMode::gru: FN<T, RNNMode::gru>(__VA_ARGS__); break;                  \
  }

}  // namespace

void rnn_forward(RNNMode mode, bool reverse, const Tensor& gates_x, const Tensor& w_hh, const Tensor& b_hh,
                 const Tensor& lengths, const Tensor& out, const Tensor& h_n, const Tensor& c_n,
                 const Tensor& workspace, const Tensor& h_prev, DType /*storage: the tensors' own dtype*/) {
  if (gates_x.numel() == 0) return;  // T = 0 or N = 0: the states stay h0, c0
  DeviceScope scope(out);
  EMBER_CUDA_DISPATCH_FLOAT(gates_x.dtype(), "rnn_recurrence", T, [&] {
    EMBER_RNN_MODE_SWITCH(mode, forward_mode, scope.stream, reverse, gates_x, w_hh, b_hh, lengths, out, h_n, c_n,
                          workspace, h_prev);
  });
}

void rnn_backward(RNNMode mode, bool reverse, const Tensor& grad_out, const Tensor& w_hh, const Tensor& workspace,
                  const Tensor& h_prev, const Tensor& lengths, const Tensor& dh, const Tensor& dc,
                  const Tensor& grad_gates_x, const Tensor& grad_gates_h, DType /*storage: the tensors' own dtype*/) {
  if (grad_gates_x.numel() == 0) return;
  DeviceScope scope(grad_out);
  EMBER_CUDA_DISPATCH_FLOAT(grad_out.dtype(), "rnn_recurrence_backward", T, [&] {
    EMBER_RNN_MODE_SWITCH(mode, backward_mode, scope.stream, reverse, grad_out, w_hh, workspace, h_prev, lengths, dh,
                          dc, grad_gates_x, grad_gates_h);
  });
}

void register_rnn_kernels() {
  prim::define<prim::rnn_forward>(prim::Backend::cuda, &rnn_forward);
  prim::define<prim::rnn_backward>(prim::Backend::cuda, &rnn_backward);
}

}  // namespace ember::cuda
