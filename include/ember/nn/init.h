// Parameter initialisers (PyTorch's torch.nn.init): each fills a tensor in place, under
// NoGradGuard, and returns it, drawing from `gen` (the default generator when null).
//
// Fans follow PyTorch for tensors of 2 or more dims: fan_in = size(1) * receptive field,
// fan_out = size(0) * receptive field, receptive field = product of dims 2.. (a Linear weight
// (out, in) has fan_in = in; a Conv1d weight (C_out, C_in/groups, K) has fan_in = C_in/groups * K).
// The initialisers that need fans throw ember::Error for tensors with fewer than 2 dims.
#pragma once
#include <cstdint>

#include "ember/core/generator.h"
#include "ember/core/tensor.h"

namespace ember::nn::init {

enum class FanMode { fan_in, fan_out };
enum class Nonlinearity { linear, sigmoid, tanh, relu, leaky_relu };

// The recommended gain for a nonlinearity (PyTorch's calculate_gain): linear and sigmoid 1,
// tanh 5/3, relu sqrt(2), leaky_relu sqrt(2 / (1 + slope^2)).
double calculate_gain(Nonlinearity nonlinearity, double negative_slope = 0.01);

struct Fans {
  int64_t fan_in = 0, fan_out = 0;
};
// Throws ember::Error naming `op` and the shape for tensors with fewer than 2 dims.
Fans calculate_fans(const Tensor& t, const char* op = "calculate_fans");

Tensor uniform_(const Tensor& t, double lo = 0.0, double hi = 1.0, Generator* gen = nullptr);
Tensor normal_(const Tensor& t, double mean = 0.0, double std = 1.0, Generator* gen = nullptr);
Tensor constant_(const Tensor& t, double value);
Tensor zeros_(const Tensor& t);
Tensor ones_(const Tensor& t);

// U(-b, b), b = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a). The defaults are
// PyTorch's (a = 0, fan_in, leaky_relu: gain sqrt(2), He et al.).
Tensor kaiming_uniform_(const Tensor& t, double a = 0.0, FanMode mode = FanMode::fan_in,
                        Nonlinearity nonlinearity = Nonlinearity::leaky_relu, Generator* gen = nullptr);
// N(0, std^2), std = gain / sqrt(fan).
Tensor kaiming_normal_(const Tensor& t, double a = 0.0, FanMode mode = FanMode::fan_in,
                       Nonlinearity nonlinearity = Nonlinearity::leaky_relu, Generator* gen = nullptr);
// U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio).
Tensor xavier_uniform_(const Tensor& t, double gain = 1.0, Generator* gen = nullptr);
// N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out)).
Tensor xavier_normal_(const Tensor& t, double gain = 1.0, Generator* gen = nullptr);
// A (semi-)orthogonal matrix times gain, on the (size(0), numel / size(0)) flattening: the QR
// factor of a N(0, 1) matrix with R's diagonal made positive (as PyTorch), so rows are
// orthonormal when rows <= cols and columns are otherwise. Needs >= 2 dims.
Tensor orthogonal_(const Tensor& t, double gain = 1.0, Generator* gen = nullptr);

}  // namespace ember::nn::init
