// The Hopper device primitives of the sm_90a kernels: mbarrier, TMA tensor loads, fences, register
// reallocation and the wgmma wrappers (wgmma_ops.cuh, generated). Compiled by nvcc for sm_90a
// they are inline PTX; with EMBER_KERNEL_EMULATION they come from the host emulation
// (tests/emu/sm90/emu_sm90.h), which implements the same names and signatures from the PTX ISA,
// so the kernels' own logic (descriptors, schedules, epilogues) runs unchanged on a CPU.
//
// EMBER_SM90_DEVICE_CODE is 1 where a kernel body may use these functions: the sm_90a device
// pass, or the emulation. Elsewhere (nvcc's host pass, other architectures) the kernel bodies are
// compiled out.
#pragma once
#include <cstdint>

#if defined(EMBER_KERNEL_EMULATION)

#include "sm90/emu_sm90.h"
#define EMBER_SM90_DEVICE_CODE 1

#else

#include <cuda.h>  // CUtensorMap

#include "wgmma_ops.cuh"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define EMBER_SM90_DEVICE_CODE 1
#else
#define EMBER_SM90_DEVICE_CODE 0
#endif

namespace ember::cuda::sm90 {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- mbarrier (a 64-bit object in shared memory) ----
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}
// Makes the initialised barriers visible to the async proxy (TMA) and the other threads.
__device__ __forceinline__ void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
// Waits until the phase with the given parity has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n"
      "}\n" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
}

// ---- TMA: one box of a 3-D tensor map into shared memory, completion on `bar` ----
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, uint64_t* bar, int c0, int c1, int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::"
      "bytes [%0], [%1, {%3, %4, %5}], [%2];\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
}

// ---- register reallocation (the whole warpgroup executes it) ----
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

// ---- wgmma ordering ----
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit_group() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wgmma_wait_group() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Keeps the compiler from moving accumulator reads/writes across the asynchronous wgmma.
template <int R>
__device__ __forceinline__ void fence_regs(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

}  // namespace ember::cuda::sm90

#endif  // EMBER_KERNEL_EMULATION
