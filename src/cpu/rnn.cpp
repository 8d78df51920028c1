// The RNN/LSTM/GRU recurrence on the CPU.
//
// Forward, per step s: one GEMM hh (N, G*H) = h (N, H) @ W_hh^T (f32: W_hh packed once per call,
// see PackedB; f64: Eigen), then one fused pass over the batch rows that adds
// gates_x[t] + hh + b_hh, applies the gate nonlinearities with Eigen's vectorised
// logistic/tanh, updates h (and c) in place and writes the output row and, when training, the
// workspace and h_prev rows of step s.
//
// Threads: batch rows are independent through the whole recurrence, so each OpenMP thread runs
// every step for its own slice of rows (one fork/join per call). A parallel region per step
// costs two barriers per step; on a loaded machine each could wait a scheduling quantum for a
// descheduled thread (a 64-step forward took ~1 s on 2 threads against 20 ms on 1).
//
// Backward, per step s from last to first: one fused pass over the rows turns dh (carried
// gradient + grad_out[t]) and dc into the gate pre-activation gradients (written to
// grad_gates_x in time order and to grad_gates_h in step order), then one GEMM
// dh += dgates_h[s] (N, G*H) @ W_hh (G*H, H). The weight gradient is not accumulated here:
// the op does it after the loop as one GEMM over all T*N rows of grad_gates_h and h_prev. A
// per-step dW_hh += dgates^T h_{t-1} would be T GEMMs with an inner dimension of only N (32
// in W3_lstm), each re-packing W-sized panels, all on the sequential critical path; the single
// GEMM has an inner dimension of T*N, runs at Eigen's full rate on every thread, and needs no
// memory beyond the h_prev the backward keeps anyway.
//
// Lengths: at step s sequence n is active when s < lengths[n]; its time index is s forward
// and lengths[n]-1-s in reverse. An inactive row writes zeros to out[s, n] (which is then a
// padding position: s >= lengths[n]), leaves its state alone, and in backward passes dh and dc
// through unchanged with a zero gate gradient row (so the GEMM adds nothing to it).
#include "cpu/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"

#include <Eigen/Core>
#include <algorithm>
#include <memory>
#include <type_traits>
#include <vector>

#include "cpu/loops.h"

