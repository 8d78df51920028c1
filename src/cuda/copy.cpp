// The CUDA side of copies that cross devices (host<->CUDA, GPU<->GPU), page-locked host
// memory, and the asynchronous copy of ember/cuda.h. The staging of strided or converting
// copies is device-independent and lives in backend::copy (src/ops/dispatch.cpp); this file
// only moves the bytes of two contiguous tensors of one dtype.
#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "cuda/runtime.h"
#include "ember/core/allocator.h"
#include "ember/core/error.h"
#include "ember/cuda.h"

namespace ember::cuda {
namespace {

// "(2, 3) f32 cuda:0"
std::string describe(const Tensor& t) {
  return detail::cat(shape_str(t.shape()), " ", dtype_name(t.dtype()), " ", t.device().str());
}

size_t nbytes_of(const Tensor& t) { return static_cast<size_t>(t.numel()) * t.element_size(); }

class PinnedAllocator final : public DeviceAllocator {
 public:
  void* allocate(size_t nbytes, Device device) override {
    EMBER_CHECK(device.is_cpu(), "pin_memory", "page-locked memory is host memory, not ", device.str());
    if (nbytes == 0) return nullptr;  // as the caching allocator: no driver call
    void* p = nullptr;
    cudaError_t err = cudaHostAlloc(&p, nbytes, cudaHostAllocDefault);
    if (err != cudaSuccess) {
      cudaGetLastError();
      EMBER_FAIL("pin_memory", "cudaHostAlloc of ", nbytes, " bytes (", static_cast<double>(nbytes) / (1 << 20),
                 " MiB) of page-locked host memory failed: ", cudaGetErrorName(err), " (",
                 cudaGetErrorString(err), ")");
    }
    return p;
  }
  void deallocate(void* ptr, size_t, Device) noexcept override {
    // Callers of copy_async keep a pinned tensor alive until its stream is synchronised.
    if (ptr != nullptr && cudaFreeHost(ptr) != cudaSuccess) cudaGetLastError();  // e.g. at exit
  }
};

// Disable-timing events for ordering two devices' streams; destroyed even when a check throws
// (destroying a pending event is allowed).
struct OrderEvent {
  cudaEvent_t e = nullptr;
  explicit OrderEvent(int device) {
    DeviceGuard guard(device);
    EMBER_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  }
  ~OrderEvent() {
    if (e && cudaEventDestroy(e) != cudaSuccess) cudaGetLastError();
  }
  OrderEvent(const OrderEvent&) = delete;
  OrderEvent& operator=(const OrderEvent&) = delete;
};

}  // namespace

void copy_bytes_across(const Tensor& src, const Tensor& dst) {
  const size_t bytes = nbytes_of(src);
  if (bytes == 0) return;
  const Device sd = src.device(), dd = dst.device();
  if (sd.is_cuda()) checked_device(sd.index, "copy");
  if (dd.is_cuda()) checked_device(dd.index, "copy");
  if (sd.is_host_memory() && dd.is_cuda()) {
    DeviceGuard guard(dd.index);
    cudaStream_t stream = current_stream(dd.index);
    EMBER_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), bytes, cudaMemcpyHostToDevice, stream));
    // From pageable memory the call returns once the bytes are staged, so the host buffer is
    // free again. From pinned memory the DMA may still be reading it: wait, because this is
    // the blocking copy (copy_async is the one that does not wait).
    if (is_pinned(src)) EMBER_CUDA_CHECK(cudaStreamSynchronize(stream));
  } else if (sd.is_cuda() && dd.is_host_memory()) {
    DeviceGuard guard(sd.index);
    cudaStream_t stream = current_stream(sd.index);
    EMBER_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), bytes, cudaMemcpyDeviceToHost, stream));
    EMBER_CUDA_CHECK(cudaStreamSynchronize(stream));  // the host may read dst right away
  } else if (sd.is_cuda() && dd.is_cuda()) {
    // The copy runs on the source's stream, after the destination's stream has finished what it
    // queued (it may still use dst's memory), and the destination's stream waits for the copy.
    // Each buffer is then only touched in the order of the stream its block belongs to, which
    // is what the caching allocator relies on when it reuses blocks.
    cudaStream_t s_stream = current_stream(sd.index), d_stream = current_stream(dd.index);
    OrderEvent dst_ready(dd.index), copied(sd.index);
    {
      DeviceGuard guard(dd.index);
      EMBER_CUDA_CHECK(cudaEventRecord(dst_ready.e, d_stream));
    }
    {
      DeviceGuard guard(sd.index);
      EMBER_CUDA_CHECK(cudaStreamWaitEvent(s_stream, dst_ready.e, 0));
      // Works with or without peer access (without it the driver stages through the host).
      EMBER_CUDA_CHECK(cudaMemcpyPeerAsync(dst.data_ptr(), dd.index, src.data_ptr(), sd.index, bytes, s_stream));
      EMBER_CUDA_CHECK(cudaEventRecord(copied.e, s_stream));
    }
    DeviceGuard guard(dd.index);
    EMBER_CUDA_CHECK(cudaStreamWaitEvent(d_stream, copied.e, 0));
  } else {
    EMBER_FAIL("copy", "internal: copy_bytes_across between ", sd.str(), " and ", dd.str());
  }
}

