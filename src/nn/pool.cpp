// 1-D pooling composed from pad + unfold + amax/mean (see pool.h).
#include "ember/nn/pool.h"

#include <limits>

#include "ember/core/error.h"
#include "ember/ops/ops.h"
#include "ops/op_call.h"

namespace ember::nn {
namespace {

// Checks x and the window arguments; returns the stride to use.
int64_t check_pool(const char* op, const Tensor& x, int64_t kernel, std::optional<int64_t> stride,
                   int64_t padding) {
  EMBER_CHECK(x.defined(), op, "input is an undefined tensor");
  EMBER_CHECK(x.dim() == 2 || x.dim() == 3, op, "expects (N, C, L) or (C, L) input, got shape ",
              shape_str(x.shape()));
  EMBER_CHECK(is_floating(x.dtype()), op, "needs a float input, got ", x.dtype(), " of shape ",
              shape_str(x.shape()));
  const int64_t s = stride.value_or(kernel);
  EMBER_CHECK(kernel > 0, op, "kernel size must be positive, got ", kernel, " for input ",
              shape_str(x.shape()));
  EMBER_CHECK(s > 0, op, "stride must be positive, got ", s, " for input ", shape_str(x.shape()));
  EMBER_CHECK(padding >= 0 && padding <= kernel / 2, op, "padding must be in [0, kernel / 2] = [0, ",
              kernel / 2, "], got padding ", padding, " with kernel ", kernel, " for input ",
              shape_str(x.shape()));
  const int64_t len = x.size(-1);
  // padding <= kernel / 2, so 2 * padding fits; len + it may not.
  EMBER_CHECK(checked_add(len, 2 * padding, op) >= kernel, op, "input ", shape_str(x.shape()), " of length ", len,
              " padded by ", padding, " on each side is shorter than the kernel ", kernel);
  return s;
}

// (N, C, L) or (C, L) -> windows (..., L_out, K) -> reduced over K.
Tensor pool1d(bool is_max, const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  Tensor xp = x;
  if (padding > 0)
    xp = pad(x, {padding, padding}, is_max ? -std::numeric_limits<double>::infinity() : 0.0);
  Tensor windows = unfold(xp, -1, kernel, stride);  // (N, C, L_out, K)
  return is_max ? amax(windows, {-1}) : mean(windows, {-1});
}

Tensor global_pool1d(const char* op, bool is_max, const Tensor& x, bool keepdim) {
  EMBER_CHECK(x.defined(), op, "input is an undefined tensor");
  EMBER_CHECK(x.dim() == 2 || x.dim() == 3, op, "expects (N, C, L) or (C, L) input, got shape ",
              shape_str(x.shape()));
  EMBER_CHECK(is_floating(x.dtype()), op, "needs a float input, got ", x.dtype(), " of shape ",
              shape_str(x.shape()));
  EMBER_CHECK(x.size(-1) > 0, op, "cannot pool over an empty time dim, input ", shape_str(x.shape()));
  return is_max ? amax(x, {-1}, keepdim) : mean(x, {-1}, keepdim);
}

}  // namespace

Tensor max_pool1d(const Tensor& x, int64_t kernel, std::optional<int64_t> stride, int64_t padding) {
  detail::OpScope scope(OpId::max_pool1d,
                        [&] { return Attrs{{"kernel", kernel}, {"stride", stride}, {"padding", padding}}; },
                        x);
  const int64_t s = check_pool("max_pool1d", x, kernel, stride, padding);
  return scope.done(pool1d(true, x, kernel, s, padding));
}

Tensor avg_pool1d(const Tensor& x, int64_t kernel, std::optional<int64_t> stride, int64_t padding) {
  detail::OpScope scope(OpId::avg_pool1d,
                        [&] { return Attrs{{"kernel", kernel}, {"stride", stride}, {"padding", padding}}; },
                        x);
  const int64_t s = check_pool("avg_pool1d", x, kernel, stride, padding);
  return scope.done(pool1d(false, x, kernel, s, padding));
}

Tensor global_max_pool1d(const Tensor& x, bool keepdim) {
  detail::OpScope scope(OpId::global_max_pool1d, [&] { return Attrs{{"keepdim", keepdim}}; }, x);
  return scope.done(global_pool1d("global_max_pool1d", true, x, keepdim));
}
Tensor global_avg_pool1d(const Tensor& x, bool keepdim) {
  detail::OpScope scope(OpId::global_avg_pool1d, [&] { return Attrs{{"keepdim", keepdim}}; }, x);
  return scope.done(global_pool1d("global_avg_pool1d", false, x, keepdim));
}

namespace {
void check_module_args(const char* op, int64_t kernel, int64_t stride, int64_t padding) {
  EMBER_CHECK(kernel > 0, op, "kernel size must be positive, got ", kernel);
  EMBER_CHECK(stride > 0, op, "stride must be positive, got ", stride);
  EMBER_CHECK(padding >= 0 && padding <= kernel / 2, op, "padding must be in [0, kernel / 2] = [0, ",
              kernel / 2, "], got padding ", padding, " with kernel ", kernel);
}
}  // namespace

MaxPool1d::MaxPool1d(int64_t kernel, std::optional<int64_t> stride, int64_t padding)
    : kernel_(kernel), stride_(stride.value_or(kernel)), padding_(padding) {
  check_module_args("MaxPool1d", kernel_, stride_, padding_);
}
Tensor MaxPool1d::forward(const Tensor& x) { return max_pool1d(x, kernel_, stride_, padding_); }

AvgPool1d::AvgPool1d(int64_t kernel, std::optional<int64_t> stride, int64_t padding)
    : kernel_(kernel), stride_(stride.value_or(kernel)), padding_(padding) {
  check_module_args("AvgPool1d", kernel_, stride_, padding_);
}
Tensor AvgPool1d::forward(const Tensor& x) { return avg_pool1d(x, kernel_, stride_, padding_); }

}  // namespace ember::nn
