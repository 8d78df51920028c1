// The Hopper primitives of emu_sm90.h. Section names refer to the PTX ISA (8.x numbering) and to
// the CUDA driver API reference of cuTensorMapEncodeTiled.
#include "emu_sm90.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace ember::emu::sm90 {

Fault injected_fault = Fault::kNone;
TmaTiming tma_timing = TmaTiming::kAtWait;

namespace {

// ---- the tensor map as stored in the opaque CUtensorMap ---------------------------------------
constexpr uint32_t kMapMagic = 0x53393041u;  // "S90A"
struct MapData {
  uint64_t address;
  uint64_t dims[5];
  uint64_t strides[4];  // bytes, dims 1..rank-1
  uint16_t box[5];
  uint8_t elem_strides[5];
  uint8_t esize, rank, swizzle, oob;
  uint32_t magic;
};
static_assert(sizeof(MapData) <= sizeof(CUtensorMap), "the emulated tensor map must fit a CUtensorMap");

// ---- per-block state (one OS thread runs one block at a time, so thread_local is per block) ----
struct WgmmaOp {
  float* d;
  int n;
  bool bf16;
  uint64_t desc_a, desc_b;
  int accumulate, trans_a, trans_b;
  int64_t group;  // the issuing thread's commit count when it was issued
};
struct ThreadState {
  uint64_t rounds = 0;  // block-barrier rounds taken part in (the same count for every thread)
  bool fenced = false;
  int64_t commits = 0;
  size_t issued = 0;  // wgmma operations so far (index into its warpgroup's log)
  std::vector<WgmmaOp> ops;
};
struct PendingCopy {
  uint32_t bar, dst;
  MapData map;
  int c[3];
};
struct BlockState {
  bool active = false;
  int threads = 0, live = 0;
  uint64_t version = 0;  // bumped by every change a waiting thread could be waiting for
  int sync_arrived = 0;
  uint64_t sync_generation = 0;
  uint64_t final_round = 0;  // set when the last thread exits: every thread leaves after this round
  std::vector<ThreadState> th;
  std::vector<std::vector<WgmmaOp>> wg_log;  // per warpgroup: the operations in issue order
  std::vector<PendingCopy> copies;
};
thread_local BlockState t_block;

unsigned char* (*g_window)() = nullptr;

int linear_tid() { return static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)); }

BlockState& block() {
  if (!t_block.active) fail("sm90 emu: a Hopper primitive outside launch_sm90");
  return t_block;
}
ThreadState& me() { return block().th[static_cast<size_t>(linear_tid())]; }

// One round: the runtime's block barrier, which every thread of the block reaches once per round
// (a thread waiting, blocked or exited arrives; a running one arrives at its next wait), so every
// thread's k-th round is the same barrier generation.
void round() {
  sync_block();
  ++me().rounds;
}

std::string hex(uint64_t v) {
  char s[32];
  std::snprintf(s, sizeof(s), "0x%llx", static_cast<unsigned long long>(v));
  return s;
}

// One round of the block (see emu_sm90.h, Scheduling): every thread arrives at the runtime's
// block barrier. `ready` is re-evaluated after each round; a thread that sees no change for
// kQuietRounds rounds reports a deadlock.
constexpr int kQuietRounds = 4;
template <class Ready>
void wait_until(const Ready& ready, const std::string& what) {
  BlockState& b = block();
  uint64_t seen = b.version;
  int quiet = 0;
  while (!ready()) {
    round();
    if (b.version != seen) {
      seen = b.version;
      quiet = 0;
    } else if (++quiet >= kQuietRounds) {
      fail("deadlock: " + what + " and no thread of the block can change that (" + std::to_string(b.live) +
           " threads still running)");
    }
  }
}

