// The scheduler behind emu_runtime.h: fibers (ucontext) for the threads of one block (or of the
// whole grid, in a cooperative launch), barriers, spins, the warp exchange, cp.async queues and
// dynamic shared memory.
#include "emu_runtime.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define EMBER_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMBER_EMU_ASAN 1
#endif
#endif
#ifdef EMBER_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace ember::emu {

Fault injected_fault = Fault::kNone;

namespace {

// Fiber stacks: a kernel's locals are its registers (a few hundred bytes) plus the emulated
// primitives' frames; AddressSanitizer's redzones make frames several times larger.
#ifdef EMBER_EMU_ASAN
constexpr size_t kStackBytes = 512 * 1024;
#else
constexpr size_t kStackBytes = 128 * 1024;
#endif

struct Barrier {
  int expected = 0;
  int arrived = 0;
  uint64_t generation = 0;
};

struct Copy {
  unsigned char* dst;
  const unsigned char* src;
  int bytes;         // copied from src
  int zero_fill_to;  // then zeros up to this many bytes
  int64_t group;     // commit group (the number of commits before it was issued)
};

struct Fiber {
  ucontext_t ctx;
  unsigned char* stack = nullptr;  // usable part (above the guard page)
  uint3 tid{0, 0, 0};
  int linear = 0;
  bool done = false;
  const Barrier* waiting = nullptr;  // the barrier it waits at
  uint64_t wait_generation = 0;
  const unsigned* watch = nullptr;  // the word it spins on, while that still holds watch_value
  unsigned watch_value = 0;
  const unsigned* spin_addr = nullptr;  // its last load_acquire since its last barrier, and the value
  unsigned spin_value = 0;
  const char* where = "";  // what it waits in, for deadlock reports
  uint64_t warp_ops = 0;   // warp operations so far: the parity picks the exchange buffer
  std::vector<Copy> copies;
  int64_t commits = 0;
  void* fake_stack = nullptr;  // AddressSanitizer's, while switched out
};

struct WarpState {
  Barrier bar;
  const char* tag[2][kWarpSize];
  alignas(16) ExchangeTable words[2];
};

struct Block {
  uint3 idx{0, 0, 0};  // blockIdx
  const std::function<void()>* body = nullptr;
  std::vector<Fiber>* fibers = nullptr;
  std::vector<WarpState> warps;
  Barrier block_bar;
  ucontext_t sched;
  int current = -1;
  std::string error;  // the first fault
  const void* sched_bottom = nullptr;  // the scheduler's stack, for AddressSanitizer
  size_t sched_size = 0;
};

thread_local Block* t_block = nullptr;
alignas(16) thread_local unsigned char shared_anchor;

std::vector<unsigned char* (*)()>& dynamic_arrays() {
  static std::vector<unsigned char* (*)()> arrays;
  return arrays;
}

// Stacks are kept for the next block; each has a PROT_NONE guard page below it so that an
// overflow faults instead of corrupting the neighbour.
std::vector<unsigned char*>& stack_pool() {
  thread_local std::vector<unsigned char*> pool;
  return pool;
}
unsigned char* stack_at(size_t i) {
  auto& pool = stack_pool();
  while (pool.size() <= i) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) throw KernelFault("emu: cannot map a fiber stack");
    mprotect(p, page, PROT_NONE);
    pool.push_back(static_cast<unsigned char*>(p) + page);
  }
  return pool[i];
}

Block& block() {
  if (t_block == nullptr || t_block->current < 0)
    throw KernelFault("emu: a device function was called outside a launch");
  return *t_block;
}
Fiber& self() {
  Block& b = block();
  return (*b.fibers)[static_cast<size_t>(b.current)];
}

// --- switching (annotated for AddressSanitizer, which must know which stack is current) ---------
void switch_to_scheduler(Fiber& f, bool final_switch) {
  Block& b = *t_block;
#ifdef EMBER_EMU_ASAN
  __sanitizer_start_switch_fiber(final_switch ? nullptr : &f.fake_stack, b.sched_bottom, b.sched_size);
#else
  (void)final_switch;
#endif
  swapcontext(&f.ctx, &b.sched);
#ifdef EMBER_EMU_ASAN
  __sanitizer_finish_switch_fiber(f.fake_stack, nullptr, nullptr);
#endif
}

