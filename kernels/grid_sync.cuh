// A split-phase grid-wide barrier for cooperative launches (every CTA resident at once), with
// its non-portable pieces (the gpu-scope acquire load, the fence, the atomic arrival) in one
// place so that the host emulation can replace them, as kernels/mma.cuh does for the tensor-core
// primitives (docs/kernel-emulation.md, "Cooperative launches").
//
// The barrier is a 32-bit arrival counter in global memory, zeroed before the launch and never
// reset during it: the k-th barrier of the kernel waits until the counter reaches k * gridDim.x,
// so the counter's value is the generation and no sense flag is needed. Arrive and wait are
// separate so that a CTA can issue work nobody else reads (output stores, the next step's loads)
// while the slowest CTA catches up. The launch must be cooperative: a spin over CTAs that are
// not resident would never end.
#pragma once
#ifndef EMBER_KERNEL_EMULATION
#include <cuda_runtime.h>
#endif

namespace ember::cuda::grid_sync {

// The counter's value, with acquire semantics at gpu scope: every store another CTA made before
// its release (fence + arrival) is visible to this thread afterwards. Under the emulation this is
// also where a spinning thread yields: a thread that reads an unchanged value again waits until
// some other thread changes it (docs/kernel-emulation.md).
__device__ __forceinline__ unsigned load_acquire(const unsigned* p) {
#ifdef EMBER_KERNEL_EMULATION
  return ::ember::emu::load_acquire(p);
#else
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
#endif
}

// Called by every thread after its stores that other CTAs read; thread 0 announces the CTA
// (the fence makes the CTA's stores, ordered before it by __syncthreads, visible at gpu scope
// before the arrival).
__device__ __forceinline__ void arrive(unsigned* counter) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(counter, 1u);
  }
}

// Returns once `target` arrivals are counted; afterwards every thread of the CTA may read what
// the other CTAs stored before they arrived.
__device__ __forceinline__ void wait(const unsigned* counter, unsigned target) {
  if (threadIdx.x == 0) {
    while (load_acquire(counter) < target) {
    }
  }
  __syncthreads();
}

}  // namespace ember::cuda::grid_sync