// ---- mbarrier (PTX ISA, "Parallel Synchronization and Communication Instructions: mbarrier")
// --------------------------------------------------------------------------------------
// The object is opaque ("Size and alignment of mbarrier object": 8 bytes, 8-byte
// aligned); its state per "Contents of the mbarrier object" is the current phase, the
// pending arrival count, the expected arrival count and the tx-count. This emulation keeps it in
// the object's own 8 bytes, so a kernel that overwrites a barrier corrupts it as on the GPU:
//   bits 0-19 pending count, 20-39 expected count, 40-60 tx-count (two's complement, 21 bits),
//   bit 61 phase parity, bits 62-63 = 01 (anything else: not initialised; the launcher fills
//   shared memory with 0xff bytes).
// "Phase Completion of the mbarrier object": the current phase completes when the pending count reaches 0
// and the tx-count is 0; the phase then advances (parity flips), the pending count is reloaded
// with the expected count and the tx-count stays 0.
// Ranges ("Contents of the mbarrier object", "mbarrier.init"): count in [1, 2^20 - 1]; tx-count in
// [-(2^20 - 1), 2^20 - 1].
constexpr int64_t kMaxCount = (1 << 20) - 1;
struct Bar {
  int64_t pending, expected, tx;
  uint32_t phase;
};
uint64_t* bar_object(uint64_t* bar, const char* op) {
  const uint32_t a = shared_address(bar);
  if (a % 8 != 0) fail(std::string(op) + ": mbarrier address " + hex(a) + " not 8-byte aligned");
  return bar;
}
Bar load(const uint64_t* bar, const char* op) {
  const uint64_t v = *bar;
  if ((v >> 62) != 1)
    fail(std::string(op) + ": mbarrier at shared " + hex(shared_address(bar)) + " is not initialised (" + hex(v) + ")");
  Bar s;
  s.pending = static_cast<int64_t>(v & 0xFFFFF);
  s.expected = static_cast<int64_t>((v >> 20) & 0xFFFFF);
  int64_t tx = static_cast<int64_t>((v >> 40) & 0x1FFFFF);
  if (tx & 0x100000) tx -= int64_t{1} << 21;
  s.tx = tx;
  s.phase = static_cast<uint32_t>((v >> 61) & 1);
  return s;
}
void store(uint64_t* bar, Bar s, const char* op) {
  if (s.tx > kMaxCount || s.tx < -kMaxCount)
    fail(std::string(op) + ": mbarrier tx-count " + std::to_string(s.tx) + " out of the ISA's range");
  if (s.pending == 0 && s.tx == 0) {  // phase completion
    s.phase ^= 1;
    s.pending = s.expected;
  }
  *bar = static_cast<uint64_t>(s.pending) | (static_cast<uint64_t>(s.expected) << 20) |
         ((static_cast<uint64_t>(s.tx) & 0x1FFFFF) << 40) | (static_cast<uint64_t>(s.phase) << 61) |
         (uint64_t{1} << 62);
  ++block().version;
}
void arrive(uint64_t* bar, const char* op) {
  Bar s = load(bar, op);
  // "mbarrier.arrive": decrements the pending count. The phase cannot have 0
  // pending arrivals here (it would have completed), unless tx is still outstanding: then a
  // further arrival is more than the expected count.
  if (s.pending == 0) fail(std::string(op) + ": more arrivals than the mbarrier's expected count in one phase");
  --s.pending;
  store(bar, s, op);
}

// ---- TMA: cp.async.bulk.tensor, tile mode ("cp.async.bulk.tensor" and the
// "Tensors" chapter: "Tensor Access Modes" (tiled), "Bounding Box", "Out of Bounds Access",
// "Tensor Swizzling Modes") ---------------------------------------------------------------
// The box of box[0] x box[1] x box[2] elements whose first element is at the tensor coordinates
// (c0, c1, c2) is written to shared memory densely, dimension 0 fastest. Box elements outside the
// tensor (a coordinate < 0 or >= its dim) are filled with zeros (OOB fill NONE), and still count
// toward the bytes the copy completes on the mbarrier. With 128-byte swizzling the 16-byte chunk
// at shared address a is stored at a ^ (((a >> 7) & 7) << 4): chunk index within its 128-byte
// row XOR row index within the 1024-byte pattern, from the address itself.
uint32_t swizzle128(uint32_t a) { return a ^ (((a >> 7) & 7u) << 4); }

