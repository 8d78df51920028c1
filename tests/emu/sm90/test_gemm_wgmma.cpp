// kernels/sm90/gemm_wgmma.cuh (the Hopper TMA + wgmma GEMM) run under the sm90 emulation
// (emu_sm90.h: TMA, mbarrier and wgmma from the PTX ISA) and compared with a double-precision
// reference: both tile widths (BN 128 and 256), f16 and bf16, all four operand layouts (A row- or
// column-major, B row- or column-major, i.e. K-major or MN-major with wgmma's transpose flags),
// a bias, M / N / K that leave partial tiles, K below one k-step, batches, both store paths, and
// fewer blocks than tiles (the persistent schedule). The tensor maps are built from the
// launcher's own parameters (wgmma_detail::tensor_map_args) by an emulated
// cuTensorMapEncodeTiled. Deliberate faults in the emulation show that the tests can fail.
#include "emu_runtime.h"  // first: the CUDA keywords on the host
#include "sm90/emu_sm90.h"

// Before the kernel header, whose `extern __shared__` declaration must name a known array.
EMBER_EMU_SM90_DYNAMIC_SHARED(ember::cuda::sm90::wgmma_detail, smem_raw);

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "emu_gemm_util.h"
#include "emu_test_util.h"
#include "sm90/gemm_wgmma.cuh"

namespace {

namespace wd = ember::cuda::sm90::wgmma_detail;
namespace es = ember::emu::sm90;
namespace et = ember::emu::test;


struct Shape {
  int64_t M, N, K, batches;
  bool bias;
  int sms;  // the launcher's SM count: fewer blocks than tiles make blocks walk several tiles
};

template <class T>
using Operand = et::GemmOperand<T>;

// The kernel's view of an operand.
template <class T>
ember::cuda::sm90::Operand view(const Operand<T>& o) {
  return {o.data.data(), o.rows, o.ld, o.bs, o.k_contig};
}

CUtensorMap encode(bool bf16, const ember::cuda::sm90::Operand& op, int64_t K, int64_t batches, int box_rows) {
  const wd::TensorMapArgs m = wd::tensor_map_args(bf16, op, K, batches, box_rows);
  CUtensorMap map;
  const CUresult r = es::encode_tiled(&map, m.dtype, m.rank, m.address, m.dims, m.strides, m.box, m.elem_strides,
                                      m.interleave, m.swizzle, m.l2_promotion, m.oob_fill);
  REQUIRE(r == CUDA_SUCCESS);
  return map;
}

constexpr size_t kCanary = 64;  // elements after the output that must stay untouched

// The kernel instantiation for a layout (the launcher's launch_layout).
template <class T, int BN>
auto kernel_for(bool a_k, bool b_k) {
  if (a_k && b_k) return &wd::gemm_wgmma_kernel<T, BN, true, true>;
  if (a_k) return &wd::gemm_wgmma_kernel<T, BN, true, false>;
  if (b_k) return &wd::gemm_wgmma_kernel<T, BN, false, true>;
  return &wd::gemm_wgmma_kernel<T, BN, false, false>;
}

template <class T, int BN>
et::Worst run_gemm(const Shape& s, bool a_k, bool b_k) {
  constexpr bool bf16 = std::is_same_v<T, __nv_bfloat16>;
  const uint32_t seed = static_cast<uint32_t>(s.M * 131 + s.N * 17 + s.K + (a_k ? 1000 : 0) + (b_k ? 2000 : 0) + BN);
  const Operand<T> a(s.M, s.K, s.batches, a_k, seed);
  const Operand<T> bt(s.N, s.K, s.batches, b_k, seed + 1);
  const std::vector<T> bias = et::random_values<T>(static_cast<size_t>(s.N), seed + 2);
  const et::Reference ref = et::gemm_reference(a, bt, s.bias ? &bias : nullptr, s.batches);
  const T nan = et::from_float<T>(std::numeric_limits<float>::quiet_NaN());
  std::vector<T> out(ref.value.size() + kCanary, nan);

  // As the launcher (gemm_wgmma.cu: launch) does it.
  const CUtensorMap ma = encode(bf16, view(a), s.K, s.batches, wd::kBM);
  const CUtensorMap mb = encode(bf16, view(bt), s.K, s.batches, BN);
  const unsigned grid = wd::grid_blocks(s.M, s.N, s.batches, BN, s.sms);
  const bool pair_store = s.N % 2 == 0 && reinterpret_cast<uintptr_t>(out.data()) % 4 == 0;
  const T* bias_ptr = s.bias ? bias.data() : nullptr;
  es::launch_sm90(dim3(grid), dim3(wd::kThreads), static_cast<size_t>(wd::smem_bytes<BN>()),
                  kernel_for<T, BN>(a_k, b_k), ma, mb, out.data(), bias_ptr, static_cast<int>(s.M),
                  static_cast<int>(s.N), static_cast<int>(s.K), static_cast<int>(s.batches), pair_store);

  for (size_t i = ref.value.size(); i < out.size(); ++i) {
    uint16_t got, want;
    std::memcpy(&got, &out[i], 2);
    std::memcpy(&want, &nan, 2);
    if (got != want) {
      et::Worst w;
      w.error = INFINITY;
      w.at = i;
      return w;  // a store past the output
    }
  }
  out.resize(ref.value.size());
  return et::worst_error(out, ref);
}

// Partial tiles in M, N and K everywhere; sms below the tile count in most.
const Shape kShapes[] = {
    {130, 75, 83, 2, true, 3},     // odd N (single stores), bias, 2 batches, partial k-step
    {64, 200, 40, 1, false, 1},    // K < 64 (one partial k-step), even N (paired stores), one block
    {200, 136, 300, 2, true, 3},   // 5 k-steps (the 4-stage ring wraps inside a tile), 2 batches
};

struct TimingGuard {
  explicit TimingGuard(es::TmaTiming t) { es::tma_timing = t; }
  ~TimingGuard() { es::tma_timing = es::TmaTiming::kAtWait; }
};

// Every shape and layout, with TMA loads landing at the latest and (for the shape whose ring
// wraps) at the earliest moment.
template <class T, int BN>
void check_all_layouts() {
  for (const Shape& s : kShapes)
    for (int layout = 0; layout < 4; ++layout)
      for (const es::TmaTiming timing : {es::TmaTiming::kAtWait, es::TmaTiming::kAtIssue}) {
        if (timing == es::TmaTiming::kAtIssue && s.K <= wd::kStages * wd::kTileK) continue;
        const TimingGuard guard(timing);
        const bool a_k = layout & 1, b_k = layout & 2;
        const et::Worst w = run_gemm<T, BN>(s, a_k, b_k);
        const std::string when = timing == es::TmaTiming::kAtIssue ? "at issue" : "at the wait";
        const std::string a_major = a_k ? "row" : "col", b_major = b_k ? "col" : "row";
        INFO("TMA lands " << when << ", BN " << BN << ", M " << s.M << " N " << s.N << " K " << s.K << " batches "
                          << s.batches << " bias " << s.bias << ", A " << a_major << "-major, B " << b_major
                          << "-major (" << std::string(et::type_name<T>()) << "): " << w.str());
        CHECK(w.error <= et::tolerance<T>());
      }
}

struct FaultGuard {
  explicit FaultGuard(es::Fault f) { es::injected_fault = f; }
  ~FaultGuard() { es::injected_fault = es::Fault::kNone; }
};

}  // namespace

