// 1-D pooling over (N, C, L) inputs (or (C, L), treated as N = 1), as free functions and
// layers. Composed from ops: pad, unfold (a strided view of the windows, (N, C, L_out, K)),
// then amax or mean over the window, so they run on every device and backward comes from
// those ops. L_out = (L + 2 * padding - kernel) / stride + 1 (floor, PyTorch's ceil_mode=false).
//
// Max pooling pads with -inf; when several elements of a window tie for the max, they share
// its gradient evenly (amax's rule; PyTorch gives it all to one). Average pooling pads with
// zeros that count in the divisor (PyTorch's default count_include_pad=true).
// Bad arguments throw ember::Error naming the op and the input shape: kernel and stride must
// be positive, 0 <= padding <= kernel / 2 (as PyTorch), and the padded input at least a kernel long.
#pragma once
#include <cstdint>
#include <optional>

#include "ember/nn/layers.h"

namespace ember::nn {

// stride defaults to the kernel size.
Tensor max_pool1d(const Tensor& x, int64_t kernel, std::optional<int64_t> stride = std::nullopt,
                  int64_t padding = 0);
Tensor avg_pool1d(const Tensor& x, int64_t kernel, std::optional<int64_t> stride = std::nullopt,
                  int64_t padding = 0);
// Max / mean over time (dim 2 of (N, C, L), dim 1 of (C, L)): (N, C), or (N, C, 1) with keepdim.
Tensor global_max_pool1d(const Tensor& x, bool keepdim = false);
Tensor global_avg_pool1d(const Tensor& x, bool keepdim = false);

class MaxPool1d : public Layer {
 public:
  explicit MaxPool1d(int64_t kernel, std::optional<int64_t> stride = std::nullopt, int64_t padding = 0);
  Tensor forward(const Tensor& x) override;

 private:
  int64_t kernel_, stride_, padding_;
};

class AvgPool1d : public Layer {
 public:
  explicit AvgPool1d(int64_t kernel, std::optional<int64_t> stride = std::nullopt, int64_t padding = 0);
  Tensor forward(const Tensor& x) override;

 private:
  int64_t kernel_, stride_, padding_;
};

// (N, C, L) -> (N, C) (keepdim: (N, C, 1)).
class GlobalMaxPool1d : public Layer {
 public:
  explicit GlobalMaxPool1d(bool keepdim = false) : keepdim_(keepdim) {}
  Tensor forward(const Tensor& x) override { return global_max_pool1d(x, keepdim_); }

 private:
  bool keepdim_;
};

class GlobalAvgPool1d : public Layer {
 public:
  explicit GlobalAvgPool1d(bool keepdim = false) : keepdim_(keepdim) {}
  Tensor forward(const Tensor& x) override { return global_avg_pool1d(x, keepdim_); }

 private:
  bool keepdim_;
};

}  // namespace ember::nn