void do_copy(const PendingCopy& c) {
  const MapData& m = c.map;
  const uint32_t bytes = uint32_t{m.box[0]} * m.box[1] * m.box[2] * m.esize;
  unsigned char* base = shared_pointer(c.dst, bytes);
  const unsigned char* g = reinterpret_cast<const unsigned char*>(m.address);
  uint32_t off = 0;
  for (int i2 = 0; i2 < m.box[2]; ++i2)
    for (int i1 = 0; i1 < m.box[1]; ++i1)
      for (int i0 = 0; i0 < m.box[0]; ++i0, off += m.esize) {
        const int64_t x0 = int64_t{c.c[0]} + i0, x1 = int64_t{c.c[1]} + i1, x2 = int64_t{c.c[2]} + i2;
        const bool in = x0 >= 0 && x1 >= 0 && x2 >= 0 && static_cast<uint64_t>(x0) < m.dims[0] &&
                        static_cast<uint64_t>(x1) < m.dims[1] && static_cast<uint64_t>(x2) < m.dims[2];
        uint32_t a = c.dst + off;
        if (m.swizzle != 0 && injected_fault != Fault::kTmaNoSwizzle) a = swizzle128(a);
        unsigned char* d = base + (a - c.dst);
        if (in) {
          const uint64_t src = static_cast<uint64_t>(x0) * m.esize + static_cast<uint64_t>(x1) * m.strides[0] +
                               static_cast<uint64_t>(x2) * m.strides[1];
          std::memcpy(d, g + src, m.esize);
        } else {
          std::memset(d, 0, m.esize);
        }
      }
  // The complete_tx of mbarrier::complete_tx::bytes ("Tracking asynchronous operations
  // by the mbarrier object"): the tx-count decreases by the bytes written.
  uint64_t* bar = reinterpret_cast<uint64_t*>(shared_pointer(c.bar, 8));
  Bar s = load(bar, "cp.async.bulk.tensor complete_tx");
  s.tx -= bytes;
  store(bar, s, "cp.async.bulk.tensor complete_tx");
}

// Completes the loads in flight that signal `bar` (in issue order).
void complete_copies(uint32_t bar) {
  BlockState& b = block();
  std::vector<PendingCopy> mine, rest;
  for (const PendingCopy& c : b.copies) (c.bar == bar ? mine : rest).push_back(c);
  if (mine.empty()) return;
  b.copies.swap(rest);
  for (const PendingCopy& c : mine) do_copy(c);
}

// ---- wgmma descriptors and layouts (9.7.15.5.1 "Register Fragments and Shared Memory Matrix
// Layouts") ---------------------------------------------------------------------------------------
float to_float(uint16_t bits, bool bf16) {
  if (bf16) {
    const uint32_t u = uint32_t{bits} << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  __half_raw raw;
  raw.x = bits;
  return __half2float(__half(raw));
}
// The 16-bit element at a shared address.
float element(uint32_t address, bool bf16) {
  uint16_t bits;
  std::memcpy(&bits, shared_pointer(address, 2), 2);
  return to_float(bits, bf16);
}

void execute(const WgmmaOp& op, int tid) {
  // 9.7.15.5.1.1.1 "Matrix Fragments for wgmma.mma_async.m64nNk16", accumulator D (.f32): thread
  // t of the warpgroup (warp w = t / 32, lane l, g = l / 4, q = l % 4) holds d[i] =
  // D(16 w + g + 8 ((i >> 1) & 1), 8 (i >> 2) + 2 q + (i & 1)), i < N / 2.
  const int w = (tid % 128) / 32, lane = tid % 32, g = lane / 4, q = lane % 4;
  int rows[2] = {16 * w + g, 16 * w + g + 8};
  if (injected_fault == Fault::kAccumulatorRows) std::swap(rows[0], rows[1]);
  float a[2][16];
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 16; ++k)
      a[h][k] = element(operand_address(op.desc_a, op.trans_a, rows[h], k), op.bf16);
  for (int j = 0; j < op.n / 8; ++j)
    for (int c = 0; c < 2; ++c) {
      const int col = 8 * j + 2 * q + c;
      float bcol[16];
      for (int k = 0; k < 16; ++k)
        bcol[k] = element(operand_address(op.desc_b, op.trans_b, col, k), op.bf16);
      for (int h = 0; h < 2; ++h) {
        // Exact products summed in double, added to the f32 accumulator with one rounding (the
        // ISA leaves the internal order and precision open; the tests use tolerances).
        double s = 0;
        for (int k = 0; k < 16; ++k) s += static_cast<double>(a[h][k]) * bcol[k];
        float& d = op.d[4 * j + 2 * h + c];
        d = static_cast<float>((op.accumulate ? static_cast<double>(d) : 0.0) + s);
      }
    }
}

}  // namespace

