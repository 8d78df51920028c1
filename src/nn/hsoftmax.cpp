// ClassTree builders and the HierarchicalSoftmax layer (ember/nn/hsoftmax.h).
//
// Every builder first makes "proto" nodes in whatever order suits it (a trie, Huffman's merge
// order, a recursive split), each a list of child references (proto node index >= 0, or
// ~class < 0), then build() renumbers the internal nodes breadth-first from the root and
// derives the row layout, the class paths and the level ranges the kernels use.
#include "ember/nn/hsoftmax.h"

#include <cmath>
#include <deque>
#include <limits>
#include <map>
#include <queue>
#include <tuple>

#include "ember/core/error.h"
#include "ember/ops/ops.h"
#include "prim/hsoftmax_layout.h"

namespace ember::nn {
namespace {

using Proto = std::vector<std::vector<int64_t>>;

// A trie over label paths: what from_paths grows before collapsing single-child chains.
struct TrieNode {
  std::map<std::string, int64_t> by_label;
  std::vector<int64_t> order;  // children in first-seen order
  int64_t cls = -1;            // the class ending here, or -1
};

std::string path_str(const std::vector<std::string>& p) {
  std::string s;
  for (size_t i = 0; i < p.size(); ++i) s += (i ? "/" : "") + p[i];
  return s;
}

// The proto reference for trie node t: a class leaf, the collapsed single child, or a new
// proto node (its index reserved before its children, so the topmost node gets index 0).
int64_t resolve(const std::vector<TrieNode>& trie, int64_t t, Proto& proto) {
  const TrieNode& node = trie[static_cast<size_t>(t)];
  if (node.order.empty()) return ~node.cls;
  if (node.order.size() == 1) return resolve(trie, node.order[0], proto);
  const int64_t idx = static_cast<int64_t>(proto.size());
  proto.emplace_back();
  std::vector<int64_t> kids;
  for (int64_t child : node.order) kids.push_back(resolve(trie, child, proto));
  proto[static_cast<size_t>(idx)] = std::move(kids);
  return idx;
}

int64_t split(int64_t lo, int64_t hi, int64_t arity, Proto& proto) {
  const int64_t n = hi - lo;
  if (n == 1) return ~lo;
  const int64_t parts = std::min(arity, n);
  const int64_t idx = static_cast<int64_t>(proto.size());
  proto.emplace_back();
  std::vector<int64_t> kids;
  for (int64_t g = 0; g < parts; ++g) kids.push_back(split(lo + n * g / parts, lo + n * (g + 1) / parts, arity, proto));
  proto[static_cast<size_t>(idx)] = std::move(kids);
  return idx;
}

}  // namespace

void ClassTree::build(const std::vector<std::vector<int64_t>>& proto, int64_t root, int64_t num_classes) {
  const char* op = "ClassTree";
  // Breadth-first renumbering: id_of[proto index] = node id; nodes of one depth are contiguous.
  std::vector<int64_t> id_of(proto.size(), -1), depth_of;
  std::deque<int64_t> queue{root};
  std::vector<int64_t> order;
  id_of[static_cast<size_t>(root)] = 0;
  depth_of.push_back(0);
  while (!queue.empty()) {
    const int64_t p = queue.front();
    queue.pop_front();
    order.push_back(p);
    for (int64_t c : proto[static_cast<size_t>(p)])
      if (c >= 0) {
        EMBER_CHECK(id_of[static_cast<size_t>(c)] < 0, op, "internal error: proto node ", c, " reached twice");
        id_of[static_cast<size_t>(c)] = static_cast<int64_t>(depth_of.size());
        depth_of.push_back(depth_of[static_cast<size_t>(id_of[static_cast<size_t>(p)])] + 1);
        queue.push_back(c);
      }
  }
  const int64_t I = static_cast<int64_t>(order.size());
  children_.assign(static_cast<size_t>(I), {});
  row_off_.assign(static_cast<size_t>(I + 1), 0);
  for (int64_t n = 0; n < I; ++n) {
    for (int64_t c : proto[static_cast<size_t>(order[static_cast<size_t>(n)])])
      children_[static_cast<size_t>(n)].push_back(c >= 0 ? id_of[static_cast<size_t>(c)] : c);
    const int64_t a = static_cast<int64_t>(children_[static_cast<size_t>(n)].size());
    EMBER_CHECK(a >= 2, op, "internal error: node ", n, " has ", a, " children");
    row_off_[static_cast<size_t>(n + 1)] = row_off_[static_cast<size_t>(n)] + hs::rows_for_arity(static_cast<int32_t>(a));
  }
  level_off_.assign(1, 0);
  for (int64_t n = 0; n < I; ++n)
    if (depth_of[static_cast<size_t>(n)] == static_cast<int64_t>(level_off_.size())) level_off_.push_back(n);
  level_off_.push_back(I);
  // Paths: a node's path is its parent's plus the step into it (parents come first).
  std::vector<std::vector<Step>> node_path(static_cast<size_t>(I));
  paths_.assign(static_cast<size_t>(num_classes), {});
  std::vector<bool> seen(static_cast<size_t>(num_classes), false);
  for (int64_t n = 0; n < I; ++n)
    for (size_t j = 0; j < children_[static_cast<size_t>(n)].size(); ++j) {
      std::vector<Step> p = node_path[static_cast<size_t>(n)];
      p.push_back({n, static_cast<int64_t>(j)});
      const int64_t c = children_[static_cast<size_t>(n)][j];
      if (c >= 0) {
        node_path[static_cast<size_t>(c)] = std::move(p);
      } else {
        EMBER_CHECK(~c < num_classes && !seen[static_cast<size_t>(~c)], op, "internal error: class ", ~c,
                    " placed twice or out of range");
        seen[static_cast<size_t>(~c)] = true;
        paths_[static_cast<size_t>(~c)] = std::move(p);
      }
    }
  for (int64_t c = 0; c < num_classes; ++c)
    EMBER_CHECK(seen[static_cast<size_t>(c)], op, "internal error: class ", c, " is not in the tree");
  if (names_.empty())
    for (int64_t c = 0; c < num_classes; ++c) names_.push_back(std::to_string(c));
}

ClassTree ClassTree::from_paths(const std::vector<std::vector<std::string>>& paths) {
  const char* op = "ClassTree::from_paths";
  const int64_t C = static_cast<int64_t>(paths.size());
  EMBER_CHECK(C >= 2, op, "needs at least 2 classes, got ", C);
  std::vector<TrieNode> trie(1);
  for (int64_t c = 0; c < C; ++c) {
    const auto& p = paths[static_cast<size_t>(c)];
    EMBER_CHECK(!p.empty(), op, "class ", c, " has an empty path");
    int64_t t = 0;
    for (size_t d = 0; d < p.size(); ++d) {
      EMBER_CHECK(!p[d].empty(), op, "class ", c, " (", path_str(p), ") has an empty label at depth ", d);
      EMBER_CHECK(trie[static_cast<size_t>(t)].cls < 0, op, "class ", trie[static_cast<size_t>(t)].cls, " (",
                  path_str(std::vector<std::string>(p.begin(), p.begin() + static_cast<int64_t>(d))),
                  ") is a prefix of class ", c, " (", path_str(p), "): a class cannot also be an inner node");
      auto it = trie[static_cast<size_t>(t)].by_label.find(p[d]);
      if (it == trie[static_cast<size_t>(t)].by_label.end()) {
        const int64_t fresh = static_cast<int64_t>(trie.size());
        trie[static_cast<size_t>(t)].by_label.emplace(p[d], fresh);
        trie[static_cast<size_t>(t)].order.push_back(fresh);
        trie.emplace_back();
        t = fresh;
      } else {
        t = it->second;
      }
    }
    TrieNode& leaf = trie[static_cast<size_t>(t)];
    EMBER_CHECK(leaf.cls < 0, op, "classes ", leaf.cls, " and ", c, " have the same path ", path_str(p));
    EMBER_CHECK(leaf.order.empty(), op, "class ", c, " (", path_str(p),
                ") is a prefix of another class's path: a class cannot also be an inner node");
    leaf.cls = c;
  }
  Proto proto;
  const int64_t root = resolve(trie, 0, proto);
  ClassTree t;
  for (const auto& p : paths) t.names_.push_back(path_str(p));
  t.build(proto, root, C);
  return t;
}

ClassTree ClassTree::huffman(const std::vector<double>& frequencies) {
  const char* op = "ClassTree::huffman";
  const int64_t C = static_cast<int64_t>(frequencies.size());
  EMBER_CHECK(C >= 2, op, "needs at least 2 classes, got ", C);
  // (weight, creation order, reference): the smallest weight first, the earliest on ties.
  using Item = std::tuple<double, int64_t, int64_t>;
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> heap;
  for (int64_t c = 0; c < C; ++c) {
    const double f = frequencies[static_cast<size_t>(c)];
    EMBER_CHECK(std::isfinite(f) && f >= 0, op, "frequency of class ", c, " must be finite and >= 0, got ", f);
    heap.emplace(f, c, ~c);
  }
  Proto proto;
  int64_t created = C;
  while (heap.size() > 1) {
    const Item a = heap.top();
    heap.pop();
    const Item b = heap.top();
    heap.pop();
    proto.push_back({std::get<2>(a), std::get<2>(b)});
    heap.emplace(std::get<0>(a) + std::get<0>(b), created++, static_cast<int64_t>(proto.size()) - 1);
  }
  ClassTree t;
  t.build(proto, std::get<2>(heap.top()), C);
  return t;
}

ClassTree ClassTree::balanced(int64_t num_classes, int64_t arity) {
  const char* op = "ClassTree::balanced";
  EMBER_CHECK(num_classes >= 2, op, "needs at least 2 classes, got ", num_classes);
  EMBER_CHECK(arity >= 2, op, "arity must be >= 2, got ", arity);
  // The 32-bit tables hold at least 3 entries per class (tables()); refuse a larger tree before
  // building it (2^62 classes overflowed split()'s n * (g + 1), and would not fit memory).
  constexpr int64_t kMaxClasses = std::numeric_limits<int32_t>::max() / 3;
  EMBER_CHECK(num_classes <= kMaxClasses, op, num_classes, " classes do not fit the 32-bit tree tables (at most ",
              kMaxClasses, ")");
  Proto proto;
  const int64_t root = split(0, num_classes, arity, proto);
  ClassTree t;
  t.build(proto, root, num_classes);
  return t;
}

int64_t ClassTree::max_depth() const { return static_cast<int64_t>(level_off_.size()) - 1; }

int64_t ClassTree::max_arity() const {
  size_t a = 0;
  for (const auto& k : children_) a = std::max(a, k.size());
  return static_cast<int64_t>(a);
}

const std::vector<ClassTree::Step>& ClassTree::path(int64_t c) const {
  EMBER_CHECK(c >= 0 && c < num_classes(), "ClassTree", "class ", c, " outside [0, ", num_classes(), ")");
  return paths_[static_cast<size_t>(c)];
}

int64_t ClassTree::arity(int64_t node) const { return static_cast<int64_t>(children(node).size()); }

int64_t ClassTree::row_offset(int64_t node) const {
  EMBER_CHECK(node >= 0 && node < num_nodes(), "ClassTree", "node ", node, " outside [0, ", num_nodes(), ")");
  return row_off_[static_cast<size_t>(node)];
}

const std::vector<int64_t>& ClassTree::children(int64_t node) const {
  EMBER_CHECK(node >= 0 && node < num_nodes(), "ClassTree", "node ", node, " outside [0, ", num_nodes(), ")");
  return children_[static_cast<size_t>(node)];
}

const std::string& ClassTree::name(int64_t c) const {
  EMBER_CHECK(c >= 0 && c < num_classes(), "ClassTree", "class ", c, " outside [0, ", num_classes(), ")");
  return names_[static_cast<size_t>(c)];
}

HSoftmaxTree ClassTree::tables(Device device) const {
  hs::Dims d{num_classes(), num_nodes(), num_rows(), max_depth(), max_arity()};
  EMBER_CHECK(d.table_len() < std::numeric_limits<int32_t>::max(), "ClassTree",
              "tree too large for 32-bit tables (", d.C, " classes)");
  std::vector<int32_t> t;
  t.reserve(static_cast<size_t>(d.table_len()));
  std::vector<int32_t> slot_off(static_cast<size_t>(d.I + 1), 0), parent(static_cast<size_t>(d.I), -1),
      slot_node, slot_child, class_slot(static_cast<size_t>(d.C), -1);
  for (int64_t n = 0; n < d.I; ++n) {
    const auto& kids = children_[static_cast<size_t>(n)];
    slot_off[static_cast<size_t>(n + 1)] = slot_off[static_cast<size_t>(n)] + static_cast<int32_t>(kids.size());
    for (int64_t c : kids) {
      const int32_t s = static_cast<int32_t>(slot_node.size());
      slot_node.push_back(static_cast<int32_t>(n));
      slot_child.push_back(static_cast<int32_t>(c));  // ~class stays negative in 32 bits
      if (c >= 0) parent[static_cast<size_t>(c)] = s;
      else class_slot[static_cast<size_t>(~c)] = s;
    }
  }
  auto append = [&t](const auto& v) {
    for (auto x : v) t.push_back(static_cast<int32_t>(x));
  };
  append(slot_off);
  append(row_off_);
  append(parent);
  append(slot_node);
  append(slot_child);
  append(class_slot);
  append(level_off_);
  EMBER_CHECK(static_cast<int64_t>(t.size()) == d.table_len(), "ClassTree", "internal error: table length ",
              t.size(), " != ", d.table_len());
  HSoftmaxTree out;
  out.table = from_vector(t, {d.table_len()}, DType::i32);
  if (!device.is_cpu()) out.table = out.table.to(device);
  out.num_classes = d.C;
  out.num_nodes = d.I;
  out.num_rows = d.S;
  out.max_depth = d.L;
  out.max_arity = max_arity();
  return out;
}

// --- HierarchicalSoftmax ------------------------------------------------------------------------

HierarchicalSoftmax::HierarchicalSoftmax(int64_t in_features, const ClassTree& tree_in, bool with_bias,
                                         Generator* gen)
    : in_(in_features) {
  EMBER_CHECK(in_features > 0, "HierarchicalSoftmax", "in_features must be positive, got ", in_features);
  dims_ = tree_in.tables();
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  checked_numel({dims_.num_rows, in_features}, "HierarchicalSoftmax");
  weight = register_parameter("weight", uniform({dims_.num_rows, in_features}, -bound, bound, {}, gen));
  if (with_bias) bias = register_parameter("bias", uniform({dims_.num_rows}, -bound, bound, {}, gen));
  tree = register_buffer("tree", dims_.table);
  dims_.table = Tensor();
}

HSoftmaxTree HierarchicalSoftmax::tree_tables() const {
  HSoftmaxTree t = dims_;
  t.table = tree;
  return t;
}

Tensor HierarchicalSoftmax::forward(const Tensor& h, const Tensor& targets, Reduction reduction) {
  Tensor nll = hsoftmax_nll(h, weight, bias, targets, tree_tables());
  switch (reduction) {
    case Reduction::none: return nll;
    case Reduction::sum: return sum(nll);
    case Reduction::mean: break;
  }
  return mean(nll);
}

Tensor HierarchicalSoftmax::log_prob(const Tensor& h, const Tensor& classes) {
  return hsoftmax_log_prob(h, weight, bias, classes, tree_tables());
}

Tensor HierarchicalSoftmax::full_log_prob(const Tensor& h) {
  return hsoftmax_full_log_prob(h, weight, bias, tree_tables());
}

HSoftmaxTopK HierarchicalSoftmax::predict_topk(const Tensor& h, int64_t k, int64_t beam) {
  return hsoftmax_topk(h, weight, bias, k, beam, tree_tables());
}

}  // namespace ember::nn
