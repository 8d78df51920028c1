// conv1d on the CPU: two algorithms for each of forward, backward-input and backward-weight.
//
// direct  One output row at a time: for tap k, output position j reads x at
//         j*stride + k*dilation - padding. With stride 1 a row is a correlation computed in
//         register tiles of positions, each tile accumulating over every (channel, tap) before
//         it is stored; the positions at the padded edges, and strided convolutions, go tap by
//         tap over the range of positions where the index lies inside [0, L) (computed once
//         per tap, so the loops have no bounds test). The input gradient is the same
//         correlation over dy; the weight gradient is one dot product per (weight, sample).
//         No scratch memory. Best for depthwise and tiny layers, where each GEMM would be
//         too small to pay for packing and the unfold.
// im2col  Per (sample, group): copy the windows into col (C_in/groups * K, L_out) —
//         col[c*K + k, j] = x[c, j*stride + k*dilation - padding] or 0 — then one Eigen GEMM:
//           forward          y_g (C_out/g, L_out)      = W_g (C_out/g, cg*K) @ col
//           backward-input   dcol (cg*K, L_out)        = W_g^T @ dy_g, then col2im adds the
//                                                        columns back into dx
//           backward-weight  dW_g (C_out/g, cg*K)     += dy_g @ col^T, summed over samples
//         A 1x1 convolution with stride 1 and no padding needs no unfold: col is x itself.
//
// Threading: (sample, group) items go one per thread when there are at least as many as
// threads (Eigen then runs single-threaded inside the parallel region); otherwise items run
// in turn and Eigen threads each GEMM. The weight gradient sums over samples, so each thread
// accumulates into its own buffer and the buffers are added at the end (a fixed order for a
// given thread count). Outputs are overwritten (=).
#include "cpu/conv.h"
#include "cpu/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"

#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/loops.h"

namespace ember::cpu {
namespace {

// Below this many weights per group (C_out/groups * C_in/groups * K) the direct loops beat
// unfold + GEMM (measured on the 2-core AVX-512 VM, docs/conv.md).
constexpr int64_t kDirectMaxGroupWeights = 256;

struct Geom {
  int64_t N, C_in, L, C_out, K, L_out, stride, padding, dilation, groups;
  int64_t cg() const { return C_in / groups; }   // input channels per group
  int64_t og() const { return C_out / groups; }  // output channels per group
  int64_t red() const { return cg() * K; }       // reduction length of one output
  // Input index of output position j under tap k is j*stride + offset(k).
  int64_t offset(int64_t k) const { return k * dilation - padding; }
  // The output positions [lo, hi) whose tap-k input index lies inside [0, L).
  void valid(int64_t k, int64_t& lo, int64_t& hi) const {
    const int64_t off = offset(k);
    lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
    hi = L - 1 - off >= 0 ? (L - 1 - off) / stride + 1 : 0;
    lo = std::min(lo, L_out);
    hi = std::clamp(hi, lo, L_out);
  }
  // col is x itself: a 1x1 kernel reading every position once, in order.
  bool identity_unfold() const { return K == 1 && stride == 1 && padding == 0 && L_out == L; }
};

Geom make_geom(const Tensor& x_like, const Tensor& w_like, const Tensor& y_like, int64_t stride,
               int64_t padding, int64_t dilation, int64_t groups) {
  // x_like (N, C_in, L), w_like (C_out, C_in/groups, K), y_like (N, C_out, L_out).
  return Geom{x_like.size(0), x_like.size(1), x_like.size(2), w_like.size(0), w_like.size(2),
              y_like.size(2), stride,         padding,        dilation,       groups};
}

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstMat = Eigen::Map<const RowMat<T>>;
template <class T>
using Mat = Eigen::Map<RowMat<T>>;
template <class T>
using ConstVec = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstStridedVec = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>;

// Scratch for one im2col buffer, kept per thread between calls: a fresh allocation of a few
// MB per call costs page faults and zero-filling every training step. Requests above
// kScratchKeepBytes get a buffer of their own that is freed when `Scratch` goes away.
constexpr size_t kScratchKeepBytes = size_t{32} << 20;

template <class T>
class Scratch {
 public:
  explicit Scratch(int64_t n) {
    const size_t count = static_cast<size_t>(n);
    if (count * sizeof(T) > kScratchKeepBytes) {
      own_.resize(count);
      data_ = own_.data();
      return;
    }
    thread_local std::vector<T> kept;
    if (kept.size() < count) kept.resize(count);
    data_ = kept.data();
  }
  T* data() const { return data_; }

