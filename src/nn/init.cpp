// Initialisers: draw with the creation ops in the tensor's dtype and device, then copy_ into
// the tensor under NoGradGuard (so parameters that require grad can be filled).
#include "ember/nn/init.h"

#include <cmath>
#include <vector>

#include "ember/autograd/grad_mode.h"
#include "ember/core/error.h"
#include "ember/ops/ops.h"

namespace ember::nn::init {
namespace {

void check_float(const Tensor& t, const char* op) {
  EMBER_CHECK(t.defined(), op, "cannot fill an undefined tensor");
  EMBER_CHECK(is_floating(t.dtype()), op, "needs a float tensor, got ", t.dtype(), " of shape ",
              shape_str(t.shape()));
}

TensorOptions options_of(const Tensor& t) { return TensorOptions(t.dtype()).with_device(t.device()); }

Tensor fill_from(const Tensor& t, const Tensor& values) {
  NoGradGuard no_grad;
  Tensor h = t;
  h.copy_(values);
  return h;
}

const char* nonlinearity_name(Nonlinearity n) {
  switch (n) {
    case Nonlinearity::linear: return "linear";
    case Nonlinearity::sigmoid: return "sigmoid";
    case Nonlinearity::tanh: return "tanh";
    case Nonlinearity::relu: return "relu";
    case Nonlinearity::leaky_relu: return "leaky_relu";
  }
  return "?";
}

double kaiming_std(const Tensor& t, double a, FanMode mode, Nonlinearity nl, const char* op) {
  const Fans f = calculate_fans(t, op);
  const int64_t fan = mode == FanMode::fan_in ? f.fan_in : f.fan_out;
  EMBER_CHECK(fan > 0, op, "fan is 0 for a tensor of shape ", shape_str(t.shape()));
  return calculate_gain(nl, a) / std::sqrt(static_cast<double>(fan));
}

}  // namespace

double calculate_gain(Nonlinearity nonlinearity, double negative_slope) {
  switch (nonlinearity) {
    case Nonlinearity::linear:
    case Nonlinearity::sigmoid: return 1.0;
    case Nonlinearity::tanh: return 5.0 / 3.0;
    case Nonlinearity::relu: return std::sqrt(2.0);
    case Nonlinearity::leaky_relu: return std::sqrt(2.0 / (1.0 + negative_slope * negative_slope));
  }
  EMBER_FAIL("calculate_gain", "unknown nonlinearity ", nonlinearity_name(nonlinearity));
}

Fans calculate_fans(const Tensor& t, const char* op) {
  EMBER_CHECK(t.defined(), op, "undefined tensor");
  EMBER_CHECK(t.dim() >= 2, op, "fan in and fan out need a tensor with at least 2 dims, got shape ",
              shape_str(t.shape()));
  int64_t receptive = 1;
  for (int64_t d = 2; d < t.dim(); ++d) receptive *= t.size(d);
  return {t.size(1) * receptive, t.size(0) * receptive};
}

Tensor uniform_(const Tensor& t, double lo, double hi, Generator* gen) {
  check_float(t, "uniform_");
  EMBER_CHECK(lo <= hi, "uniform_", "low ", lo, " > high ", hi);
  return fill_from(t, uniform(t.shape(), lo, hi, options_of(t), gen));
}

Tensor normal_(const Tensor& t, double mean, double std, Generator* gen) {
  check_float(t, "normal_");
  EMBER_CHECK(std >= 0, "normal_", "std must be >= 0, got ", std);
  NoGradGuard no_grad;
  Tensor z = randn(t.shape(), options_of(t), gen);
  return fill_from(t, z * std + mean);
}

Tensor constant_(const Tensor& t, double value) {
  EMBER_CHECK(t.defined(), "constant_", "cannot fill an undefined tensor");
  NoGradGuard no_grad;
  Tensor h = t;
  h.fill_(value);
  return h;
}
Tensor zeros_(const Tensor& t) { return constant_(t, 0.0); }
Tensor ones_(const Tensor& t) { return constant_(t, 1.0); }

Tensor kaiming_uniform_(const Tensor& t, double a, FanMode mode, Nonlinearity nl, Generator* gen) {
  check_float(t, "kaiming_uniform_");
  const double bound = std::sqrt(3.0) * kaiming_std(t, a, mode, nl, "kaiming_uniform_");
  return fill_from(t, uniform(t.shape(), -bound, bound, options_of(t), gen));
}

Tensor kaiming_normal_(const Tensor& t, double a, FanMode mode, Nonlinearity nl, Generator* gen) {
  check_float(t, "kaiming_normal_");
  const double std = kaiming_std(t, a, mode, nl, "kaiming_normal_");
  NoGradGuard no_grad;
  return fill_from(t, randn(t.shape(), options_of(t), gen) * std);
}

Tensor xavier_uniform_(const Tensor& t, double gain, Generator* gen) {
  check_float(t, "xavier_uniform_");
  const Fans f = calculate_fans(t, "xavier_uniform_");
  EMBER_CHECK(f.fan_in + f.fan_out > 0, "xavier_uniform_", "fans are 0 for shape ", shape_str(t.shape()));
  const double bound = gain * std::sqrt(6.0 / static_cast<double>(f.fan_in + f.fan_out));
  return fill_from(t, uniform(t.shape(), -bound, bound, options_of(t), gen));
}

Tensor xavier_normal_(const Tensor& t, double gain, Generator* gen) {
  check_float(t, "xavier_normal_");
  const Fans f = calculate_fans(t, "xavier_normal_");
  EMBER_CHECK(f.fan_in + f.fan_out > 0, "xavier_normal_", "fans are 0 for shape ", shape_str(t.shape()));
  const double std = gain * std::sqrt(2.0 / static_cast<double>(f.fan_in + f.fan_out));
  NoGradGuard no_grad;
  return fill_from(t, randn(t.shape(), options_of(t), gen) * std);
}

Tensor orthogonal_(const Tensor& t, double gain, Generator* gen) {
  check_float(t, "orthogonal_");
  EMBER_CHECK(t.dim() >= 2, "orthogonal_", "needs a tensor with at least 2 dims, got shape ",
              shape_str(t.shape()));
  const int64_t rows = t.size(0);
  EMBER_CHECK(rows > 0 && t.numel() > 0, "orthogonal_", "cannot fill an empty tensor of shape ",
              shape_str(t.shape()));
  const int64_t cols = t.numel() / rows;
  // A N(0, 1) (rows, cols) matrix, drawn on the CPU in f64, as (m, n) with m >= n: its
  // transpose when rows < cols (PyTorch's flattened.t()).
  const std::vector<double> a = randn({rows, cols}, DType::f64, gen).to_vector<double>();
  const bool flip = rows < cols;
  const int64_t m = flip ? cols : rows, n = flip ? rows : cols;
  auto at = [&](int64_t i, int64_t j) { return flip ? a[j * cols + i] : a[i * cols + j]; };
  // Modified Gram-Schmidt, twice over ("twice is enough" for orthogonality in double), on the
  // columns of the (m, n) matrix. R's diagonal comes out positive, which is the sign
  // correction PyTorch applies to its Householder QR (Q * sign(diag(R))): the same Q.
  std::vector<double> q(static_cast<size_t>(m * n));  // column-major: q[j * m + i]
  for (int64_t j = 0; j < n; ++j) {
    double* qj = &q[static_cast<size_t>(j * m)];
    for (int64_t i = 0; i < m; ++i) qj[i] = at(i, j);
    for (int pass = 0; pass < 2; ++pass)
      for (int64_t k = 0; k < j; ++k) {
        const double* qk = &q[static_cast<size_t>(k * m)];
        double dot = 0;
        for (int64_t i = 0; i < m; ++i) dot += qk[i] * qj[i];
        for (int64_t i = 0; i < m; ++i) qj[i] -= dot * qk[i];
      }
    double norm = 0;
    for (int64_t i = 0; i < m; ++i) norm += qj[i] * qj[i];
    norm = std::sqrt(norm);
    EMBER_CHECK(norm > 0, "orthogonal_", "random matrix is rank deficient (shape ",
                shape_str(t.shape()), ")");
    for (int64_t i = 0; i < m; ++i) qj[i] /= norm;
  }
  // Back to (rows, cols) row-major: Q (m, n) when not flipped, Q^T otherwise.
  std::vector<double> w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      w[static_cast<size_t>(r * cols + c)] =
          gain * (flip ? q[static_cast<size_t>(r * m + c)] : q[static_cast<size_t>(c * m + r)]);
  NoGradGuard no_grad;
  Tensor values = from_vector<double>(w, t.shape()).to(t.dtype()).to(t.device());
  return fill_from(t, values);
}

}  // namespace ember::nn::init
