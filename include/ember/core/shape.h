// Shapes and strides are plain vectors of int64 (elements, not bytes).
#pragma once
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace ember {

using Shape = std::vector<int64_t>;

// The element count of s. Throws ember::Error("numel", ...) when the product overflows int64
// (every tensor's shape passed checked_numel when it was made, so this never fires for one).
int64_t numel_of(const Shape& s);
// Row-major strides of s (size-0 dims count as 1); throws ember::Error(op, ...) when a stride
// overflows int64.
Shape contiguous_strides(const Shape& s, const char* op = "contiguous_strides");

// Size arithmetic on values a caller chose (dims, paddings, dilations, counts). Signed overflow
// is undefined behaviour and a wrapped size means an allocation smaller than the loops that
// fill it, so every size computed from user input goes through these: they throw
// ember::Error(op, ...) naming the operands instead of wrapping.
int64_t checked_mul(int64_t a, int64_t b, const char* op);
int64_t checked_add(int64_t a, int64_t b, const char* op);
// The element count of s for op: every dim >= 0 and the product fits int64, else an
// ember::Error naming op and the shape.
int64_t checked_numel(const Shape& s, const char* op);
// Bytes of a tensor of shape s with elements of element_size bytes: checked_numel, then the
// byte count checked against overflow of size_t and int64.
size_t checked_nbytes(const Shape& s, size_t element_size, const char* op);
std::string shape_str(const Shape& s);  // "(2, 3)"; "()" for a scalar
// Broadcast two shapes (numpy rules); throws ember::Error(op, "cannot broadcast ...").
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
// Wraps a possibly negative dim into [0, ndim); throws with the op name when out of range.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);

}  // namespace ember
