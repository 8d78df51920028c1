// Attention on the CPU: for each (b, h) pair the scores of a block of queries against every
// key are one Eigen GEMM, then one pass over each score row applies scale, masks and softmax
// (and dropout), then one GEMM with V.
//
// Forward work units are (b, h, block of kQueryBlock queries), split across OpenMP threads, so
// the score buffer of a thread is (kQueryBlock, Tk) however long the sequence, and a single
// (b, h) pair with many queries still uses every thread. Inside a parallel region Eigen's GEMM
// runs single-threaded; with one unit, parallel_for stays serial and Eigen threads itself.
//
// Backward recomputes P from the saved logsumexp instead of keeping (B, H, Tq, Tk)
// probabilities alive between the passes (one extra GEMM, Q K^T, against a Tq x Tk buffer per
// (b, h)). Work units are (b, h) pairs, since dK and dV of a pair sum over all its queries:
//   P = exp(S - lse)                    (n, Tk) per query block
//   dV += P_dropped^T dO                (Tk, Dv)
//   dP = dO V^T, dropout mask applied   (n, Tk)
//   dS = scale * P * (dP - D_i),  D_i = dO[i] . O[i]
//   dQ = dS K,  dK += dS^T Q
#include "cpu/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/loops.h"
#include "core/philox.h"

namespace ember::cpu {
namespace {

constexpr int64_t kQueryBlock = 128;  // queries per score buffer: (128, Tk)

template <class T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using CMap = Eigen::Map<const Mat<T>>;
template <class T>
using MMap = Eigen::Map<Mat<T>>;

// The masks of a call, read through the strides of the expanded (B, H, Tq, Tk) attn_mask.
template <class T>
struct Masks {
  const AttentionParams* p;
  const bool* pad = nullptr;    // (B, Tk)
  const bool* bmask = nullptr;  // bool attn_mask, true = may attend
  const T* fmask = nullptr;     // additive attn_mask
  int64_t st[4] = {0, 0, 0, 0};

  explicit Masks(const AttentionParams& params) : p(&params) {
    if (params.key_padding.defined()) pad = static_cast<const bool*>(params.key_padding.data_ptr());
    if (params.mask.defined()) {
      if (params.mask_is_bool) bmask = static_cast<const bool*>(params.mask.data_ptr());
      else fmask = static_cast<const T*>(params.mask.data_ptr());
      for (int d = 0; d < 4; ++d) st[d] = params.mask.stride(d);
    }
  }

