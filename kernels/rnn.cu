// RNN/LSTM/GRU recurrence on CUDA (contracts in prim/primitives.h, mirroring src/cpu/rnn.cpp).
// Two implementations of the same recurrence: the per-step kernels below, and for small batches
// the persistent kernels of rnn_persistent.cuh (one launch for all steps, W_hh on chip). Both
// call the per-element cell math of rnn_cell.cuh, so they compute and round alike; which one runs
// is decided per call on the host (persistent_plan, docs/rnn.md "Persistent kernel").
//
// Per-step forward, per step s (T launches of each):
//   1. hh (N, G*H) = h (N, H) @ W_hh^T through ember's batched GEMM entry point (cuda::bmm:
//      cuBLAS or ember's kernels, EMBER_GEMM), W_hh^T read as a column-major view: no copy.
//   2. the fused cell kernel: one thread per (n, j) element of the state. It reads the G gate
//      pre-activations of unit j (gates_x[t, n, g*H + j] + hh[n, g*H + j] + b_hh[g*H + j], G
//      coalesced loads across a warp), applies the nonlinearities in f32 (f64 for f64), updates
//      h[n, j] (and c[n, j]) in place, writes out[t, n, j] and, when training, the workspace
//      and h_prev of step s. No thread reads another's element, so updating h in place is safe
//      once the GEMM of the step has consumed it (stream order).
// Per-step backward, per step s from last to first:
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
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "common.cuh"
#include "cuda/kernels.h"
#include "cuda/once_verdict.h"
#include "prim/primitives.h"
#include "prim/registry.h"
#include "ember/core/storage.h"
#include "rnn_cell.cuh"
#include "rnn_persistent.cuh"

namespace ember::cuda {

prim::bmm::Fn bmm;  // kernels/gemm.cu

namespace {

using rnn_cell::cell_backward;
using rnn_cell::cell_forward;
using rnn_cell::kGates;
using rnn_cell::kWorkSlots;
using rnn_cell::ld;

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
  constexpr int G = kGates<kMode>, Wk = kWorkSlots<kMode>;
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
    A xv[G], qv[G], bv[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
      xv[g] = ld(gx + (t * N + n) * GH, g * H + j);
      qv[g] = ld(hh + n * GH, g * H + j);
      bv[g] = b ? ld(b, g * H + j) : A(0);
    }
    if (hp) hp[srow] = h[n * H + j];
    T* w = ws ? ws + (s * N + n) * (Wk * H) : nullptr;
    A cv = kMode == RNNMode::lstm ? c[n * H + j] : A(0);
    const A h_new = cell_forward<kMode>(xv, qv, bv, ld(h, n * H + j), cv, [&](int k, A v) {
      if (w) w[k * H + j] = from_acc<T>(v);
    });
    if constexpr (kMode == RNNMode::lstm) c[n * H + j] = cv;
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
  constexpr int G = kGates<kMode>, Wk = kWorkSlots<kMode>;
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
      for (int g = 0; g < G; ++g) {
        ghr[g * H + j] = from_acc<T>(A(0));
        if (gx != gh) gxr[g * H + j] = from_acc<T>(A(0));
      }
      continue;
    }
    const int64_t t = a.reverse ? L - 1 - s : s;
    T* gxr = gx + (t * N + n) * GH;
    const T* w = ws + (s * N + n) * (Wk * H);
    const A d = d_in + ld(go, (t * N + n) * H + j);
    A dg[G], dgh_n, dh_direct;
    A dcv = kMode == RNNMode::lstm ? dc[n * H + j] : A(0);
    cell_backward<kMode>(
        d, [&](int k) { return ld(w, k * H + j); }, [&] { return ld(hp, (s * N + n) * H + j); }, dcv, dg, dgh_n,
        dh_direct);
    if constexpr (kMode == RNNMode::lstm) dc[n * H + j] = dcv;
    if constexpr (kMode == RNNMode::gru) ghr[2 * H + j] = from_acc<T>(dgh_n);  // hh_n enters as r * hh_n
#pragma unroll
    for (int g = 0; g < G; ++g) {
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

// The per-step forward: T GEMM launches and T cell launches.
template <class T, RNNMode kMode>
void forward_steps(cudaStream_t stream, bool reverse, const Tensor& gates_x, const Tensor& w_hh, const Tensor& b_hh,
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
        a, ptr_or_null<T>(gates_x), ptr_or_null<T>(hh), ptr_or_null<T>(b_hh), mut_ptr_or_null<T>(h_n), c,
        mut_ptr_or_null<T>(out), mut_ptr_or_null<T>(workspace), mut_ptr_or_null<T>(h_prev));
    EMBER_CUDA_LAUNCH_CHECK();
  }
  if (c_acc) {
    convert_kernel<T, A, T><<<grid, kThreads, 0, stream>>>(mut_ptr_or_null<T>(c_n), c, nullptr, N * H);
    EMBER_CUDA_LAUNCH_CHECK();
  }
}

