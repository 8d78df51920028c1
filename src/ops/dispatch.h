// The one place ops pick a backend: every primitive below runs on the device of its tensors
// (callers have checked that they agree). Signatures and contracts are those of src/cpu/cpu.h;
// the CUDA backend (src/cuda/cuda_backend.h) implements the same set.
#pragma once
#include "ember/core/tensor.h"
#include "ops/elementwise_math.h"
#include "ops/kinds.h"

// EMBER_BACKEND_CALL(t, f(args)): runs cuda::f(args) when t is on a GPU, else cpu::f(args)
// (the CPU and the stand-in device fake:N: host memory, the CPU backend's kernels); for files
// whose primitives live outside cpu.h / cuda_backend.h (norm, loss). Without the CUDA backend a
// GPU tensor cannot exist (allocation fails first), so the CPU call is checked.
#ifdef EMBER_WITH_CUDA
#define EMBER_BACKEND_CALL(t, call) \
  do {                              \
    if ((t).device().is_cuda()) {   \
      cuda::call;                   \
    } else {                        \
      cpu::call;                    \
    }                               \
  } while (0)
#else
#define EMBER_BACKEND_CALL(t, call)                                                          \
  do {                                                                                       \
    EMBER_CHECK((t).device().is_host_memory(), "backend", "tensor on ", (t).device(),        \
                " but this build of ember has no CUDA backend (configure with EMBER_CUDA=ON)"); \
    cpu::call;                                                                               \
  } while (0)
#endif

namespace ember::backend {

// The dtype a backend computes a dtype in: the CPU widens f16/bf16 to f32; CUDA kernels
// load and store them directly (accumulating in f32).
DType compute_dtype_on(DType t, Device d);

// dst = convert(src): same shape; src may be broadcast. Crosses devices when src and dst
// live on different ones (then via a contiguous staging copy where needed).
void copy(const Tensor& src, const Tensor& dst);
void fill(const Tensor& dst, double value);
void unary(UnaryOp op, const Tensor& x, const Tensor& out, UnaryArgs args);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, double alpha);
void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out);
void reduce_rows(ReduceOp op, const Tensor& x, const Tensor& out, int64_t M, int64_t R);
void sum_cols(const Tensor& x, const Tensor& out, int64_t R, int64_t M);
void arg_reduce_rows(bool is_max, const Tensor& x, const Tensor& values, const Tensor& indices,
                     int64_t M, int64_t R);
void softmax_rows(bool log, const Tensor& x, const Tensor& out, int64_t M, int64_t R);
void bmm(const Tensor& a, const Tensor& b, const Tensor& out, const Tensor& bias = Tensor());
void gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
void scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);
void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, double alpha);
void one_hot(const Tensor& index, const Tensor& out, int64_t classes);
void random_fill(RandomKind kind, const Tensor& out, uint64_t seed, uint64_t offset, double a, double b);

}  // namespace ember::backend
