// Where an op reaches a kernel: backend::call<prim::NAME>(device, args...) runs the kernel of
// primitive NAME (src/prim/primitives.h) that the backend of `device` registered. The caller
// (an op) has checked the arguments and put every tensor on `device`. Also here: the dtype a
// backend computes in, and the device-independent staging of copies across devices.
#pragma once
#include <functional>
#include <type_traits>
#include <utility>
#include <vector>

#include "ember/core/tensor.h"
#include "ember/ops/observe.h"
#include "prim/primitives.h"
#include "prim/registry.h"

namespace ember::backend {

// Registers every backend built into this library (kernels and device allocators), once;
// thread-safe. backend::call does it on first use; make_tensor before a device allocation.
void load_backends();
[[noreturn]] void no_kernel(const char* primitive, Device device);

template <class P>
typename P::Fn& kernel(Device device) {
  typename P::Fn* fn = prim::find<P>(prim::backend_of(device));
  if (fn == nullptr) [[unlikely]] {
    load_backends();
    fn = prim::find<P>(prim::backend_of(device));
    if (fn == nullptr) no_kernel(P::name, device);
  }
  return *fn;
}

// The observer installed on this thread (ember/ops/observe.h: ObserveKernels), or null; read
// inline by every call below.
inline thread_local KernelObserver* t_kernel_observer = nullptr;

// While this thread captures a graph on the stand-in device (ember/cuda_graph.h), the kernels
// it calls there are recorded here instead of run, and a replay runs the record: what a CUDA
// graph does, so host code in a captured step runs once on both devices.
inline thread_local std::vector<std::function<void()>>* t_kernel_recording = nullptr;

namespace detail {
template <class A>
void collect_tensor(std::vector<Tensor>& out, const A& a) {
  if constexpr (std::is_same_v<std::decay_t<A>, Tensor>)
    if (a.defined()) out.push_back(a);
}
}  // namespace detail

template <class P, class... Args>
void call(Device device, Args&&... args) {
  typename P::Fn& fn = kernel<P>(device);
  if (std::vector<std::function<void()>>* rec = t_kernel_recording; rec != nullptr && device.is_fake()) [[unlikely]] {
    rec->push_back([&fn, ... a = std::decay_t<Args>(args)] { fn(a...); });
    return;
  }
  if (KernelObserver* obs = t_kernel_observer; obs != nullptr) [[unlikely]] {
    KernelCall c{P::name, device, {}};
    (detail::collect_tensor(c.tensors, args), ...);
    obs->before(c);
    fn(std::forward<Args>(args)...);
    obs->after(c);
    return;
  }
  fn(std::forward<Args>(args)...);
}

// The dtype a backend computes a dtype in: the CPU widens f16/bf16 to f32; CUDA kernels
// load and store them directly (accumulating in f32).
DType compute_dtype_on(DType t, Device d);

// dst = convert(src): same shape; src may be broadcast. Crosses devices when src and dst
// live on different ones (then via a contiguous staging copy where needed).
void copy(const Tensor& src, const Tensor& dst);

}  // namespace ember::backend