void resume(Block& b, int i) {
  Fiber& f = (*b.fibers)[static_cast<size_t>(i)];
  b.current = i;
  threadIdx = f.tid;
#ifdef EMBER_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack, kStackBytes);
#endif
  swapcontext(&b.sched, &f.ctx);
#ifdef EMBER_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  b.current = -1;
}

std::string thread_name(const Block& b, const Fiber& f) {
  char s[96];
  std::snprintf(s, sizeof(s), "thread (%u,%u,%u) of block (%u,%u,%u)", f.tid.x, f.tid.y, f.tid.z, b.idx.x, b.idx.y,
                b.idx.z);
  return s;
}

// Whether the scheduler may resume f: not exited, not at a barrier some thread has not reached,
// not spinning on a word nobody changed.
bool can_run(const Fiber& f) {
  if (f.done) return false;
  if (f.waiting != nullptr && f.waiting->generation == f.wait_generation) return false;
  return f.watch == nullptr || *f.watch != f.watch_value;
}

void run_copies(Fiber& f, int64_t below_group) {
  size_t kept = 0;
  for (const Copy& c : f.copies) {
    if (c.group < below_group) {
      if (c.bytes > 0) std::memcpy(c.dst, c.src, static_cast<size_t>(c.bytes));
      if (c.zero_fill_to > c.bytes) std::memset(c.dst + c.bytes, 0, static_cast<size_t>(c.zero_fill_to - c.bytes));
    } else {
      f.copies[kept++] = c;
    }
  }
  f.copies.resize(kept);
}

void fiber_main(int index) {
  Block& b = *t_block;
#ifdef EMBER_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &b.sched_bottom, &b.sched_size);
#endif
  Fiber& f = (*b.fibers)[static_cast<size_t>(index)];
  try {
    (*b.body)();
    run_copies(f, INT64_MAX);  // copies still queued at exit complete (nothing reads them)
  } catch (const std::exception& e) {
    if (b.error.empty()) b.error = thread_name(b, f) + ": " + e.what();
  } catch (...) {
    if (b.error.empty()) b.error = thread_name(b, f) + ": unknown exception";
  }
  f.done = true;
  switch_to_scheduler(f, true);
  std::abort();  // never resumed
}

void arrive_and_wait(Barrier& bar, const char* where) {
  Fiber& f = self();
  f.spin_addr = nullptr;  // a load_acquire after a barrier is a new read, not a spin
  if (++bar.arrived == bar.expected) {
    bar.arrived = 0;
    ++bar.generation;
    return;
  }
  f.waiting = &bar;
  f.wait_generation = bar.generation;
  f.where = where;
  switch_to_scheduler(f, false);
  f.waiting = nullptr;
}

// Prepares block b's threads; their stacks are the pool's first_stack, first_stack + 1, ...
void init_block(Block& b, std::vector<Fiber>& fibers, dim3 block_dim, size_t first_stack) {
  const int n = static_cast<int>(fibers.size());
  b.fibers = &fibers;
  b.error.clear();
  b.block_bar = Barrier{n, 0, 0};
  b.warps.assign(static_cast<size_t>((n + kWarpSize - 1) / kWarpSize), WarpState{});
  for (size_t w = 0; w < b.warps.size(); ++w)
    b.warps[w].bar.expected = std::min(kWarpSize, n - kWarpSize * static_cast<int>(w));  // the last may be partial
  for (int i = 0; i < n; ++i) {
    Fiber& f = fibers[static_cast<size_t>(i)];
    f.linear = i;
    f.tid = uint3{static_cast<unsigned>(i) % block_dim.x, (static_cast<unsigned>(i) / block_dim.x) % block_dim.y,
                  static_cast<unsigned>(i) / (block_dim.x * block_dim.y)};
    f.done = false;
    f.waiting = nullptr;
    f.watch = nullptr;
    f.spin_addr = nullptr;
    f.warp_ops = 0;
    f.copies.clear();
    f.commits = 0;
    f.fake_stack = nullptr;
    f.stack = stack_at(first_stack + static_cast<size_t>(i));
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, reinterpret_cast<void (*)()>(&fiber_main), 1, i);
#ifdef EMBER_EMU_ASAN
    // ASan's swapcontext interceptor clears the shadow of the target context's uc_stack on
    // every switch (64 KB of shadow for this stack: it made the tests ten times slower). The
    // field is not needed after makecontext; the stack's shadow is cleared here, once a block.
    f.ctx.uc_stack.ss_sp = nullptr;
    f.ctx.uc_stack.ss_size = 0;
    ASAN_UNPOISON_MEMORY_REGION(f.stack, kStackBytes);
#endif
  }
}

