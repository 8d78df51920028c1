#include "ops/dispatch.h"

#include <cstring>
#include <mutex>
#include <optional>

#include "core/capture.h"
#include "cpu/kernels.h"
#include "ember/core/error.h"
#include "ember/cuda.h"
#include "ember/ops/ops.h"
#ifdef EMBER_WITH_CUDA
#include "cuda/kernels.h"
#include "cuda/runtime.h"
#endif

namespace ember::backend {

void load_backends() {
  static std::once_flag once;
  std::call_once(once, [] {
    cpu::register_kernels();
#ifdef EMBER_WITH_CUDA
    cuda::register_backend();  // its kernels and the caching allocator of cuda:N storage
#endif
  });
}

void no_kernel(const char* primitive, Device device) {
#ifdef EMBER_WITH_CUDA
  EMBER_FAIL(primitive, "the ", prim::backend_name(prim::backend_of(device)), " backend has no kernel for ",
             primitive, " (tensors on ", device, ")");
#else
  EMBER_FAIL(primitive, "tensors on ", device, " but this build of ember has no ",
             prim::backend_name(prim::backend_of(device)),
             " backend (configure with EMBER_CUDA=ON where nvcc is installed)");
#endif
}


DType compute_dtype_on(DType t, Device d) { return d.is_cuda() ? t : compute_dtype(t); }

namespace {
// Moves the bytes of contiguous src into contiguous dst: same dtype and numel, two devices.
void move_bytes(const Tensor& src, const Tensor& dst) {
  if (src.device().is_host_memory() && dst.device().is_host_memory()) {  // cpu <-> fake, fake:i <-> fake:j
    const size_t bytes = static_cast<size_t>(src.numel()) * src.element_size();
    if (bytes == 0) return;
    if (t_kernel_recording != nullptr && src.device().is_fake() && dst.device().is_fake()) {  // fake:i -> fake:j
      t_kernel_recording->push_back([src, dst, bytes] { std::memcpy(dst.data_ptr(), src.data_ptr(), bytes); });
      return;
    }
    std::memcpy(dst.data_ptr(), src.data_ptr(), bytes);
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
    call<prim::copy>(dd, src, dst);
    return;
  }
  // Host <-> device inside a graph capture: a read needs the host to wait for the device, and a
  // replayed write would read host memory that is gone by then.
  if (sd.is_cpu() != dd.is_cpu())
    ember::detail::check_not_capturing("copy", sd.is_cpu() ? "copying host memory to the device"
                                                    : "reading a device tensor on the host (item, to_vector, .to(cpu))");
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
    call<prim::copy>(dd, landing, dst);
  }
}

}  // namespace ember::backend

namespace ember {

ObserveKernels::ObserveKernels(KernelObserver& observer) : previous_(backend::t_kernel_observer) {
  backend::t_kernel_observer = &observer;
}
ObserveKernels::~ObserveKernels() { backend::t_kernel_observer = previous_; }

}  // namespace ember
