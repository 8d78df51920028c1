// The per-element cell math of the RNN/LSTM/GRU recurrence, shared by the per-step kernels of
// rnn.cu and the persistent kernels of rnn_persistent.cuh, so both compute every gate the same way
// and round at the same points (docs/rnn.md). A header of its own so that the host emulation's
// test (tests/emu/test_rnn_persistent.cpp) compiles the same code as the device build.
#pragma once
#include <cstdint>

#include "common.cuh"
#include "ember/prim/rnn_mode.h"

namespace ember::cuda {
namespace rnn_cell {

template <class A>
__device__ __forceinline__ A sigmoid_acc(A x) {
  return A(1) / (A(1) + exp(-x));
}

template <class T>
__device__ __forceinline__ acc_t<T> ld(const T* p, int64_t i) {
  return to_acc(p[i]);
}

template <RNNMode kMode>
inline constexpr int kGates = kMode == RNNMode::lstm ? 4 : kMode == RNNMode::gru ? 3 : 1;
template <RNNMode kMode>  // workspace slots per unit: LSTM i f g o c_{t-1} tanh(c_t); GRU r z n hh_n; RNN h
inline constexpr int kWorkSlots = kMode == RNNMode::lstm ? 6 : kMode == RNNMode::gru ? 4 : 1;

// The cell of one (n, j) element, shared by the per-step kernel and the persistent kernel
// (rnn_persistent.cuh) so both compute the same values with the same roundings. x, q, b: the
// gate's input projection, hidden projection (as stored, in the storage type) and b_hh (0
// without bias), one per gate; h_old: the state entering the step; c: the LSTM cell state, in
// and out. put(k, v) receives workspace slot k. Returns the new h in the accumulator type.
template <RNNMode kMode, class A, class Put>
__device__ __forceinline__ A cell_forward(const A (&x)[kGates<kMode>], const A (&q)[kGates<kMode>],
                                          const A (&b)[kGates<kMode>], A h_old, A& c, Put&& put) {
  auto pre = [&](int g) { return x[g] + q[g] + b[g]; };
  if constexpr (kMode == RNNMode::lstm) {
    const A i = sigmoid_acc(pre(0)), f = sigmoid_acc(pre(1)), g = tanh(pre(2)), o = sigmoid_acc(pre(3));
    const A cp = c;
    const A cn = f * cp + i * g;
    const A tc = tanh(cn);
    c = cn;
    put(0, i);
    put(1, f);
    put(2, g);
    put(3, o);
    put(4, cp);
    put(5, tc);
    return o * tc;
  } else if constexpr (kMode == RNNMode::gru) {
    const A r = sigmoid_acc(pre(0)), z = sigmoid_acc(pre(1));
    const A hn = q[2] + b[2];
    const A nn = tanh(x[2] + r * hn);
    put(0, r);
    put(1, z);
    put(2, nn);
    put(3, hn);
    return nn + z * (h_old - nn);  // (1 - z) n + z h
  } else {
    const A v = pre(0);
    const A h = kMode == RNNMode::rnn_relu ? (v > A(0) ? v : A(0)) : tanh(v);
    put(0, h);
    return h;
  }
}

// The cell backward of one (n, j) element, shared likewise. d: the total gradient of h_t;
// ws(k): workspace slot k of the step; hprev(): h_{t-1} (read by GRU only); dc: the LSTM cell
// state's gradient, in (of c_t) and out (of c_{t-1}). Out: dg, the gate pre-activation
// gradients (the input projection's), dgh_n (GRU: the hidden projection's n-gate gradient,
// which enters as r * hh_n) and dh_direct, the part of dh_{t-1} that bypasses W_hh.
template <RNNMode kMode, class A, class Ws, class Hprev>
__device__ __forceinline__ void cell_backward(A d, Ws&& ws, Hprev&& hprev, A& dc, A (&dg)[kGates<kMode>], A& dgh_n,
                                              A& dh_direct) {
  dh_direct = A(0);
  dgh_n = A(0);
  if constexpr (kMode == RNNMode::lstm) {
    const A i = ws(0), f = ws(1), g = ws(2), o = ws(3), cp = ws(4), tc = ws(5);
    const A dcv = dc + d * o * (A(1) - tc * tc);
    dg[0] = dcv * g * i * (A(1) - i);
    dg[1] = dcv * cp * f * (A(1) - f);
    dg[2] = dcv * i * (A(1) - g * g);
    dg[3] = d * tc * o * (A(1) - o);
    dc = dcv * f;
  } else if constexpr (kMode == RNNMode::gru) {
    const A r = ws(0), z = ws(1), nn = ws(2), hn = ws(3);
    const A hp = hprev();
    const A dn = d * (A(1) - z) * (A(1) - nn * nn);
    dg[0] = dn * hn * r * (A(1) - r);
    dg[1] = d * (hp - nn) * z * (A(1) - z);
    dg[2] = dn;
    dgh_n = dn * r;
    dh_direct = d * z;
  } else {
    const A hy = ws(0);
    dg[0] = kMode == RNNMode::rnn_relu ? (hy > A(0) ? d : A(0)) : d * (A(1) - hy * hy);
  }
}

}  // namespace rnn_cell
}  // namespace ember::cuda