// ---- shared window ------------------------------------------------------------------------------
bool register_shared_window(unsigned char* (*array)()) {
  g_window = array;
  return true;
}
uint32_t shared_address(const void* p) {
  if (g_window == nullptr) fail("sm90 emu: no shared window (EMBER_EMU_SM90_DYNAMIC_SHARED)");
  const intptr_t d = reinterpret_cast<intptr_t>(p) - reinterpret_cast<intptr_t>(g_window());
  if (d < 0 || d >= static_cast<intptr_t>(kMaxDynamicShared))
    fail("sm90 emu: smem_u32 of an address outside the dynamic shared memory");
  return static_cast<uint32_t>(d) + kWindowOffset;
}
unsigned char* shared_pointer(uint32_t address, size_t bytes) {
  if (g_window == nullptr) fail("sm90 emu: no shared window (EMBER_EMU_SM90_DYNAMIC_SHARED)");
  if (address < kWindowOffset || address - kWindowOffset + bytes > kMaxDynamicShared)
    fail("sm90 emu: shared address " + hex(address) + " (+" + std::to_string(bytes) + " bytes) outside the window");
  return g_window() + (address - kWindowOffset);
}

// ---- launcher -----------------------------------------------------------------------------------
void launch_body(dim3 grid, dim3 block_dim, size_t smem_bytes, const std::function<void()>& body) {
  const int threads = static_cast<int>(block_dim.x * block_dim.y * block_dim.z);
  struct Reset {
    ~Reset() { t_block = BlockState{}; }
  } reset;
  t_block = BlockState{};
  ember::emu::launch_body(grid, block_dim, smem_bytes, [&] {
    BlockState& b = t_block;
    // The runtime starts the threads of a block in order: thread 0 first sets up its state.
    if (linear_tid() == 0) {
      b = BlockState{};
      b.active = true;
      b.threads = b.live = threads;
      b.th.assign(static_cast<size_t>(threads), ThreadState{});
      b.wg_log.assign(static_cast<size_t>((threads + 127) / 128), {});
    }
    body();
    ThreadState& t = me();
    if (!t.ops.empty())
      fail("exited with " + std::to_string(t.ops.size()) + " wgmma operations not retired by wgmma.wait_group");
    --b.live;
    ++b.version;
    if (b.sync_arrived > 0 && b.sync_arrived == b.live) {  // the exit completes a __syncthreads
      b.sync_arrived = 0;
      ++b.sync_generation;
    }
    if (b.live == 0) {
      if (!b.copies.empty())
        fail("the block exited with " + std::to_string(b.copies.size()) + " TMA loads in flight");
      // Every other thread is in round rounds or rounds + 1: all leave after rounds + 1.
      b.final_round = t.rounds + 1;
    }
    // Exited threads keep arriving at the rounds until the whole block is done.
    while (b.final_round == 0 || me().rounds < b.final_round) round();
  });
}

// bar.sync 0 ("bar, barrier"): waits until all threads of the CTA have arrived. Exited
// threads are not counted (the ISA leaves barriers after a thread exits to the hardware; this
// kernel family calls it only before any thread exits).
void syncthreads() {
  if (!t_block.active) {  // a kernel started by the plain runtime
    sync_block();
    return;
  }
  BlockState& b = t_block;
  const uint64_t gen = b.sync_generation;
  ++b.version;
  if (++b.sync_arrived == b.live) {
    b.sync_arrived = 0;
    ++b.sync_generation;
    return;
  }
  wait_until([&] { return b.sync_generation != gen; }, "__syncthreads waits for threads that never arrive");
}

