// The device-independent face of every primitive. Each function checks its arguments (naming
// the op, shapes, dtypes and devices in any error), promotes dtypes, allocates the output,
// dispatches to the backend and, when gradients are needed, records its backward.
#pragma once
#include <optional>
#include <string_view>
#include <vector>

#include "ember/core/generator.h"
#include "ember/core/tensor.h"

namespace ember {

struct TensorOptions {
  DType dtype = DType::f32;
  Device device = Device::cpu();
  bool requires_grad = false;
  TensorOptions() = default;
  TensorOptions(DType t) : dtype(t) {}  // NOLINT: lets a dtype stand for options
  TensorOptions& with_dtype(DType t) { dtype = t; return *this; }
  TensorOptions& with_device(Device d) { device = d; return *this; }
  TensorOptions& with_requires_grad(bool r) { requires_grad = r; return *this; }
};

// --- creation --------------------------------------------------------------------------------
Tensor empty(const Shape& shape, TensorOptions o = {});
Tensor zeros(const Shape& shape, TensorOptions o = {});
Tensor ones(const Shape& shape, TensorOptions o = {});
Tensor full(const Shape& shape, double value, TensorOptions o = {});
Tensor scalar_tensor(double value, TensorOptions o = {});
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor empty_like(const Tensor& t);
Tensor arange(double start, double end, double step = 1.0, TensorOptions o = DType::i64);
Tensor linspace(double start, double end, int64_t steps, TensorOptions o = {});
template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, TensorOptions o = dtype_of<T>::value);
template <>
Tensor from_vector<bool>(const std::vector<bool>& values, const Shape& shape, TensorOptions o);
// 1-D and 2-D literals. A 2-D literal with one-element rows ({{1.0}, {2.0}}) is ambiguous
// with the 1-D form in C++: use from_vector for those.
Tensor tensor(std::initializer_list<double> values, TensorOptions o = {});
Tensor tensor(std::initializer_list<std::initializer_list<double>> rows, TensorOptions o = {});
Tensor rand(const Shape& shape, TensorOptions o = {}, Generator* gen = nullptr);   // U[0, 1)
Tensor randn(const Shape& shape, TensorOptions o = {}, Generator* gen = nullptr);  // N(0, 1)
Tensor uniform(const Shape& shape, double lo, double hi, TensorOptions o = {}, Generator* gen = nullptr);
Tensor randint(int64_t low, int64_t high, const Shape& shape, TensorOptions o = DType::i64,
               Generator* gen = nullptr);
Tensor bernoulli(const Shape& shape, double p, TensorOptions o = {}, Generator* gen = nullptr);

// --- views (share storage) -------------------------------------------------------------------
Tensor view(const Tensor& x, const Shape& shape);     // -1 allowed once; needs compatible strides
Tensor reshape(const Tensor& x, const Shape& shape);  // view when possible, else a copy
Tensor permute(const Tensor& x, const Shape& dims);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor select(const Tensor& x, int64_t dim, int64_t index);
Tensor expand(const Tensor& x, const Shape& shape);  // -1 keeps a dim
Tensor broadcast_to(const Tensor& x, const Shape& shape);
Tensor squeeze(const Tensor& x, std::optional<int64_t> dim = std::nullopt);
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor flatten(const Tensor& x, int64_t start = 0, int64_t end = -1);
// Sliding windows along dim as a view: dim becomes the window count (n - size) / step + 1
// and a new last dim of length `size` holds each window (PyTorch's Tensor.unfold).
Tensor unfold(const Tensor& x, int64_t dim, int64_t size, int64_t step);

// --- copies and conversion -------------------------------------------------------------------
Tensor contiguous(const Tensor& x);
Tensor clone(const Tensor& x);
Tensor to_dtype(const Tensor& x, DType t);
// A copy on device d (x itself when already there); differentiable.
Tensor to_device(const Tensor& x, Device d);

