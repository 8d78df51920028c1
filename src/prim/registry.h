// The kernel table: one slot per (primitive, backend). Each backend fills its slots once
// (cpu::register_kernels in src/cpu/kernels.cpp, cuda::register_kernels in
// src/cuda/kernels.cpp); the op layer reads them through backend::call (src/ops/dispatch.h),
// which loads the backends on first use. A slot is an atomic pointer, so a lookup is one load
// and a branch.
#pragma once
#include <atomic>
#include <cstdint>

#include "ember/core/device.h"

namespace ember::prim {

enum class Backend : uint8_t { cpu, cuda };
inline constexpr int kBackendCount = 2;

// The backend that runs a device's kernels: the CPU backend for `cpu` and the stand-in
// `fake:N` (host memory), the CUDA backend for `cuda:N`.
inline Backend backend_of(Device d) { return d.is_cuda() ? Backend::cuda : Backend::cpu; }
inline const char* backend_name(Backend b) { return b == Backend::cuda ? "CUDA" : "CPU"; }

template <class P>
struct Kernels {
  static std::atomic<typename P::Fn*> slot[kBackendCount];
};
// Constant-initialised to null (one definition per primitive across the library: a template's).
template <class P>
std::atomic<typename P::Fn*> Kernels<P>::slot[kBackendCount] = {};

// Registers backend b's kernel for primitive P (a later call replaces it).
template <class P>
void define(Backend b, typename P::Fn* fn) {
  Kernels<P>::slot[static_cast<int>(b)].store(fn, std::memory_order_release);
}

// Backend b's kernel for P, or null when it has none (yet).
template <class P>
typename P::Fn* find(Backend b) {
  return Kernels<P>::slot[static_cast<int>(b)].load(std::memory_order_acquire);
}

}  // namespace ember::prim