namespace ember::cpu {
namespace {

using Eigen::Dynamic;
template <class T>
using Arr = Eigen::Array<T, Dynamic, 1>;
template <class T>
using AMap = Eigen::Map<Arr<T>>;
template <class T>
using CMap = Eigen::Map<const Arr<T>>;
template <class T>
using RowMat = Eigen::Matrix<T, Dynamic, Dynamic, Eigen::RowMajor>;
template <class T>
using MatMap = Eigen::Map<RowMat<T>>;
template <class T>
using CMatMap = Eigen::Map<const RowMat<T>>;

// Which time index sequence n is at in step s, if any.
struct Steps {
  int64_t T, N;
  const int64_t* len;  // (N) or null: every sequence has length T
  bool reverse;
  int64_t length(int64_t n) const { return len ? len[n] : T; }
  bool active(int64_t s, int64_t n) const { return s < length(n); }
  int64_t time(int64_t s, int64_t n) const { return reverse ? length(n) - 1 - s : s; }
};


int64_t workspace_width(RNNMode mode, int64_t H) {
  switch (mode) {
    case RNNMode::lstm: return 6 * H;
    case RNNMode::gru: return 4 * H;
    default: return H;
  }
}

// --- forward cells: one sequence, one step ---------------------------------------------------
// x, hh: (G*H) rows of gates_x[t, n] and h W_hh^T; b: (G*H) or null; h, c: (H) state rows,
// updated in place; y: (H) output row; ws: (W) workspace row or null; scratch: (W).

template <class T>
void rnn_cell(bool relu, const T* x, const T* hh, const T* b, T* h, T* y, T* ws, T* scratch, int64_t H) {
  AMap<T> a(ws ? ws : scratch, H);  // h_t
  a = CMap<T>(x, H) + CMap<T>(hh, H);
  if (b) a += CMap<T>(b, H);
  if (relu) a = a.max(T(0));
  else a = a.tanh();
  AMap<T>(h, H) = a;
  AMap<T>(y, H) = a;
}

template <class T>
void lstm_cell(const T* x, const T* hh, const T* b, T* h, T* c, T* y, T* ws, T* scratch, int64_t H) {
  T* w = ws ? ws : scratch;  // i, f, g, o, c_prev, tanh(c)
  AMap<T> P(w, 4 * H);
  P = CMap<T>(x, 4 * H) + CMap<T>(hh, 4 * H);
  if (b) P += CMap<T>(b, 4 * H);
  P.head(2 * H) = P.head(2 * H).logistic();
  P.segment(2 * H, H) = P.segment(2 * H, H).tanh();
  P.tail(H) = P.tail(H).logistic();
  AMap<T> C(c, H), TC(w + 5 * H, H);
  AMap<T>(w + 4 * H, H) = C;
  C = P.segment(H, H) * C + P.head(H) * P.segment(2 * H, H);
  TC = C.tanh();
  AMap<T>(h, H) = P.tail(H) * TC;
  AMap<T>(y, H) = AMap<T>(h, H);
}

template <class T>
void gru_cell(const T* x, const T* hh, const T* b, T* h, T* y, T* ws, T* scratch, int64_t H) {
  T* w = ws ? ws : scratch;  // r, z, n, hh_n + b_hn
  AMap<T> RZ(w, 2 * H), Nn(w + 2 * H, H), HN(w + 3 * H, H);
  RZ = CMap<T>(x, 2 * H) + CMap<T>(hh, 2 * H);
  HN = CMap<T>(hh + 2 * H, H);
  if (b) {
    RZ += CMap<T>(b, 2 * H);
    HN += CMap<T>(b + 2 * H, H);
  }
  RZ = RZ.logistic();
  Nn = (CMap<T>(x + 2 * H, H) + RZ.head(H) * HN).tanh();
  AMap<T> Hs(h, H);
  Hs = Nn + RZ.tail(H) * (Hs - Nn);  // (1 - z) n + z h
  AMap<T>(y, H) = Hs;
}

// --- backward cells ----------------------------------------------------------------------------
// dh: (H) carried gradient of this step's h, replaced by the part of dh_{t-1} that does not go
// through W_hh; dc: (H) carried cell gradient, replaced by dc_{t-1}; go: (H) grad_out row;
// gx, gh: (G*H) gradient rows of gates_x and of the hidden projection (gh may equal gx).

template <class T>
void rnn_cell_backward(bool relu, const T* ws, const T* go, T* dh, T* gx, T* gh, int64_t H) {
  CMap<T> hy(ws, H);
  AMap<T> D(dh, H), GX(gx, H);
  if (relu) GX = (D + CMap<T>(go, H)) * (hy > T(0)).template cast<T>();
  else GX = (D + CMap<T>(go, H)) * (T(1) - hy * hy);
  if (gh != gx) AMap<T>(gh, H) = GX;
  D.setZero();
}

template <class T>
void lstm_cell_backward(const T* ws, const T* go, T* dh, T* dc, T* gx, T* gh, int64_t H) {
  CMap<T> i(ws, H), f(ws + H, H), g(ws + 2 * H, H), o(ws + 3 * H, H), cp(ws + 4 * H, H), tc(ws + 5 * H, H);
  AMap<T> D(dh, H), DC(dc, H);
  AMap<T> Di(gx, H), Df(gx + H, H), Dg(gx + 2 * H, H), Do(gx + 3 * H, H);
  D += CMap<T>(go, H);                       // dh of this step
  Do = D * tc * o * (T(1) - o);              // d(o pre-activation)
  DC += D * o * (T(1) - tc * tc);            // dc of this step
  Di = DC * g * i * (T(1) - i);
  Df = DC * cp * f * (T(1) - f);
  Dg = DC * i * (T(1) - g * g);
  DC *= f;                                   // dc_{t-1}
  D.setZero();
  if (gh != gx) AMap<T>(gh, 4 * H) = CMap<T>(gx, 4 * H);
}

template <class T>
void gru_cell_backward(const T* ws, const T* go, const T* hp, T* dh, T* gx, T* gh, int64_t H) {
  CMap<T> r(ws, H), z(ws + H, H), n(ws + 2 * H, H), hn(ws + 3 * H, H), HP(hp, H);
  AMap<T> D(dh, H);
  AMap<T> Dr(gx, H), Dz(gx + H, H), Dn(gx + 2 * H, H);
  D += CMap<T>(go, H);
  Dn = D * (T(1) - z) * (T(1) - n * n);  // d(n pre-activation)
  Dz = D * (HP - n) * z * (T(1) - z);
  Dr = Dn * hn * r * (T(1) - r);
  D *= z;  // the direct path h_{t-1} -> z h_{t-1}
  AMap<T>(gh, 2 * H) = CMap<T>(gx, 2 * H);
  AMap<T>(gh + 2 * H, H) = Dn * r;  // hh_n enters as r * hh_n
}

// --- the per-step GEMM ---------------------------------------------------------------------------
// C (rows, M) = or += A (rows, K) @ B (K, M) with B = W_hh^T (forward) or W_hh (backward), the same
// matrix every step. Eigen's GEMM packs both operands on every call, and with 16 to 64 rows per
// call re-packing the whole of W_hh each step was a sixth of W3_lstm's time. PackedB packs B once
// per recurrence into kPanel-column panels (panel p holds B[k, kPanel p .. kPanel p + kPanel - 1] for
// k = 0..K-1, contiguous, zero-padded past M); the micro-kernel keeps an R x 2 kPanel tile of C in
// 2R vector registers and streams two panels, one broadcast of A per row and k. f32 only; f64 (tests)
// stays on Eigen.
// The panel is one native vector wide: GCC lowers a generic vector wider than the target's
// registers through memory, so a 16-float panel on an AVX2 machine (no AVX-512) kept every
// accumulator on the stack and ran the step GEMM about 20x slower (AMD EPYC, W3_lstm 923 ms
// instead of 88 ms at one thread). With AVX2, 6 rows x 2 panels use 12 of the 16 ymm registers
// for C and 2 for the panel rows (4 rows: 25% slower).
#ifdef __AVX512F__
constexpr int64_t kPanel = 16;
constexpr int kTileRows = 8;  // 16 accumulators of 32 zmm
#else
constexpr int64_t kPanel = 8;
constexpr int kTileRows = 6;  // 12 accumulators + 2 panel rows of 16 ymm
#endif
using v16 = float __attribute__((vector_size(kPanel * sizeof(float)), aligned(4), may_alias));  // one panel row, unaligned

class PackedB {
 public:
  // B[k, m] at b[k * sk + m * sm].
  PackedB(const float* b, int64_t K, int64_t M, int64_t sk, int64_t sm)
      : K_(K), M_(M), panels_((M + kPanel - 1) / kPanel), p_(static_cast<size_t>(panels_ * K * kPanel), 0.0f) {
    for (int64_t p = 0; p < panels_; ++p)
      for (int64_t k = 0; k < K; ++k) {
        float* dst = p_.data() + (p * K + k) * kPanel;
        for (int64_t c = 0; c < kPanel && p * kPanel + c < M; ++c) dst[c] = b[k * sk + (p * kPanel + c) * sm];
      }
  }

