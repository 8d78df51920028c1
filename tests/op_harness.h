// The op-test harness: one table of OpCase entries, one runner with modes.
//
// An OpCase names an op, lists the input shapes to try (each ShapeSet is a variant: plain,
// odd/prime sizes, size-1 dims, broadcast), says how to draw the inputs (random, never zeros or
// ones; positive or away from kinks where the op needs it) and wraps the op as a lambda
// vector<Tensor> -> Tensor. Index tensors, masks and dropout generators are built inside the
// lambda from the input shapes with a fixed seed, so every call (forward, perturbed, backward)
// sees the same ones.
//
// Modes, per case and shape set:
//   layouts   the op on contiguous inputs against the same values laid out as a transposed
//             view of a transposed buffer, a strided slice (step 2, offset 1) of a larger
//             buffer, and a mix of both: forward values must agree.
//   gradcheck ember::gradcheck in f64 on the CPU, for every layout.
//   lowp      (kLowPrecision) f16 and bf16 inputs against f32 computed on the same rounded
//             inputs, with tolerances by dtype.
//
// EMBER_TEST_OP=name[,name...] runs only those cases ("name*" matches a prefix).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ember/ember.h"

namespace ember_test {

using ember::DType;
using ember::Shape;
using ember::Tensor;

// How an input is drawn (all in f64, from a fixed-seed ember::Generator).
enum class Dist {
  normal,        // N(0, 1)
  positive,      // U[0.3, 2.0]: for log, sqrt, rsqrt, pow bases
  away_from_zero,// |x| in [0.25, 1.5], random sign: for abs, relu, div denominators
  near_one,      // |x| in [0.7, 1.3], random sign: for prod over many elements
};

enum OpFlags : unsigned {
  kNone = 0,
  kLowPrecision = 1u << 0,  // elementwise: also compare f16/bf16 against f32
  kNoLayouts = 1u << 1,     // only contiguous inputs (e.g. view needs compatible strides)
  kNoGradcheck = 1u << 2,   // forward modes only
};

struct ShapeSet {
  std::string label;
  std::vector<Shape> shapes;  // one per input
};

struct OpCase {
  std::string name;
  std::vector<ShapeSet> shape_sets;
  std::function<Tensor(const std::vector<Tensor>&)> fn;
  unsigned flags = kNone;
  std::vector<Dist> dists = {};  // per input; missing entries are Dist::normal
  ember::GradcheckOptions grad_opts = {};
};

// --- shape sets for the common kinds of op ------------------------------------------------------
std::vector<ShapeSet> unary_shapes();   // (3, 4), (7, 13), (1, 7), (13), (2, 3, 5), ()
std::vector<ShapeSet> binary_shapes();  // same shapes, odd/prime, size-1, several broadcasts
std::vector<ShapeSet> reduce_shapes();  // 3-D: (3, 4, 5), (7, 1, 13), (5, 3, 7), (1, 5, 1)

// --- building blocks ----------------------------------------------------------------------------
// EMBER_TEST_OP filter.
bool op_selected(const std::string& name);
// Inputs for one shape set, f64, contiguous.
std::vector<Tensor> make_inputs(const OpCase& c, const ShapeSet& s, uint64_t seed);

enum class Layout { contiguous, transposed, sliced, mixed };
const char* layout_name(Layout l);
// The same values as v (contiguous) in another memory layout: a plain leaf that shares no
// storage with v.
Tensor with_layout(const Tensor& v, Layout l, size_t input_index);

// Index helpers for lambdas: deterministic for a given shape.
Tensor random_index(int64_t bound, const Shape& shape, uint64_t seed);  // i64 in [0, bound)
Tensor random_mask(const Shape& shape, uint64_t seed);                 // bool, about half true

// Runs every mode on every selected case, with doctest CHECKs naming case, shape set, layout.
void run_cases(const std::vector<OpCase>& cases);

}  // namespace ember_test
