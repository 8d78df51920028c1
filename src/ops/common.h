// Helpers shared by the op implementations.
#pragma once
#include <memory>
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
// Checks that every value of the integer tensor `values` other than `keep` (an ignore_index)
// lies in [0, bound); else throws ember::Error(op, message + ", found " + the offending value).
// On the CPU the check runs now and `values` comes back. On other devices it is queued
// (check_deferred_errors in ember/ops/ops.h: no host synchronisation in the op), and what comes
// back is `values` with every bad entry replaced by `replacement`, so that kernels stay in
// bounds until the check is read.
Tensor checked_indices(const char* op, const Tensor& values, int64_t bound, std::optional<int64_t> keep,
                       int64_t replacement, std::string message);
// Inside a graph capture the queued checks go to the graph instead (their tensors are rewritten
// by every replay), and the graph queues them again after each replay.
struct DeferredCheckList;
std::shared_ptr<DeferredCheckList> begin_deferred_capture();  // this thread, until end_...
void end_deferred_capture();
void requeue_deferred(const DeferredCheckList& list);
// Normalised, sorted, de-duplicated reduction dims (empty = all).
std::vector<int64_t> reduction_dims(const Shape& dims, int64_t ndim, const char* op);
Shape reduced_shape(const Shape& s, const std::vector<int64_t>& dims, bool keepdim);

}  // namespace ember::detail
