// Hierarchical softmax on the CPU: examples split across OpenMP threads.
//
// Per example the path is walked leaf to root through the table (class_slot, then
// parent_slot): at each node the scores z_j = W[row_off + j] . h + b (Eigen dot products; a
// binary node's second score is the fixed 0), their log-sum-exp in double, and the taken
// child's log-probability.
// Backward, W and b: many examples share the rows near the root, so a per-example scatter into
// grad_W would race. Per-thread copies of grad_W (S x D each) are far too big at 100k classes
// and float atomics are CAS loops, so the scatter is sorted by row instead: every example
// writes its (row, dz) pairs to its own slots, a counting sort groups them by row (O(pairs),
// a few thousand for a batch), and then each row of grad_W is written once by one thread —
// the dz-weighted sum of its examples' h for a touched row, zeros otherwise. That one pass
// over grad_W is the only O(S * D) work; the result does not depend on the thread count.
#include "cpu/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "cpu/loops.h"

namespace ember::cpu {
namespace {

template <class T>
using Vec = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>;
template <class T>
using MutVec = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>>;


hs::Tree tree_of(const Tensor& table, const hs::Dims& d) {
  return hs::Tree(static_cast<const int32_t*>(table.data_ptr()), d);
}

// z[0..arity) of node n for hidden vector hv (D); returns log-sum-exp(z) in double.
template <class T>
double node_scores(const hs::Tree& tr, int32_t n, const T* W, const T* b, const T* hv, int64_t D, double* z) {
  const int32_t a = tr.arity(n), r = tr.nrows(n), row0 = tr.row_off[n];
  double mx = -std::numeric_limits<double>::infinity();
  for (int32_t j = 0; j < a; ++j) {
    double v = 0;
    if (j < r) {
      const int64_t row = row0 + j;
      v = static_cast<double>(Vec<T>(W + row * D, D).dot(Vec<T>(hv, D)));
      if (b) v += static_cast<double>(b[row]);
    }
    z[j] = v;
    mx = std::max(mx, v);
  }
  double s = 0;
  for (int32_t j = 0; j < a; ++j) s += std::exp(z[j] - mx);
  return mx + std::log(s);
}

// Node logits from a precomputed (S) row of logits; same contract as node_scores.
template <class T>
double node_logits(const hs::Tree& tr, int32_t n, const T* lg, double* z) {
  const int32_t a = tr.arity(n), r = tr.nrows(n), row0 = tr.row_off[n];
  double mx = -std::numeric_limits<double>::infinity();
  for (int32_t j = 0; j < a; ++j) {
    z[j] = j < r ? static_cast<double>(lg[row0 + j]) : 0.0;
    mx = std::max(mx, z[j]);
  }
  double s = 0;
  for (int32_t j = 0; j < a; ++j) s += std::exp(z[j] - mx);
  return mx + std::log(s);
}

template <class T>
void nll_forward(const T* h, const T* W, const T* b, const int64_t* tgt, const hs::Tree& tr, const hs::Dims& d,
                 T* loss, int64_t N, int64_t D, int64_t max_arity) {
  parallel_for(N, d.L * max_arity * D, [&](int64_t i0, int64_t i1) {
    std::vector<double> z(static_cast<size_t>(max_arity));
    for (int64_t i = i0; i < i1; ++i) {
      const T* hv = h + i * D;
      double acc = 0;
      for (int32_t s = tr.class_slot[tgt[i]]; s >= 0;) {
        const int32_t n = tr.slot_node[s];
        const double lse = node_scores(tr, n, W, b, hv, D, z.data());
        acc += lse - z[s - tr.slot_off[n]];
        s = tr.parent_slot[n];
      }
      loss[i] = static_cast<T>(acc);
    }
  });
}

template <class T>
void nll_backward(const T* gl, const T* h, const T* W, const T* b, const int64_t* tgt, const hs::Tree& tr,
                  const hs::Dims& d, T* gh, T* gW, T* gb, int64_t N, int64_t D, int64_t max_arity) {
  const bool params = gW || gb;
  // Each example's (row, dz) pairs: at most L nodes x max_arity rows.
  const int64_t cap = d.L * max_arity;
  std::vector<int32_t> pair_row(params ? static_cast<size_t>(N * cap) : 0);
  std::vector<double> pair_dz(params ? static_cast<size_t>(N * cap) : 0);
  std::vector<int32_t> pair_count(static_cast<size_t>(N), 0);
  parallel_for(N, 2 * cap * D, [&](int64_t i0, int64_t i1) {
    std::vector<double> z(static_cast<size_t>(max_arity));
    for (int64_t i = i0; i < i1; ++i) {
      const T* hv = h + i * D;
      T* ghv = gh ? gh + i * D : nullptr;
      if (ghv) std::fill(ghv, ghv + D, T(0));
      const double g = static_cast<double>(gl[i]);
      int32_t count = 0;
      for (int32_t s = tr.class_slot[tgt[i]]; s >= 0;) {
        const int32_t n = tr.slot_node[s];
        const double lse = node_scores(tr, n, W, b, hv, D, z.data());
        const int32_t taken = s - tr.slot_off[n], r = tr.nrows(n), row0 = tr.row_off[n];
        for (int32_t j = 0; j < r; ++j) {  // the fixed logit of a binary node has no row
          const double dz = g * (std::exp(z[j] - lse) - (j == taken ? 1.0 : 0.0));
          if (ghv) MutVec<T>(ghv, D) += static_cast<T>(dz) * Vec<T>(W + (row0 + j) * D, D);
          if (params) {
            pair_row[static_cast<size_t>(i * cap + count)] = row0 + j;
            pair_dz[static_cast<size_t>(i * cap + count)] = dz;
            ++count;
          }
        }
        s = tr.parent_slot[n];
      }
      pair_count[static_cast<size_t>(i)] = count;
    }
  });
  if (!params) return;
  // Counting sort of the pairs by row; within a row, examples stay in increasing order.
  std::vector<int64_t> row_start(static_cast<size_t>(d.S + 1), 0);
  for (int64_t i = 0; i < N; ++i)
    for (int32_t k = 0; k < pair_count[static_cast<size_t>(i)]; ++k)
      ++row_start[static_cast<size_t>(pair_row[static_cast<size_t>(i * cap + k)]) + 1];
  for (int64_t r = 0; r < d.S; ++r) row_start[static_cast<size_t>(r + 1)] += row_start[static_cast<size_t>(r)];
  std::vector<int64_t> fill(row_start.begin(), row_start.end() - 1);
  std::vector<std::pair<int64_t, double>> by_row(static_cast<size_t>(row_start.back()));  // (example, dz)
  for (int64_t i = 0; i < N; ++i)
    for (int32_t k = 0; k < pair_count[static_cast<size_t>(i)]; ++k) {
      const size_t p = static_cast<size_t>(i * cap + k);
      by_row[static_cast<size_t>(fill[static_cast<size_t>(pair_row[p])]++)] = {i, pair_dz[p]};
    }
  // One pass over the rows: touched rows get their sums, the rest zeros.
  parallel_for(d.S, D, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t p0 = row_start[static_cast<size_t>(r)], p1 = row_start[static_cast<size_t>(r + 1)];
      if (gW) {
        MutVec<T> row(gW + r * D, D);
        row.setZero();
        for (int64_t p = p0; p < p1; ++p)
          row += static_cast<T>(by_row[static_cast<size_t>(p)].second) * Vec<T>(h + by_row[static_cast<size_t>(p)].first * D, D);
      }
      if (gb) {
        double s = 0;
        for (int64_t p = p0; p < p1; ++p) s += by_row[static_cast<size_t>(p)].second;
        gb[r] = static_cast<T>(s);
      }
    }
  });
}

