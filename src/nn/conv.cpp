// nn::Conv1d: parameters, PyTorch's initialisation, and a forward that is one conv1d op.
#include "ember/nn/conv.h"

#include <cmath>

#include "ember/core/error.h"
#include "ember/ops/conv.h"
#include "ember/ops/ops.h"

namespace ember::nn {

Conv1d::Conv1d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, Conv1dOptions options,
               Generator* gen)
    : in_(in_channels), out_(out_channels), k_(kernel_size), opt_(options) {
  EMBER_CHECK(in_channels > 0 && out_channels > 0 && kernel_size > 0, "Conv1d",
              "in_channels, out_channels and kernel_size must be positive, got (", in_channels, ", ",
              out_channels, ", ", kernel_size, ")");
  EMBER_CHECK(options.groups > 0 && in_channels % options.groups == 0 && out_channels % options.groups == 0,
              "Conv1d", "groups=", options.groups, " must divide in_channels ", in_channels, " and out_channels ",
              out_channels);
  EMBER_CHECK(options.stride > 0 && options.dilation > 0 && options.padding >= 0, "Conv1d",
              "needs stride >= 1, dilation >= 1, padding >= 0, got stride=", options.stride,
              ", dilation=", options.dilation, ", padding=", options.padding);
  const Shape shape{out_channels, in_channels / options.groups, kernel_size};
  checked_numel(shape, "Conv1d");  // also bounds fan_in below
  const int64_t fan_in = in_channels / options.groups * kernel_size;
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  weight = register_parameter(
      "weight", uniform(shape, -bound, bound, {}, gen));
  if (options.bias) bias = register_parameter("bias", uniform({out_channels}, -bound, bound, {}, gen));
}

Tensor Conv1d::forward(const Tensor& x) {
  EMBER_CHECK(x.defined(), "Conv1d", "input is an undefined tensor");
  EMBER_CHECK(x.dim() == 3 && x.size(1) == in_, "Conv1d", "input ", shape_str(x.shape()),
              " is not (N, in_channels = ", in_, ", L) (weight ", shape_str(weight.shape()), ")");
  return conv1d(x, weight, bias, opt_.stride, opt_.padding, opt_.dilation, opt_.groups);
}

}  // namespace ember::nn