// The per-step backward.
template <class T, RNNMode kMode>
void backward_steps(cudaStream_t stream, bool reverse, const Tensor& grad_out, const Tensor& w_hh,
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
        a, ptr_or_null<T>(grad_out), ptr_or_null<T>(workspace), ptr_or_null<T>(h_prev), ptr_or_null<T>(dmm), dh_acc,
        dc_acc,
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

// --- the persistent kernels: the rule, the launches, the first-use self-check ------------------

namespace rp = rnn_persistent;

// Batches above this run the per-step path unless EMBER_RNN_KERNEL=persistent. Per step the
// persistent kernel multiplies N x H by each CTA's G*U rows on CUDA cores (no tensor cores) and
// stages all of h (backward: all N x G*H gate gradients) from L2 into every CTA; at N = 32, H 512
// LSTM that is about 2k FMA cycles per SM per step, as long as the grid barrier itself, while the
// per-step GEMM's cost hardly grows with N. Below it the barrier-bound persistent step (a few
// microseconds) replaces two launch-bound kernels (docs/rnn.md, "Persistent kernel").
constexpr int64_t kPersistentMaxBatch = 32;

// EMBER_RNN_KERNEL, read at every call (tests switch it): unset or empty, the rule (batch <=
// kPersistentMaxBatch, fits on chip, passed the self-check, else the per-step path);
// `persistent`, the persistent kernels wherever they fit, at any batch, and a failed self-check
// is an ember::Error instead of a fallback; `steps`, always the per-step path.
enum class KernelChoice { rule, persistent, steps };
KernelChoice kernel_choice() {
  const char* e = std::getenv("EMBER_RNN_KERNEL");
  if (e == nullptr || *e == '\0') return KernelChoice::rule;
  if (std::strcmp(e, "persistent") == 0) return KernelChoice::persistent;
  if (std::strcmp(e, "steps") == 0) return KernelChoice::steps;
  EMBER_FAIL("rnn_recurrence", "EMBER_RNN_KERNEL=\"", e,
             "\" is not a kernel; use persistent or steps (unset: persistent for small batches)");
}

// What the rule needs to know of a device, asked once.
struct DeviceFacts {
  int sms = 0;
  bool cooperative = false;
  size_t smem_optin = 0;  // dynamic shared memory one CTA may opt into
};
const DeviceFacts& device_facts(int dev) {
  static std::array<DeviceFacts, 64> facts;
  static std::array<std::once_flag, 64> once;
  std::call_once(once[static_cast<size_t>(dev % 64)], [dev] {
    DeviceFacts& f = facts[static_cast<size_t>(dev % 64)];
    int coop = 0, optin = 0;
    EMBER_CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));
    EMBER_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    f.sms = multiprocessor_count(dev);
    f.cooperative = coop != 0;
    f.smem_optin = static_cast<size_t>(optin);
  });
  return facts[static_cast<size_t>(dev % 64)];
}

// The geometry of one persistent launch (rnn_persistent.cuh's geometry(), which the host
// emulation's test sizes its launches with too).
using Plan = rp::Geometry;

template <class T, RNNMode kMode, bool kBackward>
auto persistent_kernel() {
  if constexpr (kBackward) return rp::backward_kernel<T, kMode>;
  else return rp::forward_kernel<T, kMode>;
}

// Whether the persistent kernel can run (T, N, H) on `dev`, and how. `units` forces U (the
// self-check's ragged slices); 0 spreads the H units over all SMs, one CTA each.
template <class T, RNNMode kMode, bool kBackward>
Plan plan_for(int dev, int64_t T_, int64_t N, int64_t H, int64_t units = 0) {
  const DeviceFacts& f = device_facts(dev);
  if (!f.cooperative) return Plan{};
  Plan p = rp::geometry<T, kMode, kBackward>(f.sms, f.smem_optin, T_, N, H, units);
  if (!p.ok) return p;
  auto kernel = persistent_kernel<T, kMode, kBackward>();
  static std::array<std::once_flag, 64> attr;
  std::call_once(attr[static_cast<size_t>(dev % 64)], [&] {
    EMBER_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(f.smem_optin)));
  });
  // Every CTA must be resident at once: the barrier spins on CTAs that are not yet scheduled
  // otherwise (the cooperative launch would refuse such a grid).
  int per_sm = 0;
  EMBER_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, rp::kBlock, p.smem));
  if (static_cast<int64_t>(per_sm) * f.sms < p.grid) return Plan{};
  return p;
}

