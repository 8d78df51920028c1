// Hierarchical softmax on CUDA (contracts in prim/primitives.h, mirroring src/cpu/hsoftmax.cpp).
//
// nll forward/backward: one warp per example (8 per 256-thread block, grid-stride). The warp
// walks the example's path leaf to root through the packed table (class_slot, parent_slot);
// at each node it computes the node's scores one row at a time, each a warp dot product
// (lanes stride over D, butterfly sum), keeping an online max / sum of exponentials so any
// arity fits without scratch. A binary node's second score is the fixed 0.
// Backward: a second pass over the node's rows recomputes each score, forms
// dz = g * (softmax - [taken]) and, lanes striding over D, adds dz * W[row] into the
// example's own grad_h row (one warp per example: no race) and atomicAdds dz * h into
// grad_W[row] and dz into grad_b[row] (f32 atomics for f32/f16/bf16, f64 for f64): rows near
// the root are shared by every example of the batch. grad_h, grad_W and grad_b are zeroed with
// cudaMemsetAsync first.
// Tree log-prob (full distribution): one block per example with a slots-sized scratch row per
// block: every node's log-softmax (a thread per node), then a top-down pass level by level
// (parents are one level up, a __syncthreads between levels) adding the parent slot's value,
// then out[c] = the leaf slot's value. Backward walks the levels bottom-up summing each
// subtree's incoming gradient into the parent slot, then a thread per node writes
// grad = acc - softmax * sum(acc over the node's slots).
// Top-k: one warp per example, beam search with the frontier and candidates in a global
// scratch per warp; a warp argmax picks the beam best when the candidates overflow; leaves go
// straight into the example's sorted (N, k) output row (lane 0 inserts).
// Accumulators: float for f16/bf16/f32, double for f64.
#include <algorithm>
#include <cmath>

#include "common.cuh"
#include "cuda/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"
#include "ember/core/storage.h"
#include "row_reduce.cuh"