// Per example: every node's log-softmax, accumulated down the tree in node order (a parent's
// id is below its children's), read out at each class's leaf slot.
template <class T>
void tree_forward(const T* lg, const hs::Tree& tr, const hs::Dims& d, T* out, int64_t N, int64_t max_arity) {
  parallel_for(N, d.slots() + d.C, [&](int64_t i0, int64_t i1) {
    std::vector<double> z(static_cast<size_t>(max_arity)), cum(static_cast<size_t>(d.slots()));
    for (int64_t i = i0; i < i1; ++i) {
      const T* row = lg + i * d.S;
      for (int32_t n = 0; n < d.I; ++n) {
        const double lse = node_logits(tr, n, row, z.data());
        const double base = tr.parent_slot[n] >= 0 ? cum[static_cast<size_t>(tr.parent_slot[n])] : 0.0;
        for (int32_t j = 0, s = tr.slot_off[n]; s < tr.slot_off[n + 1]; ++j, ++s)
          cum[static_cast<size_t>(s)] = base + z[j] - lse;
      }
      for (int64_t c = 0; c < d.C; ++c) out[i * d.C + c] = static_cast<T>(cum[static_cast<size_t>(tr.class_slot[c])]);
    }
  });
}

// acc[slot] = the sum of grad_out over the classes below the slot (leaves up, in reverse node
// order); then grad_logit[row j of n] = acc[j] - softmax_j * sum of acc over n's slots.
template <class T>
void tree_backward(const T* go, const T* lg, const hs::Tree& tr, const hs::Dims& d, T* gl, int64_t N,
                   int64_t max_arity) {
  parallel_for(N, d.slots() + d.C, [&](int64_t i0, int64_t i1) {
    std::vector<double> z(static_cast<size_t>(max_arity)), acc(static_cast<size_t>(d.slots()));
    for (int64_t i = i0; i < i1; ++i) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t c = 0; c < d.C; ++c) acc[static_cast<size_t>(tr.class_slot[c])] = static_cast<double>(go[i * d.C + c]);
      for (int32_t n = static_cast<int32_t>(d.I) - 1; n > 0; --n) {
        double tot = 0;
        for (int32_t s = tr.slot_off[n]; s < tr.slot_off[n + 1]; ++s) tot += acc[static_cast<size_t>(s)];
        acc[static_cast<size_t>(tr.parent_slot[n])] += tot;
      }
      const T* row = lg + i * d.S;
      T* grow = gl + i * d.S;
      for (int32_t n = 0; n < d.I; ++n) {
        const double lse = node_logits(tr, n, row, z.data());
        double tot = 0;
        for (int32_t s = tr.slot_off[n]; s < tr.slot_off[n + 1]; ++s) tot += acc[static_cast<size_t>(s)];
        for (int32_t j = 0; j < tr.nrows(n); ++j)
          grow[tr.row_off[n] + j] =
              static_cast<T>(acc[static_cast<size_t>(tr.slot_off[n] + j)] - std::exp(z[j] - lse) * tot);
      }
    }
  });
}