 private:
  std::vector<T> own_;
  T* data_ = nullptr;
};

// Runs body(i0, i1) over [0, items): one chunk per thread when there are enough items to go
// round, else on this thread (so Eigen can thread the GEMMs inside).
template <class F>
void over_items(int64_t items, int64_t work_per_item, F&& body) {
  if (items >= omp_get_max_threads()) parallel_for(items, work_per_item, body);
  else body(int64_t{0}, items);
}

// --- direct -----------------------------------------------------------------------------------

// One output row of a stride-1 correlation:
//   out[j] = init + sum_{r < rows, k < K} coef(r, k) * src_r[j + shift[k]],  j in [0, len)
// with src_r = src + r * src_stride read as zero outside [0, src_len). Positions whose every
// tap is in range go through in register tiles held across the whole (r, k) reduction: one
// load and one FMA per element and tap, and 8 independent vector accumulators so the FMA
// latency is hidden (then 16-wide tiles for the rest). The few positions at the edges run tap
// by tap over their valid ranges.
template <class T, int64_t Width, class Coef>
int64_t correlate_tiles(T* __restrict out, int64_t from, int64_t to, T init, const T* src, int64_t src_stride,
                        int64_t rows, int64_t K, const int64_t* shift, Coef& coef) {
  using Tile = Eigen::Array<T, Width, 1>;
  int64_t j0 = from;
  for (; j0 + Width <= to; j0 += Width) {
    Tile acc = Tile::Zero();  // (a broadcast init here made GCC reload it from the stack)
    for (int64_t r = 0; r < rows; ++r) {
      const T* sr = src + r * src_stride + j0;
      for (int64_t k = 0; k < K; ++k) acc += coef(r, k) * Eigen::Map<const Tile>(sr + shift[k]);
    }
    Eigen::Map<Tile>(out + j0) = acc + init;
  }
  return j0;  // first position not done
}

template <class T, class Coef>
void correlate_row(T* __restrict out, int64_t len, T init, const T* src, int64_t src_stride, int64_t rows,
                   int64_t src_len, int64_t K, const int64_t* shift, Coef&& coef) {
  auto range = [&](int64_t k, int64_t& lo, int64_t& hi) {
    lo = std::clamp<int64_t>(-shift[k], 0, len);
    hi = std::clamp<int64_t>(src_len - shift[k], lo, len);
  };
  int64_t a = 0, b = len;  // positions where every tap is in range
  for (int64_t k = 0; k < K; ++k) {
    int64_t lo, hi;
    range(k, lo, hi);
    a = std::max(a, lo);
    b = std::min(b, hi);
  }
  b = std::max(a, b);
  constexpr int64_t kWide = 512 / sizeof(T);  // 8 AVX-512 registers of accumulators
  int64_t done = correlate_tiles<T, kWide>(out, a, b, init, src, src_stride, rows, K, shift, coef);
  done = correlate_tiles<T, 16>(out, done, b, init, src, src_stride, rows, K, shift, coef);
  std::fill(out, out + a, init);
  std::fill(out + done, out + len, init);
  for (int64_t r = 0; r < rows; ++r) {
    const T* sr = src + r * src_stride;
    for (int64_t k = 0; k < K; ++k) {
      const T c = coef(r, k);
      int64_t lo, hi;
      range(k, lo, hi);
      for (int64_t j = lo; j < std::min(hi, a); ++j) out[j] += c * sr[j + shift[k]];
      for (int64_t j = std::max(lo, done); j < hi; ++j) out[j] += c * sr[j + shift[k]];
    }
  }
}

template <class T>
void direct_forward(const Geom& g, const T* __restrict x, const T* __restrict w, const T* b, T* __restrict y) {
  const int64_t cg = g.cg(), og = g.og(), s = g.stride;
  std::vector<int64_t> shift(static_cast<size_t>(g.K));  // input index = j + shift[k] (stride 1)
  for (int64_t k = 0; k < g.K; ++k) shift[k] = g.offset(k);
  parallel_for(g.N * g.C_out, g.red() * g.L_out, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {  // i = n * C_out + co: one output row
      const int64_t n = i / g.C_out, co = i % g.C_out, grp = co / og;
      T* __restrict yr = y + i * g.L_out;                     // (L_out)
      const T* xg = x + (n * g.C_in + grp * cg) * g.L;        // (cg, L)
      const T* wr = w + co * cg * g.K;                        // (cg, K)
      const T init = b ? b[co] : T(0);
      if (s == 1) {
        correlate_row(yr, g.L_out, init, xg, g.L, cg, g.L, g.K, shift.data(),
                      [wr, K = g.K](int64_t c, int64_t k) { return wr[c * K + k]; });
        continue;
      }
      std::fill(yr, yr + g.L_out, init);
      for (int64_t c = 0; c < cg; ++c) {
        const T* __restrict xr = xg + c * g.L;  // (L)
        for (int64_t k = 0; k < g.K; ++k) {
          const T wv = wr[c * g.K + k];
          const int64_t off = g.offset(k);
          int64_t lo, hi;
          g.valid(k, lo, hi);
          for (int64_t j = lo; j < hi; ++j) yr[j] += wv * xr[j * s + off];
        }
      }
    }
  });
}

template <class T>
void direct_backward_input(const Geom& g, const T* __restrict gy, const T* __restrict w, T* __restrict dx) {
  const int64_t cg = g.cg(), og = g.og(), s = g.stride;
  // Stride 1: dx[l] = sum_{o,k} w[o, c, k] * dy[o, l - offset(k)], a correlation like the forward.
  std::vector<int64_t> shift(static_cast<size_t>(g.K));
  for (int64_t k = 0; k < g.K; ++k) shift[k] = -g.offset(k);
  parallel_for(g.N * g.C_in, og * g.K * g.L_out, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {  // i = n * C_in + ci: one input row, written by one thread
      const int64_t n = i / g.C_in, ci = i % g.C_in, grp = ci / cg, c = ci % cg;
      T* __restrict dxr = dx + i * g.L;                                  // (L)
      const T* gyg = gy + (n * g.C_out + grp * og) * g.L_out;            // (og, L_out)
      const T* wg = w + (grp * og * cg + c) * g.K;                       // w[grp*og + o, c, k] at o*cg*K + k
      if (s == 1) {
        correlate_row(dxr, g.L, T(0), gyg, g.L_out, og, g.L_out, g.K, shift.data(),
                      [wg, step = cg * g.K](int64_t o, int64_t k) { return wg[o * step + k]; });
        continue;
      }
      std::fill(dxr, dxr + g.L, T(0));
      for (int64_t o = 0; o < og; ++o) {
        const T* __restrict gr = gyg + o * g.L_out;  // (L_out)
        for (int64_t k = 0; k < g.K; ++k) {
          const T wv = wg[o * cg * g.K + k];
          const int64_t off = g.offset(k);
          int64_t lo, hi;
          g.valid(k, lo, hi);
          for (int64_t j = lo; j < hi; ++j) dxr[j * s + off] += wv * gr[j];
        }
      }
    }
  });
}

