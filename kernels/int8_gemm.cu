// Dynamic int8 on CUDA (contracts in prim/primitives.h, mirroring src/cpu/int8_gemm.cpp).
//
// quantize_rows: one 256-thread block per row (grid-stride over rows): the row's max |x| by warp
// shuffles and one shared-memory step, then every byte of the packed row, padding zeros
// included. Codes round half to even (__float2int_rn), as std::nearbyint does on the CPU, and
// the scale is the same f32 division, so both backends produce the same bytes.
//
// int8_gemm: dp4a (sm_61+): a 64 x 64 output tile per 256-thread block, each thread 4 x 4
// outputs spaced 16 apart (a warp's loads of a shared row hit 16 distinct banks and one
// broadcast); K is walked 16 packed elements (64 int8 values) at a time through shared memory,
// stored k-major with one word of padding so the coalesced global loads (consecutive k) land
// in distinct banks. Sums are int32 (__dp4a wraps, as the CPU paths do); the epilogue writes
// them raw (i32 out) or as sum * sa[m] * sb[n] + bias[n] (f32 out).
#include "common.cuh"
#include "cuda/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"

namespace ember::cuda {
namespace {

constexpr int kTile = 64;   // output rows and columns per block
constexpr int kTileK = 16;  // packed elements (4 int8 each) per shared-memory step
constexpr int kMaxGrid = 65535;

__global__ void quantize_rows_kernel(const float* __restrict__ x, int8_t* __restrict__ q, float* __restrict__ scale,
                                     int64_t M, int64_t K, int64_t K4) {
  __shared__ float warp_max[kThreads / kWarp];
  __shared__ float row_inv;
  for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
    const float* xr = x + m * K;
    float amax = 0.f;
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) amax = fmaxf(amax, fabsf(xr[k]));
    for (int o = kWarp / 2; o > 0; o /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if (threadIdx.x % kWarp == 0) warp_max[threadIdx.x / kWarp] = amax;
    __syncthreads();
    if (threadIdx.x == 0) {
      float a = warp_max[0];
      for (int w = 1; w < kThreads / kWarp; ++w) a = fmaxf(a, warp_max[w]);
      const bool finite = isfinite(a);
      scale[m] = finite ? a / 127.f : __int_as_float(0x7fc00000);
      row_inv = a > 0.f && finite ? 127.f / a : 0.f;
    }
    __syncthreads();
    const float inv = row_inv;
    int8_t* qr = q + m * K4 * 4;
    for (int64_t k = threadIdx.x; k < K4 * 4; k += blockDim.x) {
      int v = 0;
      if (k < K && inv > 0.f) v = max(-127, min(127, __float2int_rn(xr[k] * inv)));  // inv 0: zero or inf/NaN row
      qr[k] = static_cast<int8_t>(v);
    }
    __syncthreads();  // warp_max and row_inv are reused by the next row
  }
}

__global__ void __launch_bounds__(kThreads)
    int8_gemm_kernel(const int32_t* __restrict__ a, const int32_t* __restrict__ b, const float* __restrict__ sa,
                     const float* __restrict__ sb, const float* __restrict__ bias, int32_t* __restrict__ out_i,
                     float* __restrict__ out_f, int64_t M, int64_t N, int64_t K4) {
  __shared__ int32_t As[kTileK][kTile + 1];
  __shared__ int32_t Bs[kTileK][kTile + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTile, n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  int acc[4][4] = {};
  for (int64_t k0 = 0; k0 < K4; k0 += kTileK) {
#pragma unroll
    for (int l = 0; l < (kTile * kTileK) / kThreads; ++l) {
      const int idx = threadIdx.x + l * kThreads;
      const int r = idx / kTileK, kk = idx % kTileK;
      const int64_t k = k0 + kk;
      As[kk][r] = (m0 + r < M && k < K4) ? a[(m0 + r) * K4 + k] : 0;
      Bs[kk][r] = (n0 + r < N && k < K4) ? b[(n0 + r) * K4 + k] : 0;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      int av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = __dp4a(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty + 16 * i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tx + 16 * j;
      if (n >= N) continue;
      if (out_i) {
        out_i[m * N + n] = acc[i][j];
      } else {
        const float v = static_cast<float>(acc[i][j]) * (sa[m] * sb[n]);
        out_f[m * N + n] = bias ? v + bias[n] : v;
      }
    }
  }
}

void quantize_rows(const Tensor& x, const Tensor& q, const Tensor& scale, int64_t M, int64_t K) {
  if (M == 0) return;
  DeviceScope ds(x);
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(M, kMaxGrid));
  quantize_rows_kernel<<<grid, kThreads, 0, ds.stream>>>(static_cast<const float*>(x.data_ptr()),
                                                         static_cast<int8_t*>(q.data_ptr()),
                                                         static_cast<float*>(scale.data_ptr()), M, K, (K + 3) / 4);
  EMBER_CUDA_LAUNCH_CHECK();
}

void int8_gemm(const Tensor& a, const Tensor& b, const Tensor& a_scale, const Tensor& b_scale, const Tensor& bias,
               const Tensor& out, int64_t M, int64_t N, int64_t K4) {
  if (M == 0 || N == 0) return;
  EMBER_CHECK((M + kTile - 1) / kTile <= kMaxGrid, "linear_int8", "CUDA kernel: ", M, " rows exceed the grid limit of ",
              static_cast<int64_t>(kMaxGrid) * kTile);
  DeviceScope ds(a);
  const bool raw = out.dtype() == DType::i32;
  const dim3 grid(static_cast<unsigned>((N + kTile - 1) / kTile), static_cast<unsigned>((M + kTile - 1) / kTile));
  int8_gemm_kernel<<<grid, kThreads, 0, ds.stream>>>(
      static_cast<const int32_t*>(a.data_ptr()), static_cast<const int32_t*>(b.data_ptr()),
      raw ? nullptr : static_cast<const float*>(a_scale.data_ptr()),
      raw ? nullptr : static_cast<const float*>(b_scale.data_ptr()),
      bias.defined() ? static_cast<const float*>(bias.data_ptr()) : nullptr,
      raw ? static_cast<int32_t*>(out.data_ptr()) : nullptr, raw ? nullptr : static_cast<float*>(out.data_ptr()), M, N,
      K4);
  EMBER_CUDA_LAUNCH_CHECK();
}

}  // namespace

void register_int8_kernels() {
  prim::define<prim::quantize_rows>(prim::Backend::cuda, &quantize_rows);
  prim::define<prim::int8_gemm>(prim::Backend::cuda, &int8_gemm);
}

}  // namespace ember::cuda