  // Turns the raw dot products x (Tk) of query i of pair (b, h) into logits: scale, add the
  // float mask, -inf where a mask forbids the key. Returns the row maximum (-inf: no key left).
  T logits(int64_t b, int64_t h, int64_t i, T* x) const {
    const T neg_inf = -std::numeric_limits<T>::infinity();
    const T scale = static_cast<T>(p->scale);
    const int64_t Tk = p->Tk;
    const int64_t hi = p->causal ? std::clamp<int64_t>(i + Tk - p->Tq + 1, 0, Tk) : Tk;  // keys [0, hi)
    const bool* padb = pad ? pad + b * Tk : nullptr;
    const int64_t base = b * st[0] + h * st[1] + i * st[2];
    T mx = neg_inf;
    for (int64_t j = 0; j < Tk; ++j) {
      T val = x[j] * scale;
      bool ok = j < hi && !(padb && padb[j]);
      if (bmask) ok = ok && bmask[base + j * st[3]];
      else if (fmask) val += fmask[base + j * st[3]];
      val = ok ? val : neg_inf;
      x[j] = val;
      mx = std::max(mx, val);
    }
    return mx;
  }
};

// row[j] *= (keep ? 1 / (1 - p) : 0) for the n elements starting at linear element e0 of the
// (B, H, Tq, Tk) dropout mask; the Philox block changes every 4 elements.
template <class T>
void dropout_row(const AttentionParams& p, int64_t e0, int64_t n, T* row) {
  const double keep = 1.0 - p.dropout;
  const T mult = static_cast<T>(1.0 / keep);
  PhiloxBlock r{};
  uint64_t cur = 0;
  bool have = false;
  for (int64_t j = 0; j < n; ++j) {
    const uint64_t e = static_cast<uint64_t>(e0 + j);
    const uint64_t blk = p.offset + e / 4;
    if (!have || blk != cur) {
      r = philox_block(blk, 0, p.seed);
      cur = blk;
      have = true;
    }
    row[j] = philox_uniform01(r.v[e % 4]) < keep ? row[j] * mult : T(0);
  }
}

template <class T>
void forward_typed(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& p, const Tensor& out,
                   const Tensor& lse) {
  const T* Q = static_cast<const T*>(q.data_ptr());
  const T* K = static_cast<const T*>(k.data_ptr());
  const T* V = static_cast<const T*>(v.data_ptr());
  T* O = static_cast<T*>(out.data_ptr());
  T* L = static_cast<T*>(lse.data_ptr());
  const Masks<T> masks(p);
  const int64_t Tq = p.Tq, Tk = p.Tk, D = p.D, Dv = p.Dv;
  const int64_t blocks = (Tq + kQueryBlock - 1) / kQueryBlock;
  const int64_t work = std::min(Tq, kQueryBlock) * Tk * (D + Dv);
  parallel_for(p.B * p.H * blocks, work, [&](int64_t u0, int64_t u1) {
    Mat<T> S;  // (n, Tk) scores, then probabilities
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t bh = u / blocks, i0 = (u % blocks) * kQueryBlock, n = std::min(kQueryBlock, Tq - i0);
      const int64_t b = bh / p.H, h = bh % p.H;
      MMap<T> Ob(O + (bh * Tq + i0) * Dv, n, Dv);  // (n, Dv)
      if (Tk == 0) {
        Ob.setZero();
        for (int64_t r = 0; r < n; ++r) L[bh * Tq + i0 + r] = -std::numeric_limits<T>::infinity();
        continue;
      }
      CMap<T> Qb(Q + (bh * Tq + i0) * D, n, D), Kb(K + bh * Tk * D, Tk, D), Vb(V + bh * Tk * Dv, Tk, Dv);
      S.resize(n, Tk);
      S.noalias() = Qb * Kb.transpose();
      for (int64_t r = 0; r < n; ++r) {
        const int64_t i = i0 + r;
        T* row = S.row(r).data();
        const T mx = masks.logits(b, h, i, row);
        if (mx == -std::numeric_limits<T>::infinity()) {  // no key allowed: zeros, not NaN
          std::fill(row, row + Tk, T(0));
          L[bh * Tq + i] = mx;
          continue;
        }
        // Eigen's packet exp (vectorised; ~2x the scalar libm loop here). Masked scores are -inf
        // and must give exactly 0, which the clamped packet exp does not, hence the select.
        Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> a(row, Tk);
        a = (a == -std::numeric_limits<T>::infinity()).select(T(0), (a - mx).exp());
        const T sum = a.sum();
        const T inv = T(1) / sum;
        for (int64_t j = 0; j < Tk; ++j) row[j] *= inv;
        L[bh * Tq + i] = mx + std::log(sum);
        if (p.dropout > 0) dropout_row(p, (bh * Tq + i) * Tk, Tk, row);
      }
      Ob.noalias() = S * Vb;
    }
  });
}

template <class T>
void backward_typed(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                    const Tensor& lse, const AttentionParams& p, const Tensor& grad_q, const Tensor& grad_k,
                    const Tensor& grad_v) {
  const T* dO = static_cast<const T*>(grad_out.data_ptr());
  const T* Q = static_cast<const T*>(q.data_ptr());
  const T* K = static_cast<const T*>(k.data_ptr());
  const T* V = static_cast<const T*>(v.data_ptr());
  const T* O = static_cast<const T*>(out.data_ptr());
  const T* L = static_cast<const T*>(lse.data_ptr());
  T* dQ = grad_q.defined() ? static_cast<T*>(grad_q.data_ptr()) : nullptr;
  T* dK = grad_k.defined() ? static_cast<T*>(grad_k.data_ptr()) : nullptr;
  T* dV = grad_v.defined() ? static_cast<T*>(grad_v.data_ptr()) : nullptr;
  const Masks<T> masks(p);
  const int64_t Tq = p.Tq, Tk = p.Tk, D = p.D, Dv = p.Dv;
  const T scale = static_cast<T>(p.scale);
  const T neg_inf = -std::numeric_limits<T>::infinity();
  parallel_for(p.B * p.H, Tq * Tk * (2 * D + 3 * Dv), [&](int64_t u0, int64_t u1) {
    Mat<T> P, Pd, dS;  // (n, Tk): probabilities, after dropout, score gradients
    for (int64_t bh = u0; bh < u1; ++bh) {
      const int64_t b = bh / p.H, h = bh % p.H;
      CMap<T> Kb(K + bh * Tk * D, Tk, D), Vb(V + bh * Tk * Dv, Tk, Dv);
      if (dK) MMap<T>(dK + bh * Tk * D, Tk, D).setZero();
      if (dV) MMap<T>(dV + bh * Tk * Dv, Tk, Dv).setZero();
      if (Tk == 0) {
        if (dQ) MMap<T>(dQ + bh * Tq * D, Tq, D).setZero();
        continue;
      }
      for (int64_t i0 = 0; i0 < Tq; i0 += kQueryBlock) {
        const int64_t n = std::min(kQueryBlock, Tq - i0);
        CMap<T> Qb(Q + (bh * Tq + i0) * D, n, D), dOb(dO + (bh * Tq + i0) * Dv, n, Dv);
        CMap<T> Ob(O + (bh * Tq + i0) * Dv, n, Dv);
        P.resize(n, Tk);
        P.noalias() = Qb * Kb.transpose();
        for (int64_t r = 0; r < n; ++r) {
          T* row = P.row(r).data();
          masks.logits(b, h, i0 + r, row);
          const T l = L[bh * Tq + i0 + r];
          Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> a(row, Tk);
          if (l == neg_inf) a.setZero();
          else a = (a == neg_inf).select(T(0), (a - l).exp());
        }
        const Mat<T>* used = &P;  // the probabilities that multiplied V
        if (p.dropout > 0) {
          Pd = P;
          for (int64_t r = 0; r < n; ++r) dropout_row(p, (bh * Tq + i0 + r) * Tk, Tk, Pd.row(r).data());
          used = &Pd;
        }
        if (dV) MMap<T>(dV + bh * Tk * Dv, Tk, Dv).noalias() += used->transpose() * dOb;
        if (!dQ && !dK) continue;
        dS.resize(n, Tk);
        dS.noalias() = dOb * Vb.transpose();  // dP_dropped
        for (int64_t r = 0; r < n; ++r) {
          T* ds = dS.row(r).data();
          const T* pr = P.row(r).data();
          if (p.dropout > 0) dropout_row(p, (bh * Tq + i0 + r) * Tk, Tk, ds);  // dP
          const T Di = dOb.row(r).dot(Ob.row(r));
          for (int64_t j = 0; j < Tk; ++j) ds[j] = scale * pr[j] * (ds[j] - Di);
        }
        if (dQ) MMap<T>(dQ + (bh * Tq + i0) * D, n, D).noalias() = dS * Kb;
        if (dK) MMap<T>(dK + bh * Tk * D, Tk, D).noalias() += dS.transpose() * Qb;
      }
    }
  });
}

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& p,
                       const Tensor& out, const Tensor& lse) {
  EMBER_DISPATCH_FLOAT(q.dtype(), "scaled_dot_product_attention",
                       [&] { forward_typed<scalar_t>(q, k, v, p, out, lse); });
}

void attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, const AttentionParams& p, const Tensor& grad_q,
                        const Tensor& grad_k, const Tensor& grad_v) {
  EMBER_DISPATCH_FLOAT(q.dtype(), "sdpa_backward", [&] {
    backward_typed<scalar_t>(grad_out, q, k, v, out, lse, p, grad_q, grad_k, grad_v);
  });
}

void register_attention_kernels() {
  prim::define<prim::attention_forward>(prim::Backend::cpu, &attention_forward);
  prim::define<prim::attention_backward>(prim::Backend::cpu, &attention_backward);
}

}  // namespace ember::cpu
