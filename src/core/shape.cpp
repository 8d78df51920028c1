#include "ember/core/shape.h"

#include <algorithm>

#include "ember/core/error.h"

namespace ember {

int64_t numel_of(const Shape& s) {
  for (auto d : s)
    if (d == 0) return 0;  // (2^40, 2^40, 0) holds no elements; its product must not overflow first
  int64_t n = 1;
  for (auto d : s)
    if (__builtin_mul_overflow(n, d, &n))
      EMBER_FAIL("numel", "the element count of shape ", shape_str(s), " overflows int64");
  return n;
}

Shape contiguous_strides(const Shape& s, const char* op) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    // The outermost stride is never multiplied on: a shape whose numel fits always works.
    if (i > 0 && __builtin_mul_overflow(acc, std::max<int64_t>(s[i], 1), &acc))
      EMBER_FAIL(op, "the strides of shape ", shape_str(s), " overflow int64");
  }
  return st;
}

int64_t checked_mul(int64_t a, int64_t b, const char* op) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) EMBER_FAIL(op, "size arithmetic overflows int64: ", a, " * ", b);
  return r;
}

int64_t checked_add(int64_t a, int64_t b, const char* op) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) EMBER_FAIL(op, "size arithmetic overflows int64: ", a, " + ", b);
  return r;
}

int64_t checked_numel(const Shape& s, const char* op) {
  int64_t n = 1;
  for (auto d : s) EMBER_CHECK(d >= 0, op, "negative dimension ", d, " in shape ", shape_str(s));
  for (auto d : s)
    if (d == 0) return 0;
  for (auto d : s)
    if (__builtin_mul_overflow(n, d, &n))
      EMBER_FAIL(op, "shape ", shape_str(s), " has more than 2^63 - 1 elements (the element count overflows int64)");
  return n;
}

size_t checked_nbytes(const Shape& s, size_t element_size, const char* op) {
  const int64_t n = checked_numel(s, op);
  int64_t bytes = 0;
  if (__builtin_mul_overflow(n, static_cast<int64_t>(element_size), &bytes))
    EMBER_FAIL(op, "shape ", shape_str(s), " with ", element_size, "-byte elements needs ", n, " * ", element_size,
               " bytes, which overflows int64");
  return static_cast<size_t>(bytes);
}

std::string shape_str(const Shape& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ", ";
    r += std::to_string(s[i]);
  }
  if (s.size() == 1) r += ",";
  return r + ")";
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape r(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    EMBER_CHECK(da == db || da == 1 || db == 1, op, "cannot broadcast ", shape_str(a), " with ",
                shape_str(b));
    r[i] = da == 1 ? db : da;
  }
  return r;
}

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  int64_t n = std::max<int64_t>(ndim, 1);
  EMBER_CHECK(dim >= -n && dim < n, op, "dim ", dim, " out of range for a tensor with ", ndim,
              " dims (expected in [", -n, ", ", n - 1, "])");
  return dim < 0 ? dim + n : dim;
}

}  // namespace ember
