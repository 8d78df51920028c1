// The caching CUDA allocator (see runtime.h) and the memory functions of ember/cuda.h.
//
// cudaMalloc and cudaFree are slow and cudaFree synchronises the device, so freed blocks are
// kept and handed out again. A block remembers the stream that was current when it was
// allocated and goes back to that stream's pool: work on one stream runs in order, so a block
// reused on the stream that last used it needs no event. The price (as in PyTorch without
// record_stream): a tensor allocated on stream A, used on stream B and freed while B still
// reads it may be reused on A too early; synchronise B before freeing such a tensor.
//
// Sizes are rounded to classes (512 B granules up to 1 MiB, 2 MiB granules above) so that a
// training loop that asks for the same shapes every step hits the cache. Blocks are never
// split; a cached block serves a request when it is at least the rounded size and at most
// twice it (best fit), so a small request cannot pin down a huge block.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/capture.h"
#include "cuda/runtime.h"
#include "ember/core/error.h"
#include "ember/cuda.h"

namespace ember::cuda {
namespace {

constexpr size_t kSmallGranule = 512;
constexpr size_t kSmallLimit = size_t(1) << 20;  // 1 MiB
constexpr size_t kLargeGranule = size_t(2) << 20;  // 2 MiB

size_t round_size(size_t n) {
  const size_t g = n <= kSmallLimit ? kSmallGranule : kLargeGranule;
  return (n + g - 1) / g * g;
}

double mib(size_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

struct Block {
  void* ptr = nullptr;
  size_t size = 0;  // rounded
  int device = 0;
  cudaStream_t stream = nullptr;  // current at allocation time; the block returns to its pool
  uint64_t graph_pool = 0;        // allocated while capturing a graph: that graph's private pool
};

// Private pools of graphs live beside the stream pools under keys no stream pointer can take.
constexpr uintptr_t kGraphPoolBit = uintptr_t(1) << 63;

// The graph pool this thread allocates from on `device` now (core/capture.h), or 0.
uint64_t capture_pool_on(int device) {
  const detail::CaptureState* cs = detail::capture_state();
  return cs != nullptr && cs->device.is_cuda() && cs->device.index == device ? cs->pool : 0;
}

// cudaMalloc is one of the calls a thread-local stream capture forbids; the allocator may call
// it while capturing (the block is then the graph's), so the capture mode is relaxed around it.
struct RelaxCapture {
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  bool on;
  explicit RelaxCapture(bool capturing) : on(capturing) {
    if (on) cudaThreadExchangeStreamCaptureMode(&mode);
  }
  ~RelaxCapture() {
    if (on) cudaThreadExchangeStreamCaptureMode(&mode);
  }
};

// EMBER_CUDA_POISON: "1" on, unset/""/"0" off, anything else is an error (raised by the first
// allocation, so that a typo is not silently ignored).
int poison_from_env() {
  const char* v = std::getenv("EMBER_CUDA_POISON");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "0") == 0) return 0;
  if (std::strcmp(v, "1") == 0) return 1;
  EMBER_FAIL("cuda_alloc", "EMBER_CUDA_POISON=\"", v, "\" is not understood; use 1 (poison new allocations) or 0");
}

class CachingAllocator final : public DeviceAllocator {
 public:
  void* allocate(size_t nbytes, Device device) override;
  void deallocate(void* ptr, size_t nbytes, Device device) noexcept override;

  void empty_cache();
  void release_graph_pool(uint64_t pool);
  MemoryStats stats(int device);
  void reset_peak(int device);
  void set_poison(bool on) { poison_.store(on ? 1 : 0); }

 private:
  using Pool = std::multimap<size_t, Block>;  // size -> free block
  using PoolKey = std::pair<int, uintptr_t>;  // (device, stream or graph pool); integers order totally
  static PoolKey key(int device, cudaStream_t stream) { return {device, reinterpret_cast<uintptr_t>(stream)}; }
  static PoolKey graph_key(int device, uint64_t pool) { return {device, kGraphPoolBit | pool}; }
  PoolKey home(const Block& b) const {  // where a freed block goes
    return b.graph_pool != 0 && live_pools_.count(b.graph_pool) ? graph_key(b.device, b.graph_pool)
                                                                  : key(b.device, b.stream);
  }

  MemoryStats& stats_locked(int device) {
    if (stats_.size() <= static_cast<size_t>(device)) stats_.resize(device + 1);
    return stats_[device];
  }
  bool take_cached_locked(size_t size, PoolKey where, Block& out);
  // Synchronises `device` (-1: every device with cached blocks) and cudaFree's its cached
  // blocks. Throws on CUDA errors.
  void release_cached_locked(int device);
  void* malloc_block_locked(size_t size, size_t requested, int device);