// One pass over block b's threads, resuming each that can continue once (t_block and blockIdx
// must name b). Returns whether any ran; `live` counts the threads that have not exited. Throws
// the first fault a thread reported.
bool run_round(Block& b, int& live) {
  std::vector<Fiber>& fibers = *b.fibers;
  const int n = static_cast<int>(fibers.size());
  live = 0;
  bool progressed = false;
  for (int i = 0; i < n && b.error.empty(); ++i) {
    Fiber& f = fibers[static_cast<size_t>(i)];
    if (f.done) continue;
    ++live;
    if (!can_run(f)) continue;
    resume(b, i);
    progressed = true;
  }
  if (!b.error.empty()) throw KernelFault(b.error);
  return progressed;
}

// Appends b's waiting threads to a deadlock report, the first four over all calls (`shown`
// counts them), and counts the waiting and exited threads.
void report_waiting(const Block& b, std::string& msg, int& shown, int& waiting, int& exited) {
  for (const Fiber& f : *b.fibers) {
    if (f.done) {
      ++exited;
      continue;
    }
    ++waiting;
    if (shown++ >= 4) continue;
    // append(), not operator+: GCC 12 reports a false -Wrestrict on `" " + std::string`.
    msg.append(" ").append(thread_name(b, f)).append(" waits in ").append(f.where);
    if (f.watch != nullptr) msg.append(" (the word stays ").append(std::to_string(f.watch_value)).append(")");
    msg.append(";");
  }
}

void run_block(Block& b, std::vector<Fiber>& fibers, dim3 block_dim) {
  init_block(b, fibers, block_dim, 0);
  for (;;) {
    int live = 0;
    const bool progressed = run_round(b, live);
    if (live == 0) return;
    if (!progressed) {
      std::string msg = "deadlock:";
      int shown = 0, waiting = 0, exited = 0;
      report_waiting(b, msg, shown, waiting, exited);
      msg.append(" ").append(std::to_string(waiting)).append(" waiting, ").append(std::to_string(exited));
      msg.append(" exited");
      bool spins = false;
      for (const Fiber& f : fibers) spins = spins || (!f.done && f.watch != nullptr);
      if (spins) msg.append(" (a wait for other blocks needs launch_cooperative: here they run one after another)");
      throw KernelFault(msg);
    }
  }
}

void check_launch(dim3 grid, dim3 block_dim, size_t smem_bytes, const char* what) {
  const uint64_t threads = uint64_t{block_dim.x} * block_dim.y * block_dim.z;
  if (threads == 0 || threads > 1024)
    throw KernelFault(std::string(what) + ": block of " + std::to_string(threads) + " threads");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535)
    throw KernelFault(std::string(what) + ": grid out of range");
  if (smem_bytes > kMaxDynamicShared)
    throw KernelFault(std::string(what) + ": " + std::to_string(smem_bytes) +
                      " bytes of dynamic shared memory (limit " + std::to_string(kMaxDynamicShared) + ")");
  if (t_block != nullptr) throw KernelFault(std::string(what) + ": launches do not nest");
}

// Fills the first smem_bytes of every dynamic shared array with 0xff bytes (under ASan: poisons
// the rest), as a block finds its shared memory.
void fresh_dynamic_shared(size_t smem_bytes) {
  for (auto* address : dynamic_arrays()) {
    unsigned char* a = address();
#ifdef EMBER_EMU_ASAN
    ASAN_UNPOISON_MEMORY_REGION(a, kMaxDynamicShared);
#endif
    std::memset(a, 0xff, smem_bytes);
#ifdef EMBER_EMU_ASAN
    ASAN_POISON_MEMORY_REGION(a + smem_bytes, kMaxDynamicShared - smem_bytes);
#endif
  }
}

