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
// run_cases(cases) runs those three. run_cases(cases, {.mode = Mode::devices}) runs instead:
//   devices   the op on every available device (available_devices(): the stand-in fake:0
//             always, cuda:0 too when a GPU is present) against the CPU, for each dtype of
//             OpCase::dtypes. Inputs are drawn in f64 on the CPU and rounded to the dtype there,
//             so every device sees identical values; the CPU reference runs on contiguous
//             inputs, the device op on contiguous, transposed and strided-slice views built on
//             the device (with_layout). Fresh device allocations are poisoned (NaN), so an output
//             element a kernel forgot to write fails. Forward values must agree within the
//             tolerance of the result dtype (device_util.h: f32 ~1e-5 relative, f16 ~1e-2, bf16
//             ~3e-2, integers and bool exact); sums over K terms (OpCase::sum) also get an
//             absolute slack growing with sqrt(K). The op must not write its inputs.
//
// EMBER_TEST_OP=name[,name...] runs only those cases ("name*" matches a prefix), in every mode.
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

// Devices mode: how many terms each result element sums, which widens the tolerance.
enum class Sum {
  none,
  reduce,  // numel(input 0) / numel(result)
  gemm,    // the last dim of input 0
  given,   // OpCase::terms
};

struct ShapeSet {
  std::string label;
  std::vector<Shape> shapes;  // one per input
};

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

struct OpCase {
  std::string name;
  std::vector<ShapeSet> shape_sets;
  OpFn fn;  // the same lambda runs on every device: build index tensors next to x[0]
  unsigned flags = kNone;
  std::vector<Dist> dists = {};  // per input; missing entries are Dist::normal
  ember::GradcheckOptions grad_opts = {};
  // devices mode only
  std::vector<DType> dtypes = {DType::f32};  // what the inputs are rounded to (integers: draws x 7)
  Sum sum = Sum::none;
  double terms = 0;  // Sum::given: terms per result element
};

// A row for the devices mode (flags: kNoLayouts for contiguous inputs only).
OpCase device_case(std::string name, std::vector<ShapeSet> shape_sets, OpFn fn, std::vector<DType> dtypes,
                   std::vector<Dist> dists = {}, Sum sum = Sum::none, double terms = 0, unsigned flags = kNone);

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
// The same values as v (contiguous, on the CPU) in another memory layout on `device`: a plain
// leaf that shares no storage with v. The buffer is prepared on the CPU and moved whole; the
// view is taken on the device, so only metadata changes there. A 0-d or empty tensor has no
// layout to vary: it comes back contiguous.
Tensor with_layout(const Tensor& v, Layout l, size_t input_index, ember::Device device = ember::Device::cpu());

// Index helpers for lambdas: deterministic for a given shape.
Tensor random_index(int64_t bound, const Shape& shape, uint64_t seed);  // i64 in [0, bound)
Tensor random_mask(const Shape& shape, uint64_t seed);                 // bool, about half true

// The devices the devices mode compares with the CPU: fake:0, cuda:0 when a GPU is present, and
// the device EMBER_TEST_DEVICE names if it is another one (test_util.h).
std::vector<ember::Device> available_devices();

enum class Mode {
  cpu,      // layouts, gradcheck and (kLowPrecision) lowp
  devices,  // every device against the CPU
};
struct RunOptions {
  Mode mode = Mode::cpu;
  std::vector<ember::Device> devices = {};  // devices mode: empty means available_devices()
  std::string tag = "";                     // added to the case name in messages
};

// Runs the mode's checks on every selected case, with doctest CHECKs naming case, shape set,
// dtype, layout and device.
void run_cases(const std::vector<OpCase>& cases, const RunOptions& options = {});

}  // namespace ember_test