  void multiply(const float* a, int64_t lda, int64_t rows, float* c, int64_t ldc, bool accumulate) const {
    for (int64_t r0 = 0; r0 < rows; r0 += kTileRows) {
      const int R = static_cast<int>(std::min<int64_t>(kTileRows, rows - r0));
      for (int64_t p = 0; p < panels_; p += 2) {
        const bool two = p + 1 < panels_;
        switch (R) {
#define EMBER_RNN_TILE(RR)                                                               \
  case RR:                                                                               \
    if (two) tile<RR, true>(a + r0 * lda, lda, p, c + r0 * ldc, ldc, accumulate);        \
    else tile<RR, false>(a + r0 * lda, lda, p, c + r0 * ldc, ldc, accumulate);           \
    break;
          EMBER_RNN_TILE(1) EMBER_RNN_TILE(2) EMBER_RNN_TILE(3) EMBER_RNN_TILE(4)
          EMBER_RNN_TILE(5) EMBER_RNN_TILE(6)
#ifdef __AVX512F__
          EMBER_RNN_TILE(7) EMBER_RNN_TILE(8)
#endif
#undef EMBER_RNN_TILE
          default: break;
        }
      }
    }
  }

 private:
  // C[0..R, kPanel p .. kPanel (p + 1) (p + 2 when kTwo)] of the tile.
  template <int R, bool kTwo>
  void tile(const float* a, int64_t lda, int64_t p, float* c, int64_t ldc, bool accumulate) const {
    v16 acc0[R], acc1[R];
    for (int r = 0; r < R; ++r) {
      acc0[r] = v16{};
      acc1[r] = v16{};
    }
    const float* p0 = p_.data() + p * K_ * kPanel;
    const float* p1 = p0 + K_ * kPanel;
    for (int64_t k = 0; k < K_; ++k) {
      const v16 b0 = *reinterpret_cast<const v16*>(p0 + k * kPanel);
      v16 b1{};
      if constexpr (kTwo) b1 = *reinterpret_cast<const v16*>(p1 + k * kPanel);
      for (int r = 0; r < R; ++r) {
        const float av = a[r * lda + k];
        acc0[r] += av * b0;
        if constexpr (kTwo) acc1[r] += av * b1;
      }
    }
    const int64_t col = p * kPanel;
    const int64_t n0 = std::min<int64_t>(kPanel, M_ - col), n1 = kTwo ? std::min<int64_t>(kPanel, M_ - col - kPanel) : 0;
    for (int r = 0; r < R; ++r) {
      float* cr = c + r * ldc + col;
      store(acc0[r], cr, n0, accumulate);
      if constexpr (kTwo) store(acc1[r], cr + kPanel, n1, accumulate);
    }
  }
  static void store(const v16& v, float* dst, int64_t n, bool accumulate) {
    if (n == kPanel) {
      v16* d = reinterpret_cast<v16*>(dst);
      *d = accumulate ? *d + v : v;
      return;
    }
    for (int64_t i = 0; i < n; ++i) dst[i] = accumulate ? dst[i] + v[i] : v[i];
  }