// --- elementwise -----------------------------------------------------------------------------
// Binary ops broadcast and promote (see promote_types); bool arithmetic is done in i64.
Tensor add(const Tensor& a, const Tensor& b, double alpha = 1.0);  // a + alpha * b
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);  // true division (integers give f32)
Tensor pow(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, double exponent);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, const Tensor& b);  // comparisons give bool
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor logical_and(const Tensor& a, const Tensor& b);
Tensor logical_or(const Tensor& a, const Tensor& b);
Tensor logical_not(const Tensor& a);
// Unary ops; float-only ones promote integers to f32.
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor log1p(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
// approximate "none": the exact form x * Phi(x) (erf); "tanh": GPT-2's
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as PyTorch's approximate="tanh".
Tensor gelu(const Tensor& x, std::string_view approximate = "none");
Tensor silu(const Tensor& x);
Tensor erf(const Tensor& x);
Tensor expm1(const Tensor& x);     // e^x - 1, exact near 0
Tensor softplus(const Tensor& x);  // log(1 + e^x), without overflow for large x
Tensor clamp(const Tensor& x, std::optional<double> lo, std::optional<double> hi);
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);

// --- reductions (dims empty = all dims) ------------------------------------------------------
Tensor sum(const Tensor& x, const Shape& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const Shape& dims = {}, bool keepdim = false);
Tensor prod(const Tensor& x, const Shape& dims = {}, bool keepdim = false);
Tensor var(const Tensor& x, const Shape& dims = {}, int64_t correction = 1, bool keepdim = false);
Tensor amax(const Tensor& x, const Shape& dims = {}, bool keepdim = false);
Tensor amin(const Tensor& x, const Shape& dims = {}, bool keepdim = false);
struct ValuesIndices {
  Tensor values, indices;
};
ValuesIndices max(const Tensor& x, int64_t dim, bool keepdim = false);
ValuesIndices min(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor max(const Tensor& x);  // over all elements
Tensor min(const Tensor& x);
Tensor argmax(const Tensor& x, std::optional<int64_t> dim = std::nullopt, bool keepdim = false);
Tensor argmin(const Tensor& x, std::optional<int64_t> dim = std::nullopt, bool keepdim = false);
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);

// --- linear algebra --------------------------------------------------------------------------
// matmul: 1-D and 2-D as numpy; batched with broadcast batch dims. bmm: (B,n,k) @ (B,k,m).
Tensor matmul(const Tensor& a, const Tensor& b);
Tensor bmm(const Tensor& a, const Tensor& b);
// linear: x (..., in) @ weight (out, in)^T + bias (out) -> (..., out), as nn::Linear computes it.
// One GEMM whose output starts as the bias (no separate add pass); bias may be undefined.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// --- indexing --------------------------------------------------------------------------------
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
Tensor embedding(const Tensor& weight, const Tensor& indices);  // (V, D)[idx] -> idx.shape + (D)
Tensor scatter_add(const Tensor& self, int64_t dim, const Tensor& index, const Tensor& src);
Tensor index_add(const Tensor& self, int64_t dim, const Tensor& index, const Tensor& source,
                 double alpha = 1.0);
Tensor one_hot(const Tensor& indices, int64_t num_classes);  // i64 result

// --- joining and splitting -------------------------------------------------------------------
Tensor cat(const std::vector<Tensor>& xs, int64_t dim = 0);
Tensor stack(const std::vector<Tensor>& xs, int64_t dim = 0);
std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim = 0);
std::vector<Tensor> split_sizes(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim = 0);
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim = 0);
// Constant padding; pads = {last_lo, last_hi, second_last_lo, second_last_hi, ...}.
Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, double value = 0.0);

// --- training helpers ------------------------------------------------------------------------
// Zeroes each element with probability p and scales survivors by 1/(1-p); identity when
// !training or p == 0.
Tensor dropout(const Tensor& x, double p, bool training = true, Generator* gen = nullptr);

// --- value checks on devices ---------------------------------------------------------------
// Checks of tensor *values* (class indices of cross_entropy, nll_loss and the hierarchical
// softmax lying in [0, C)) need those values on the host. On the CPU they run at once. On
// any other device (cuda:N, and the stand-in fake:N, so CI runs this path) the op computes the
// check on the device and queues it, so the training step has no host synchronisation; the
// queue is read, and the first failed check thrown as the ember::Error the op would have
// thrown, when this function is called, on any item()/to_vector() of a non-CPU tensor (which
// synchronises anyway), and when more than 256 checks are pending. Call it where a step ends
// if you want bad data to stop the step it came from.
void check_deferred_errors();
// How many value checks are queued on this thread.
int64_t pending_deferred_checks();

// --- comparison helpers (no autograd) --------------------------------------------------------
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8);
bool equal(const Tensor& a, const Tensor& b);  // same shape and values

}  // namespace ember