// Clears the launch state on every way out of a launch.
struct LaunchReset {
  ~LaunchReset() {
    t_block = nullptr;
#ifdef EMBER_EMU_ASAN
    for (auto* address : dynamic_arrays()) ASAN_UNPOISON_MEMORY_REGION(address(), kMaxDynamicShared);
#endif
  }
};

}  // namespace

void fail(const std::string& what) { throw KernelFault(what); }

void sync_block() { arrive_and_wait(block().block_bar, "__syncthreads"); }

// A warp operation without data, so that a lane in __syncwarp while another is in a shuffle is
// reported like any other divergence.
void sync_warp() { warp_exchange("__syncwarp", nullptr, 0); }

int lane_id() { return self().linear % kWarpSize; }

const ExchangeTable& warp_exchange(const char* tag, const uint32_t* words, int n) {
  Block& b = block();
  Fiber& f = self();
  if (n < 0 || n > kExchangeWords) fail("emu: warp exchange of too many words");
  WarpState& w = b.warps[static_cast<size_t>(f.linear / kWarpSize)];
  const int lane = f.linear % kWarpSize, buf = static_cast<int>(f.warp_ops++ & 1);
  // Double buffered: a lane can reach operation k + 2 only after every lane arrived at k + 1,
  // i.e. after every lane finished reading operation k's table.
  w.tag[buf][lane] = tag;
  if (n > 0) std::memcpy(w.words[buf][lane], words, static_cast<size_t>(n) * sizeof(uint32_t));
  arrive_and_wait(w.bar, tag);
  for (int l = 0; l < w.bar.expected; ++l) {
    const char* other = w.tag[buf][l];
    if (other != tag && (other == nullptr || std::strcmp(other, tag) != 0))
      fail(std::string("divergent warp: lane ") + std::to_string(lane) + " in " + tag + " while lane " +
           std::to_string(l) + " is in " + (other != nullptr ? other : "none"));
  }
  return w.words[buf];
}

uint32_t shared_address(const void* p) {
  const intptr_t d = reinterpret_cast<intptr_t>(p) - reinterpret_cast<intptr_t>(&shared_anchor);
  if (d < INT32_MIN || d > INT32_MAX) fail("emu: smem_u32 of an address that is not in shared memory");
  return static_cast<uint32_t>(static_cast<int32_t>(d));
}

unsigned char* shared_pointer(uint32_t address) {
  return &shared_anchor + static_cast<int32_t>(address);
}

void async_copy(void* dst, const void* src, int bytes, int zero_fill_to) {
  Fiber& f = self();
  f.copies.push_back(Copy{static_cast<unsigned char*>(dst), static_cast<const unsigned char*>(src), bytes,
                          zero_fill_to, f.commits});
}

void async_commit() { ++self().commits; }

void async_wait(int pending_groups) {
  Fiber& f = self();
  run_copies(f, f.commits - pending_groups);
}

unsigned char shared_fill_byte() { return 0xff; }

bool register_dynamic_shared(unsigned char* (*address)()) {
  dynamic_arrays().push_back(address);
  return true;
}

unsigned load_acquire(const unsigned* p) {
  Fiber& f = self();
  if (injected_fault == Fault::kAcquireLoadMax) return 0xffffffffu;
  unsigned v = *p;
  if (f.spin_addr == p && f.spin_value == v) {  // a spin: wait for another thread's store
    f.watch = p;
    f.watch_value = v;
    f.where = "a spin on ld.acquire";
    switch_to_scheduler(f, false);
    f.watch = nullptr;
    v = *p;
  }
  f.spin_addr = p;
  f.spin_value = v;
  return v;
}