// The barrier's counter (256 bytes, so the buffer after it stays aligned) and the zero-padded
// (2, Np, Kp) ping-pong buffer, from the caching allocator, zeroed in stream order: freed at
// scope exit and reused only in stream order, so nothing waits on the host.
struct Scratch {
  Storage storage;
  Scratch(size_t bytes, Device dev, cudaStream_t stream) : storage(256 + bytes, dev) {
    EMBER_CUDA_CHECK(cudaMemsetAsync(storage.data(), 0, 256 + bytes, stream));
  }
  unsigned* counter() { return static_cast<unsigned*>(storage.data()); }
  template <class T>
  T* buffer() {
    return reinterpret_cast<T*>(static_cast<unsigned char*>(storage.data()) + 256);
  }
};

// False when the driver refuses the grid as too large to be resident at once (the occupancy
// query said it fits, but another context, MPS or a green context may hold SMs): the caller
// then runs the per-step path. Any other launch error throws.
template <class K, class Args>
bool launch_cooperative(K kernel, const Plan& p, Args& args, cudaStream_t stream) {
  void* params[] = {&args};
  const cudaError_t err = cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), dim3(p.grid),
                                                      dim3(rp::kBlock), params, p.smem, stream);
  if (err == cudaErrorCooperativeLaunchTooLarge) {
    (void)cudaGetLastError();  // not sticky; clear it for the next launch check
    return false;
  }
  EMBER_CUDA_CHECK(err);
  return true;
}

template <class T, RNNMode kMode>
bool forward_persistent(const Plan& p, cudaStream_t stream, bool reverse, const Tensor& gates_x, const Tensor& w_hh,
                        const Tensor& b_hh, const Tensor& lengths, const Tensor& out, const Tensor& h_n,
                        const Tensor& c_n, const Tensor& workspace, const Tensor& h_prev) {
  Scratch scratch(2 * static_cast<size_t>(p.Np) * p.Kp * sizeof(T), out.device(), stream);
  rp::ForwardArgs<T> a{ptr_or_null<T>(gates_x), ptr_or_null<T>(w_hh), ptr_or_null<T>(b_hh),
                       ptr_or_null<int64_t>(lengths), mut_ptr_or_null<T>(h_n), mut_ptr_or_null<T>(c_n),
                       mut_ptr_or_null<T>(out), mut_ptr_or_null<T>(workspace), mut_ptr_or_null<T>(h_prev),
                       scratch.buffer<T>(), scratch.counter(), static_cast<int>(gates_x.size(0)),
                       static_cast<int>(gates_x.size(1)), static_cast<int>(w_hh.size(1)), p.U, p.Np, p.Kp, p.KP,
                       reverse};
  return launch_cooperative(rp::forward_kernel<T, kMode>, p, a, stream);
}

template <class T, RNNMode kMode>
bool backward_persistent(const Plan& p, cudaStream_t stream, bool reverse, const Tensor& grad_out,
                         const Tensor& w_hh, const Tensor& workspace, const Tensor& h_prev, const Tensor& lengths,
                         const Tensor& dh, const Tensor& dc, const Tensor& grad_gates_x, const Tensor& grad_gates_h) {
  Scratch scratch(2 * static_cast<size_t>(p.Np) * p.Kp * sizeof(T), grad_out.device(), stream);
  rp::BackwardArgs<T> a{ptr_or_null<T>(grad_out), ptr_or_null<T>(w_hh), ptr_or_null<T>(workspace),
                        ptr_or_null<T>(h_prev), ptr_or_null<int64_t>(lengths), mut_ptr_or_null<T>(dh),
                        mut_ptr_or_null<T>(dc), mut_ptr_or_null<T>(grad_gates_x), mut_ptr_or_null<T>(grad_gates_h),
                        scratch.buffer<T>(), scratch.counter(), static_cast<int>(grad_out.size(0)),
                        static_cast<int>(grad_out.size(1)), static_cast<int>(w_hh.size(1)), p.U, p.Np, p.Kp, p.KP,
                        reverse};
  return launch_cooperative(rp::backward_kernel<T, kMode>, p, a, stream);
}

