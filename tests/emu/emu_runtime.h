// A host emulation of the CUDA execution model, enough to run ember's warp-level tensor-core
// kernels (kernels/conv_mma.cuh, gemm_mma.cuh, attention_mma*.cuh) on a CPU, as ordinary C++
// compiled by the host compiler, so that tests can check them without a GPU
// (docs/kernel-emulation.md).
//
// Model. A launch runs its blocks one after another on the calling thread. The threads of a
// block are fibers (user-level contexts, one stack each) scheduled round robin on that one OS
// thread: a thread runs until it reaches a barrier (__syncthreads) or a warp operation
// (shuffle, ldmatrix, mma), where it waits until every thread the barrier names has arrived.
// Hence:
//   - `__shared__` is `thread_local`: one OS thread runs one block at a time, so a thread-local
//     array is exactly the block's shared array. `extern __shared__` (dynamic shared memory) is
//     a namespace-scope thread-local array that the test defines with EMBER_EMU_DYNAMIC_SHARED.
//   - threadIdx, blockIdx, blockDim and gridDim are thread-local variables that the scheduler
//     sets before it resumes a fiber.
//   - Warp operations exchange each lane's operands through a per-warp table, and every lane of
//     the warp must be in the same operation (otherwise the launch fails naming both).
//   - A block whose threads cannot all progress (a barrier some thread never reaches, a thread
//     that exited while others wait) fails the launch with a deadlock report, as does any fault
//     a primitive detects (a misaligned ldmatrix row, a cp.async size out of range, ...).
// Failures are thrown from launch() as ember::emu::KernelFault.
//
// Cooperative launches (launch_cooperative) make every block resident at once instead: all
// blocks' fibers are scheduled on the one OS thread, block after block in turn, so a grid-wide
// barrier (kernels/grid_sync.cuh: an atomic arrival counter and an acquire-load spin) works. A
// block's dynamic shared memory is saved and restored when the scheduler turns to another block;
// static `__shared__` arrays are one array for the whole grid there, so a cooperative kernel
// keeps its shared memory in dynamic arrays. A spinning thread (the same word read twice by
// load_acquire with no barrier between, and unchanged) waits until some thread changes the
// word, so a grid whose threads all wait is reported as a deadlock, as a block's is.
//
// Include this header before any kernel header: it includes the CUDA toolkit's host headers
// (dim3, int2, the f16/bf16 types) first and then redefines the CUDA keywords for the host.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

// --- the CUDA keywords on the host -------------------------------------------------------------
// The toolkit's host headers define these for a host compiler too (__shared__ as nothing, which
// would make a shared array a per-thread local); they are redefined here.
#undef __device__
#define __device__
#undef __global__
#define __global__
#undef __forceinline__
#define __forceinline__ inline
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __shared__
#define __shared__ thread_local

namespace ember::emu {

constexpr int kWarpSize = 32;
constexpr size_t kMaxDynamicShared = 227 * 1024;  // sm_90's largest dynamic shared memory per block
constexpr int kExchangeWords = 8;                 // 32-bit words one lane may put into a warp operation

// A fault found while running a kernel (deadlock, divergent warp operation, a misused
// primitive), or an exception a kernel thread threw.
struct KernelFault : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Deliberate faults for the tests that show a wrong kernel fails them (never set otherwise).
enum class Fault {
  kNone,
  kLdmatrixRow,     // ldmatrix hands lane l row (l / 4 + 1) % 8 instead of row l / 4
  kAcquireLoadMax,  // load_acquire returns 0xffffffff: every spin on a counter passes at once
};
extern Fault injected_fault;

// How a cooperative launch takes turns between its blocks. Both are deterministic.
enum class GridSchedule {
  kRoundRobin,  // each block in turn resumes each of its threads that can continue, once
  kRunAhead,    // each block in turn runs until none of its threads can continue (at a grid
                // barrier): the others lag as far behind as the kernel lets them
};

// Fails the running kernel thread (throws KernelFault; the launch then reports it).
[[noreturn]] void fail(const std::string& what);

// Barriers: the whole block, or the calling thread's warp.
void sync_block();
void sync_warp();

// The calling thread's lane (linear thread index % 32).
int lane_id();

// ld.acquire.gpu.u32 of a word other blocks write (kernels/grid_sync.cuh). The emulation's
// memory is sequentially consistent, so the acquire is implied; this is where a spin yields: a
// second read of the same word that finds it unchanged, with no barrier or warp operation of the
// thread between the two, waits until another thread changes the word.
unsigned load_acquire(const unsigned* p);

// Puts `n` (<= kExchangeWords) words of the calling lane into warp operation `tag` and waits for
// the other lanes of its warp; returns every lane's words (row l: lane l), valid until the
// calling lane's next warp operation. All lanes must be in the same operation.
using ExchangeTable = uint32_t[kWarpSize][kExchangeWords];
const ExchangeTable& warp_exchange(const char* tag, const uint32_t* words, int n);

// Shared-memory addresses as 32-bit values (what __cvta_generic_to_shared gives on the GPU):
// offsets from an anchor in this thread's static TLS block, where every __shared__ array lies.
uint32_t shared_address(const void* p);
unsigned char* shared_pointer(uint32_t address);

// cp.async: a copy is queued and done at the latest moment the program may rely on it (the
// cp.async.wait_group that covers its group), so a read before the wait sees the old contents.
void async_copy(void* dst, const void* src, int bytes, int zero_fill_to);
void async_commit();
void async_wait(int pending_groups);

// Registers a dynamic shared-memory array (EMBER_EMU_DYNAMIC_SHARED): launch() fills its first
// smem_bytes with 0xff bytes (NaN in f16, bf16 and f32) before each block, so a kernel that reads
// shared memory it never wrote sees NaNs, and under AddressSanitizer poisons the rest.
bool register_dynamic_shared(unsigned char* (*address)());
unsigned char shared_fill_byte();  // 0xff

// Runs body as the threads of grid x block; smem_bytes of dynamic shared memory.
void launch_body(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body);
// The same with every block resident at once (cudaLaunchCooperativeKernel). At most
// kMaxCooperativeThreads threads in all.
constexpr int64_t kMaxCooperativeThreads = 16384;
void launch_cooperative_body(dim3 grid, dim3 block, size_t smem_bytes, GridSchedule schedule,
                             const std::function<void()>& body);

// kernel<<<grid, block, smem_bytes>>>(args...): the arguments are converted to the kernel's
// parameter types once, and every thread gets its own copy, as on the GPU.
template <class... P, class... A>
void launch(dim3 grid, dim3 block, size_t smem_bytes, void (*kernel)(P...), A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "launch: argument count differs from the kernel's");
  const std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  launch_body(grid, block, smem_bytes, [&] { std::apply(kernel, params); });
}

