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

// Registers (or, with nullptr, removes) the allocator of a device type.
void set_device_allocator(DeviceType type, DeviceAllocator* alloc);
DeviceAllocator* device_allocator(DeviceType type);

}  // namespace ember
