#include "ops/dispatch.h"

#include <cstring>
#include <optional>

#include "cpu/cpu.h"
#include "ember/core/error.h"
#include "ember/cuda.h"
#include "ember/ops/ops.h"
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

namespace {
// Moves the bytes of contiguous src into contiguous dst: same dtype and numel, two devices.
void move_bytes(const Tensor& src, const Tensor& dst) {
  if (src.device().is_host_memory() && dst.device().is_host_memory()) {  // cpu <-> fake, fake:i <-> fake:j
    const size_t bytes = static_cast<size_t>(src.numel()) * src.element_size();
    if (bytes > 0) std::memcpy(dst.data_ptr(), src.data_ptr(), bytes);
    return;
  }
#ifdef EMBER_WITH_CUDA
  cuda::copy_bytes_across(src, dst);
#else
  EMBER_FAIL("copy", "cannot copy from ", src.device(), " to ", dst.device(),
             ": this build of ember has no CUDA backend (configure with EMBER_CUDA=ON)");
#endif
}

// Makes `d`'s GPU current within the scope when d is a CUDA device (temporaries made for a
// staged copy then land on the right GPU).
struct OnDevice {
  std::optional<cuda::DeviceGuard> guard;
  explicit OnDevice(Device d) {
    if (d.is_cuda()) guard.emplace(d.index);
  }
};
}  // namespace

// Across devices only raw bytes of contiguous same-dtype tensors move (move_bytes); any other
// pair is staged: the source is made contiguous on its own device (converting the dtype there
// first when that shrinks the transfer), the bytes cross, and the destination device converts
// and scatters into the real destination with its own copy kernel. The staging is the same for
// every pair of devices, so the stand-in device (fake:N) tests it on machines without a GPU.
void copy(const Tensor& src, const Tensor& dst) {
  const Device sd = src.device(), dd = dst.device();
  if (sd == dd) {
    EMBER_ON(dst, copy(src, dst));
    return;
  }
  EMBER_CHECK(src.shape() == dst.shape(), "copy", "cannot copy ", shape_str(src.shape()), " ",
              dtype_name(src.dtype()), " ", sd, " into ", shape_str(dst.shape()), " ", dtype_name(dst.dtype()), " ",
              dd, ": shapes differ");
  if (dst.numel() == 0) return;
  if (src.is_contiguous() && dst.is_contiguous() && src.dtype() == dst.dtype()) {
    move_bytes(src, dst);
    return;
  }
  // 1. A contiguous source on its own device, converted there when the destination dtype is
  //    narrower (fewer bytes to move). detach(): backend temporaries, not ops to record.
  Tensor staged = src.detach();
  {
    OnDevice on(sd);
    staged = dtype_size(dst.dtype()) < dtype_size(src.dtype()) ? to_dtype(staged, dst.dtype()) : contiguous(staged);
  }
  // 2. Across, into dst itself when it can take the bytes as they are.
  const bool direct = dst.is_contiguous() && dst.dtype() == staged.dtype();
  Tensor landing = direct ? dst : empty(dst.shape(), TensorOptions().with_dtype(staged.dtype()).with_device(dd));
  move_bytes(staged, landing);
  // 3. Convert and scatter on the destination.
  if (!direct) {
    OnDevice on(dd);
    EMBER_ON(dst, copy(landing, dst));
  }
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