void launch_body(dim3 grid, dim3 block_dim, size_t smem_bytes, const std::function<void()>& body) {
  check_launch(grid, block_dim, smem_bytes, "emu launch");
  const uint64_t threads = uint64_t{block_dim.x} * block_dim.y * block_dim.z;
  std::vector<Fiber> fibers(threads);
  Block b{};  // b.sched zeroed: ASan reads its uc_stack when a fiber switches back
  b.body = &body;
  t_block = &b;
  gridDim = grid;
  blockDim = block_dim;
  LaunchReset reset;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = uint3{x, y, z};
        b.idx = blockIdx;
        fresh_dynamic_shared(smem_bytes);
        run_block(b, fibers, block_dim);
      }
}

// Every block's fibers live at once; the blocks take turns on this OS thread. Shared memory is
// thread-local, so each block's dynamic shared memory is kept in `saved` while another block
// runs, and copied in before its threads resume (only blocks that have a thread to resume).
void launch_cooperative_body(dim3 grid, dim3 block_dim, size_t smem_bytes, GridSchedule schedule,
                             const std::function<void()>& body) {
  check_launch(grid, block_dim, smem_bytes, "emu cooperative launch");
  const uint64_t threads = uint64_t{block_dim.x} * block_dim.y * block_dim.z;
  const uint64_t nblocks = uint64_t{grid.x} * grid.y * grid.z;
  if (nblocks * threads > static_cast<uint64_t>(kMaxCooperativeThreads))
    throw KernelFault("emu cooperative launch: " + std::to_string(nblocks) + " blocks of " + std::to_string(threads) +
                      " threads (at most " + std::to_string(kMaxCooperativeThreads) + " threads in all)");
  std::vector<Block> blocks(nblocks);  // value-initialized: each sched zeroed, as in launch_body
  std::vector<std::vector<Fiber>> fibers(nblocks, std::vector<Fiber>(threads));
  const size_t arrays = dynamic_arrays().size();
  std::vector<std::vector<unsigned char>> saved(nblocks * arrays);
  gridDim = grid;
  blockDim = block_dim;
  t_block = &blocks[0];
  LaunchReset reset;
  fresh_dynamic_shared(smem_bytes);
  for (uint64_t i = 0; i < nblocks; ++i) {
    Block& b = blocks[i];
    b.idx = uint3{static_cast<unsigned>(i % grid.x), static_cast<unsigned>(i / grid.x % grid.y),
                  static_cast<unsigned>(i / (uint64_t{grid.x} * grid.y))};
    b.body = &body;
    init_block(b, fibers[i], block_dim, i * threads);
    for (size_t a = 0; a < arrays; ++a) saved[i * arrays + a].assign(smem_bytes, shared_fill_byte());
  }
  uint64_t loaded = 0;  // the block whose shared memory the arrays hold
  auto load = [&](uint64_t i) {
    if (i == loaded || smem_bytes == 0) return;
    for (size_t a = 0; a < arrays; ++a) {
      unsigned char* p = dynamic_arrays()[a]();
      std::memcpy(saved[loaded * arrays + a].data(), p, smem_bytes);
      std::memcpy(p, saved[i * arrays + a].data(), smem_bytes);
    }
    loaded = i;
  };
  for (;;) {
    bool progressed = false;
    int live_blocks = 0;
    for (uint64_t i = 0; i < nblocks; ++i) {
      Block& b = blocks[i];
      const std::vector<Fiber>& fs = fibers[i];
      if (std::all_of(fs.begin(), fs.end(), [](const Fiber& f) { return f.done; })) continue;
      ++live_blocks;
      if (std::none_of(fs.begin(), fs.end(), can_run)) continue;
      load(i);
      t_block = &b;
      blockIdx = b.idx;
      int live = 0;
      while (run_round(b, live)) {
        progressed = true;
        if (schedule == GridSchedule::kRoundRobin || live == 0) break;
      }
    }
    if (live_blocks == 0) return;
    if (!progressed) {
      std::string msg = "grid deadlock:";
      int shown = 0, waiting = 0, exited = 0;
      for (const Block& b : blocks) report_waiting(b, msg, shown, waiting, exited);
      msg.append(" ").append(std::to_string(waiting)).append(" waiting, ").append(std::to_string(exited));
      msg.append(" exited");
      throw KernelFault(msg);
    }
  }
}

}  // namespace ember::emu
