// The CUDA runtime as ember users see it: device queries, memory statistics, streams, events,
// pinned host memory and the GEMM backend switch. Every function exists in a CPU-only build
// too: is_available() is false there and the rest throw ember::Error saying so.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ember/core/tensor.h"

namespace ember::cuda {

bool built_with_cuda();  // was the CUDA backend compiled in?
bool is_available();     // built with CUDA and at least one GPU visible
int device_count();      // 0 when none
// major * 10 + minor of a device (90 for H100/H200); -1: the current device.
int compute_capability(int device = -1);
void synchronize(int device = -1);  // -1: the current device

// Debugging aid for tests: when on, every new device allocation is filled with 0xFF bytes
// (NaN for floats) before it is handed out, so a kernel that leaves an output element
// unwritten shows up as NaN. Also switched on by EMBER_CUDA_POISON=1.
void set_poison_allocations(bool on);

// Caching allocator statistics, per device (bytes).
struct MemoryStats {
  size_t allocated = 0;       // in live tensors
  size_t reserved = 0;        // taken from the driver (live + cached)
  size_t peak_allocated = 0;  // highest `allocated` since the last reset
  uint64_t allocations = 0;   // requests served
  uint64_t cache_hits = 0;    // requests served from the cache
};
MemoryStats memory_stats(int device = 0);
void reset_peak_stats(int device = 0);
// Returns cached, unused blocks to the driver.
void empty_cache();

// A CUDA stream (non-owning handle; streams from create() live until the process ends).
class Stream {
 public:
  Stream() = default;
  static Stream current(int device = -1);  // what ember launches on for this thread
  static Stream create(int device = -1);   // a new non-blocking stream
  void synchronize() const;
  void* handle() const { return handle_; }  // cudaStream_t
  int device() const { return device_; }

 private:
  Stream(void* h, int d) : handle_(h), device_(d) {}
  void* handle_ = nullptr;  // null: the legacy default stream
  int device_ = 0;
};

// Makes `s` the current stream (and its device the current device) for this thread, and
// restores the previous ones at scope exit.
class StreamGuard {
 public:
  explicit StreamGuard(Stream s);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  Stream prev_;
  int prev_device_ = 0;
};

// Makes `device` current for this thread within its scope.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};

class Event {
 public:
  Event();  // timing-enabled
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(Stream s = Stream::current());
  void synchronize() const;
  float elapsed_ms(const Event& later) const;  // waits for `later` to complete

 private:
  void* handle_ = nullptr;  // cudaEvent_t
  int device_ = 0;          // the device it was created on (it can record only there)
  bool recorded_ = false;
};

// A CPU tensor in page-locked memory (same values), so host<->device copies run async.
Tensor pin_memory(const Tensor& cpu_tensor);
bool is_pinned(const Tensor& t);
// Copies src into dst (same shape and dtype, one on the CPU and one on CUDA, both contiguous)
// on the current stream without waiting; with pinned host memory the host returns at once.
void copy_async(const Tensor& src, const Tensor& dst);

// Which GEMM matmul uses on CUDA (docs/gemm.md):
//   fastest (default)  for each class of product (dtype, operand layouts, batched or not, bias,
//                      TF32, sizes rounded up to powers of two) both back ends are timed once on
//                      the current stream and the faster one is kept for the rest of the process;
//                      during CUDA-graph capture nothing is timed and cuBLAS runs
//   ember              ember's hand-written kernels (kernels/gemm.cu, kernels/sm90/)
//   cublas             cuBLAS
// The initial choice comes from the environment variable EMBER_GEMM=fastest|ember|cublas.
enum class GemmBackend { ember, cublas, fastest };
void set_gemm_backend(GemmBackend b);
GemmBackend gemm_backend();
// Forgets the fastest-backend decisions made so far (they are re-measured at the next use).
void reset_gemm_choices();
// How many fastest-backend decisions are cached.
std::size_t gemm_choice_count();

// TF32 for f32 matmuls (like PyTorch's allow_tf32): off by default; EMBER_ALLOW_TF32=1 turns it
// on at start-up. When on, cuBLAS multiplies f32 inputs rounded to TF32 (10 mantissa bits,
// relative error up to 2^-11 per input) with f32 accumulation; ember's own f32 kernel stays
// exact f32, so with `fastest` TF32 products usually go to cuBLAS.
void set_allow_tf32(bool allow);
bool allow_tf32();

// The Hopper GEMM (sm_90a: TMA + wgmma) for f16/bf16 within the ember back end: -1 picks the
// tile width by N (default), 0 turns it off (the mma.sync kernel runs), 128 or 256 fixes the
// tile width. EMBER_GEMM_SM90=auto|off|128|256 sets it at start-up. Ignored on other GPUs.
void set_gemm_sm90_tile(int tile);
int gemm_sm90_tile();
// The kernel that computed this thread's last CUDA GEMM: "cublas", "wgmma", "mma", "simt" or
// "none" (for tests and benches).
const char* last_gemm_kernel();
// The kernel that computed this thread's last CUDA conv1d pass: "mma" (tensor cores), "simt" or
// "none" (for tests and benches; EMBER_CONV_KERNEL picks, docs/conv.md).
const char* last_conv1d_kernel();

}  // namespace ember::cuda