// Better first: higher score, then the lower id (a fixed order for ties).
bool better(const std::pair<double, int64_t>& a, const std::pair<double, int64_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

template <class T>
void topk(const T* h, const T* W, const T* b, const hs::Tree& tr, const hs::Dims& d, int64_t k, int64_t beam,
          T* values, int64_t* classes, int64_t N, int64_t D, int64_t max_arity) {
  parallel_for(N, d.L * beam * max_arity * D, [&](int64_t i0, int64_t i1) {
    std::vector<double> z(static_cast<size_t>(max_arity));
    std::vector<std::pair<double, int64_t>> frontier, next, leaves;  // (log-prob, node or class)
    for (int64_t i = i0; i < i1; ++i) {
      const T* hv = h + i * D;
      frontier.assign(1, {0.0, 0});
      leaves.clear();
      while (!frontier.empty()) {
        next.clear();
        for (const auto& [score, n32] : frontier) {
          const int32_t n = static_cast<int32_t>(n32);
          const double lse = node_scores(tr, n, W, b, hv, D, z.data());
          for (int32_t j = 0; j < tr.arity(n); ++j) {
            const int32_t child = tr.slot_child[tr.slot_off[n] + j];
            const double lp = score + z[j] - lse;
            if (child < 0) leaves.emplace_back(lp, ~child);
            else next.emplace_back(lp, child);
          }
        }
        if (static_cast<int64_t>(next.size()) > beam) {
          std::partial_sort(next.begin(), next.begin() + beam, next.end(), better);
          next.resize(static_cast<size_t>(beam));
        }
        frontier.swap(next);
      }
      const int64_t kk = std::min<int64_t>(k, static_cast<int64_t>(leaves.size()));  // == k (see the op)
      std::partial_sort(leaves.begin(), leaves.begin() + kk, leaves.end(), better);
      for (int64_t j = 0; j < k; ++j) {
        const bool have = j < kk;
        values[i * k + j] = have ? static_cast<T>(leaves[static_cast<size_t>(j)].first)
                                 : static_cast<T>(-std::numeric_limits<double>::infinity());
        classes[i * k + j] = have ? leaves[static_cast<size_t>(j)].second : -1;
      }
    }
  });
}

}  // namespace