template <RNNMode kMode>
constexpr const char* mode_name() {
  return kMode == RNNMode::lstm ? "LSTM" : kMode == RNNMode::gru ? "GRU" : kMode == RNNMode::rnn_relu ? "RNN_RELU"
                                                                                                      : "RNN_TANH";
}

template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, __half>) return DType::f16;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return DType::bf16;
  else if constexpr (std::is_same_v<T, double>) return DType::f64;
  else return DType::f32;
}

// A fresh contiguous device tensor of the given shape (the self-check's operands).
Tensor device_tensor(DType dt, Device dev, const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  Shape strides(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * shape[i];
  auto st = std::make_shared<Storage>(static_cast<size_t>(std::max<int64_t>(n, 1)) * dtype_size(dt), dev);
  return view_on(st, dt, shape, strides, 0);
}

// The first time a (device, dtype, mode) would run a persistent kernel, both run beside the
// per-step kernels on small problems: ragged lengths (full, short, zero) in reverse with a
// bias and U = 4 units per CTA over H = 37 (the last CTA owns one), and 9 batch rows (two
// batch groups) over H = 70 forward without lengths or bias. Every output of the forward
// (out, h_n, c_n, workspace, h_prev) and of the backward (the gate gradients, grad_h0,
// grad_c0; both backwards read the per-step forward's workspace) must agree within what the
// different f32 summation order explains, rounded to T. Returns false, after one stderr line
// with "disagreed", when any does not.
template <class T, RNNMode kMode>
bool persistent_check_run(int dev, cudaStream_t stream) {
  using A = acc_t<T>;
  constexpr int G = kGates<kMode>, Wk = kWorkSlots<kMode>;
  constexpr bool lstm = kMode == RNNMode::lstm;
  const DType dt = dtype_of<T>();
  const Device device = Device::cuda(dev);
  const double tol = std::is_same_v<T, float> ? 1e-4 : std::is_same_v<T, __half> ? 2e-2 : 8e-2;
  struct Case {
    int64_t steps, N, H, units;
    bool reverse, lengths, bias;
  };
  const Case cases[] = {{6, 3, 37, 4, true, true, true}, {5, 9, 70, 0, false, false, false}};
  uint32_t seed = 1;
  // Values on a 1/16 grid (W on 1/64) keep most products exact, so the two summation orders
  // rarely round differently.
  auto fill = [&](const Tensor& t, float scale) {
    std::vector<T> host(static_cast<size_t>(t.numel()));
    const uint32_t base = 7919u * ++seed;
    for (size_t i = 0; i < host.size(); ++i) {
      const uint32_t hsh = (static_cast<uint32_t>(i) + base) * 2654435761u;
      host[i] = from_acc<T>(static_cast<A>(static_cast<float>(static_cast<int>((hsh >> 9) % 41) - 20) * scale));
    }
    EMBER_CUDA_CHECK(cudaMemcpyAsync(t.data_ptr(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice,
                                     stream));
    EMBER_CUDA_CHECK(cudaStreamSynchronize(stream));  // `host` goes out of scope
  };
  // Zeroed: rows the kernels never write (the workspace at padding positions) must compare
  // equal, also with poisoned allocations.
  auto zeros = [&](DType type, const Shape& shape) {
    const Tensor t = device_tensor(type, device, shape);
    EMBER_CUDA_CHECK(cudaMemsetAsync(t.data_ptr(), 0, static_cast<size_t>(t.numel()) * dtype_size(type), stream));
    return t;
  };
  auto copy = [&](const Tensor& src) {
    const Tensor dst = device_tensor(dt, device, src.shape());
    EMBER_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), static_cast<size_t>(src.numel()) * sizeof(T),
                                     cudaMemcpyDeviceToDevice, stream));
    return dst;
  };
  auto download = [&](const Tensor& t) {
    std::vector<T> host(static_cast<size_t>(t.numel()));
    EMBER_CUDA_CHECK(cudaMemcpyAsync(host.data(), t.data_ptr(), host.size() * sizeof(T), cudaMemcpyDeviceToHost,
                                     stream));
    EMBER_CUDA_CHECK(cudaStreamSynchronize(stream));
    std::vector<double> v(host.size());
    for (size_t i = 0; i < host.size(); ++i) v[i] = static_cast<double>(to_acc(host[i]));
    return v;
  };
  for (size_t ci = 0; ci < std::size(cases); ++ci) {
    const Case& k = cases[ci];
    const Plan pf = plan_for<T, kMode, false>(dev, k.steps, k.N, k.H, k.units);
    const Plan pb = plan_for<T, kMode, true>(dev, k.steps, k.N, k.H, k.units);
    EMBER_CHECK(pf.ok && pb.ok, "rnn_recurrence", "the self-check problem (T ", k.steps, ", N ", k.N, ", H ", k.H,
                ") does not fit the persistent kernels on cuda:", dev);
    const int64_t T_ = k.steps, N = k.N, H = k.H;
    const Tensor gx = device_tensor(dt, device, {T_, N, G * H}), w = device_tensor(dt, device, {G * H, H});
    const Tensor b = k.bias ? device_tensor(dt, device, {G * H}) : Tensor();
    const Tensor h0 = device_tensor(dt, device, {N, H}), c0 = lstm ? device_tensor(dt, device, {N, H}) : Tensor();
    const Tensor go = device_tensor(dt, device, {T_, N, H}), gh_n = device_tensor(dt, device, {N, H});
    const Tensor gc_n = lstm ? device_tensor(dt, device, {N, H}) : Tensor();
    fill(gx, 1.f / 16);
    fill(w, 1.f / 64);
    if (b.defined()) fill(b, 1.f / 16);
    fill(h0, 1.f / 32);
    if (lstm) fill(c0, 1.f / 16);
    fill(go, 1.f / 16);
    fill(gh_n, 1.f / 16);
    if (lstm) fill(gc_n, 1.f / 16);
    Tensor len;
    if (k.lengths) {
      len = device_tensor(DType::i64, device, {N});
      std::vector<int64_t> lv(static_cast<size_t>(N));
      for (int64_t n = 0; n < N; ++n) lv[static_cast<size_t>(n)] = n == 0 ? T_ : n == N - 1 ? 0 : (n * 5 + 2) % T_;
      EMBER_CUDA_CHECK(cudaMemcpyAsync(len.data_ptr(), lv.data(), lv.size() * sizeof(int64_t),
                                       cudaMemcpyHostToDevice, stream));
      EMBER_CUDA_CHECK(cudaStreamSynchronize(stream));
    }
    struct Result {
      Tensor out, h_n, c_n, ws, hp, dh, dc, dgx, dgh;
    };
    Result r[2];  // 0: per step, 1: persistent
    for (int i = 0; i < 2; ++i) {
      Result& q = r[i];
      q.out = zeros(dt, {T_, N, H});
      q.ws = zeros(dt, {T_, N, Wk * H});
      q.hp = zeros(dt, {T_, N, H});
      q.h_n = copy(h0);
      if (lstm) q.c_n = copy(c0);
      bool launched = true;
      if (i == 0) forward_steps<T, kMode>(stream, k.reverse, gx, w, b, len, q.out, q.h_n, q.c_n, q.ws, q.hp);
      else launched = forward_persistent<T, kMode>(pf, stream, k.reverse, gx, w, b, len, q.out, q.h_n, q.c_n, q.ws,
                                                   q.hp);
      q.dh = copy(gh_n);
      if (lstm) q.dc = copy(gc_n);
      q.dgx = zeros(dt, {T_, N, G * H});
      q.dgh = zeros(dt, {T_, N, G * H});
      if (i == 0) backward_steps<T, kMode>(stream, k.reverse, go, w, r[0].ws, r[0].hp, len, q.dh, q.dc, q.dgx, q.dgh);
      else launched = launched && backward_persistent<T, kMode>(pb, stream, k.reverse, go, w, r[0].ws, r[0].hp, len,
                                                                q.dh, q.dc, q.dgx, q.dgh);
      EMBER_CHECK(launched, "rnn_recurrence", "the driver refused the persistent kernel's cooperative launch on cuda:",
                  dev);
    }
    const std::pair<const char*, Tensor Result::*> fields[] = {
        {"output", &Result::out},   {"h_n", &Result::h_n},          {"c_n", &Result::c_n},
        {"workspace", &Result::ws}, {"h_prev", &Result::hp},        {"grad_h0", &Result::dh},
        {"grad_c0", &Result::dc},   {"grad_gates_x", &Result::dgx}, {"grad_gates_h", &Result::dgh}};
    for (const auto& [name, field] : fields) {
      if (!(r[0].*field).defined()) continue;
      const std::vector<double> want = download(r[0].*field), got = download(r[1].*field);
      double worst = 0;
      bool finite_match = true;
      for (size_t i = 0; i < want.size(); ++i) {
        const double d = std::fabs(got[i] - want[i]);
        if (!(d <= 1e30)) finite_match = false;  // NaN or inf on one side
        else worst = std::max(worst, d / (1 + std::fabs(want[i])));
      }
      if (!finite_match || worst > tol) {
        std::fprintf(stderr,
                     "ember: the persistent RNN kernel (%s, %s) disagreed with the per-step kernels on device %d "
                     "(%s, check problem %zu: largest relative difference %g%s); using the per-step kernels from "
                     "now on\n",
                     mode_name<kMode>(), dtype_name(dt), dev, name, ci + 1, worst,
                     finite_match ? "" : ", NaN or inf on one side");
        return false;
      }
    }
  }
  return true;
}

