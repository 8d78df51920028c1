// kernels/gemm_mma.cuh (the mma.sync GEMM) run under the host emulation and compared with a
// double-precision reference: all four operand layouts (A row- or column-major, B row- or
// column-major), f16 and bf16, M, N and K that leave partial tiles, a bias, batches, and both
// output store paths.
#include "emu_runtime.h"  // first: the CUDA keywords on the host

// Before the kernel header, whose `extern __shared__` declaration must name a known array.
EMBER_EMU_DYNAMIC_SHARED(ember::cuda::gemm_detail, tc_smem);

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "emu_gemm_util.h"
#include "emu_test_util.h"
#include "gemm_mma.cuh"


namespace {

namespace gd = ember::cuda::gemm_detail;
namespace et = ember::emu::test;


struct GemmShape {
  int64_t M, N, K, batches;
  bool bias;
};

template <class T>
using Operand = et::GemmOperand<T>;

// The kernel's view of an operand.
template <class T>
gd::TcOperand<T> view(const Operand<T>& o) {
  return gd::TcOperand<T>{o.data.data(), o.ld, o.bs, o.rows};
}

// a_k: A row-major (K-contiguous); b_k: B column-major (B^T K-contiguous).
template <class T>
et::Worst check_gemm(const GemmShape& s, bool a_k, bool b_k) {
  const uint32_t seed = static_cast<uint32_t>(s.M * 131 + s.N * 17 + s.K + (a_k ? 1000 : 0) + (b_k ? 2000 : 0));
  const Operand<T> a(s.M, s.K, s.batches, a_k, seed);
  const Operand<T> bt(s.N, s.K, s.batches, b_k, seed + 1);
  const std::vector<T> bias = et::random_values<T>(static_cast<size_t>(s.N), seed + 2);
  const et::Reference ref = et::gemm_reference(a, bt, s.bias ? &bias : nullptr, s.batches);
  std::vector<T> out(ref.value.size(), et::from_float<T>(std::numeric_limits<float>::quiet_NaN()));
  // gemm.cu's grid: x = tiles (grouped order), batch = z * gridDim.y + y.
  const int64_t tiles = ((s.M + gd::kTcBM - 1) / gd::kTcBM) * ((s.N + gd::kTcBN - 1) / gd::kTcBN);
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(s.batches), 1);
  const bool pair_store = s.N % 2 == 0;
  const T* bias_ptr = s.bias ? bias.data() : nullptr;
  const auto run = [&](auto kernel) {
    ember::emu::launch(grid, dim3(gd::kTcThreads), static_cast<size_t>(gd::tc_smem_bytes(a_k, b_k)), kernel,
                       view(a), view(bt), out.data(), bias_ptr, s.M, s.N, s.K, s.batches, pair_store);
  };
  if (a_k && b_k) run(&gd::gemm_mma_kernel<T, true, true>);
  else if (a_k) run(&gd::gemm_mma_kernel<T, true, false>);
  else if (b_k) run(&gd::gemm_mma_kernel<T, false, true>);
  else run(&gd::gemm_mma_kernel<T, false, false>);
  return et::worst_error(out, ref);
}

const GemmShape kGemmShapes[] = {
    {130, 75, 83, 2, true},   // partial tiles in M, N and K, odd N (single stores), bias, 2 batches
    {33, 200, 40, 1, false},  // even N (paired stores), one partial k-tile
    {8, 136, 129, 3, true},   // a thin M, K one past a multiple of 32, 3 batches
};

template <class T>
void check_layouts() {
  for (const GemmShape& s : kGemmShapes)
    for (int layout = 0; layout < 4; ++layout) {
      if (et::kSanitized && &s == &kGemmShapes[2]) break;  // the largest
      const bool a_k = layout & 1, b_k = layout & 2;
      const et::Worst w = check_gemm<T>(s, a_k, b_k);
      INFO("M " << s.M << " N " << s.N << " K " << s.K << " batches " << s.batches << " bias " << s.bias << " A "
                << (a_k ? "row" : "col") << "-major, B " << (b_k ? "col" : "row") << "-major ("
                << std::string(et::type_name<T>()) << "): " << w.str());
      CHECK(w.error <= et::tolerance<T>());
    }
}

}  // namespace

TEST_SUITE("kernel_emu") {
  TEST_CASE("gemm_mma f16: every operand layout") { check_layouts<__half>(); }
  TEST_CASE("gemm_mma bf16: every operand layout") { check_layouts<__nv_bfloat16>(); }
}
