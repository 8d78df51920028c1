// The packed class-tree table of the hierarchical softmax, read the same way by the op layer
// (src/ops/hsoftmax.cpp), the CPU kernels (src/cpu/hsoftmax.cpp) and the CUDA kernels
// (kernels/hsoftmax.cu). One i32 tensor holds every table back to back, so a tree is one
// buffer to move between devices and one pointer to hand a kernel.
//
// Words: the tree has C classes (leaves), I internal nodes numbered breadth-first (the root
// is node 0, a parent's id is below its children's), and T = C + I - 1 slots: slot s is one
// edge (node, child j). A node with c children owns c consecutive slots and
// rows(c) = c (c >= 3) or 1 (c == 2) consecutive rows of W (S, D) and b (S); a binary node's
// second child has the fixed logit 0, so P(child 0) = sigmoid(w.h + b) (docs/hsoftmax.md).
//
// Tables, in this order (lengths in brackets):
//   slot_off    [I + 1]  slots of node n are [slot_off[n], slot_off[n + 1])
//   row_off     [I + 1]  rows of node n are [row_off[n], row_off[n + 1])
//   parent_slot [I]      the slot of n's parent that points at n; -1 for the root
//   slot_node   [T]      the node a slot belongs to
//   slot_child  [T]      the child behind a slot: an internal node id (>= 0) or ~class (< 0)
//   class_slot  [C]      the slot that points at class c's leaf
//   level_off   [L + 1]  nodes at depth l (root: 0) are [level_off[l], level_off[l + 1])
#pragma once
#include <cstdint>

#include "core/host_device.h"

namespace ember::hs {

// Sizes of the tables: C classes, I internal nodes, S weight rows, L levels of nodes (the
// longest root-to-leaf path has L nodes on it), A the most children of one node.
struct Dims {
  int64_t C = 0, I = 0, S = 0, L = 0, A = 0;
  EMBER_HD int64_t slots() const { return C + I - 1; }
  EMBER_HD int64_t table_len() const { return 2 * (I + 1) + I + 2 * slots() + C + (L + 1); }
};

// Typed pointers into a packed table (host or device memory alike).
struct Tree {
  const int32_t* slot_off;
  const int32_t* row_off;
  const int32_t* parent_slot;
  const int32_t* slot_node;
  const int32_t* slot_child;
  const int32_t* class_slot;
  const int32_t* level_off;

  EMBER_HD Tree(const int32_t* base, const Dims& d)
      : slot_off(base),
        row_off(slot_off + d.I + 1),
        parent_slot(row_off + d.I + 1),
        slot_node(parent_slot + d.I),
        slot_child(slot_node + d.slots()),
        class_slot(slot_child + d.slots()),
        level_off(class_slot + d.C) {}

  EMBER_HD int32_t arity(int32_t n) const { return slot_off[n + 1] - slot_off[n]; }
  EMBER_HD int32_t nrows(int32_t n) const { return row_off[n + 1] - row_off[n]; }
};

// Rows a node with `arity` children owns: binary nodes keep one row (sigmoid), wider ones one
// per child (softmax).
EMBER_HD int32_t rows_for_arity(int32_t arity) { return arity == 2 ? 1 : arity; }

}  // namespace ember::hs