namespace ember::cuda {
namespace {

constexpr int kWarpsPerBlock = kThreads / kWarp;
constexpr int64_t kMaxTreeBlocks = 264;  // blocks of the tree kernels (2 per H100 SM): caps the scratch

struct SumFn {
  template <class A>
  __device__ __forceinline__ A operator()(A a, A b) const { return a + b; }
};


__device__ __forceinline__ int lane_id() { return threadIdx.x % kWarp; }
__device__ __forceinline__ int64_t warp_global() {
  return static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
}
__device__ __forceinline__ int64_t warp_count() { return static_cast<int64_t>(gridDim.x) * kWarpsPerBlock; }

// Score j of node n for hidden row hv: W[row] . hv + b[row] (all lanes get it), or 0 for a
// binary node's second child. All 32 lanes must call it.
template <class T>
__device__ acc_t<T> node_score(const hs::Tree& tr, int32_t n, int32_t j, const T* __restrict__ W,
                               const T* __restrict__ b, const T* __restrict__ hv, int64_t D) {
  using A = acc_t<T>;
  if (j >= tr.nrows(n)) return A(0);
  const int64_t row = tr.row_off[n] + j;
  const T* w = W + row * D;
  A s = A(0);
  for (int64_t k = lane_id(); k < D; k += kWarp) s += to_acc(w[k]) * to_acc(hv[k]);
  s = warp_allreduce(s, SumFn{});
  return b ? s + to_acc(b[row]) : s;
}

// log-sum-exp of node n's scores (online max and sum), and the score of child `taken`.
template <class T>
__device__ acc_t<T> node_lse(const hs::Tree& tr, int32_t n, int32_t taken, const T* __restrict__ W,
                             const T* __restrict__ b, const T* __restrict__ hv, int64_t D, acc_t<T>& z_taken) {
  using A = acc_t<T>;
  A mx = -INFINITY, se = A(0);
  for (int32_t j = 0; j < tr.arity(n); ++j) {
    const A z = node_score(tr, n, j, W, b, hv, D);
    if (z > mx) {
      se = se * exp(mx - z) + A(1);
      mx = z;
    } else {
      se += exp(z - mx);
    }
    if (j == taken) z_taken = z;
  }
  return mx + log(se);
}

template <class T>
__global__ void nll_forward_kernel(const T* __restrict__ h, const T* __restrict__ W, const T* __restrict__ b,
                                   const int64_t* __restrict__ tgt, const int32_t* __restrict__ table, hs::Dims d,
                                   T* __restrict__ loss, int64_t N, int64_t D) {
  using A = acc_t<T>;
  const hs::Tree tr(table, d);
  for (int64_t i = warp_global(); i < N; i += warp_count()) {
    const T* hv = h + i * D;
    A acc = A(0);
    for (int32_t s = tr.class_slot[tgt[i]]; s >= 0;) {
      const int32_t n = tr.slot_node[s];
      A zt = A(0);
      const A lse = node_lse(tr, n, s - tr.slot_off[n], W, b, hv, D, zt);
      acc += lse - zt;
      s = tr.parent_slot[n];
    }
    if (lane_id() == 0) loss[i] = from_acc<T>(acc);
  }
}

// gh (N, D), gW (S, D), gb (S): accumulation type, zeroed by the launcher; any may be null.
template <class T>
__global__ void nll_backward_kernel(const T* __restrict__ gl, const T* __restrict__ h, const T* __restrict__ W,
                                    const T* __restrict__ b, const int64_t* __restrict__ tgt,
                                    const int32_t* __restrict__ table, hs::Dims d, acc_t<T>* __restrict__ gh,
                                    acc_t<T>* __restrict__ gW, acc_t<T>* __restrict__ gb, int64_t N, int64_t D) {
  using A = acc_t<T>;
  const hs::Tree tr(table, d);
  for (int64_t i = warp_global(); i < N; i += warp_count()) {
    const T* hv = h + i * D;
    A* ghv = gh ? gh + i * D : nullptr;
    const A g = to_acc(gl[i]);
    for (int32_t s = tr.class_slot[tgt[i]]; s >= 0;) {
      const int32_t n = tr.slot_node[s], taken = s - tr.slot_off[n];
      A zt = A(0);
      const A lse = node_lse(tr, n, taken, W, b, hv, D, zt);
      for (int32_t j = 0; j < tr.nrows(n); ++j) {
        const int64_t row = tr.row_off[n] + j;
        const A z = node_score(tr, n, j, W, b, hv, D);
        const A dz = g * (exp(z - lse) - (j == taken ? A(1) : A(0)));
        const T* w = W + row * D;
        for (int64_t k = lane_id(); k < D; k += kWarp) {
          if (ghv) ghv[k] += dz * to_acc(w[k]);  // lane k owns these elements of the row
          if (gW) atomicAdd(gW + row * D + k, dz * to_acc(hv[k]));
        }
        if (gb && lane_id() == 0) atomicAdd(gb + row, dz);
      }
      s = tr.parent_slot[n];
    }
  }
}

// lse of node n from a row of logits (one thread); z(j) reads score j.
template <class T>
__device__ acc_t<T> logits_lse(const hs::Tree& tr, int32_t n, const T* __restrict__ lg) {
  using A = acc_t<T>;
  A mx = -INFINITY, se = A(0);
  for (int32_t j = 0; j < tr.arity(n); ++j) {
    const A z = j < tr.nrows(n) ? to_acc(lg[tr.row_off[n] + j]) : A(0);
    if (z > mx) {
      se = se * exp(mx - z) + A(1);
      mx = z;
    } else {
      se += exp(z - mx);
    }
  }
  return mx + log(se);
}

// scratch: (gridDim.x, slots) accumulation type.
template <class T>
__global__ void tree_forward_kernel(const T* __restrict__ lg, const int32_t* __restrict__ table, hs::Dims d,
                                    acc_t<T>* __restrict__ scratch, T* __restrict__ out, int64_t N) {
  using A = acc_t<T>;
  const hs::Tree tr(table, d);
  A* cum = scratch + static_cast<int64_t>(blockIdx.x) * d.slots();
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const T* row = lg + i * d.S;
    for (int32_t n = threadIdx.x; n < d.I; n += blockDim.x) {
      const A lse = logits_lse(tr, n, row);
      for (int32_t j = 0; j < tr.arity(n); ++j)
        cum[tr.slot_off[n] + j] = (j < tr.nrows(n) ? to_acc(row[tr.row_off[n] + j]) : A(0)) - lse;
    }
    __syncthreads();
    for (int64_t l = 1; l < d.L; ++l) {  // level l's parents (level l - 1) are final
      const int32_t s0 = tr.slot_off[tr.level_off[l]], s1 = tr.slot_off[tr.level_off[l + 1]];
      for (int32_t s = s0 + threadIdx.x; s < s1; s += blockDim.x) cum[s] += cum[tr.parent_slot[tr.slot_node[s]]];
      __syncthreads();
    }
    for (int64_t c = threadIdx.x; c < d.C; c += blockDim.x) out[i * d.C + c] = from_acc<T>(cum[tr.class_slot[c]]);
    __syncthreads();  // cum is reused by the next example
  }
}

template <class T>
__global__ void tree_backward_kernel(const T* __restrict__ go, const T* __restrict__ lg,
                                     const int32_t* __restrict__ table, hs::Dims d, acc_t<T>* __restrict__ scratch,
                                     T* __restrict__ gl, int64_t N) {
  using A = acc_t<T>;
  const hs::Tree tr(table, d);
  A* acc = scratch + static_cast<int64_t>(blockIdx.x) * d.slots();
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    for (int64_t s = threadIdx.x; s < d.slots(); s += blockDim.x) acc[s] = A(0);
    __syncthreads();
    for (int64_t c = threadIdx.x; c < d.C; c += blockDim.x) acc[tr.class_slot[c]] = to_acc(go[i * d.C + c]);
    __syncthreads();
    // Deepest level first: a node's slots hold its subtree's sums once the level below is done;
    // its parent slot has no other writer.
    for (int64_t l = d.L - 1; l >= 1; --l) {
      for (int32_t n = tr.level_off[l] + threadIdx.x; n < tr.level_off[l + 1]; n += blockDim.x) {
        A tot = A(0);
        for (int32_t s = tr.slot_off[n]; s < tr.slot_off[n + 1]; ++s) tot += acc[s];
        acc[tr.parent_slot[n]] += tot;
      }
      __syncthreads();
    }
    const T* row = lg + i * d.S;
    T* grow = gl + i * d.S;
    for (int32_t n = threadIdx.x; n < d.I; n += blockDim.x) {
      const A lse = logits_lse(tr, n, row);
      A tot = A(0);
      for (int32_t s = tr.slot_off[n]; s < tr.slot_off[n + 1]; ++s) tot += acc[s];
      for (int32_t j = 0; j < tr.nrows(n); ++j) {
        const int32_t r = tr.row_off[n] + j;
        grow[r] = from_acc<T>(acc[tr.slot_off[n] + j] - exp(to_acc(row[r]) - lse) * tot);
      }
    }
    __syncthreads();
  }
}