// ---- cuTensorMapEncodeTiled (CUDA driver API reference) -------------------------------------------
CUresult encode_tiled(CUtensorMap* map, CUtensorMapDataType dtype, cuuint32_t rank, void* address,
                      const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                      const cuuint32_t* elem_strides, CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
                      CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob) {
  (void)l2;  // a cache hint
  MapData m{};
  switch (dtype) {
    case CU_TENSOR_MAP_DATA_TYPE_UINT8: m.esize = 1; break;
    case CU_TENSOR_MAP_DATA_TYPE_UINT16:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT16:
    case CU_TENSOR_MAP_DATA_TYPE_BFLOAT16: m.esize = 2; break;
    case CU_TENSOR_MAP_DATA_TYPE_UINT32:
    case CU_TENSOR_MAP_DATA_TYPE_INT32:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT32:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT32_FTZ:
    case CU_TENSOR_MAP_DATA_TYPE_TFLOAT32:
    case CU_TENSOR_MAP_DATA_TYPE_TFLOAT32_FTZ: m.esize = 4; break;
    case CU_TENSOR_MAP_DATA_TYPE_UINT64:
    case CU_TENSOR_MAP_DATA_TYPE_INT64:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT64: m.esize = 8; break;
    default: return CUDA_ERROR_INVALID_VALUE;  // packed types: not emulated
  }
  // "tensorMap address must be aligned to 64 bytes"; "tensorRank ... must be non-zero and less
  // than or equal to the maximum supported dimensionality of 5".
  if (reinterpret_cast<uintptr_t>(map) % 64 != 0) return CUDA_ERROR_INVALID_VALUE;
  if (rank == 0 || rank > 5) return CUDA_ERROR_INVALID_VALUE;
  // This emulation loads 3-D boxes only (tma_load_3d).
  if (rank != 3) return CUDA_ERROR_INVALID_VALUE;
  // "globalAddress ... must be 16 byte aligned" (32 with interleave).
  if (reinterpret_cast<uintptr_t>(address) % 16 != 0) return CUDA_ERROR_INVALID_VALUE;
  if (interleave != CU_TENSOR_MAP_INTERLEAVE_NONE) return CUDA_ERROR_INVALID_VALUE;  // not emulated
  for (cuuint32_t i = 0; i < rank; ++i) {
    // "globalDim ... must be non-zero and less than or equal to 2^32".
    if (dims[i] == 0 || dims[i] > (uint64_t{1} << 32)) return CUDA_ERROR_INVALID_VALUE;
    // "boxDim ... must be non-zero and less than or equal to 256".
    if (box[i] == 0 || box[i] > 256) return CUDA_ERROR_INVALID_VALUE;
    // "elementStrides ... must be non-zero and less than or equal to 8"; only 1 is emulated.
    if (elem_strides[i] == 0 || elem_strides[i] > 8) return CUDA_ERROR_INVALID_VALUE;
    if (elem_strides[i] != 1) return CUDA_ERROR_INVALID_VALUE;
    m.dims[i] = dims[i];
    m.box[i] = static_cast<uint16_t>(box[i]);
    m.elem_strides[i] = static_cast<uint8_t>(elem_strides[i]);
  }
  for (cuuint32_t i = 0; i + 1 < rank; ++i) {
    // "globalStrides ... must be a multiple of 16 and less than 2^40"; each stride must also
    // cover the previous dimension: globalStrides[i] >= globalDim[i] * elementSize(, *
    // globalStrides[i - 1]).
    if (strides[i] % 16 != 0 || strides[i] >= (uint64_t{1} << 40)) return CUDA_ERROR_INVALID_VALUE;
    const uint64_t below = i == 0 ? dims[0] * m.esize : dims[i] * strides[i - 1];
    if (strides[i] < below) return CUDA_ERROR_INVALID_VALUE;
    m.strides[i] = strides[i];
  }
  // With interleave NONE, "the inner dimension of the box, boxDim[0] * elementSize, must be a
  // multiple of 16 bytes"; a swizzle's span bounds it: "CU_TENSOR_MAP_SWIZZLE_128B requires the
  // bounding box inner dimension to be <= 128" bytes.
  const uint32_t inner = uint32_t{m.box[0]} * m.esize;
  if (inner % 16 != 0) return CUDA_ERROR_INVALID_VALUE;
  switch (swizzle) {
    case CU_TENSOR_MAP_SWIZZLE_NONE: m.swizzle = 0; break;
    case CU_TENSOR_MAP_SWIZZLE_128B:
      if (inner > 128) return CUDA_ERROR_INVALID_VALUE;
      // How a narrower box row is placed within the 128-byte span is not documented: only full
      // 128-byte rows are emulated.
      if (inner != 128) return CUDA_ERROR_INVALID_VALUE;
      m.swizzle = 1;
      break;
    default: return CUDA_ERROR_INVALID_VALUE;  // 32B / 64B / atom variants: not emulated
  }
  if (oob != CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) return CUDA_ERROR_INVALID_VALUE;  // NaN fill: not emulated
  m.address = reinterpret_cast<uint64_t>(address);
  m.rank = static_cast<uint8_t>(rank);
  m.oob = 0;
  m.magic = kMapMagic;
  std::memset(map, 0, sizeof(CUtensorMap));
  std::memcpy(map, &m, sizeof(m));
  return CUDA_SUCCESS;
}