template <class T>
void direct_backward_weight(const Geom& g, const T* gy, const T* x, T* dw) {
  const int64_t cg = g.cg(), og = g.og(), s = g.stride;
  parallel_for(g.C_out * cg, g.N * g.K * g.L_out, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {  // i = co * cg + c: one weight row (K taps)
      const int64_t co = i / cg, c = i % cg, ci = (co / og) * cg + c;
      for (int64_t k = 0; k < g.K; ++k) {
        const int64_t off = g.offset(k);
        int64_t lo, hi;
        g.valid(k, lo, hi);
        T acc = 0;
        for (int64_t n = 0; n < g.N && hi > lo; ++n) {
          const T* gr = gy + (n * g.C_out + co) * g.L_out;  // (L_out)
          const T* xr = x + (n * g.C_in + ci) * g.L;        // (L)
          ConstVec<T> gv(gr + lo, hi - lo);
          if (s == 1) acc += gv.dot(ConstVec<T>(xr + lo + off, hi - lo));
          else acc += gv.dot(ConstStridedVec<T>(xr + lo * s + off, hi - lo, Eigen::InnerStride<>(s)));
        }
        dw[i * g.K + k] = acc;
      }
    }
  });
}

// --- im2col -----------------------------------------------------------------------------------

// col (cg*K, L_out) from one (sample, group) slab xg (cg, L).
template <class T>
void im2col(const Geom& g, const T* __restrict xg, T* __restrict col) {
  const int64_t s = g.stride;
  for (int64_t c = 0; c < g.cg(); ++c) {
    const T* xr = xg + c * g.L;
    for (int64_t k = 0; k < g.K; ++k) {
      T* row = col + (c * g.K + k) * g.L_out;
      const int64_t off = g.offset(k);
      int64_t lo, hi;
      g.valid(k, lo, hi);
      std::fill(row, row + lo, T(0));
      if (s == 1) {
        if (hi > lo) std::memcpy(row + lo, xr + lo + off, static_cast<size_t>(hi - lo) * sizeof(T));
      } else {
        for (int64_t j = lo; j < hi; ++j) row[j] = xr[j * s + off];
      }
      std::fill(row + hi, row + g.L_out, T(0));
    }
  }
}