// a before b: higher score, then the lower id (the CPU's order).
template <class A>
__device__ __forceinline__ bool better(A sa, int32_t ia, A sb, int32_t ib) {
  return sa > sb || (sa == sb && ia < ib);
}

// Per warp scratch: two frontiers of `beam` entries, `beam * max_arity` candidates and the k
// best leaves so far (sorted, in the accumulation type so f16 rounding does not reorder them).
template <class T>
__global__ void topk_kernel(const T* __restrict__ h, const T* __restrict__ W, const T* __restrict__ b,
                            const int32_t* __restrict__ table, hs::Dims d, int64_t k, int64_t beam,
                            acc_t<T>* __restrict__ score_scratch, int32_t* __restrict__ id_scratch,
                            T* __restrict__ values, int64_t* __restrict__ classes, int64_t N, int64_t D) {
  using A = acc_t<T>;
  const hs::Tree tr(table, d);
  const int64_t per_warp = 2 * beam + beam * d.A + k;
  A* fs[2];
  int32_t* fi[2];
  fs[0] = score_scratch + warp_global() * per_warp;
  fi[0] = id_scratch + warp_global() * per_warp;
  fs[1] = fs[0] + beam;
  fi[1] = fi[0] + beam;
  A* cs = fs[0] + 2 * beam;  // candidates
  int32_t* ci = fi[0] + 2 * beam;
  A* ls = cs + beam * d.A;  // leaves
  int32_t* li = ci + beam * d.A;
  const int lane = lane_id();
  for (int64_t i = warp_global(); i < N; i += warp_count()) {
    const T* hv = h + i * D;
    int cur = 0;
    if (lane == 0) {
      fs[0][0] = A(0);
      fi[0][0] = 0;
    }
    __syncwarp();
    int64_t fsize = 1, kept = 0;  // frontier size, leaves kept (warp-uniform)
    while (fsize > 0) {
      int64_t ncand = 0;
      for (int64_t f = 0; f < fsize; ++f) {
        const A base = fs[cur][f];
        const int32_t n = fi[cur][f];
        A unused = A(0);
        const A lse = node_lse(tr, n, -1, W, b, hv, D, unused);
        for (int32_t j = 0; j < tr.arity(n); ++j) {
          const A lp = base + node_score(tr, n, j, W, b, hv, D) - lse;
          const int32_t child = tr.slot_child[tr.slot_off[n] + j];
          if (child >= 0) {
            if (lane == 0) {
              cs[ncand] = lp;
              ci[ncand] = child;
            }
            ++ncand;
          } else {
            const int32_t cls = ~child;
            // Insert into the sorted list: grow it while shorter than k, else replace the worst.
            if (kept < k || better(lp, cls, ls[k - 1], li[k - 1])) {
              if (lane == 0) {
                int64_t p = kept < k ? kept : k - 1;
                while (p > 0 && better(lp, cls, ls[p - 1], li[p - 1])) {
                  ls[p] = ls[p - 1];
                  li[p] = li[p - 1];
                  --p;
                }
                ls[p] = lp;
                li[p] = cls;
              }
              if (kept < k) ++kept;
            }
            __syncwarp();
          }
        }
      }
      __syncwarp();
      const int nxt = 1 - cur;
      if (ncand <= beam) {
        for (int64_t c = lane; c < ncand; c += kWarp) {
          fs[nxt][c] = cs[c];
          fi[nxt][c] = ci[c];
        }
        fsize = ncand;
      } else {
        // Beam best by repeated warp argmax; a taken candidate's id becomes -1.
        for (int64_t pick = 0; pick < beam; ++pick) {
          A bs = -INFINITY;
          int32_t bi = INT32_MAX;
          long long bpos = -1;
          for (int64_t c = lane; c < ncand; c += kWarp)
            if (ci[c] >= 0 && (bpos < 0 || better(cs[c], ci[c], bs, bi))) {
              bs = cs[c];
              bi = ci[c];
              bpos = c;
            }
          for (int mask = kWarp / 2; mask > 0; mask >>= 1) {
            const A os = __shfl_xor_sync(0xffffffffu, bs, mask);
            const int32_t oi = __shfl_xor_sync(0xffffffffu, bi, mask);
            const long long op = __shfl_xor_sync(0xffffffffu, bpos, mask);
            if (op >= 0 && (bpos < 0 || better(os, oi, bs, bi))) {
              bs = os;
              bi = oi;
              bpos = op;
            }
          }
          if (lane == 0) {
            fs[nxt][pick] = bs;
            fi[nxt][pick] = bi;
            ci[bpos] = -1;
          }
          __syncwarp();
        }
        fsize = beam;
      }
      __syncwarp();
      cur = nxt;
    }
    // Fewer than k leaves cannot happen when beam >= k (the op checks); pad to be safe.
    for (int64_t p = lane; p < k; p += kWarp) {
      values[i * k + p] = from_acc<T>(p < kept ? ls[p] : A(-INFINITY));
      classes[i * k + p] = p < kept ? li[p] : -1;
    }
    __syncwarp();
  }
}

