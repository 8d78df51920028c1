// Class trees and the hierarchical-softmax output layer (docs/hsoftmax.md).
//
// ClassTree is a rooted tree whose leaves are the C classes; every internal node has at least
// two children. Builders:
//   from_paths  each class given by its path of labels from the root ({"animal", "mammal",
//               "dog"}); depths may differ. A node that would have a single child is collapsed
//               (its child takes its place), so no node ever decides between one option.
//   huffman     a binary Huffman tree over class counts (word2vec style): frequent classes
//               get short paths.
//   balanced    a complete tree of the given arity over classes 0..C-1 in order.
// Internal nodes are numbered breadth-first (root 0); node n with c_n children owns the rows
// [row_offset(n), row_offset(n) + rows) of the layer's weight (S, D) and bias (S), with
// rows = c_n for c_n >= 3 and 1 for a binary node (sigmoid; see ember/ops/hsoftmax.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ember/core/generator.h"
#include "ember/nn/loss.h"
#include "ember/nn/module.h"
#include "ember/ops/hsoftmax.h"

namespace ember::nn {

class ClassTree {
 public:
  // One step of a class's path: the internal node and which of its children is taken.
  struct Step {
    int64_t node, child;
  };

  // paths[c] is class c's labels from the root. Throws ember::Error (op "ClassTree::from_paths")
  // for fewer than 2 classes, an empty path, an empty label, a duplicate path, or a class
  // whose path is a prefix of another's (a class cannot also be an inner node).
  static ClassTree from_paths(const std::vector<std::vector<std::string>>& paths);
  // frequencies[c] >= 0 (counts or probabilities), at least 2 classes. Ties are broken by
  // creation order, so the tree is deterministic.
  static ClassTree huffman(const std::vector<double>& frequencies);
  // num_classes >= 2, arity >= 2: classes split into `arity` near-equal contiguous groups,
  // recursively; depth ceil(log_arity(C)).
  static ClassTree balanced(int64_t num_classes, int64_t arity = 2);

  int64_t num_classes() const { return static_cast<int64_t>(paths_.size()); }
  int64_t num_nodes() const { return static_cast<int64_t>(children_.size()); }
  int64_t num_rows() const { return row_off_.back(); }  // S: rows of the layer's weight
  int64_t max_depth() const;                          // longest path, in internal nodes
  int64_t max_arity() const;
  // Class c's path from the root; its length is c's depth (code length).
  const std::vector<Step>& path(int64_t c) const;
  int64_t depth(int64_t c) const { return static_cast<int64_t>(path(c).size()); }
  int64_t arity(int64_t node) const;
  int64_t row_offset(int64_t node) const;
  // Children of a node: an internal node id (>= 0) or ~class (< 0), in child order.
  const std::vector<int64_t>& children(int64_t node) const;
  // from_paths: the labels joined by '/' ("animal/mammal/dog"); otherwise the class index.
  const std::string& name(int64_t c) const;

  // The packed tables the ops read, on `device` (ember/ops/hsoftmax.h).
  HSoftmaxTree tables(Device device = Device::cpu()) const;

 private:
  ClassTree() = default;
  // Numbers nodes breadth-first from proto-children lists (child refs: proto index >= 0 or
  // ~class) starting at proto node `root`, and fills every table.
  void build(const std::vector<std::vector<int64_t>>& proto_children, int64_t root, int64_t num_classes);

  std::vector<std::vector<int64_t>> children_;  // per node
  std::vector<int64_t> row_off_;                // (I + 1)
  std::vector<int64_t> level_off_;              // nodes per depth, (L + 1)
  std::vector<std::vector<Step>> paths_;        // per class
  std::vector<std::string> names_;
};

// The output layer: weight (S, D) and bias (S), initialised U(-1/sqrt(D), 1/sqrt(D)) like
// Linear; the tree's packed table is the buffer "tree" (i32), moved by Module::to with the
// parameters. Every method takes h (N, D).
class HierarchicalSoftmax : public Module {
 public:
  HierarchicalSoftmax(int64_t in_features, const ClassTree& tree, bool bias = true, Generator* gen = nullptr);
  // -log P(targets | h) reduced: mean (default), sum, or none (N).
  Tensor forward(const Tensor& h, const Tensor& targets, Reduction reduction = Reduction::mean);
  Tensor operator()(const Tensor& h, const Tensor& targets, Reduction reduction = Reduction::mean) {
    return forward(h, targets, reduction);
  }
  // log P(classes | h): classes (N) -> (N) or (N, K) -> (N, K).
  Tensor log_prob(const Tensor& h, const Tensor& classes);
  // (N, C) log-probabilities of every class.
  Tensor full_log_prob(const Tensor& h);
  // Beam search: the k most probable classes (values (N, k) descending, classes (N, k) i64).
  HSoftmaxTopK predict_topk(const Tensor& h, int64_t k, int64_t beam);

  int64_t in_features() const { return in_; }
  int64_t num_classes() const { return dims_.num_classes; }
  // The tables on the buffer's current device.
  HSoftmaxTree tree_tables() const;

  Tensor weight, bias, tree;  // (S, D), (S) or undefined, packed i32 table

 private:
  int64_t in_;
  HSoftmaxTree dims_;  // sizes only; the table is the `tree` buffer
};

}  // namespace ember::nn