  std::mutex mutex_;
  std::map<PoolKey, Pool> pools_;
  std::unordered_map<void*, Block> live_;
  std::vector<MemoryStats> stats_;  // [device]
  std::set<uint64_t> live_pools_;   // graph pools not yet released
  std::atomic<int> poison_{-1};     // -1: not read from the environment yet
};

bool CachingAllocator::take_cached_locked(size_t size, PoolKey where, Block& out) {
  auto pool = pools_.find(where);
  if (pool == pools_.end()) return false;
  auto it = pool->second.lower_bound(size);  // smallest block >= size: best fit
  if (it == pool->second.end() || it->first > 2 * size) return false;
  out = it->second;
  pool->second.erase(it);
  return true;
}

void CachingAllocator::release_cached_locked(int device) {
  // Which devices hold cached blocks.
  std::vector<int> devices;
  for (const auto& [k, pool] : pools_) {  // ordered by device first
    if (pool.empty() || (device >= 0 && k.first != device)) continue;
    if (devices.empty() || devices.back() != k.first) devices.push_back(k.first);
  }
  for (int d : devices) {
    DeviceGuard guard(d);
    // A cached block may still be read by queued work of its stream (it was freed in host
    // order, not device order).
    EMBER_CUDA_CHECK(cudaDeviceSynchronize());
    for (auto it = pools_.begin(); it != pools_.end();) {
      // A live graph's free blocks are not free: its replays write them.
      if (it->first.first != d || (it->first.second & kGraphPoolBit) != 0) {
        ++it;
        continue;
      }
      Pool& pool = it->second;
      while (!pool.empty()) {
        Block b = pool.begin()->second;
        pool.erase(pool.begin());
        stats_locked(d).reserved -= b.size;
        EMBER_CUDA_CHECK(cudaFree(b.ptr));
      }
      it = pools_.erase(it);
    }
  }
}

void* CachingAllocator::malloc_block_locked(size_t size, size_t requested, int device) {
  void* ptr = nullptr;
  const bool capturing = capture_pool_on(device) != 0;
  cudaError_t err;
  {
    RelaxCapture relax(capturing);
    err = cudaMalloc(&ptr, size);
  }
  if (err == cudaErrorMemoryAllocation && !capturing) {  // emptying the cache synchronises: not while capturing
    cudaGetLastError();  // clear it, so the next launch check does not see it
    release_cached_locked(device);
    err = cudaMalloc(&ptr, size);
  }
  if (err == cudaSuccess) return ptr;
  cudaGetLastError();
  const MemoryStats& s = stats_locked(device);
  std::string driver;
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
    driver = detail::cat("; the device has ", mib(free_b), " MiB free of ", mib(total_b), " MiB");
  } else {
    cudaGetLastError();
  }
  if (err == cudaErrorMemoryAllocation) {
    EMBER_FAIL("cuda_alloc", "out of memory allocating ", requested, " bytes (", mib(requested), " MiB, block of ",
               mib(size), " MiB) on cuda:", device, " after emptying the cache; ember holds ", mib(s.allocated),
               " MiB in live tensors, ", mib(s.reserved), " MiB reserved, peak ", mib(s.peak_allocated), " MiB",
               driver);
  }
  EMBER_FAIL("cuda_alloc", "cudaMalloc of ", requested, " bytes (", mib(requested), " MiB) on cuda:", device,
             " failed: ", cudaGetErrorName(err), " (", cudaGetErrorString(err), "); ember holds ", mib(s.allocated),
             " MiB in live tensors, ", mib(s.reserved), " MiB reserved");
}

