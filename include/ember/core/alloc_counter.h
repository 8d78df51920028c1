// A per-thread count of the bytes Storage has allocated, on every device. A profiler reads it
// before and after an op to attribute allocations to the op; the cost is one thread-local add
// per allocation, and it is always on (there is nothing to switch).
#pragma once
#include <cstdint>

namespace ember {

// Bytes this thread has asked Storage for since the thread started (monotonic; frees do not
// subtract). Allocations that fail are not counted.
uint64_t thread_allocated_bytes();

}  // namespace ember
