// ember/cuda.h as users see it: synchronisation, device and stream guards, streams, events
// and the GEMM backend switch. Memory functions live in allocator.cpp, pinned memory and
// copy_async in copy.cpp, device queries in runtime.cpp.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/capture.h"
#include "cuda/runtime.h"
#include "ember/core/error.h"
#include "ember/cuda.h"

namespace ember::cuda {

void synchronize(int device) {
  detail::check_not_capturing("cuda::synchronize", "synchronising the device");
  DeviceGuard guard(checked_device(device, "cuda::synchronize"));
  EMBER_CUDA_CHECK(cudaDeviceSynchronize());
}

DeviceGuard::DeviceGuard(int device) {
  device = checked_device(device, "cuda::DeviceGuard");
  prev_ = current_device();
  if (device != prev_) EMBER_CUDA_CHECK(cudaSetDevice(device));
}

DeviceGuard::~DeviceGuard() {
  int now = -1;
  if (cudaGetDevice(&now) != cudaSuccess || now != prev_) {
    if (cudaSetDevice(prev_) != cudaSuccess) cudaGetLastError();  // destructors never throw
  }
}

Stream Stream::current(int device) {
  device = checked_device(device, "cuda::Stream::current");
  return Stream(current_stream(device), device);
}

Stream Stream::create(int device) {
  device = checked_device(device, "cuda::Stream::create");
  DeviceGuard guard(device);
  cudaStream_t s = nullptr;
  // Non-blocking: no implicit synchronisation with the legacy default stream.
  EMBER_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return Stream(s, device);
}

void Stream::synchronize() const {
  detail::check_not_capturing("cuda::Stream::synchronize", "synchronising a stream");
  DeviceGuard guard(device_);  // the legacy stream (null) means the current device's
  EMBER_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(handle_)));
}

StreamGuard::StreamGuard(Stream s) {
  const int device = checked_device(s.device(), "cuda::StreamGuard");
  prev_device_ = current_device();
  prev_ = Stream::current(device);
  set_current_stream(device, static_cast<cudaStream_t>(s.handle()));
  if (device != prev_device_) {
    cudaError_t err = cudaSetDevice(device);
    if (err != cudaSuccess) {  // the destructor will not run: undo the stream by hand
      set_current_stream(device, static_cast<cudaStream_t>(prev_.handle()));
      fail_cuda("cudaSetDevice(device)", err, __FILE__, __LINE__);
    }
  }
}

StreamGuard::~StreamGuard() {
  set_current_stream(prev_.device(), static_cast<cudaStream_t>(prev_.handle()));
  if (cudaSetDevice(prev_device_) != cudaSuccess) cudaGetLastError();
}

// --- events ------------------------------------------------------------------------------------

Event::Event() {
  device_ = checked_device(-1, "cuda::Event");
  cudaEvent_t e = nullptr;
  EMBER_CUDA_CHECK(cudaEventCreate(&e));  // default flags: timing enabled
  handle_ = e;
}

Event::~Event() {
  // Safe on an event still pending: CUDA releases it once the device reaches it.
  if (handle_ && cudaEventDestroy(static_cast<cudaEvent_t>(handle_)) != cudaSuccess) cudaGetLastError();
}

void Event::record(Stream s) {
  EMBER_CHECK(s.device() == device_, "cuda::Event", "event created on cuda:", device_,
              " cannot record a stream of cuda:", s.device());
  DeviceGuard guard(device_);
  EMBER_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(handle_), static_cast<cudaStream_t>(s.handle())));
  recorded_ = true;
}

void Event::synchronize() const {
  EMBER_CHECK(recorded_, "cuda::Event", "synchronize() on an event that was never recorded");
  detail::check_not_capturing("cuda::Event::synchronize", "waiting for an event");
  EMBER_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(handle_)));
}

float Event::elapsed_ms(const Event& later) const {
  EMBER_CHECK(recorded_ && later.recorded_, "cuda::Event",
              "elapsed_ms() needs both events recorded (this: ", recorded_ ? "recorded" : "not recorded",
              ", later: ", later.recorded_ ? "recorded" : "not recorded", ")");
  later.synchronize();
  float ms = 0.0f;
  EMBER_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(handle_),
                                        static_cast<cudaEvent_t>(later.handle_)));
  return ms;
}

// --- GEMM backend ------------------------------------------------------------------------------

namespace {
constexpr int kGemmUnset = -1;
std::atomic<int> g_gemm_backend{kGemmUnset};

GemmBackend gemm_backend_from_env() {
  const char* v = std::getenv("EMBER_GEMM");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "fastest") == 0) return GemmBackend::fastest;
  if (std::strcmp(v, "ember") == 0) return GemmBackend::ember;
  if (std::strcmp(v, "cublas") == 0) return GemmBackend::cublas;
  EMBER_FAIL("cuda", "EMBER_GEMM=\"", v,
             "\" is not a GEMM backend; use EMBER_GEMM=fastest (the default), EMBER_GEMM=ember or EMBER_GEMM=cublas");
}

bool flag_from_env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0' || std::strcmp(v, "0") == 0) return false;
  if (std::strcmp(v, "1") == 0) return true;
  EMBER_FAIL("cuda", name, "=\"", v, "\" is not a flag; use ", name, "=1 or ", name, "=0");
}

constexpr int kTileUnset = -2;
std::atomic<int> g_sm90_tile{kTileUnset};
std::atomic<int> g_tf32{-1};

int sm90_tile_from_env() {
  const char* v = std::getenv("EMBER_GEMM_SM90");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0) return -1;
  if (std::strcmp(v, "off") == 0 || std::strcmp(v, "0") == 0) return 0;
  if (std::strcmp(v, "128") == 0) return 128;
  if (std::strcmp(v, "256") == 0) return 256;
  EMBER_FAIL("cuda", "EMBER_GEMM_SM90=\"", v, "\" is not a setting; use auto, off, 128 or 256");
}
}  // namespace

void set_gemm_backend(GemmBackend b) { g_gemm_backend.store(static_cast<int>(b)); }

GemmBackend gemm_backend() {
  int v = g_gemm_backend.load();
  if (v == kGemmUnset) {
    // First use: the environment decides, unless set_gemm_backend got there first.
    int from_env = static_cast<int>(gemm_backend_from_env());
    if (g_gemm_backend.compare_exchange_strong(v, from_env)) v = from_env;
  }
  return static_cast<GemmBackend>(v);
}

int compute_capability(int device) {
  return device_compute_capability(device < 0 ? current_device() : checked_device(device, "cuda::compute_capability"));
}

void set_allow_tf32(bool allow) { g_tf32.store(allow ? 1 : 0); }
bool allow_tf32() {
  int v = g_tf32.load();
  if (v < 0) {
    const int from_env = flag_from_env("EMBER_ALLOW_TF32") ? 1 : 0;
    if (g_tf32.compare_exchange_strong(v, from_env)) v = from_env;
  }
  return v == 1;
}

void set_gemm_sm90_tile(int tile) {
  EMBER_CHECK(tile == -1 || tile == 0 || tile == 128 || tile == 256, "cuda::set_gemm_sm90_tile",
              "tile must be -1 (automatic), 0 (off), 128 or 256, got ", tile);
  g_sm90_tile.store(tile);
}
int gemm_sm90_tile() {
  int v = g_sm90_tile.load();
  if (v == kTileUnset) {
    const int from_env = sm90_tile_from_env();
    if (g_sm90_tile.compare_exchange_strong(v, from_env)) v = from_env;
  }
  return v;
}

}  // namespace ember::cuda