// --- host launchers -----------------------------------------------------------------------------

unsigned warp_grid(int64_t n) { return grid_for(n, kWarpsPerBlock); }

void zero(const Tensor& t, cudaStream_t stream) {
  if (t.defined() && t.numel() > 0)
    EMBER_CUDA_CHECK(cudaMemsetAsync(t.data_ptr(), 0, static_cast<size_t>(t.numel()) * t.element_size(), stream));
}

}  // namespace

void hsoftmax_nll_forward(const Tensor& h, const Tensor& W, const Tensor& b, const Tensor& targets,
                          const Tensor& table, const hs::Dims& dims, const Tensor& loss, int64_t N, int64_t D) {
  if (N == 0) return;
  DeviceScope scope(loss);
  EMBER_CUDA_DISPATCH_FLOAT(h.dtype(), "hsoftmax_nll", T, [&] {
    nll_forward_kernel<T><<<warp_grid(N), kThreads, 0, scope.stream>>>(
        static_cast<const T*>(h.data_ptr()), static_cast<const T*>(W.data_ptr()), ptr_or_null<T>(b),
        static_cast<const int64_t*>(targets.data_ptr()), static_cast<const int32_t*>(table.data_ptr()), dims,
        static_cast<T*>(loss.data_ptr()), N, D);
    EMBER_CUDA_LAUNCH_CHECK();
  });
}