template <class T, RNNMode kMode>
bool persistent_checked(cudaStream_t stream, bool strict) {
  static OnceVerdict<64> verdicts;  // per device (one instance per dtype and mode)
  const int dev = current_device();
  const bool capturing = stream_capturing(stream);
  const bool ok = verdicts.get(dev, "the persistent RNN kernel's self-check", "using the per-step kernels",
                               [&] { return persistent_check_run<T, kMode>(dev, stream); }, capturing);
  EMBER_CHECK(ok || !strict || capturing, "rnn_recurrence", "EMBER_RNN_KERNEL=persistent, but the persistent ",
              mode_name<kMode>(), " kernel failed its self-check on cuda:", dev, " (stderr says how)");
  return ok;
}

// The rule: the persistent kernel runs a (T, N, H) recurrence when EMBER_RNN_KERNEL allows it,
// the dtype is f32, f16 or bf16, the batch is small (or EMBER_RNN_KERNEL=persistent), the
// device launches cooperative kernels, every CTA's slice and staging buffer fit its shared
// memory with all CTAs resident at once, and the kernel passed its self-check on this device.
// During a graph capture an undecided self-check means the per-step path for that call.
template <class T, RNNMode kMode, bool kBackward>
Plan persistent_plan(cudaStream_t stream, int64_t T_, int64_t N, int64_t H) {
  if constexpr (std::is_same_v<T, double>) {
    return Plan{};
  } else {
    const KernelChoice k = kernel_choice();
    if (k == KernelChoice::steps || (k == KernelChoice::rule && N > kPersistentMaxBatch)) return Plan{};
    const Plan p = plan_for<T, kMode, kBackward>(current_device(), T_, N, H);
    if (!p.ok || !persistent_checked<T, kMode>(stream, k == KernelChoice::persistent)) return Plan{};
    return p;
  }
}