// ---- mbarrier operations ----------------------------------------------------------------------
void mbar_init(uint64_t* bar, uint32_t count) {
  bar_object(bar, "mbarrier.init");
  if (count < 1 || count > kMaxCount) fail("mbarrier.init: count " + std::to_string(count) + " outside [1, 2^20 - 1]");
  // "mbarrier.init": phase 0, pending = expected = count, tx-count 0.
  *bar = uint64_t{count} | (uint64_t{count} << 20) | (uint64_t{1} << 62);
  ++block().version;
}

void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  bar_object(bar, "mbarrier.arrive.expect_tx");
  // "mbarrier.expect_tx" then "mbarrier.arrive": the expect-tx operation
  // (tx-count += bytes) is performed before the arrive-on operation.
  Bar s = load(bar, "mbarrier.arrive.expect_tx");
  s.tx += bytes;
  if (s.tx > kMaxCount) fail("mbarrier.arrive.expect_tx: tx-count above 2^20 - 1");
  if (s.pending == 0) fail("mbarrier.arrive.expect_tx: more arrivals than the expected count in one phase");
  --s.pending;
  store(bar, s, "mbarrier.arrive.expect_tx");
}

void mbar_arrive(uint64_t* bar) { arrive(bar_object(bar, "mbarrier.arrive"), "mbarrier.arrive"); }

void mbar_wait(uint64_t* bar, uint32_t parity) {
  bar_object(bar, "mbarrier.try_wait.parity");
  if (parity > 1) fail("mbarrier.try_wait.parity: parity " + std::to_string(parity) + " is not 0 or 1");
  const uint32_t address = shared_address(bar);
  // "mbarrier.test_wait / mbarrier.try_wait": with .parity, waitComplete is true
  // once the phase of the given parity has completed, i.e. while the current phase's parity
  // differs from it (the operand names the current phase or the immediately preceding one).
  wait_until(
      [&] {
        complete_copies(address);  // loads in flight on this barrier land now, at the latest
        return load(bar, "mbarrier.try_wait.parity").phase != parity;
      },
      "mbarrier.try_wait.parity " + std::to_string(parity) + " on shared " + hex(address) + " never completes");
}

void tma_load_3d(void* dst, const CUtensorMap* map, uint64_t* bar, int c0, int c1, int c2) {
  MapData m;
  std::memcpy(&m, map, sizeof(m));
  if (m.magic != kMapMagic || m.rank != 3) fail("cp.async.bulk.tensor.3d: not a 3-D tensor map from encode_tiled");
  const uint32_t d = shared_address(dst);
  // "cp.async.bulk.tensor": the shared-memory destination is 128-byte aligned; the swizzle pattern repeats
  // every 1024 bytes and the CUDA programming guide's TMA swizzle section asks for the
  // destination to be aligned to it, so that chunk and row indices start at 0 within the box.
  if (d % 128 != 0) fail("cp.async.bulk.tensor: shared destination " + hex(d) + " not 128-byte aligned");
  if (m.swizzle != 0 && d % 1024 != 0)
    fail("cp.async.bulk.tensor: 128B-swizzled destination " + hex(d) + " not 1024-byte aligned");
  const uint32_t bytes = uint32_t{m.box[0]} * m.box[1] * m.box[2] * m.esize;
  shared_pointer(d, bytes);  // the box fits the window
  const uint32_t b = shared_address(bar_object(bar, "cp.async.bulk.tensor"));
  load(bar, "cp.async.bulk.tensor");  // initialised
  BlockState& blk = block();
  const PendingCopy copy{b, d, m, {c0, c1, c2}};
  if (tma_timing == TmaTiming::kAtIssue)
    do_copy(copy);
  else
    blk.copies.push_back(copy);
  ++blk.version;
}