void hsoftmax_nll_backward(const Tensor& grad_loss, const Tensor& h, const Tensor& W, const Tensor& b,
                           const Tensor& targets, const Tensor& table, const hs::Dims& dims, const Tensor& grad_h,
                           const Tensor& grad_W, const Tensor& grad_b, int64_t N, int64_t D) {
  DeviceScope scope(h);
  EMBER_CUDA_DISPATCH_FLOAT(h.dtype(), "hsoftmax_nll_backward", T, [&] {
    using A = acc_t<T>;
    zero(grad_h, scope.stream);
    zero(grad_W, scope.stream);
    zero(grad_b, scope.stream);
    if (N == 0) return;
    nll_backward_kernel<T><<<warp_grid(N), kThreads, 0, scope.stream>>>(
        static_cast<const T*>(grad_loss.data_ptr()), static_cast<const T*>(h.data_ptr()),
        static_cast<const T*>(W.data_ptr()), ptr_or_null<T>(b), static_cast<const int64_t*>(targets.data_ptr()),
        static_cast<const int32_t*>(table.data_ptr()), dims, mut_ptr_or_null<A>(grad_h), mut_ptr_or_null<A>(grad_W),
        mut_ptr_or_null<A>(grad_b), N, D);
    EMBER_CUDA_LAUNCH_CHECK();
  });
}

void hsoftmax_tree_forward(const Tensor& logits, const Tensor& table, const hs::Dims& dims, const Tensor& out,
                           int64_t N) {
  if (N == 0) return;
  DeviceScope scope(out);
  EMBER_CUDA_DISPATCH_FLOAT(logits.dtype(), "hsoftmax_tree_log_prob", T, [&] {
    using A = acc_t<T>;
    const int64_t blocks = std::min(N, kMaxTreeBlocks);
    // Scratch from the caching allocator: freed at scope exit, reused only in stream order.
    Storage scratch(static_cast<size_t>(blocks * dims.slots()) * sizeof(A), out.device());
    tree_forward_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, scope.stream>>>(
        static_cast<const T*>(logits.data_ptr()), static_cast<const int32_t*>(table.data_ptr()), dims,
        static_cast<A*>(scratch.data()), static_cast<T*>(out.data_ptr()), N);
    EMBER_CUDA_LAUNCH_CHECK();
  });
}