void hsoftmax_nll_forward(const Tensor& h, const Tensor& W, const Tensor& b, const Tensor& targets,
                          const Tensor& table, const hs::Dims& dims, const Tensor& loss, int64_t N, int64_t D) {
  const hs::Tree tr = tree_of(table, dims);
  const int64_t max_arity = dims.A;
  EMBER_DISPATCH_FLOAT(h.dtype(), "hsoftmax_nll", [&] {
    nll_forward<scalar_t>(static_cast<const scalar_t*>(h.data_ptr()), static_cast<const scalar_t*>(W.data_ptr()),
                          ptr_or_null<scalar_t>(b), static_cast<const int64_t*>(targets.data_ptr()), tr, dims,
                          static_cast<scalar_t*>(loss.data_ptr()), N, D, max_arity);
  });
}

void hsoftmax_nll_backward(const Tensor& grad_loss, const Tensor& h, const Tensor& W, const Tensor& b,
                           const Tensor& targets, const Tensor& table, const hs::Dims& dims, const Tensor& grad_h,
                           const Tensor& grad_W, const Tensor& grad_b, int64_t N, int64_t D) {
  const hs::Tree tr = tree_of(table, dims);
  const int64_t max_arity = dims.A;
  EMBER_DISPATCH_FLOAT(h.dtype(), "hsoftmax_nll_backward", [&] {
    nll_backward<scalar_t>(static_cast<const scalar_t*>(grad_loss.data_ptr()),
                           static_cast<const scalar_t*>(h.data_ptr()), static_cast<const scalar_t*>(W.data_ptr()),
                           ptr_or_null<scalar_t>(b), static_cast<const int64_t*>(targets.data_ptr()), tr, dims,
                           mut_ptr_or_null<scalar_t>(grad_h), mut_ptr_or_null<scalar_t>(grad_W),
                           mut_ptr_or_null<scalar_t>(grad_b), N, D, max_arity);
  });
}

void hsoftmax_tree_forward(const Tensor& logits, const Tensor& table, const hs::Dims& dims, const Tensor& out,
                           int64_t N) {
  const hs::Tree tr = tree_of(table, dims);
  const int64_t max_arity = dims.A;
  EMBER_DISPATCH_FLOAT(logits.dtype(), "hsoftmax_tree_log_prob", [&] {
    tree_forward<scalar_t>(static_cast<const scalar_t*>(logits.data_ptr()), tr, dims,
                           static_cast<scalar_t*>(out.data_ptr()), N, max_arity);
  });
}

void hsoftmax_tree_backward(const Tensor& grad_out, const Tensor& logits, const Tensor& table, const hs::Dims& dims,
                            const Tensor& grad_logits, int64_t N) {
  const hs::Tree tr = tree_of(table, dims);
  const int64_t max_arity = dims.A;
  EMBER_DISPATCH_FLOAT(logits.dtype(), "hsoftmax_tree_log_prob_backward", [&] {
    tree_backward<scalar_t>(static_cast<const scalar_t*>(grad_out.data_ptr()),
                            static_cast<const scalar_t*>(logits.data_ptr()), tr, dims,
                            static_cast<scalar_t*>(grad_logits.data_ptr()), N, max_arity);
  });
}

void hsoftmax_topk(const Tensor& h, const Tensor& W, const Tensor& b, const Tensor& table, const hs::Dims& dims,
                   int64_t k, int64_t beam, const Tensor& values, const Tensor& classes, int64_t N, int64_t D) {
  const hs::Tree tr = tree_of(table, dims);
  const int64_t max_arity = dims.A;
  EMBER_DISPATCH_FLOAT(h.dtype(), "hsoftmax_topk", [&] {
    topk<scalar_t>(static_cast<const scalar_t*>(h.data_ptr()), static_cast<const scalar_t*>(W.data_ptr()),
                   ptr_or_null<scalar_t>(b), tr, dims, k, beam, static_cast<scalar_t*>(values.data_ptr()),
                   static_cast<int64_t*>(classes.data_ptr()), N, D, max_arity);
  });
}

void register_hsoftmax_kernels() {
  prim::define<prim::hsoftmax_nll_forward>(prim::Backend::cpu, &hsoftmax_nll_forward);
  prim::define<prim::hsoftmax_nll_backward>(prim::Backend::cpu, &hsoftmax_nll_backward);
  prim::define<prim::hsoftmax_tree_forward>(prim::Backend::cpu, &hsoftmax_tree_forward);
  prim::define<prim::hsoftmax_tree_backward>(prim::Backend::cpu, &hsoftmax_tree_backward);
  prim::define<prim::hsoftmax_topk>(prim::Backend::cpu, &hsoftmax_topk);
}

}  // namespace ember::cpu