// "setmaxnreg": the register count is in [24, 256] and a multiple of 8. Nothing else to
// emulate: registers are not a resource here.
void setmaxnreg(int regs) {
  if (regs < 24 || regs > 256 || regs % 8 != 0) fail("setmaxnreg: " + std::to_string(regs) + " registers");
}

// ---- wgmma ordering ("Asynchronous Warpgroup Level Matrix Multiply-Accumulate Operation":
// wgmma.fence, wgmma.commit_group, wgmma.wait_group) -----------------------------------------------------------
// wgmma.fence orders the thread's earlier register accesses before the following
// wgmma.mma_async; the ISA requires it before the first wgmma.mma_async and whenever the
// accumulator registers were accessed in between. Emulated rule: a wgmma.mma_async needs a
// wgmma.fence after the thread's last wgmma.wait_group (where the accumulators become readable).
void wgmma_fence() { me().fenced = true; }

// Every uncommitted wgmma.mma_async of the thread becomes one wgmma-group.
void wgmma_commit_group() { ++me().commits; }

// Waits until at most `pending` of the thread's most recent groups are in flight: the older
// groups are executed now, in issue order.
void wgmma_wait_group(int pending) {
  if (pending < 0 || pending > 7) fail("wgmma.wait_group: N = " + std::to_string(pending) + " outside [0, 7]");
  ThreadState& t = me();
  const int tid = linear_tid();
  std::vector<WgmmaOp> keep;
  for (const WgmmaOp& op : t.ops) {
    if (op.group < t.commits - pending)
      execute(op, tid);
    else
      keep.push_back(op);
  }
  t.ops.swap(keep);
  t.fenced = false;
}

void wgmma(float* d, int n, bool bf16, uint64_t desc_a, uint64_t desc_b, int accumulate, int trans_a, int trans_b) {
  ThreadState& t = me();
  if (!t.fenced) fail("wgmma.mma_async without a wgmma.fence after the last wgmma.wait_group");
  // .sync.aligned: all threads of the warpgroup execute the same wgmma.mma_async. Each thread's
  // k-th operation must equal the first thread's k-th (shape, type, descriptors, scale-d, trans).
  BlockState& b = block();
  const WgmmaOp op{d, n, bf16, desc_a, desc_b, accumulate != 0 ? 1 : 0, trans_a, trans_b, t.commits};
  std::vector<WgmmaOp>& log = b.wg_log[static_cast<size_t>(linear_tid() / 128)];
  if (t.issued == log.size()) {
    log.push_back(op);
  } else {
    const WgmmaOp& o = log[t.issued];
    if (o.n != op.n || o.bf16 != op.bf16 || o.desc_a != op.desc_a || o.desc_b != op.desc_b ||
        o.accumulate != op.accumulate || o.trans_a != op.trans_a || o.trans_b != op.trans_b)
      fail("wgmma.mma_async #" + std::to_string(t.issued) + " differs between threads of warpgroup " +
           std::to_string(linear_tid() / 128) + " (descriptors " + hex(desc_a) + ", " + hex(desc_b) + " vs " +
           hex(o.desc_a) + ", " + hex(o.desc_b) + ")");
  }
  ++t.issued;
  // Decode now, so that a malformed descriptor is reported where it is issued.
  decode_descriptor(desc_a);
  decode_descriptor(desc_b);
  t.ops.push_back(op);
}