template <class T, RNNMode kMode>
void forward_mode(cudaStream_t stream, bool reverse, const Tensor& gates_x, const Tensor& w_hh, const Tensor& b_hh,
                  const Tensor& lengths, const Tensor& out, const Tensor& h_n, const Tensor& c_n,
                  const Tensor& workspace, const Tensor& h_prev) {
  if constexpr (!std::is_same_v<T, double>) {
    const Plan p = persistent_plan<T, kMode, false>(stream, gates_x.size(0), gates_x.size(1), w_hh.size(1));
    if (p.ok && forward_persistent<T, kMode>(p, stream, reverse, gates_x, w_hh, b_hh, lengths, out, h_n, c_n,
                                             workspace, h_prev))
      return;
  }
  forward_steps<T, kMode>(stream, reverse, gates_x, w_hh, b_hh, lengths, out, h_n, c_n, workspace, h_prev);
}

template <class T, RNNMode kMode>
void backward_mode(cudaStream_t stream, bool reverse, const Tensor& grad_out, const Tensor& w_hh,
                   const Tensor& workspace, const Tensor& h_prev, const Tensor& lengths, const Tensor& dh,
                   const Tensor& dc, const Tensor& grad_gates_x, const Tensor& grad_gates_h) {
  if constexpr (!std::is_same_v<T, double>) {
    const Plan p = persistent_plan<T, kMode, true>(stream, grad_out.size(0), grad_out.size(1), w_hh.size(1));
    if (p.ok && backward_persistent<T, kMode>(p, stream, reverse, grad_out, w_hh, workspace, h_prev, lengths, dh, dc,
                                              grad_gates_x, grad_gates_h))
      return;
  }
  backward_steps<T, kMode>(stream, reverse, grad_out, w_hh, workspace, h_prev, lengths, dh, dc, grad_gates_x,
                           grad_gates_h);
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
