// ember/cpu.h: thread count and the denormal mode of the CPU backend's threads.
#include "ember/cpu.h"

#include <omp.h>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define EMBER_HAVE_MXCSR 1
#endif

#include "ember/core/error.h"

namespace ember::cpu {

int num_threads() { return omp_get_max_threads(); }

void set_num_threads(int n) {
  EMBER_CHECK(n >= 1, "set_num_threads", "needs at least 1 thread, got ", n);
  omp_set_num_threads(n);
}

#ifdef EMBER_HAVE_MXCSR
namespace {
constexpr unsigned kFtzDaz = 0x8040;  // MXCSR bit 15 (flush to zero) and bit 6 (denormals are zero)
void apply(bool on) { _mm_setcsr(on ? (_mm_getcsr() | kFtzDaz) : (_mm_getcsr() & ~kFtzDaz)); }
}  // namespace

bool set_flush_denormal(bool on) {
  apply(on);
  // The mode is per thread: set it in every worker of the pool. Threads OpenMP creates later
  // are started by this thread and inherit its floating-point environment.
#pragma omp parallel
  apply(on);
  return true;
}

bool flush_denormal() { return (_mm_getcsr() & kFtzDaz) == kFtzDaz; }
#else
bool set_flush_denormal(bool) { return false; }
bool flush_denormal() { return false; }
#endif

}  // namespace ember::cpu