// 9.7.15.5.1.2 "Shared Memory Matrix Layout", "Matrix Descriptor Format" (wgmma): bits 0-13
// start address, 16-29 leading dimension byte offset, 32-45 stride dimension byte offset, each
// matrix-descriptor-encode(x) = (x & 0x3FFFF) >> 4; bits 49-51 matrix base offset; bits 62-63
// swizzle mode (0 none, 1 128B, 2 64B, 3 32B). The other bits are unused; a set one here means a
// field overflowed (e.g. a start address advanced past its 14 bits).
Descriptor decode_descriptor(uint64_t desc) {
  const uint64_t reserved = (uint64_t{3} << 14) | (uint64_t{3} << 30) | (uint64_t{7} << 46) | (uint64_t{0x3FF} << 52);
  if (desc & reserved) fail("wgmma descriptor " + hex(desc) + ": unused bits set (a field overflowed)");
  Descriptor d;
  d.start = static_cast<uint32_t>(desc & 0x3FFF) << 4;
  d.lbo = static_cast<uint32_t>((desc >> 16) & 0x3FFF) << 4;
  d.sbo = static_cast<uint32_t>((desc >> 32) & 0x3FFF) << 4;
  d.base_offset = static_cast<uint32_t>((desc >> 49) & 7);
  d.swizzle = static_cast<uint32_t>((desc >> 62) & 3);
  if (d.swizzle != 1) fail("wgmma descriptor " + hex(desc) + ": only the 128-byte swizzle mode is emulated");
  // The base offset is 0 when the swizzle pattern starts at a 1024-byte boundary; otherwise it is
  // (pattern start address >> 7) & 7. How the hardware applies a non-zero one is not spelled out:
  // not emulated. With base offset 0 the 1024-byte pattern must start at the matrix start's
  // 1024-byte boundary, so the start's bits 7-9 (its row within the pattern) must be 0.
  if (d.base_offset != 0) fail("wgmma descriptor " + hex(desc) + ": a non-zero base offset is not emulated");
  if ((d.start >> 7) & 7)
    fail("wgmma descriptor " + hex(desc) + ": start address " + hex(d.start) +
         " is not at a row boundary of the 1024-byte swizzle pattern, but the base offset is 0");
  return d;
}

// 9.7.15.5.1.2 "Shared Memory Matrix Layout" (with its "Strides" part): imm-trans 0 = K-major,
// 1 = MN-major. The canonical layouts with 128-byte swizzling for 16-bit elements (T = 128 bits /
// 16 bits = 8 elements), in CuTe notation ((shape):(stride)) in units of elements:
//   K-major:  ((8, m), (T, 2k)) : ((8T, SBO), (1, T))
//             row r of M/N at (r % 8) * 128 bytes + (r / 8) * SBO; k at 2 k bytes (a k16 slice is
//             32 contiguous bytes of a 128-byte row); LBO unused ("Strides": for swizzled
//             K-major layouts the leading dimension byte offset is not used).
//   MN-major: ((T, 8, m), (8, k)) : ((1, T, LBO), (8T, SBO))
//             element mn at (mn % 64) * 2 bytes + (mn / 64) * LBO; k at (k % 8) * 128 bytes +
//             (k / 8) * SBO ("Strides": LBO is the stride from one (swizzle bytes / 16) group of
//             128-bit columns -- 64 elements -- to the next along M/N; SBO from one 8-row group to
//             the next along K).
// Then the 128-byte swizzle of the resulting address, as TMA writes it (a ^ ((a >> 7) & 7) << 4).
// The ISA does not say in so many words that the XOR uses the bits of this computed address (so
// that a start address inside a 128-byte row, as a k16 slice of a K-major tile has, reads the
// right chunks); the emulation assumes it, consistently with the base-offset rule above.
uint32_t operand_address(uint64_t desc, int trans, int mn, int k) {
  const Descriptor d = decode_descriptor(desc);
  uint32_t lbo = d.lbo, sbo = d.sbo;
  uint32_t a;
  if (trans == 0) {
    a = d.start + static_cast<uint32_t>(mn / 8) * sbo + static_cast<uint32_t>(mn % 8) * 128 +
        static_cast<uint32_t>(k) * 2;
  } else {
    if (injected_fault == Fault::kMnMajorLboSbo) std::swap(lbo, sbo);
    a = d.start + static_cast<uint32_t>(mn / 64) * lbo + static_cast<uint32_t>(mn % 64) * 2 +
        static_cast<uint32_t>(k / 8) * sbo + static_cast<uint32_t>(k % 8) * 128;
  }
  return swizzle128(a);
}

}  // namespace ember::emu::sm90
