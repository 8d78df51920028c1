#include "ops/dispatch.h"

#include "cpu/cpu.h"
#include "ember/core/error.h"
#ifdef EMBER_WITH_CUDA
#include "cuda/cuda_backend.h"
#endif

#ifdef EMBER_WITH_CUDA
#include "cuda/runtime.h"
#include "ember/core/allocator.h"
#endif

namespace ember::backend {

#ifdef EMBER_WITH_CUDA
// Registered during static initialisation: this file is always linked (every op calls it),
// so CUDA storage works before any kernel has run.
namespace {
const bool kCudaAllocatorRegistered = [] {
  set_device_allocator(DeviceType::cuda, &cuda::caching_allocator());
  return true;
}();
}  // namespace
#endif

#define EMBER_ON(t, call) EMBER_BACKEND_CALL(t, call)

DType compute_dtype_on(DType t, Device d) { return d.is_cuda() ? t : compute_dtype(t); }

void copy(const Tensor& src, const Tensor& dst) {
  if (src.device() == dst.device()) {
    EMBER_ON(dst, copy(src, dst));
    return;
  }
#ifdef EMBER_WITH_CUDA
  cuda::copy_across_devices(src, dst);
#else
  EMBER_FAIL("copy", "cannot copy from ", src.device(), " to ", dst.device(),
             ": this build of ember has no CUDA backend");
#endif
}

void fill(const Tensor& dst, double value) { EMBER_ON(dst, fill(dst, value)); }
void unary(UnaryOp op, const Tensor& x, const Tensor& out, UnaryArgs args) { EMBER_ON(out, unary(op, x, out, args)); }
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, double alpha) {
  EMBER_ON(out, binary(op, a, b, out, alpha));
}
void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) { EMBER_ON(out, where(cond, a, b, out)); }
void reduce_rows(ReduceOp op, const Tensor& x, const Tensor& out, int64_t M, int64_t R) {
  EMBER_ON(out, reduce_rows(op, x, out, M, R));
}
void sum_cols(const Tensor& x, const Tensor& out, int64_t R, int64_t M) { EMBER_ON(out, sum_cols(x, out, R, M)); }
void arg_reduce_rows(bool is_max, const Tensor& x, const Tensor& values, const Tensor& indices, int64_t M, int64_t R) {
  EMBER_ON(values, arg_reduce_rows(is_max, x, values, indices, M, R));
}
void softmax_rows(bool log, const Tensor& x, const Tensor& out, int64_t M, int64_t R) {
  EMBER_ON(out, softmax_rows(log, x, out, M, R));
}
void bmm(const Tensor& a, const Tensor& b, const Tensor& out, const Tensor& bias) {
  EMBER_ON(out, bmm(a, b, out, bias));
}
void gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  EMBER_ON(out, gather(x, dim, index, out));
}
void scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  EMBER_ON(out, scatter_add(out, dim, index, src));
}
void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  EMBER_ON(out, index_select(x, dim, index, out));
}
void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, double alpha) {
  EMBER_ON(out, index_add(out, dim, index, src, alpha));
}
void one_hot(const Tensor& index, const Tensor& out, int64_t classes) { EMBER_ON(out, one_hot(index, out, classes)); }
void random_fill(RandomKind kind, const Tensor& out, uint64_t seed, uint64_t offset, double a, double b) {
  EMBER_ON(out, random_fill(kind, out, seed, offset, a, b));
}

}  // namespace ember::backend
