// The stand-in device's allocator: host memory (the CPU caching allocator) handed out under a
// device identity "fake:N", filled with 0xFF bytes (NaN for floats) so unwritten outputs show,
// with a capacity and per-device statistics. It lives in core because it needs no backend: the
// CPU backend's kernels run on this memory (Device::is_host_memory).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <iterator>
#include <mutex>
#include <unordered_map>
#include <vector>
#include <unistd.h>

#include "core/capture.h"
#include "ember/core/allocator.h"
#include "ember/core/error.h"
#include "ember/fake.h"

namespace ember {
namespace {

size_t default_capacity() {
  if (const char* mb = std::getenv("EMBER_FAKE_DEVICE_MB")) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(mb, &end, 10);
    if (end != mb && *end == '\0' && v > 0) return static_cast<size_t>(v) << 20;
  }
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : size_t{1} << 34;
}

class FakeAllocator final : public DeviceAllocator {
 public:
  void* allocate(size_t nbytes, Device device) override {
    EMBER_CHECK(device.is_fake(), "storage", "internal: the stand-in allocator asked for ", device.str());
    {
      std::lock_guard<std::mutex> lock(mu_);
      fake::MemoryStats& s = stats_[device.index];
      const size_t cap = capacity();
      EMBER_CHECK(nbytes <= cap - std::min(cap, s.allocated), "storage", "out of memory on ", device.str(),
                  ": cannot allocate ", nbytes, " bytes (", static_cast<double>(nbytes) / (1 << 20), " MiB); ",
                  s.allocated, " bytes in use of a capacity of ", cap, " (EMBER_FAKE_DEVICE_MB)");
      s.allocated += nbytes;
      s.peak_allocated = std::max(s.peak_allocated, s.allocated);
      s.allocations++;
    }
    void* p = nullptr;
    try {
      p = cpu_allocate(nbytes);
    } catch (...) {
      release(nbytes, device);
      throw;
    }
    if (p != nullptr) std::memset(p, 0xFF, nbytes);
    // Captured into a graph: the block belongs to the graph's pool (see core/capture.h).
    if (const detail::CaptureState* cs = detail::capture_state(); cs != nullptr && cs->pool != 0 && p != nullptr) {
      std::lock_guard<std::mutex> lock(mu_);
      owner_[p] = cs->pool;
    }
    return p;
  }
  void deallocate(void* ptr, size_t nbytes, Device device) noexcept override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!owner_.empty()) {
        auto it = owner_.find(ptr);
        if (it != owner_.end()) {  // a replay still writes it: kept until the pool goes
          try {
            held_[it->second].push_back({ptr, nbytes, device});
            owner_.erase(it);
            return;
          } catch (...) {
            owner_.erase(it);  // no memory for the note: free it now (the graph is misused anyway)
          }
        }
      }
    }
    cpu_deallocate(ptr, nbytes);
    release(nbytes, device);
  }
  // Frees the pool's freed blocks; its live ones are freed normally when their tensors go.
  void release_pool(uint64_t pool) {
    std::vector<Held> blocks;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = held_.find(pool);
      if (it != held_.end()) {
        blocks = std::move(it->second);
        held_.erase(it);
      }
      for (auto o = owner_.begin(); o != owner_.end();) o = o->second == pool ? owner_.erase(o) : std::next(o);
    }
    for (const Held& b : blocks) {
      cpu_deallocate(b.ptr, b.nbytes);
      release(b.nbytes, b.device);
    }
  }

  fake::MemoryStats stats(int index) {
    std::lock_guard<std::mutex> lock(mu_);
    fake::MemoryStats s = stats_[index];
    s.capacity = capacity();
    return s;
  }
  void reset_peak(int index) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_[index].peak_allocated = stats_[index].allocated;
  }
  void set_capacity(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    capacity_ = bytes;
  }

 private:
  void release(size_t nbytes, Device device) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = stats_.find(device.index);
    if (it != stats_.end()) it->second.allocated -= std::min(it->second.allocated, nbytes);
  }
  size_t capacity() {  // under mu_
    if (capacity_ == 0) capacity_ = default_capacity();
    return capacity_;
  }

  struct Held {
    void* ptr;
    size_t nbytes;
    Device device;
  };
  std::mutex mu_;
  std::map<int, fake::MemoryStats> stats_;
  std::unordered_map<void*, uint64_t> owner_;   // block -> graph pool, while captured memory is live
  std::map<uint64_t, std::vector<Held>> held_;  // graph pool -> its freed blocks
  size_t capacity_ = 0;  // 0: not yet read
};

}  // namespace

DeviceAllocator& fake_device_allocator() {
  static FakeAllocator* a = new FakeAllocator();  // never destroyed: tensors may outlive statics
  return *a;
}

namespace fake {
namespace {
FakeAllocator& alloc() { return static_cast<FakeAllocator&>(fake_device_allocator()); }
void check_index(int index, const char* op) {
  EMBER_CHECK(index >= 0 && index < 1024, op, "no stand-in device fake:", index, " (indices are 0..1023)");
}
}  // namespace
MemoryStats memory_stats(int index) {
  check_index(index, "fake::memory_stats");
  return alloc().stats(index);
}
void reset_peak_stats(int index) {
  check_index(index, "fake::reset_peak_stats");
  alloc().reset_peak(index);
}
void set_capacity(size_t bytes) { alloc().set_capacity(bytes); }
}  // namespace fake

void detail::release_fake_pool(uint64_t pool) { fake::alloc().release_pool(pool); }

}  // namespace ember