void hsoftmax_tree_backward(const Tensor& grad_out, const Tensor& logits, const Tensor& table, const hs::Dims& dims,
                            const Tensor& grad_logits, int64_t N) {
  if (N == 0) return;
  DeviceScope scope(grad_logits);
  EMBER_CUDA_DISPATCH_FLOAT(logits.dtype(), "hsoftmax_tree_log_prob_backward", T, [&] {
    using A = acc_t<T>;
    const int64_t blocks = std::min(N, kMaxTreeBlocks);
    Storage scratch(static_cast<size_t>(blocks * dims.slots()) * sizeof(A), grad_logits.device());
    tree_backward_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, scope.stream>>>(
        static_cast<const T*>(grad_out.data_ptr()), static_cast<const T*>(logits.data_ptr()),
        static_cast<const int32_t*>(table.data_ptr()), dims, static_cast<A*>(scratch.data()),
        static_cast<T*>(grad_logits.data_ptr()), N);
    EMBER_CUDA_LAUNCH_CHECK();
  });
}

void hsoftmax_topk(const Tensor& h, const Tensor& W, const Tensor& b, const Tensor& table, const hs::Dims& dims,
                   int64_t k, int64_t beam, const Tensor& values, const Tensor& classes, int64_t N, int64_t D) {
  if (N == 0) return;
  DeviceScope scope(values);
  EMBER_CUDA_DISPATCH_FLOAT(h.dtype(), "hsoftmax_topk", T, [&] {
    using A = acc_t<T>;
    // Scratch per warp grows with beam x arity: at most 8192 warps and about 256 MB of it.
    const int64_t per_warp = 2 * beam + beam * dims.A + k;
    const int64_t bytes_per_warp = per_warp * static_cast<int64_t>(sizeof(A) + sizeof(int32_t));
    const int64_t max_warps = std::max<int64_t>(kWarpsPerBlock, (int64_t{256} << 20) / bytes_per_warp);
    const unsigned grid = warp_grid(std::min({N, int64_t{8192}, max_warps}));
    const int64_t warps = static_cast<int64_t>(grid) * kWarpsPerBlock;
    Storage scores(static_cast<size_t>(warps * per_warp) * sizeof(A), values.device());
    Storage ids(static_cast<size_t>(warps * per_warp) * sizeof(int32_t), values.device());
    topk_kernel<T><<<grid, kThreads, 0, scope.stream>>>(
        static_cast<const T*>(h.data_ptr()), static_cast<const T*>(W.data_ptr()), ptr_or_null<T>(b),
        static_cast<const int32_t*>(table.data_ptr()), dims, k, beam, static_cast<A*>(scores.data()),
        static_cast<int32_t*>(ids.data()), static_cast<T*>(values.data_ptr()), static_cast<int64_t*>(classes.data_ptr()),
        N, D);
    EMBER_CUDA_LAUNCH_CHECK();
  });
}

void register_hsoftmax_kernels() {
  prim::define<prim::hsoftmax_nll_forward>(prim::Backend::cuda, &hsoftmax_nll_forward);
  prim::define<prim::hsoftmax_nll_backward>(prim::Backend::cuda, &hsoftmax_nll_backward);
  prim::define<prim::hsoftmax_tree_forward>(prim::Backend::cuda, &hsoftmax_tree_forward);
  prim::define<prim::hsoftmax_tree_backward>(prim::Backend::cuda, &hsoftmax_tree_backward);
  prim::define<prim::hsoftmax_topk>(prim::Backend::cuda, &hsoftmax_topk);
}

}  // namespace ember::cuda