// dxg (cg, L) += the columns of dcol (cg*K, L_out) added back where im2col read them.
template <class T>
void col2im_add(const Geom& g, const T* __restrict dcol, T* __restrict dxg) {
  const int64_t s = g.stride;
  for (int64_t c = 0; c < g.cg(); ++c) {
    T* dxr = dxg + c * g.L;
    for (int64_t k = 0; k < g.K; ++k) {
      const T* row = dcol + (c * g.K + k) * g.L_out;
      const int64_t off = g.offset(k);
      int64_t lo, hi;
      g.valid(k, lo, hi);
      if (s == 1) {
        for (int64_t j = lo; j < hi; ++j) dxr[j + off] += row[j];
      } else {
        for (int64_t j = lo; j < hi; ++j) dxr[j * s + off] += row[j];
      }
    }
  }
}

template <class T>
void im2col_forward(const Geom& g, const T* x, const T* w, const T* b, T* y) {
  const int64_t G = g.groups, og = g.og(), R = g.red();
  const bool identity = g.identity_unfold();
  over_items(g.N * G, og * R * g.L_out, [&](int64_t i0, int64_t i1) {
    Scratch<T> col(identity ? 0 : R * g.L_out);  // (cg*K, L_out)
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / G, grp = i % G;
      const T* xg = x + (n * g.C_in + grp * g.cg()) * g.L;  // (cg, L)
      if (!identity) im2col(g, xg, col.data());
      ConstMat<T> C(identity ? xg : col.data(), R, g.L_out);
      ConstMat<T> W(w + grp * og * R, og, R);
      Mat<T> Y(y + (n * g.C_out + grp * og) * g.L_out, og, g.L_out);
      // Start from the bias instead of zero (Eigen's `=` would clear Y first anyway).
      if (b) Y.colwise() = ConstVec<T>(b + grp * og, og);
      else Y.setZero();
      Y.noalias() += W * C;
    }
  });
}

template <class T>
void im2col_backward_input(const Geom& g, const T* gy, const T* w, T* dx) {
  const int64_t G = g.groups, og = g.og(), R = g.red();
  const bool identity = g.identity_unfold();
  over_items(g.N * G, og * R * g.L_out, [&](int64_t i0, int64_t i1) {
    Scratch<T> dcol(identity ? 0 : R * g.L_out);  // (cg*K, L_out)
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / G, grp = i % G;
      T* dxg = dx + (n * g.C_in + grp * g.cg()) * g.L;  // (cg, L)
      ConstMat<T> W(w + grp * og * R, og, R);
      ConstMat<T> GY(gy + (n * g.C_out + grp * og) * g.L_out, og, g.L_out);
      if (identity) {
        Mat<T>(dxg, R, g.L).noalias() = W.transpose() * GY;
        continue;
      }
      Mat<T>(dcol.data(), R, g.L_out).noalias() = W.transpose() * GY;
      std::fill(dxg, dxg + g.cg() * g.L, T(0));
      col2im_add(g, dcol.data(), dxg);
    }
  });
}

template <class T>
void im2col_backward_weight(const Geom& g, const T* gy, const T* x, T* dw) {
  const int64_t G = g.groups, og = g.og(), R = g.red(), items = g.N * G;
  const int64_t wsize = g.C_out * R;
  const bool identity = g.identity_unfold();
  std::fill(dw, dw + wsize, T(0));
  // Adds the items [i0, i1) into acc (C_out, cg*K).
  auto accumulate = [&](int64_t i0, int64_t i1, T* acc) {
    Scratch<T> col(identity ? 0 : R * g.L_out);  // (cg*K, L_out)
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / G, grp = i % G;
      const T* xg = x + (n * g.C_in + grp * g.cg()) * g.L;
      if (!identity) im2col(g, xg, col.data());
      ConstMat<T> C(identity ? xg : col.data(), R, g.L_out);
      ConstMat<T> GY(gy + (n * g.C_out + grp * og) * g.L_out, og, g.L_out);
      Mat<T>(acc + grp * og * R, og, R).noalias() += GY * C.transpose();
    }
  };
  const int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (nt <= 1 || items < nt || items * og * R * g.L_out < kParallelGrain) {
    accumulate(0, items, dw);  // Eigen threads each GEMM
    return;
  }
  // Thread 0 accumulates into dw itself, the others into buffers added afterwards.
  std::vector<T> partial(static_cast<size_t>((nt - 1) * wsize), T(0));
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), team = omp_get_num_threads();
    const int64_t chunk = (items + team - 1) / team;
    const int64_t b = t * chunk, e = std::min(items, b + chunk);
    if (b < e) accumulate(b, e, t == 0 ? dw : partial.data() + (t - 1) * wsize);
  }
  for (int t = 1; t < nt; ++t) {
    const T* p = partial.data() + (t - 1) * wsize;
    for (int64_t i = 0; i < wsize; ++i) dw[i] += p[i];
  }
}


}  // namespace