// cudaLaunchCooperativeKernel(kernel, grid, block, args, smem_bytes): as launch(), with every
// block resident at once.
template <class... P, class... A>
void launch_cooperative(dim3 grid, dim3 block, size_t smem_bytes, GridSchedule schedule, void (*kernel)(P...),
                        A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "launch_cooperative: argument count differs from the kernel's");
  const std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  launch_cooperative_body(grid, block, smem_bytes, schedule, [&] { std::apply(kernel, params); });
}

}  // namespace ember::emu

#define EMBER_EMU_CONCAT_INNER(a, b) a##b
#define EMBER_EMU_CONCAT(a, b) EMBER_EMU_CONCAT_INNER(a, b)
// Defines the array that `extern __shared__ ... NAME[]` inside namespace NS refers to. Use once
// per (namespace, name) at namespace scope of one test file, before the kernel header. The
// initializer is deliberately dynamic: GCC calls the thread-local init function of a
// block-scope `extern thread_local` unconditionally, and only a dynamically initialized
// definition defines it.
#define EMBER_EMU_DYNAMIC_SHARED(NS, NAME)                                                           \
  namespace NS {                                                                                     \
  alignas(128) thread_local unsigned char NAME[::ember::emu::kMaxDynamicShared] = {                 \
      ::ember::emu::shared_fill_byte()};                                                             \
  }                                                                                                  \
  static const bool EMBER_EMU_CONCAT(ember_emu_dynamic_shared_, __COUNTER__) =                       \
      ::ember::emu::register_dynamic_shared([]() -> unsigned char* { return NS::NAME; })

// --- built-in variables and functions ------------------------------------------------------------
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

inline void __syncthreads() { ember::emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) ember::emu::fail("__syncwarp: only the full-warp mask is emulated");
  ember::emu::sync_warp();
}

namespace ember::emu {
template <class T>
T shuffle(const char* tag, unsigned mask, T v, int src_of_lane_xor, bool xor_mode, int width) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move 4- or 8-byte values");
  if (mask != 0xffffffffu) fail(std::string(tag) + ": only the full-warp mask is emulated");
  if (width <= 0 || width > kWarpSize || (width & (width - 1)) != 0) fail(std::string(tag) + ": bad width");
  uint32_t words[2] = {0, 0};
  std::memcpy(words, &v, sizeof(T));
  const ExchangeTable& all = warp_exchange(tag, words, 2);
  const int lane = lane_id();
  const int base = lane & ~(width - 1);
  // xor: lane ^ laneMask, staying in the lane's segment of `width`; else srcLane % width.
  const int partner = lane ^ src_of_lane_xor;
  const int src =
      xor_mode ? ((partner & ~(width - 1)) == base ? partner : lane) : base + (src_of_lane_xor & (width - 1));
  T out;
  std::memcpy(&out, all[src], sizeof(T));
  return out;
}
}  // namespace ember::emu

template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  return ember::emu::shuffle<T>("__shfl_xor_sync", mask, var, lane_mask, true, width);
}
template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
  return ember::emu::shuffle<T>("__shfl_sync", mask, var, src_lane, false, width);
}

template <class T>
inline T __ldg(const T* p) {
  return *p;
}
// ld.global.cg (through L2 only): memory is coherent here, so a plain load.
template <class T>
inline T __ldcg(const T* p) {
  return *p;
}

// Atomics and fences. One OS thread runs the whole launch and a thread is only switched out at a
// barrier, a warp operation or a spin, so a plain read-modify-write is atomic, and the memory is
// sequentially consistent: a fence orders nothing that is not already ordered.
inline int atomicAdd(int* p, int v) {
  const int old = *p;
  *p = old + v;
  return old;
}
inline unsigned atomicAdd(unsigned* p, unsigned v) {
  const unsigned old = *p;
  *p = old + v;
  return old;
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  const unsigned long long old = *p;
  *p = old + v;
  return old;
}
inline float atomicAdd(float* p, float v) {
  const float old = *p;
  *p = old + v;
  return old;
}
inline double atomicAdd(double* p, double v) {
  const double old = *p;
  *p = old + v;
  return old;
}
inline void __threadfence() {}
inline void __threadfence_block() {}

// min/max as CUDA's device overloads (the kernels call them unqualified on int64_t and float).
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

// Fast-math intrinsics at full precision (the device versions are within a few ulp of these).
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
