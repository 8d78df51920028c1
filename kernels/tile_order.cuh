// The order in which GEMM kernels walk their output tiles (the mma.sync GEMM, gemm_mma.cuh, and
// the Hopper GEMM, sm90/gemm_wgmma.cuh): `group` tile rows at a time, so that blocks running
// at the same time share A row panels and B column panels in L2.
#pragma once
#include <cstdint>

namespace ember::cuda {

// Linear tile id t of one batch -> (tile row tm, tile col tn), 8 tile rows per group.
__device__ __forceinline__ void grouped_tile(int64_t t, int64_t tiles_m, int64_t tiles_n, int64_t& tm, int64_t& tn) {
  constexpr int64_t group = 8;
  const int64_t per_group = group * tiles_n;
  const int64_t first_m = (t / per_group) * group;
  const int64_t rows = (tiles_m - first_m) < group ? (tiles_m - first_m) : group;
  const int64_t in_group = t % per_group;
  tm = first_m + in_group % rows;
  tn = in_group / rows;
}

}  // namespace ember::cuda