namespace {

Conv1dAlgo algo_from_env() {
  const char* v = std::getenv("EMBER_CONV1D_CPU");
  if (!v) return Conv1dAlgo::automatic;
  const std::string s = v;
  if (s == "direct") return Conv1dAlgo::direct;
  if (s == "im2col") return Conv1dAlgo::im2col;
  return Conv1dAlgo::automatic;  // "auto", empty or unknown
}

std::atomic<Conv1dAlgo>& algo_setting() {
  static std::atomic<Conv1dAlgo> a{algo_from_env()};
  return a;
}

// The algorithm for geometry g: the setting, or the size rule when it is automatic.
bool use_direct(const Geom& g) {
  switch (algo_setting().load(std::memory_order_relaxed)) {
    case Conv1dAlgo::direct: return true;
    case Conv1dAlgo::im2col: return false;
    case Conv1dAlgo::automatic: break;
  }
  return g.cg() * g.og() * g.K < kDirectMaxGroupWeights;
}

}  // namespace

void set_conv1d_algo(Conv1dAlgo algo) { algo_setting().store(algo, std::memory_order_relaxed); }
Conv1dAlgo conv1d_algo() { return algo_setting().load(std::memory_order_relaxed); }

void conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out_overwrite,
                    int64_t stride, int64_t padding, int64_t dilation, int64_t groups) {
  const Geom g = make_geom(x, w, out_overwrite, stride, padding, dilation, groups);
  if (out_overwrite.numel() == 0) return;
  EMBER_DISPATCH_FLOAT(x.dtype(), "conv1d", [&] {
    const auto* px = static_cast<const scalar_t*>(x.data_ptr());
    const auto* pw = static_cast<const scalar_t*>(w.data_ptr());
    auto* py = static_cast<scalar_t*>(out_overwrite.data_ptr());
    if (use_direct(g)) direct_forward(g, px, pw, ptr_or_null<scalar_t>(bias), py);
    else im2col_forward(g, px, pw, ptr_or_null<scalar_t>(bias), py);
  });
}

void conv1d_backward_input(const Tensor& grad_out, const Tensor& w, const Tensor& grad_input_overwrite,
                           int64_t stride, int64_t padding, int64_t dilation, int64_t groups) {
  const Geom g = make_geom(grad_input_overwrite, w, grad_out, stride, padding, dilation, groups);
  if (grad_input_overwrite.numel() == 0) return;
  EMBER_DISPATCH_FLOAT(w.dtype(), "conv1d_backward_input", [&] {
    const auto* pg = static_cast<const scalar_t*>(grad_out.data_ptr());
    const auto* pw = static_cast<const scalar_t*>(w.data_ptr());
    auto* pdx = static_cast<scalar_t*>(grad_input_overwrite.data_ptr());
    if (use_direct(g)) direct_backward_input(g, pg, pw, pdx);
    else im2col_backward_input(g, pg, pw, pdx);
  });
}

void conv1d_backward_weight(const Tensor& grad_out, const Tensor& x, const Tensor& grad_weight_overwrite,
                            int64_t stride, int64_t padding, int64_t dilation, int64_t groups) {
  const Geom g = make_geom(x, grad_weight_overwrite, grad_out, stride, padding, dilation, groups);
  if (grad_weight_overwrite.numel() == 0) return;
  EMBER_DISPATCH_FLOAT(x.dtype(), "conv1d_backward_weight", [&] {
    const auto* pg = static_cast<const scalar_t*>(grad_out.data_ptr());
    const auto* px = static_cast<const scalar_t*>(x.data_ptr());
    auto* pdw = static_cast<scalar_t*>(grad_weight_overwrite.data_ptr());
    if (use_direct(g)) direct_backward_weight(g, pg, px, pdw);
    else im2col_backward_weight(g, pg, px, pdw);
  });
}

void register_conv_kernels() {
  prim::define<prim::conv1d_forward>(prim::Backend::cpu, &conv1d_forward);
  prim::define<prim::conv1d_backward_input>(prim::Backend::cpu, &conv1d_backward_input);
  prim::define<prim::conv1d_backward_weight>(prim::Backend::cpu, &conv1d_backward_weight);
}

}  // namespace ember::cpu
