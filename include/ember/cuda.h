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

// Which GEMM matmul uses on CUDA: ember's hand-written kernels (default) or cuBLAS. The
// initial choice comes from the environment variable EMBER_GEMM=ember|cublas.
enum class GemmBackend { ember, cublas };
void set_gemm_backend(GemmBackend b);
GemmBackend gemm_backend();

}  // namespace ember::cuda
