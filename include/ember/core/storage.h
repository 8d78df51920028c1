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

class Storage {
 public:
  // Allocates nbytes on device (64-byte aligned on the CPU). Contents are uninitialised.
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  uint64_t version() const { return version_; }
  void bump_version() { ++version_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  uint64_t version_ = 0;
};

}  // namespace ember