  int64_t K_, M_, panels_;
  std::vector<float> p_;
};

// --- loops -------------------------------------------------------------------------------------

// Rounds n values to the storage dtype and back (round to nearest even, as the CUDA kernels'
// conversions): f16/bf16 tensors computed in f32 keep their values where the CUDA backend
// stores them in the 16-bit type. A no-op for f32/f64 storage.
template <class T>
void round_to_storage(DType storage, T* p, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    if (storage == DType::f16)
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(Eigen::half(p[i]));
    else if (storage == DType::bf16)
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(Eigen::bfloat16(p[i]));
  } else {
    (void)storage, (void)p, (void)n;
  }
}

template <class T>
void forward_typed(RNNMode mode, bool reverse, const Tensor& gates_x, const Tensor& w_hh, const Tensor& b_hh,
                   const Tensor& lengths, const Tensor& out, const Tensor& h_n, const Tensor& c_n,
                   const Tensor& workspace, const Tensor& h_prev, DType storage) {
  const Steps st{gates_x.size(0), gates_x.size(1), ptr_or_null<int64_t>(lengths), reverse};
  const int64_t N = st.N, H = w_hh.size(1), GH = w_hh.size(0), W = workspace_width(mode, H);
  const T* gx = ptr_or_null<T>(gates_x);
  const T* b = ptr_or_null<T>(b_hh);
  T* y = mut_ptr_or_null<T>(out);
  T* h = mut_ptr_or_null<T>(h_n);
  T* c = mut_ptr_or_null<T>(c_n);
  T* ws = mut_ptr_or_null<T>(workspace);
  T* hp = mut_ptr_or_null<T>(h_prev);
  CMatMap<T> Whh(ptr_or_null<T>(w_hh), GH, H);
  std::unique_ptr<PackedB> packed;  // f32: W_hh^T (H, G*H) in panels
  if constexpr (std::is_same_v<T, float>) packed = std::make_unique<PackedB>(ptr_or_null<T>(w_hh), H, GH, 1, H);
  // Batch rows are independent: each thread runs the whole recurrence for its own slice of
  // rows (one fork/join per call, no barrier per step), its GEMMs single-threaded.
  parallel_for(N, st.T * GH * H, [&](int64_t n0, int64_t n1) {
    const int64_t rows = n1 - n0;
    std::vector<T> hh_buf(static_cast<size_t>(rows * GH)), scratch(static_cast<size_t>(W));
    MatMap<T> HH(hh_buf.data(), rows, GH);
    CMatMap<T> Hm(h + n0 * H, rows, H);
    for (int64_t s = 0; s < st.T; ++s) {
      if constexpr (std::is_same_v<T, float>) packed->multiply(h + n0 * H, H, rows, hh_buf.data(), GH, false);
      else HH.noalias() = Hm * Whh.transpose();  // (rows, G*H)
      round_to_storage(storage, hh_buf.data(), rows * GH);
      for (int64_t n = n0; n < n1; ++n) {
        T* hrow = h + n * H;
        T* hp_row = hp ? hp + (s * N + n) * H : nullptr;
        if (!st.active(s, n)) {
          std::fill_n(y + (s * N + n) * H, H, T(0));  // (s, n) is a padding position
          if (hp_row) std::fill_n(hp_row, H, T(0));
          continue;
        }
        const int64_t t = st.time(s, n);
        if (hp_row) std::copy_n(hrow, H, hp_row);
        const T* xr = gx + (t * N + n) * GH;
        const T* hhr = hh_buf.data() + (n - n0) * GH;
        T* yr = y + (t * N + n) * H;
        T* wsr = ws ? ws + (s * N + n) * W : nullptr;
        switch (mode) {
          case RNNMode::lstm: lstm_cell(xr, hhr, b, hrow, c + n * H, yr, wsr, scratch.data(), H); break;
          case RNNMode::gru: gru_cell(xr, hhr, b, hrow, yr, wsr, scratch.data(), H); break;
          default: rnn_cell(mode == RNNMode::rnn_relu, xr, hhr, b, hrow, yr, wsr, scratch.data(), H);
        }
        round_to_storage(storage, hrow, H);
        round_to_storage(storage, yr, H);
        if (wsr) round_to_storage(storage, wsr, W);
      }
    }
  });
}

template <class T>
void backward_typed(RNNMode mode, bool reverse, const Tensor& grad_out, const Tensor& w_hh,
                    const Tensor& workspace, const Tensor& h_prev, const Tensor& lengths, const Tensor& dh_t,
                    const Tensor& dc_t, const Tensor& grad_gates_x, const Tensor& grad_gates_h, DType storage) {
  const Steps st{grad_out.size(0), grad_out.size(1), ptr_or_null<int64_t>(lengths), reverse};
  const int64_t N = st.N, H = w_hh.size(1), GH = w_hh.size(0), W = workspace_width(mode, H);
  const T* go = ptr_or_null<T>(grad_out);
  const T* ws = ptr_or_null<T>(workspace);
  const T* hp = ptr_or_null<T>(h_prev);
  T* dh = mut_ptr_or_null<T>(dh_t);
  T* dc = mut_ptr_or_null<T>(dc_t);
  T* gx = mut_ptr_or_null<T>(grad_gates_x);
  T* gh = mut_ptr_or_null<T>(grad_gates_h);
  CMatMap<T> Whh(ptr_or_null<T>(w_hh), GH, H);
  std::unique_ptr<PackedB> packed;  // f32: W_hh (G*H, H) in panels
  if constexpr (std::is_same_v<T, float>) packed = std::make_unique<PackedB>(ptr_or_null<T>(w_hh), GH, H, H, 1);
  // 16-bit storage: the step GEMM's result is rounded before it joins the carried f32 dh.
  const bool round16 = storage == DType::f16 || storage == DType::bf16;
  parallel_for(N, st.T * GH * H, [&](int64_t n0, int64_t n1) {  // batch slices, as in forward
    MatMap<T> DH(dh + n0 * H, n1 - n0, H);
    std::vector<T> dmm(round16 ? static_cast<size_t>((n1 - n0) * H) : 0);
    for (int64_t s = st.T - 1; s >= 0; --s) {
      for (int64_t n = n0; n < n1; ++n) {
        T* ghr = gh + (s * N + n) * GH;
        if (!st.active(s, n)) {
          std::fill_n(ghr, GH, T(0));
          if (gx != gh) std::fill_n(gx + (s * N + n) * GH, GH, T(0));  // padding position (s, n)
          continue;
        }
        const int64_t t = st.time(s, n);
        const T* wsr = ws + (s * N + n) * W;
        const T* gor = go + (t * N + n) * H;
        T* gxr = gx + (t * N + n) * GH;
        switch (mode) {
          case RNNMode::lstm: lstm_cell_backward(wsr, gor, dh + n * H, dc + n * H, gxr, ghr, H); break;
          case RNNMode::gru: gru_cell_backward(wsr, gor, hp + (s * N + n) * H, dh + n * H, gxr, ghr, H); break;
          default: rnn_cell_backward(mode == RNNMode::rnn_relu, wsr, gor, dh + n * H, gxr, ghr, H);
        }
        round_to_storage(storage, ghr, GH);
        if (gxr != ghr) round_to_storage(storage, gxr, GH);
      }
      if (round16) {
        if constexpr (std::is_same_v<T, float>) {
          packed->multiply(gh + (s * N + n0) * GH, GH, n1 - n0, dmm.data(), H, false);
          round_to_storage(storage, dmm.data(), (n1 - n0) * H);
          DH += MatMap<T>(dmm.data(), n1 - n0, H);
        }
      } else if constexpr (std::is_same_v<T, float>) {
        packed->multiply(gh + (s * N + n0) * GH, GH, n1 - n0, dh + n0 * H, H, true);
      } else {
        CMatMap<T> G(gh + (s * N + n0) * GH, n1 - n0, GH);
        DH.noalias() += G * Whh;  // (rows, G*H) @ (G*H, H)
      }
    }
  });
}

}  // namespace