void* CachingAllocator::allocate(size_t nbytes, Device device) {
  EMBER_CHECK(device.is_cuda(), "cuda_alloc", "the CUDA allocator cannot allocate on ", device.str());
  const int dev = checked_device(device.index, "cuda_alloc");
  int poison = poison_.load();
  if (poison < 0) {
    int from_env = poison_from_env();
    if (poison_.compare_exchange_strong(poison, from_env)) poison = from_env;
  }
  // Zero bytes: nullptr, always (no driver call; deallocate accepts it).
  if (nbytes == 0) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_locked(dev).allocations;
    return nullptr;
  }
  EMBER_CHECK(nbytes <= (size_t(1) << 48), "cuda_alloc", "cannot allocate ", nbytes, " bytes (",
              mib(nbytes), " MiB) on cuda:", dev, ": larger than any GPU's memory");
  const size_t size = round_size(nbytes);
  DeviceGuard guard(dev);
  const cudaStream_t stream = current_stream(dev);
  const uint64_t graph_pool = capture_pool_on(dev);

  Block b;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (graph_pool != 0) live_pools_.insert(graph_pool);
    const bool hit = take_cached_locked(size, graph_pool ? graph_key(dev, graph_pool) : key(dev, stream), b);
    if (!hit) {
      b.ptr = malloc_block_locked(size, nbytes, dev);
      b.size = size;
      b.device = dev;
      b.stream = stream;
      b.graph_pool = graph_pool;
    }
    live_.emplace(b.ptr, b);
    MemoryStats& s = stats_locked(dev);  // after malloc_block_locked, which may touch stats_
    if (hit) ++s.cache_hits;
    else s.reserved += size;
    ++s.allocations;
    s.allocated += b.size;
    if (s.allocated > s.peak_allocated) s.peak_allocated = s.allocated;
  }
  if (poison == 1) {
    // 0xFF bytes: NaN in f32/f64/f16/bf16, -1 in integers; ordered before any use on `stream`.
    cudaError_t err = cudaMemsetAsync(b.ptr, 0xFF, b.size, stream);
    if (err != cudaSuccess) {
      deallocate(b.ptr, nbytes, device);
      fail_cuda("cudaMemsetAsync(ptr, 0xFF, size, stream) [EMBER_CUDA_POISON]", err, __FILE__, __LINE__);
    }
  }
  return b.ptr;
}

void CachingAllocator::deallocate(void* ptr, size_t, Device) noexcept {
  if (ptr == nullptr) return;
  try {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = live_.find(ptr);
    if (it == live_.end()) {
      std::fprintf(stderr, "ember: cuda allocator asked to free %p, which it did not allocate (ignored)\n", ptr);
      return;
    }
    Block b = it->second;
    live_.erase(it);
    stats_locked(b.device).allocated -= b.size;
    pools_[home(b)].emplace(b.size, b);
  } catch (...) {
    // Out of memory for a map node, or a mutex error during process exit: the block leaks,
    // which the driver reclaims at exit anyway. Destructors never throw.
  }
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  release_cached_locked(-1);
}

void CachingAllocator::release_graph_pool(uint64_t pool) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (live_pools_.erase(pool) == 0) return;
  // Its free blocks go back to the streams they were made on, after the last replay is done.
  std::vector<int> synced;
  for (auto it = pools_.begin(); it != pools_.end();) {
    if (it->first.second != (kGraphPoolBit | pool)) {
      ++it;
      continue;
    }
    const int d = it->first.first;
    if (std::find(synced.begin(), synced.end(), d) == synced.end()) {
      DeviceGuard guard(d);
      EMBER_CUDA_CHECK(cudaDeviceSynchronize());
      synced.push_back(d);
    }
    for (auto& [size, b] : it->second) {
      b.graph_pool = 0;
      pools_[key(b.device, b.stream)].emplace(size, b);
    }
    it = pools_.erase(it);
  }
}

MemoryStats CachingAllocator::stats(int device) {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_locked(device);
}

void CachingAllocator::reset_peak(int device) {
  std::lock_guard<std::mutex> lock(mutex_);
  MemoryStats& s = stats_locked(device);
  s.peak_allocated = s.allocated;
}

CachingAllocator& the_allocator() {
  // Never destroyed: tensors held in static objects may be freed after this translation
  // unit's statics are gone, and cached blocks need no cudaFree at exit (the driver frees
  // everything). The constructor makes no CUDA call, so registering the allocator when the
  // backend loads (cuda::register_backend) is safe on machines without a GPU.
  static CachingAllocator* a = new CachingAllocator();
  return *a;
}

}  // namespace

DeviceAllocator& caching_allocator() { return the_allocator(); }

void set_poison_allocations(bool on) { the_allocator().set_poison(on); }

MemoryStats memory_stats(int device) {
  return the_allocator().stats(checked_device(device, "cuda::memory_stats"));
}

void reset_peak_stats(int device) { the_allocator().reset_peak(checked_device(device, "cuda::reset_peak_stats")); }

void empty_cache() {
  detail::check_not_capturing("cuda::empty_cache", "emptying the cache (it synchronises the device)");
  the_allocator().empty_cache();
}

void release_graph_pool(uint64_t pool) { the_allocator().release_graph_pool(pool); }

}  // namespace ember::cuda
