// The Hopper (sm_90a) primitives of kernels/sm90/sm90_ops.cuh for the host emulation: mbarrier,
// TMA tiled tensor loads (cuTensorMapEncodeTiled's parameters kept in the opaque CUtensorMap),
// wgmma.mma_async from shared-memory descriptors with its fence / commit_group / wait_group,
// setmaxnreg, and a launcher whose blocks may wait on mbarriers across threads. Built on the
// emulation runtime (../emu_runtime.h): its fibers, dynamic shared memory and faults.
//
// Every rule is taken from the PTX ISA (emu_sm90.cpp names the section of each; numbers, where
// given, as in PTX ISA 8.x) or the CUDA driver API reference of cuTensorMapEncodeTiled, never from
// a kernel.
//
// Scheduling. The runtime's threads only give up the processor in a barrier, so a thread that
// waits on an mbarrier (or sits in __syncthreads, or has exited while others still run) takes
// part in block-wide rounds of the runtime's block barrier until its condition holds: a round
// ends when every thread of the block is waiting, exited or blocked, and the threads that can go
// on do so in the next. A wait that sees no change in any mbarrier, copy or barrier for several
// rounds is a deadlock and fails the launch, naming the barrier. __syncthreads is redefined here
// (a counting barrier over the threads that have not exited) so that it cannot be satisfied by
// those rounds; include this header only in files whose kernels are started with launch_sm90.
//
// Asynchrony is emulated at the latest moment a correct program may rely on it, so that a kernel
// that relies on it earlier reads stale shared memory or registers and fails its test:
//   - a TMA load's shared-memory writes and its complete_tx happen when some thread next waits on
//     its mbarrier (no earlier), or, with tma_timing kAtIssue, at once (see TmaTiming);
//   - a wgmma reads its shared-memory operands and updates its accumulators when the issuing
//     thread's wgmma.wait_group retires its group (no earlier).
#pragma once
#include <cuda.h>  // CUtensorMap and the tensor-map enums (declarations only)

#include <cstddef>
#include <cstdint>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "emu_runtime.h"

// The host compiler would see the toolkit's `__grid_constant__` attribute and warn.
#undef __grid_constant__
#define __grid_constant__

namespace ember::emu::sm90 {

// Deliberate faults for the tests that show a wrong layout fails them (never set otherwise).
enum class Fault {
  kNone,
  kTmaNoSwizzle,     // TMA writes its boxes unswizzled (wgmma still decodes 128-byte swizzle)
  kMnMajorLboSbo,    // wgmma reads an MN-major operand's leading and stride byte offsets swapped
  kAccumulatorRows,  // the accumulator fragment exchanges rows g and g + 8
};
extern Fault injected_fault;

// When a TMA load lands in shared memory. A correct kernel works with both; each catches a
// different mistake:
//   kAtWait: when some thread next waits on its mbarrier (the latest moment a correct program may
//     rely on) -- shows a consumer that reads a stage without waiting for it;
//   kAtIssue: at once -- shows a stage released (and refilled) while a wgmma that reads it is
//     still in flight, since wgmma reads its operands at the latest moment, its wait_group.
enum class TmaTiming { kAtWait, kAtIssue };
extern TmaTiming tma_timing;

// ---- shared memory ------------------------------------------------------------------------------
// The shared window seen by smem_u32: byte offsets from the test's dynamic shared array plus
// kWindowOffset, so that the kernel's own alignment of its buffers is exercised (on the GPU the
// dynamic array need not start at a 1024-byte boundary either). Addresses fit the 18 bits of a
// wgmma descriptor's start address.
constexpr uint32_t kWindowOffset = 384;
bool register_shared_window(unsigned char* (*array)());
uint32_t shared_address(const void* p);
unsigned char* shared_pointer(uint32_t address, size_t bytes);

// ---- the launcher -----------------------------------------------------------------------------
// Runs `body` as every thread of every block (see Scheduling above).
void launch_body(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body);
void syncthreads();

template <class... P, class... A>
void launch_sm90(dim3 grid, dim3 block, size_t smem_bytes, void (*kernel)(P...), A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "launch_sm90: argument count differs from the kernel's");
  const std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  launch_body(grid, block, smem_bytes, [&] { std::apply(kernel, params); });
}

// ---- cuTensorMapEncodeTiled -----------------------------------------------------------------------
// The driver's checks (CUDA driver API, cuTensorMapEncodeTiled) and the parameters, stored in the
// CUtensorMap. Returns CUDA_ERROR_INVALID_VALUE where the driver documents a requirement that the
// arguments break, and also for options this emulation does not implement (interleave, swizzle
// modes other than none and 128B, element strides other than 1, NaN fill, packed types).
CUresult encode_tiled(CUtensorMap* map, CUtensorMapDataType dtype, cuuint32_t rank, void* address,
                      const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                      const cuuint32_t* elem_strides, CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
                      CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob);