DeviceAllocator& pinned_allocator() {
  static PinnedAllocator* a = new PinnedAllocator();  // never destroyed, like the caching one
  return *a;
}

// --- public: pinned memory and async copies ---------------------------------------------------

Tensor pin_memory(const Tensor& t) {
  EMBER_CHECK(t.defined(), "pin_memory", "undefined tensor");
  EMBER_CHECK(t.device().is_cpu(), "pin_memory", "only CPU tensors can be pinned, got ", describe(t));
  EMBER_CHECK(is_available(), "pin_memory", "page-locked memory needs a CUDA device and none is visible");
  if (is_pinned(t) && t.is_contiguous()) return t;
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(nbytes_of(t), Device::cpu(), &pinned_allocator());
  impl->shape = t.shape();
  impl->strides = contiguous_strides(t.shape());
  impl->dtype = t.dtype();
  Tensor out(impl);
  if (out.numel() > 0) out.copy_(t.detach());  // CPU to CPU: values and layout
  return out;
}

bool is_pinned(const Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.impl().storage->allocator() == &pinned_allocator();
}

void copy_async(const Tensor& src, const Tensor& dst) {
  EMBER_CHECK(src.defined() && dst.defined(), "copy_async", "needs two defined tensors");
  const Device sd = src.device(), dd = dst.device();
  EMBER_CHECK((sd.is_cpu() && dd.is_cuda()) || (sd.is_cuda() && dd.is_cpu()), "copy_async",
              "copies between the CPU and a CUDA device, got ", describe(src), " -> ", describe(dst));
  EMBER_CHECK(src.shape() == dst.shape() && src.dtype() == dst.dtype(), "copy_async",
              "source and destination need the same shape and dtype, got ", describe(src), " -> ", describe(dst));
  EMBER_CHECK(src.is_contiguous() && dst.is_contiguous(), "copy_async", "both tensors must be contiguous, got ",
              describe(src), src.is_contiguous() ? "" : " (not contiguous)", " -> ", describe(dst),
              dst.is_contiguous() ? "" : " (not contiguous)");
  const int dev = checked_device(sd.is_cuda() ? sd.index : dd.index, "copy_async");
  const size_t bytes = nbytes_of(src);
  if (bytes > 0) {
    DeviceGuard guard(dev);
    EMBER_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), bytes,
                                     sd.is_cpu() ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost,
                                     current_stream(dev)));
  }
  dst.impl().storage->bump_version();  // an in-place write, as far as autograd is concerned
}

}  // namespace ember::cuda
