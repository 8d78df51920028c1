#include "ember/core/storage.h"

#include <cstdlib>
#include <new>

#include "ember/core/alloc_counter.h"
#include "ember/core/allocator.h"
#include "ember/core/error.h"

namespace ember {
namespace {
// Constant-initialised; the CUDA backend registers its allocator when the op layer loads it
// (backend::load_backends), before the first CUDA allocation.
DeviceAllocator* g_allocators[kNumDeviceTypes] = {nullptr, nullptr, nullptr};
thread_local uint64_t t_allocated_bytes = 0;  // ember/core/alloc_counter.h
}  // namespace

uint64_t thread_allocated_bytes() { return t_allocated_bytes; }

void set_device_allocator(DeviceType type, DeviceAllocator* alloc) {
  g_allocators[static_cast<int>(type)] = alloc;
}
DeviceAllocator* device_allocator(DeviceType type) {
  DeviceAllocator* a = g_allocators[static_cast<int>(type)];
  if (a == nullptr && type == DeviceType::fake) return &fake_device_allocator();  // always there
  return a;
}

namespace {
void check_size(size_t nbytes, Device device) {
  EMBER_CHECK(nbytes <= kMaxStorageBytes, "storage", "refusing to allocate ", nbytes, " bytes on ", device.str(),
              ": more than the ", kMaxStorageBytes, "-byte (64 TiB) limit on one allocation");
}
}  // namespace

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  check_size(nbytes, device);
  if (device.is_cpu()) {
    data_ = cpu_allocate(nbytes);
    t_allocated_bytes += nbytes;
    return;
  }
  DeviceAllocator* alloc = device_allocator(device.type);  // the stand-in's is always there
  EMBER_CHECK(alloc != nullptr, "storage", "cannot allocate ", nbytes, " bytes on ", device.str(),
              ": this build of ember has no CUDA backend (configure with EMBER_CUDA=ON)");
  data_ = alloc->allocate(nbytes, device);
  t_allocated_bytes += nbytes;
}

Storage::Storage(size_t nbytes, Device device, DeviceAllocator* alloc)
    : nbytes_(nbytes), device_(device), alloc_(alloc) {
  EMBER_CHECK(alloc != nullptr, "storage", "null allocator");
  check_size(nbytes, device);
  data_ = alloc->allocate(nbytes, device);
  t_allocated_bytes += nbytes;
}

Storage::~Storage() {
  if (alloc_) {
    alloc_->deallocate(data_, nbytes_, device_);
  } else if (device_.is_cpu()) {
    cpu_deallocate(data_, nbytes_);
  } else if (DeviceAllocator* alloc = device_allocator(device_.type)) {
    alloc->deallocate(data_, nbytes_, device_);
  }
}

}  // namespace ember