// A kernel whose thread 0 waits for a phase that needs two arrivals but gets one. In the kernel's
// namespace, whose dynamic shared array is the emulated shared window.
namespace ember::cuda::sm90::wgmma_detail {
void lonely_wait_test_kernel(int arrivals) {
  extern __shared__ uint8_t smem_raw[];
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem_raw);
  if (threadIdx.x == 0) mbar_init(bar, 2);
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < arrivals) mbar_arrive(bar);
  if (threadIdx.x == 0) mbar_wait(bar, 0);
}
}  // namespace ember::cuda::sm90::wgmma_detail

TEST_SUITE("kernel_emu_sm90") {
  TEST_CASE("gemm_wgmma f16 BN 128: every operand layout") { check_all_layouts<__half, 128>(); }
  TEST_CASE("gemm_wgmma bf16 BN 128: every operand layout") { check_all_layouts<__nv_bfloat16, 128>(); }
  TEST_CASE("gemm_wgmma f16 BN 256: every operand layout") { check_all_layouts<__half, 256>(); }
  TEST_CASE("gemm_wgmma bf16 BN 256: every operand layout") { check_all_layouts<__nv_bfloat16, 256>(); }

  TEST_CASE("an mbarrier wait that can never complete fails the launch as a deadlock") {
    es::launch_sm90(dim3(1), dim3(64), 64, &wd::lonely_wait_test_kernel, 2);  // two arrivals: completes
    std::string what;
    try {
      es::launch_sm90(dim3(1), dim3(64), 64, &wd::lonely_wait_test_kernel, 1);
    } catch (const ember::emu::KernelFault& e) {
      what = e.what();
    }
    INFO(what);
    CHECK(what.find("deadlock") != std::string::npos);
    CHECK(what.find("mbarrier.try_wait.parity 0") != std::string::npos);
  }

  TEST_CASE("deliberate emulation faults make the kernel test fail") {
    const Shape s{130, 75, 83, 2, true, 3};
    {
      FaultGuard f(es::Fault::kTmaNoSwizzle);
      CHECK(run_gemm<__half, 128>(s, true, true).error > 0.1);
    }
    {
      FaultGuard f(es::Fault::kMnMajorLboSbo);
      CHECK(run_gemm<__half, 128>(s, false, false).error > 0.1);
      CHECK(run_gemm<__half, 128>(s, true, true).error <= et::tolerance<__half>());  // K-major: unaffected
    }
    {
      FaultGuard f(es::Fault::kAccumulatorRows);
      CHECK(run_gemm<__nv_bfloat16, 256>(s, true, false).error > 0.1);
    }
  }
}
