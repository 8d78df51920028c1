// The backend's CUDA runtime glue: error reporting for the check macros, device queries, the
// current device and stream, and per-thread cuBLAS handles. The user-facing objects of
// ember/cuda.h (guards, streams, events, the GEMM switch) are in api.cpp.
//
// The current stream is thread-local and kept per device (nullptr = the legacy default
// stream), like the current device in the CUDA runtime itself: a StreamGuard on one thread
// never changes where another thread launches.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "cuda/runtime.h"
#include "ember/core/error.h"
#include "ember/cuda.h"

namespace ember::cuda {
namespace {

// "src/cuda/runtime.cpp" rather than the build machine's absolute path.
const char* short_path(const char* file) {
  const char* best = nullptr;  // the last project folder in the path
  for (const char* root : {"/src/", "/kernels/", "/include/", "/tests/", "/bench/"}) {
    for (const char* p = std::strstr(file, root); p; p = std::strstr(p + 1, root)) {
      if (!best || p > best) best = p;
    }
  }
  return best ? best + 1 : file;
}

// "cuda:1", or a note when even cudaGetDevice fails (e.g. no driver).
std::string device_note() {
  int dev = -1;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return "no usable device";
  }
  return "cuda:" + std::to_string(dev);
}

}  // namespace

[[noreturn]] void fail_cuda(const char* stmt, cudaError_t err, const char* file, int line) {
  // Clear the (non-sticky) error so that the next launch check does not report it again.
  cudaGetLastError();
  EMBER_FAIL("cuda", stmt, " failed: ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ") at ",
             short_path(file), ":", line, " on ", device_note());
}

[[noreturn]] void fail_cublas(const char* stmt, cublasStatus_t st, const char* file, int line) {
  EMBER_FAIL("cuda", stmt, " failed: ", cublasGetStatusName(st), " (", cublasGetStatusString(st), ") at ",
             short_path(file), ":", line, " on ", device_note());
}

// --- devices -----------------------------------------------------------------------------------

bool built_with_cuda() { return true; }

int device_count() {
  // The set of visible devices is fixed for the life of the process (CUDA_VISIBLE_DEVICES is
  // read at initialisation), so ask once. Any failure (no device, no or too old a driver, a
  // stub libcuda) means "no GPU here", never an exception.
  static const int count = [] {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return n;
  }();
  return count;
}

bool is_available() { return device_count() > 0; }

int current_device() {
  int dev = 0;
  EMBER_CUDA_CHECK(cudaGetDevice(&dev));
  return dev;
}

namespace {
struct DeviceFacts {
  int sms = 0, cc = 0;
};
// Cached for the first 64 devices; beyond that, asked every time.
DeviceFacts device_facts(int device) {
  auto query = [](int d) {
    DeviceFacts f;
    int major = 0, minor = 0;
    EMBER_CUDA_CHECK(cudaDeviceGetAttribute(&f.sms, cudaDevAttrMultiProcessorCount, d));
    EMBER_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d));
    EMBER_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, d));
    f.sms = f.sms > 0 ? f.sms : 1;
    f.cc = major * 10 + minor;
    return f;
  };
  constexpr int kCached = 64;
  if (device < 0 || device >= kCached) return query(device);
  static DeviceFacts facts[kCached];
  static std::once_flag once[kCached];
  std::call_once(once[device], [&] { facts[device] = query(device); });
  return facts[device];
}
}  // namespace

int multiprocessor_count(int device) { return device_facts(device).sms; }
int device_compute_capability(int device) { return device_facts(device).cc; }

int checked_device(int device, const char* op) {
  const int n = device_count();
  EMBER_CHECK(n > 0, op, "cannot use ", device < 0 ? std::string("cuda") : "cuda:" + std::to_string(device),
              ": no CUDA device is visible (cudaGetDeviceCount found none: no GPU, no driver, "
              "or CUDA_VISIBLE_DEVICES hides them)");
  if (device < 0) return current_device();
  EMBER_CHECK(device < n, op, "cuda:", device, " does not exist (", n, " CUDA device", n == 1 ? "" : "s",
              " visible)");
  return device;
}

// --- streams -----------------------------------------------------------------------------------

namespace {
// This thread's current stream per device index; missing entries are the legacy stream.
thread_local std::vector<cudaStream_t> t_streams;
}  // namespace

void set_current_stream(int device, cudaStream_t s) {
  if (static_cast<size_t>(device) >= t_streams.size()) t_streams.resize(device + 1, nullptr);
  t_streams[device] = s;
}

cudaStream_t current_stream(int device) {
  if (device < 0) device = current_device();
  return static_cast<size_t>(device) < t_streams.size() ? t_streams[device] : nullptr;
}

// --- cuBLAS ------------------------------------------------------------------------------------

namespace {
// Handles given back by threads that ended, per device. Never destroyed: destroying cuBLAS
// handles during process exit races with the CUDA runtime's own teardown.
struct HandlePool {
  std::mutex mutex;
  std::vector<std::vector<cublasHandle_t>> free;  // [device]
};
HandlePool& handle_pool() {
  static HandlePool* pool = new HandlePool();
  return *pool;
}

struct ThreadHandles {
  std::vector<cublasHandle_t> handles;  // [device], null until first use
  ~ThreadHandles() {
    try {
      HandlePool& pool = handle_pool();
      std::lock_guard<std::mutex> lock(pool.mutex);
      for (size_t d = 0; d < handles.size(); ++d) {
        if (!handles[d]) continue;
        if (pool.free.size() <= d) pool.free.resize(d + 1);
        pool.free[d].push_back(handles[d]);
      }
    } catch (...) {
      // Leaking a handle is harmless; throwing from a thread-exit destructor is not.
    }
  }
};
thread_local ThreadHandles t_handles;
}  // namespace

cublasHandle_t cublas_handle() {
  const int dev = current_device();
  std::vector<cublasHandle_t>& mine = t_handles.handles;
  if (mine.size() <= static_cast<size_t>(dev)) mine.resize(dev + 1, nullptr);
  if (!mine[dev]) {
    HandlePool& pool = handle_pool();
    {
      std::lock_guard<std::mutex> lock(pool.mutex);
      if (pool.free.size() > static_cast<size_t>(dev) && !pool.free[dev].empty()) {
        mine[dev] = pool.free[dev].back();
        pool.free[dev].pop_back();
      }
    }
    if (!mine[dev]) EMBER_CUBLAS_CHECK(cublasCreate(&mine[dev]));  // bound to the current device
  }
  EMBER_CUBLAS_CHECK(cublasSetStream(mine[dev], current_stream(dev)));
  return mine[dev];
}

bool stream_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  EMBER_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

}  // namespace ember::cuda
