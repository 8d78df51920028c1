// include/ember/cuda.h in a build without the CUDA backend: queries answer "none", everything
// else raises a clear ember::Error.
#include "ember/core/error.h"
#include "ember/cuda.h"

namespace ember::cuda {
namespace {
[[noreturn]] void no_cuda(const char* what) {
  EMBER_FAIL(what, "this build of ember has no CUDA backend (configure with EMBER_CUDA=ON where nvcc is installed)");
}
}  // namespace

bool built_with_cuda() { return false; }
bool is_available() { return false; }
int device_count() { return 0; }
void synchronize(int) { no_cuda("cuda::synchronize"); }
MemoryStats memory_stats(int) { no_cuda("cuda::memory_stats"); }
void reset_peak_stats(int) { no_cuda("cuda::reset_peak_stats"); }
void empty_cache() {}
void set_poison_allocations(bool) {}
Stream Stream::current(int) { no_cuda("cuda::Stream"); }
Stream Stream::create(int) { no_cuda("cuda::Stream"); }
void Stream::synchronize() const { no_cuda("cuda::Stream"); }
StreamGuard::StreamGuard(Stream) { no_cuda("cuda::StreamGuard"); }
StreamGuard::~StreamGuard() = default;
DeviceGuard::DeviceGuard(int) { no_cuda("cuda::DeviceGuard"); }
DeviceGuard::~DeviceGuard() = default;
Event::Event() { no_cuda("cuda::Event"); }
Event::~Event() = default;
void Event::record(Stream) { no_cuda("cuda::Event"); }
void Event::synchronize() const { no_cuda("cuda::Event"); }
float Event::elapsed_ms(const Event&) const { no_cuda("cuda::Event"); }
Tensor pin_memory(const Tensor&) { no_cuda("pin_memory"); }
bool is_pinned(const Tensor&) { return false; }
void copy_async(const Tensor&, const Tensor&) { no_cuda("copy_async"); }
void set_gemm_backend(GemmBackend) { no_cuda("cuda::set_gemm_backend"); }
GemmBackend gemm_backend() { return GemmBackend::fastest; }  // the documented default
void set_allow_tf32(bool) { no_cuda("cuda::set_allow_tf32"); }
bool allow_tf32() { return false; }
void set_gemm_sm90_tile(int) { no_cuda("cuda::set_gemm_sm90_tile"); }
int gemm_sm90_tile() { return -1; }
int compute_capability(int) { no_cuda("cuda::compute_capability"); }
const char* last_conv1d_kernel() { return "none"; }

}  // namespace ember::cuda