// ---- the primitives -----------------------------------------------------------------------------
void mbar_init(uint64_t* bar, uint32_t count);
void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes);
void mbar_arrive(uint64_t* bar);
void mbar_wait(uint64_t* bar, uint32_t parity);
void tma_load_3d(void* dst, const CUtensorMap* map, uint64_t* bar, int c0, int c1, int c2);
void setmaxnreg(int regs);
void wgmma_fence();
void wgmma_commit_group();
void wgmma_wait_group(int pending);
// One wgmma.mma_async.m64nNk16.f32.{f16,bf16}: queued until a wait_group retires its group.
void wgmma(float* d, int n, bool bf16, uint64_t desc_a, uint64_t desc_b, int accumulate, int trans_a, int trans_b);

// The same 18-bit shared address computation as the real descriptor (for tests of the decoder).
struct Descriptor {
  uint32_t start, lbo, sbo, base_offset, swizzle;
};
Descriptor decode_descriptor(uint64_t desc);
// Byte address in the shared window of element (mn, k) of a 16-bit operand described by `desc`,
// K-major (trans 0) or MN-major (trans 1), after the 128-byte swizzle.
uint32_t operand_address(uint64_t desc, int trans, int mn, int k);

}  // namespace ember::emu::sm90

// __syncthreads as a barrier that the rounds of waiting threads cannot satisfy.
#define __syncthreads() ::ember::emu::sm90::syncthreads()

// Defines the dynamic shared array (EMBER_EMU_DYNAMIC_SHARED) and makes it the shared window.
#define EMBER_EMU_SM90_DYNAMIC_SHARED(NS, NAME)                        \
  EMBER_EMU_DYNAMIC_SHARED(NS, NAME);                                  \
  static const bool EMBER_EMU_CONCAT(ember_emu_sm90_window_, __COUNTER__) = \
      ::ember::emu::sm90::register_shared_window([]() -> unsigned char* { return NS::NAME; })

// kernels/sm90/sm90_ops.cuh's names, as the kernels call them.
namespace ember::cuda::sm90 {

inline uint32_t smem_u32(const void* p) { return ember::emu::sm90::shared_address(p); }
inline void mbar_init(uint64_t* bar, uint32_t count) { ember::emu::sm90::mbar_init(bar, count); }
// The ISA requires it before the async proxy uses the barriers; nothing to emulate on one CTA.
inline void fence_mbarrier_init() {}
inline void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  ember::emu::sm90::mbar_arrive_expect_tx(bar, bytes);
}
inline void mbar_arrive(uint64_t* bar) { ember::emu::sm90::mbar_arrive(bar); }
inline void mbar_wait(uint64_t* bar, uint32_t parity) { ember::emu::sm90::mbar_wait(bar, parity); }
inline void tma_load_3d(void* dst, const CUtensorMap* map, uint64_t* bar, int c0, int c1, int c2) {
  ember::emu::sm90::tma_load_3d(dst, map, bar, c0, c1, c2);
}
template <int kRegs>
void setmaxnreg_dec() {
  ember::emu::sm90::setmaxnreg(kRegs);
}
template <int kRegs>
void setmaxnreg_inc() {
  ember::emu::sm90::setmaxnreg(kRegs);
}
inline void wgmma_fence() { ember::emu::sm90::wgmma_fence(); }
inline void wgmma_commit_group() { ember::emu::sm90::wgmma_commit_group(); }
template <int kPending>
void wgmma_wait_group() {
  ember::emu::sm90::wgmma_wait_group(kPending);
}
// The accumulators live in memory here; the compiler cannot move them across the calls above.
template <int R>
void fence_regs(float (&)[R]) {}

#define EMBER_EMU_SM90_WGMMA(N, AB, BF16)                                                                     \
  template <int kTransA, int kTransB>                                                                         \
  void wgmma_m64n##N##k16_##AB(float(&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int accumulate) {          \
    ember::emu::sm90::wgmma(d, N, BF16, desc_a, desc_b, accumulate, kTransA, kTransB);                          \
  }
EMBER_EMU_SM90_WGMMA(128, f16, false)
EMBER_EMU_SM90_WGMMA(128, bf16, true)
EMBER_EMU_SM90_WGMMA(256, f16, false)
EMBER_EMU_SM90_WGMMA(256, bf16, true)
#undef EMBER_EMU_SM90_WGMMA

}  // namespace ember::cuda::sm90
