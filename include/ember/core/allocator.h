// Device memory hooks. core knows no backend: a backend that owns a kind of device memory
// registers an allocator for its DeviceType, and Storage asks the registry.
#pragma once
#include <cstddef>

#include "ember/core/device.h"

namespace ember {

class DeviceAllocator {
 public:
  virtual ~DeviceAllocator() = default;
  // Throws ember::Error (with the size and the allocator's statistics) when out of memory.
  virtual void* allocate(size_t nbytes, Device device) = 0;
  virtual void deallocate(void* ptr, size_t nbytes, Device device) noexcept = 0;
};

// CPU memory: a caching allocator (src/core/cpu_cache.cpp). Blocks of 64 KiB and more are kept
// for reuse when freed, by size class, up to a limit (environment EMBER_CPU_CACHE_MB, default
// 2048; 0 turns caching off; always off under AddressSanitizer), so a training loop that frees
// and re-allocates the same activations every step stops page-faulting on fresh memory.
// Every block is 64-byte aligned. cpu_allocate throws ember::Error when out of memory.
void* cpu_allocate(size_t nbytes);
void cpu_deallocate(void* ptr, size_t nbytes) noexcept;

struct CpuCacheStats {
  size_t in_use_bytes = 0;  // held by live tensors (cached size classes only)
  size_t cached_bytes = 0;  // freed and kept for reuse
  size_t limit_bytes = 0;   // the most that is kept
  size_t hits = 0;          // allocations served from the cache
  size_t misses = 0;        // allocations of a cached size class that went to the system
};
CpuCacheStats cpu_cache_stats();
// Returns every cached block to the system (live tensors are unaffected).
void cpu_empty_cache();
// Changes the limit; lowering it below what is cached empties the cache.
void cpu_set_cache_limit(size_t bytes);

// The stand-in device's memory (src/core/fake_device.cpp; ember/fake.h): registered for
// DeviceType::fake from the start.
DeviceAllocator& fake_device_allocator();

// Registers (or, with nullptr, removes) the allocator of a device type.
void set_device_allocator(DeviceType type, DeviceAllocator* alloc);
DeviceAllocator* device_allocator(DeviceType type);

}  // namespace ember
