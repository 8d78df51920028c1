// Storage: one allocation shared by a tensor and all of its views.
//
// The version counter lives here, so every view of the same memory sees an in-place write
// (autograd compares it against the version recorded when a tensor was saved for backward).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "ember/core/device.h"

namespace ember {

class DeviceAllocator;

// The largest allocation Storage attempts: 64 TiB, half the 128 TiB of address space x86-64
// gives a process and far beyond any machine's memory. A larger request (an absurd shape that
// does not overflow) is refused with an ember::Error before any allocator sees it, instead of
// a bad_alloc, an overcommitted mapping that faults on first touch, or a device error.
inline constexpr size_t kMaxStorageBytes = size_t(1) << 46;

class Storage {
 public:
  // Allocates nbytes on device (64-byte aligned on the CPU). Contents are uninitialised.
  // nbytes > kMaxStorageBytes throws ember::Error("storage", ...).
  Storage(size_t nbytes, Device device);
  // Memory from a specific allocator (e.g. page-locked host memory for a CPU tensor).
  Storage(size_t nbytes, Device device, DeviceAllocator* alloc);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  uint64_t version() const { return version_; }
  DeviceAllocator* allocator() const { return alloc_; }
  void bump_version() { ++version_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  DeviceAllocator* alloc_ = nullptr;  // null: the device's default
  uint64_t version_ = 0;
};

}  // namespace ember
