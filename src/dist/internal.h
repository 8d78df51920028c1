// What the collectives share below the public API: a collective in flight (Work::State), the
// job, and the NCCL side (src/dist/nccl.cpp, CUDA builds) that dist.cpp hands CUDA tensors to.
#pragma once
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "ember/dist.h"

namespace ember::dist {

// One collective in flight. `test` reports completion without blocking (and throws on a
// transport error); `on_timeout` runs once before the timeout error (NCCL aborts its
// communicator there); `finish` runs once after completion on this rank. A collective captured
// into a CUDA graph has `join` instead of `test`: wait() calls it once (it orders the caller's
// stream after the collective, a dependency inside the graph, no host wait) and is_completed()
// says "not yet" until then, so nothing polls the device while a capture is open.
struct Work::State {
  const char* op = "";
  std::function<bool()> test;
  std::function<void()> join;
  std::function<void()> on_timeout;
  std::function<void()> finish;
  std::vector<Tensor> keep;  // alive until completion
  bool done = false;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
};

namespace detail {

// all_reduce without the cross-rank shape check (DDP checked its buckets' layout once, when it
// was built); `name` names the collective in errors.
Work all_reduce_unchecked(Tensor& t, ReduceOp op, const char* name);

// "rank R of W", for errors.
std::string where();
// Rank 0's `bytes` bytes at `data` on every rank (over MPI; nothing at a world of 1), waiting at
// most the job's timeout. NCCL's unique id travels this way.
void broadcast_bytes(void* data, int bytes, const char* op);

// The NCCL path for CUDA tensors. One communicator per process, made on first use on the
// tensor's device (later collectives must use the same device), with its own stream ordered
// after the caller's current stream by an event; Work::wait polls the completion event and
// NCCL's asynchronous error, and aborts the communicator at the timeout. Every function throws
// ember::Error naming `name` when NCCL is not available (built without nccl.h, or
// libnccl.so.2 not loadable at run time).
bool nccl_available(std::string* why = nullptr);
Work nccl_all_reduce(Tensor& t, ReduceOp op, const char* name);
Work nccl_broadcast(Tensor& t, int root, const char* name);
// Every rank's contiguous copy of t, stacked along a new dim 0 into `all` (set at once; its
// values are there when the Work completes).
Work nccl_all_gather(const Tensor& t, Tensor& all, const char* name);
// Ends the communicator (at dist::finalize); nothing when none was made.
void nccl_finalize();

}  // namespace detail
}  // namespace ember::dist
