// The host emulation itself: barriers, shuffles, shared memory, cp.async timing, the fragment
// layouts of ldmatrix + mma against a plain matrix product, TF32 rounding, cooperative launches
// (a grid barrier, atomics, each block's own dynamic shared memory), and the faults it must
// report (deadlock, grid deadlock, divergent warp, misaligned ldmatrix).
#include "emu_runtime.h"  // first: the CUDA keywords on the host

EMBER_EMU_DYNAMIC_SHARED(emu_runtime_test, dyn);

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "emu_test_util.h"
#include "grid_sync.cuh"
#include "mma.cuh"

namespace emu_runtime_test {

namespace mma = ember::cuda::mma;

// Block sum through shared memory and a warp shuffle reduction; every thread writes its result.
__global__ void reduce_kernel(const int* in, int* out) {
  __shared__ int partial[8];
  const int tid = static_cast<int>(threadIdx.x);
  int v = in[blockIdx.x * blockDim.x + threadIdx.x];
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (tid % 32 == 0) partial[tid / 32] = v;
  __syncthreads();
  int total = 0;
  for (int w = 0; w < static_cast<int>(blockDim.x) / 32; ++w) total += partial[w];
  __syncthreads();  // everyone read partial before the next block (same array) writes it
  out[blockIdx.x * blockDim.x + threadIdx.x] = total + __shfl_sync(0xffffffffu, tid, 3);
}

__global__ void early_exit_kernel() {
  if (threadIdx.x == 5) return;
  __syncthreads();
}

__global__ void divergent_kernel(int* out) {
  int v = static_cast<int>(threadIdx.x);
  if (threadIdx.x < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
  else __syncwarp();
  out[threadIdx.x] = v;
}

__global__ void misaligned_ldmatrix_kernel() {
  extern __shared__ __align__(16) unsigned char dyn[];
  uint32_t r[4];
  mma::ldmatrix_x4<false>(r, mma::smem_u32(dyn + 2 * threadIdx.x + 2));
}

// cp.async: what a thread sees before and after the wait that covers its copy.
__global__ void cp_async_kernel(const int* src, int* seen) {
  extern __shared__ __align__(16) unsigned char dyn[];
  int* s = reinterpret_cast<int*>(dyn) + 4 * threadIdx.x;
  mma::cp_async_16(mma::smem_u32(s), src + 4 * threadIdx.x, 8);  // 2 ints, then 2 zeros
  mma::cp_async_commit();
  seen[8 * threadIdx.x] = s[0];  // before any wait: the old contents
  mma::cp_async_wait<1>();
  seen[8 * threadIdx.x + 1] = s[0];  // one group may stay in flight: still old
  mma::cp_async_wait<0>();
  for (int i = 0; i < 4; ++i) seen[8 * threadIdx.x + 2 + i] = s[i];
}

// One 16x16 @ 16x8 product per warp through ldmatrix (A as stored, B^T-stored via .trans)
// and mma.m16n8k16, C written with the C fragment layout.
template <class T>
__global__ void mma_kernel(const T* a, const T* b, float* c) {
  __shared__ __align__(16) T as[16 * 24], bs[16 * 16];  // A rows padded to 24, B (k, n) 16 wide
  const int lane = static_cast<int>(threadIdx.x);
  for (int i = lane; i < 256; i += 32) as[(i / 16) * 24 + i % 16] = a[i];
  for (int i = lane; i < 128; i += 32) bs[(i / 8) * 16 + i % 8] = b[i];
  __syncwarp();
  uint32_t af[4], bf[4];
  const int j = lane / 8, r8 = lane % 8;
  mma::ldmatrix_x4<false>(af, mma::smem_u32(as + ((j & 1) * 8 + r8) * 24 + (j >> 1) * 8));
  // B (16 k x 8 n) stored k-major: .trans of rows k gives the col-major fragment; matrices
  // j = 0, 1: k 0-7 and 8-15 (the other two duplicate them).
  mma::ldmatrix_x4<true>(bf, mma::smem_u32(bs + ((j & 1) * 8 + r8) * 16));
  float d[4] = {0, 0, 0, 0};
  mma::mma_16816<T>(d, af, bf[0], bf[1]);
  const int g = lane / 4, t = lane % 4;
  for (int e = 0; e < 4; ++e) c[(g + 8 * (e / 2)) * 8 + 2 * t + e % 2] = d[e];
}

__global__ void mma_tf32_kernel(const float* a, const float* b, float* c) {
  const int lane = static_cast<int>(threadIdx.x), g = lane / 4, t = lane % 4;
  const uint32_t af[4] = {mma::to_tf32(a[g * 8 + t]), mma::to_tf32(a[(g + 8) * 8 + t]), mma::to_tf32(a[g * 8 + t + 4]),
                          mma::to_tf32(a[(g + 8) * 8 + t + 4])};
  float d[4] = {0, 0, 0, 0};
  mma::mma_1688_tf32(d, af, mma::to_tf32(b[t * 8 + g]), mma::to_tf32(b[(t + 4) * 8 + g]));
  for (int e = 0; e < 4; ++e) c[(g + 8 * (e / 2)) * 8 + 2 * t + e % 2] = d[e];
}

// Two phases split by grid barriers (kernels/grid_sync.cuh). Phase 1: each block fills its
// dynamic shared memory and publishes one value per thread; every thread counts itself with
// atomicAdd. Phase 2: each thread reads a value another block published, and checks that its
// block's shared memory survived the other blocks' turns. `rounds` barriers in all (>= 1).
__global__ void grid_phases_kernel(int* published, unsigned* counter, unsigned* arrivals, int* seen, int rounds) {
  extern __shared__ __align__(16) unsigned char dyn[];
  int* mine = reinterpret_cast<int*>(dyn);
  const int tid = static_cast<int>(threadIdx.x), blk = static_cast<int>(blockIdx.x);
  const int threads = static_cast<int>(blockDim.x), blocks = static_cast<int>(gridDim.x);
  mine[tid] = 1000 * blk + tid;
  published[blk * threads + tid] = 7 * blk + tid;
  atomicAdd(arrivals, 1u);
  for (int r = 1; r <= rounds; ++r) {
    ember::cuda::grid_sync::arrive(counter);
    ember::cuda::grid_sync::wait(counter, static_cast<unsigned>(r * blocks));
  }
  const int other = (blk + 1) % blocks;
  seen[2 * (blk * threads + tid)] = published[other * threads + (tid + 1) % threads];
  seen[2 * (blk * threads + tid) + 1] = mine[tid];
}

// A grid barrier that block 1 never reaches.
__global__ void grid_early_exit_kernel(unsigned* counter) {
  if (blockIdx.x == 1) return;
  ember::cuda::grid_sync::arrive(counter);
  ember::cuda::grid_sync::wait(counter, gridDim.x);
}

void check_grid_phases(ember::emu::GridSchedule schedule, int rounds) {
  constexpr int kBlocks = 3, kThreads = 64;
  std::vector<int> published(kBlocks * kThreads, -1), seen(2 * kBlocks * kThreads, -1);
  unsigned counter = 0, arrivals = 0;
  ember::emu::launch_cooperative(dim3(kBlocks), dim3(kThreads), kThreads * sizeof(int), schedule,
                                 &grid_phases_kernel, published.data(), &counter, &arrivals, seen.data(), rounds);
  CHECK(counter == static_cast<unsigned>(rounds * kBlocks));
  CHECK(arrivals == static_cast<unsigned>(kBlocks * kThreads));
  for (int b = 0; b < kBlocks; ++b)
    for (int t = 0; t < kThreads; ++t) {
      const size_t i = static_cast<size_t>(b * kThreads + t);
      CHECK(seen[2 * i] == 7 * ((b + 1) % kBlocks) + (t + 1) % kThreads);
      CHECK(seen[2 * i + 1] == 1000 * b + t);
    }
}

float tf32_of(float x) {
  const uint32_t u = mma::to_tf32(x);
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

template <class T>
void check_mma_layout() {
  namespace et = ember::emu::test;
  const std::vector<T> a = et::random_values<T>(256, 1), b = et::random_values<T>(128, 2);
  std::vector<float> c(128, -1);
  ember::emu::launch(dim3(1), dim3(32), 0, &mma_kernel<T>, a.data(), b.data(), c.data());
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double want = 0;
      for (int k = 0; k < 16; ++k) want += et::to_double(a[m * 16 + k]) * et::to_double(b[k * 8 + n]);
      INFO("C(" << m << ", " << n << ")");
      CHECK(c[m * 8 + n] == doctest::Approx(want).epsilon(1e-6));
    }
}

}  // namespace emu_runtime_test

TEST_SUITE("kernel_emu") {
  using namespace emu_runtime_test;

  TEST_CASE("emu: shared memory, barriers and shuffles") {
    std::vector<int> in(3 * 256), out(in.size(), -1);
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int>(i % 97);
    ember::emu::launch(dim3(3), dim3(256), 0, &reduce_kernel, in.data(), out.data());
    for (int b = 0; b < 3; ++b) {
      int sum = 0;
      for (int i = 0; i < 256; ++i) sum += in[static_cast<size_t>(b * 256 + i)];
      for (int i = 0; i < 256; ++i) CHECK(out[static_cast<size_t>(b * 256 + i)] == sum + (i / 32) * 32 + 3);
    }
  }

  TEST_CASE("emu: a barrier some thread never reaches is a deadlock") {
    CHECK_THROWS_WITH_AS(ember::emu::launch(dim3(1), dim3(64), 0, &early_exit_kernel),
                         doctest::Contains("deadlock"), ember::emu::KernelFault);
  }

  TEST_CASE("emu: a cooperative launch runs a grid barrier, atomics, and keeps each block's shared memory") {
    check_grid_phases(ember::emu::GridSchedule::kRoundRobin, 1);
    check_grid_phases(ember::emu::GridSchedule::kRoundRobin, 3);
    check_grid_phases(ember::emu::GridSchedule::kRunAhead, 1);
    check_grid_phases(ember::emu::GridSchedule::kRunAhead, 3);
  }

  TEST_CASE("emu: a grid barrier some block never reaches is a grid deadlock") {
    unsigned counter = 0;
    CHECK_THROWS_WITH_AS(ember::emu::launch_cooperative(dim3(3), dim3(64), 0, ember::emu::GridSchedule::kRoundRobin,
                                                        &grid_early_exit_kernel, &counter),
                         doctest::Contains("grid deadlock"), ember::emu::KernelFault);
    counter = 0;
    CHECK_THROWS_WITH_AS(ember::emu::launch_cooperative(dim3(3), dim3(64), 0, ember::emu::GridSchedule::kRunAhead,
                                                        &grid_early_exit_kernel, &counter),
                         doctest::Contains("a spin on ld.acquire (the word stays 2)"), ember::emu::KernelFault);
    // Launched one block after another, the first block's wait is already a deadlock.
    counter = 0;
    CHECK_THROWS_WITH_AS(ember::emu::launch(dim3(3), dim3(64), 0, &grid_early_exit_kernel, &counter),
                         doctest::Contains("launch_cooperative"), ember::emu::KernelFault);
    // More threads than the cooperative launch keeps resident.
    CHECK_THROWS_WITH_AS(ember::emu::launch_cooperative(dim3(65), dim3(256), 0, ember::emu::GridSchedule::kRoundRobin,
                                                        &grid_early_exit_kernel, &counter),
                         doctest::Contains("threads in all"), ember::emu::KernelFault);
  }

  TEST_CASE("emu: lanes of one warp in different warp operations are reported") {
    std::vector<int> out(32);
    CHECK_THROWS_WITH_AS(ember::emu::launch(dim3(1), dim3(32), 0, &divergent_kernel, out.data()),
                         doctest::Contains("divergent warp"), ember::emu::KernelFault);
  }

  TEST_CASE("emu: an ldmatrix row address off 16 bytes is reported") {
    CHECK_THROWS_WITH_AS(ember::emu::launch(dim3(1), dim3(32), 512, &misaligned_ldmatrix_kernel),
                         doctest::Contains("aligned"), ember::emu::KernelFault);
  }

  TEST_CASE("emu: cp.async lands at the wait that covers it, zero-filled past the source size") {
    alignas(16) int src[4 * 32];
    for (int i = 0; i < 4 * 32; ++i) src[i] = i + 1;
    std::vector<int> seen(8 * 32, 0);
    ember::emu::launch(dim3(1), dim3(32), 1024, &cp_async_kernel, static_cast<const int*>(src), seen.data());
    for (int t = 0; t < 32; ++t) {
      CHECK(seen[static_cast<size_t>(8 * t)] == -1);  // 0xff bytes: the fill before the block
      CHECK(seen[static_cast<size_t>(8 * t + 1)] == -1);
      CHECK(seen[static_cast<size_t>(8 * t + 2)] == 4 * t + 1);
      CHECK(seen[static_cast<size_t>(8 * t + 3)] == 4 * t + 2);
      CHECK(seen[static_cast<size_t>(8 * t + 4)] == 0);
      CHECK(seen[static_cast<size_t>(8 * t + 5)] == 0);
    }
  }

  TEST_CASE("emu: ldmatrix and mma.m16n8k16 fragments give the matrix product") {
    check_mma_layout<__half>();
    check_mma_layout<__nv_bfloat16>();
  }

  TEST_CASE("emu: mma.m16n8k8 tf32 fragments give the product of the rounded operands") {
    namespace et = ember::emu::test;
    const std::vector<float> a = et::random_values<float>(128, 3), b = et::random_values<float>(64, 4);
    std::vector<float> c(128, -1);
    ember::emu::launch(dim3(1), dim3(32), 0, &mma_tf32_kernel, a.data(), b.data(), c.data());
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 8; ++n) {
        double want = 0;
        for (int k = 0; k < 8; ++k) want += double(tf32_of(a[m * 8 + k])) * tf32_of(b[k * 8 + n]);
        CHECK(c[m * 8 + n] == doctest::Approx(want).epsilon(1e-6));
      }
  }

  TEST_CASE("emu: to_tf32 rounds to nearest, ties away from zero") {
    const float ulp = 1.f / 1024;  // tf32's ulp at 1
    CHECK(tf32_of(1.f + ulp / 2) == 1.f + ulp);  // a tie: away from zero
    CHECK(tf32_of(-(1.f + ulp / 2)) == -(1.f + ulp));
    CHECK(tf32_of(1.f + ulp / 2 - ulp / 8192) == 1.f);  // just below the tie
    CHECK(tf32_of(1.f + 3 * ulp / 2) == 1.f + 2 * ulp);
    CHECK(std::isnan(tf32_of(NAN)));
    CHECK(std::isinf(tf32_of(INFINITY)));
  }
}
