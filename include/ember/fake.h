// The stand-in device "fake:N" (see ember/core/device.h): host memory with a device identity,
// for testing device placement on machines without a GPU. Its memory has a capacity (default:
// the machine's physical memory; environment EMBER_FAKE_DEVICE_MB), so out-of-memory handling
// is testable, and per-device statistics like the CUDA caching allocator's.
#pragma once
#include <cstddef>
#include <cstdint>

namespace ember::fake {

struct MemoryStats {
  size_t allocated = 0;       // bytes in live tensors on this stand-in device
  size_t peak_allocated = 0;  // highest `allocated` since the last reset
  uint64_t allocations = 0;   // requests served
  size_t capacity = 0;        // the most `allocated` may reach
};
MemoryStats memory_stats(int index = 0);
void reset_peak_stats(int index = 0);
// Sets the capacity of every stand-in device (bytes); 0 restores the default.
void set_capacity(size_t bytes);

}  // namespace ember::fake
