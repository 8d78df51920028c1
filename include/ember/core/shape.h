// Shapes and strides are plain vectors of int64 (elements, not bytes).
#pragma once
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace ember {

using Shape = std::vector<int64_t>;

int64_t numel_of(const Shape& s);
Shape contiguous_strides(const Shape& s);
std::string shape_str(const Shape& s);  // "(2, 3)"; "()" for a scalar
// Broadcast two shapes (numpy rules); throws ember::Error(op, "cannot broadcast ...").
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
// Wraps a possibly negative dim into [0, ndim); throws with the op name when out of range.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);

}  // namespace ember
