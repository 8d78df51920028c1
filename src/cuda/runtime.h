// Internal CUDA runtime helpers for the backend: error-check macros that name the statement,
// file:line and device; the current stream; the caching allocator.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "ember/core/allocator.h"
#include "ember/core/error.h"
#include "ember/core/tensor.h"

namespace ember::cuda {

[[noreturn]] void fail_cuda(const char* stmt, cudaError_t err, const char* file, int line);
[[noreturn]] void fail_cublas(const char* stmt, cublasStatus_t st, const char* file, int line);

int current_device();
// Fixed facts of a device, read from the driver once per device and cached (launchers ask on
// every call): its streaming-multiprocessor count, and major * 10 + minor.
int multiprocessor_count(int device);
int device_compute_capability(int device);
// -1 -> the current device; otherwise checks 0 <= device < device_count() and returns it.
// Throws ember::Error (op `op`) naming the device and how many are visible.
int checked_device(int device, const char* op);
// This thread's current stream on `device` (-1: the current device); nullptr is the legacy
// default stream. Set through cuda::StreamGuard.
cudaStream_t current_stream(int device = -1);
// Sets this thread's current stream on `device` (no checks; cuda::StreamGuard is the public way).
void set_current_stream(int device, cudaStream_t stream);
// One handle per (thread, device), made lazily and bound to the current stream on each call
// (a handle shared between threads would race on cublasSetStream). Handles of finished
// threads are reused by new ones, never destroyed.
cublasHandle_t cublas_handle();

// The caching allocator: blocks are rounded to size classes (512 B granules below 1 MiB,
// 2 MiB granules above) and cached per (device, stream) after free, so a block is reused
// only on the stream it was last used on (stream order makes that safe without events).
// Out of memory: the cache is emptied and the cudaMalloc retried once; then ember::Error
// with the requested size and the statistics.
DeviceAllocator& caching_allocator();
// Gives a graph's private pool back (core/capture.h): its free blocks return to their streams
// pools after a device synchronisation, its live ones when their tensors are freed.
void release_graph_pool(uint64_t pool);
// Page-locked host memory (cudaHostAlloc / cudaFreeHost), used by cuda::pin_memory.
DeviceAllocator& pinned_allocator();

// Moves the bytes of contiguous `src` into contiguous `dst` (same dtype and numel) when at
// least one of them is on a GPU; the other may be any host-memory device (the CPU or the
// stand-in). Returns once dst holds the values as far as the host is concerned: device->host
// copies synchronize the stream; host->device and device->device copies are ordered on the
// destination's current stream. backend::copy stages every other kind of cross-device copy.
void copy_bytes_across(const Tensor& src, const Tensor& dst);

// Whether `stream` is being captured into a CUDA graph (nothing that synchronises may run).
bool stream_capturing(cudaStream_t stream);

// Grid size for n elements at `threads` per block, capped for grid-stride loops.
inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = 65535LL * 8) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return static_cast<unsigned>(b < max_blocks ? b : max_blocks);
}

}  // namespace ember::cuda

#define EMBER_CUDA_CHECK(stmt)                                                  \
  do {                                                                          \
    cudaError_t ember_err_ = (stmt);                                            \
    if (ember_err_ != cudaSuccess) ::ember::cuda::fail_cuda(#stmt, ember_err_, __FILE__, __LINE__); \
  } while (0)

#define EMBER_CUBLAS_CHECK(stmt)                                                \
  do {                                                                          \
    cublasStatus_t ember_st_ = (stmt);                                          \
    if (ember_st_ != CUBLAS_STATUS_SUCCESS) ::ember::cuda::fail_cublas(#stmt, ember_st_, __FILE__, __LINE__); \
  } while (0)

// After every kernel launch.
#define EMBER_CUDA_LAUNCH_CHECK() EMBER_CUDA_CHECK(cudaGetLastError())