void rnn_forward(RNNMode mode, bool reverse, const Tensor& gates_x, const Tensor& w_hh, const Tensor& b_hh,
                 const Tensor& lengths, const Tensor& out, const Tensor& h_n, const Tensor& c_n,
                 const Tensor& workspace, const Tensor& h_prev, DType storage) {
  if (gates_x.numel() == 0) return;  // T = 0 or N = 0: the states stay h0, c0
  EMBER_DISPATCH_FLOAT(gates_x.dtype(), "rnn_recurrence", [&] {
    forward_typed<scalar_t>(mode, reverse, gates_x, w_hh, b_hh, lengths, out, h_n, c_n, workspace, h_prev,
                            storage);
  });
}

void rnn_backward(RNNMode mode, bool reverse, const Tensor& grad_out, const Tensor& w_hh, const Tensor& workspace,
                  const Tensor& h_prev, const Tensor& lengths, const Tensor& dh, const Tensor& dc,
                  const Tensor& grad_gates_x, const Tensor& grad_gates_h, DType storage) {
  if (grad_gates_x.numel() == 0) return;
  EMBER_DISPATCH_FLOAT(grad_out.dtype(), "rnn_recurrence_backward", [&] {
    backward_typed<scalar_t>(mode, reverse, grad_out, w_hh, workspace, h_prev, lengths, dh, dc, grad_gates_x,
                             grad_gates_h, storage);
  });
}

void register_rnn_kernels() {
  prim::define<prim::rnn_forward>(prim::Backend::cpu, &rnn_forward);
  prim::define<prim::rnn_backward>(prim::Backend::cpu, &rnn_backward);
}

}  // namespace ember::cpu
