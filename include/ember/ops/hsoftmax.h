// Hierarchical softmax: class probabilities as products of per-node softmaxes down a class
// tree, as fused primitives with their own backward, plus a reference composed from basic ops.
//
// The tree (built by nn::ClassTree, ember/nn/hsoftmax.h) arrives here as HSoftmaxTree: one
// packed i32 table on the device of the weights, plus its sizes. Internal node n with c_n
// children owns c_n rows of W (S, D) and b (S) when c_n >= 3, and one row when c_n == 2 (its
// second child's logit is fixed at 0: P(first child) = sigmoid(w.h + b)). For a hidden
// vector h:
//   P(child j | n, h) = softmax_j(z_n)      z_n[j] = W[off_n + j] . h + b[off_n + j]
//   log P(class c | h) = sum over the nodes n on c's path of log P(next child | n, h)
// so one example costs O(depth * max_children * D) instead of O(C * D). docs/hsoftmax.md.
//
// Common arguments: h (N, D) float; W (S, D) with h's dtype and device; b (S) or undefined
// (no bias); class indices i64 or i32 in [0, C) (checked: one small device-to-host copy of
// their min and max per call). f16/bf16 compute in f32 (CUDA: loaded as they are, f32
// accumulation). Errors name the op and the shapes.
#pragma once
#include <array>
#include <cstdint>

#include "ember/core/tensor.h"

namespace ember {

struct HSoftmaxTree {
  Tensor table;  // packed i32 tables (layout: src/prim/hsoftmax_layout.h), on W's device
  int64_t num_classes = 0, num_nodes = 0, num_rows = 0;
  int64_t max_depth = 0;  // internal nodes on the longest path
  int64_t max_arity = 0;  // most children of one node
};

// Per-example -log P(targets[i] | h[i]): (N) in h's dtype. Records its backward
// (hsoftmax_nll_backward) for h, W and b.
Tensor hsoftmax_nll(const Tensor& h, const Tensor& W, const Tensor& b, const Tensor& targets,
                    const HSoftmaxTree& tree);

// The backward primitive (no autograd). With dz[j] = grad_loss[i] * (softmax(z_n)[j] - [j ==
// next child]) at each node n on example i's path:
//   grad_h[i]      = sum over n, j of dz[j] * W[off_n + j]              (N, D)
//   grad_W[off+j] += dz[j] * h[i]   (only the rows on paths are non-zero) (S, D)
//   grad_b[off+j] += dz[j]                                               (S)
// Fresh tensors in h's dtype, only those asked for in needs (h, W, b); the others undefined.
struct HSoftmaxGrads {
  Tensor grad_h, grad_weight, grad_bias;
};
HSoftmaxGrads hsoftmax_nll_backward(const Tensor& grad_loss, const Tensor& h, const Tensor& W, const Tensor& b,
                                    const Tensor& targets, const HSoftmaxTree& tree,
                                    std::array<bool, 3> needs = {true, true, true});

// log P(classes | h): classes (N) -> (N), or (N, K) -> (N, K) (K classes per example).
// Differentiable (it is -hsoftmax_nll over h repeated K times).
Tensor hsoftmax_log_prob(const Tensor& h, const Tensor& W, const Tensor& b, const Tensor& classes,
                         const HSoftmaxTree& tree);

// log P(c | h) for every class: (N, C). The node scores come from one matmul h W^T + b
// (N, S); then every node's log-softmax is taken and summed down the tree
// (hsoftmax_tree_log_prob). exp of each row sums to 1. Differentiable.
Tensor hsoftmax_full_log_prob(const Tensor& h, const Tensor& W, const Tensor& b, const HSoftmaxTree& tree);

// The tree part of hsoftmax_full_log_prob as its own primitive: node logits (N, S) ->
// per-class log-probabilities (N, C). Records its backward.
Tensor hsoftmax_tree_log_prob(const Tensor& logits, const HSoftmaxTree& tree);

// The k most probable classes per example by beam search down the tree: values (N, k)
// log-probabilities, descending, and classes (N, k) i64. At each level the `beam` best
// partial paths are expanded; leaves reached on the way compete for the top k. Exact when
// beam >= the number of internal nodes (every path is expanded), in particular when
// beam >= C. Requires 1 <= k <= C and beam >= k (then at least k leaves are always reached).
// No autograd.
struct HSoftmaxTopK {
  Tensor values, classes;
};
HSoftmaxTopK hsoftmax_topk(const Tensor& h, const Tensor& W, const Tensor& b, int64_t k, int64_t beam,
                           const HSoftmaxTree& tree);

// hsoftmax_nll composed from basic ops, for tests: the path rows of every example are padded
// to (N, depth, max_arity), picked with index_select (a zero row stands for a binary node's
// fixed logit and for padding), scored with bmm, masked, log_softmax'ed, gathered at the
// taken child and summed. Slow (reads the table on the host) and obviously right;
// differentiable through those ops. Same arguments and checks.
Tensor hsoftmax_nll_reference(const Tensor& h, const Tensor& W, const Tensor& b, const Tensor& targets,
                              const HSoftmaxTree& tree);

}  // namespace ember
