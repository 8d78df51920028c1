// Helpers shared by the op implementations.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "ember/autograd/grad_mode.h"
#include "ember/autograd/node.h"
#include "ember/ops/ops.h"

namespace ember::detail {

// Options for a tensor of dtype dt on t's device. Backward formulas make every tensor they
// need with it (or *_like): a gradient lives on its input's device, and the engine checks.
inline TensorOptions on_device_of(const Tensor& t, DType dt) { return TensorOptions(dt).with_device(t.device()); }
// A fresh contiguous tensor (no autograd). The shape is checked first (negative dims, element
// and byte counts that overflow, more than kMaxStorageBytes): the error names op and shape.
Tensor make_tensor(const Shape& shape, DType dtype, Device device, const char* op = "empty");
// make_tensor's checks alone, for an op that allocates through another op (pad through full):
// returns the byte count.
size_t check_allocatable(const Shape& shape, DType dtype, Device device, const char* op);
// A view of x's storage with new geometry (no autograd recorded here).
Tensor make_view(const Tensor& x, Shape shape, Shape strides, int64_t offset);
// Throws unless every defined tensor is on the same device, naming them all.
void check_same_device(const char* op, const std::vector<Tensor>& ts);
void check_defined(const char* op, const std::vector<Tensor>& ts);
// A 0-d CPU tensor next to a tensor on another device acts as a scalar: it is copied there
// (like a Python number). Anything else is returned unchanged.
Tensor scalar_to_device(const Tensor& s, const Tensor& other);
// "(2, 3) f32 cpu"
std::string describe(const Tensor& t);
// Sums g down to shape (undoes broadcasting).
Tensor sum_to(const Tensor& g, const Shape& shape);
// Marks a view output's autograd metadata.
void mark_view(const Tensor& base, const Tensor& view);
// What a fused primitive hands its backend: t detached, converted to dtype dt and contiguous
// (undefined stays undefined).
inline Tensor prepared(const Tensor& t, DType dt) {
  return t.defined() ? contiguous(to_dtype(t.detach(), dt)) : Tensor();
}
// The defined tensors of ts, in order (for device checks over optional arguments).
inline std::vector<Tensor> defined_of(std::initializer_list<Tensor> ts) {
  std::vector<Tensor> r;
  for (const Tensor& t : ts)
    if (t.defined()) r.push_back(t);
  return r;
}
// Checks that every value of the integer tensor `values` lies in [0, bound); else throws
// ember::Error(op, message + ", found " + the offending value). Runs now on the CPU, queued on
// other devices (check_deferred_errors in ember/ops/ops.h): no host synchronisation there.
void check_values_in_range(const char* op, const Tensor& values, int64_t bound, std::string message);
// While such a check is pending, kernels still must not index out of bounds: on a device other
// than the CPU, returns `values` with every entry outside [0, bound) (other than `keep`)
// replaced by `replacement` (computed on the device, no sync); on the CPU returns `values`
// (a bad value has thrown already).
Tensor in_range_or(const Tensor& values, int64_t bound, int64_t replacement, std::optional<int64_t> keep = {});
// Normalised, sorted, de-duplicated reduction dims (empty = all).
std::vector<int64_t> reduction_dims(const Shape& dims, int64_t ndim, const char* op);
Shape reduced_shape(const Shape& s, const std::vector<int64_t>& dims, bool keepdim);

}  // namespace ember::detail
