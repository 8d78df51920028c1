// The Hopper (sm_90a) GEMM: TMA + wgmma, warp-specialised, persistent (gemm_wgmma.cu).
// Built only when the CUDA architectures include 90 (EMBER_WITH_SM90A); kernels/gemm.cu calls
// it first for f16/bf16 products it can take and falls back to the mma.sync kernel otherwise.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace ember::cuda::sm90 {

// One operand of out (B, M, N) = A (B, M, K) @ B (B, K, N) seen as `rows` x K: A itself, or
// B^T. K-major: element (r, k) of batch i at ptr + i * batch_stride + r * ld + k (A row-major,
// b column-major); MN-major: at ptr + i * batch_stride + k * ld + r (A column-major, b
// row-major). Strides in elements.
struct Operand {
  const void* ptr;
  int64_t rows, ld, batch_stride;
  bool k_major;
};

// Why the kernel would not take a product (nullptr when it would). Requirements: f16/bf16
// (`half` true for either), 16-byte aligned bases, leading dims and
// batch strides in whole 16-byte units, no broadcast batch (stride 0 with B > 1), sizes below
// 2^31, a compute capability 9.0 device and the driver's tensor-map encoder.
const char* wgmma_unsupported(bool half, const Operand& a, const Operand& bt, int64_t K, int64_t batches, int device);

// out (B, M, N) contiguous = a @ bt^T (+ bias per column), f32 accumulation. `bf16` picks the
// element type (else f16); `block_n` is the tile width (128 or 256; 0 picks by N). Call only
// when wgmma_unsupported(...) returned nullptr.
void bmm_wgmma(bool bf16, const Operand& a, const Operand& bt, void* out, const void* bias, int64_t M, int64_t N,
               int64_t K, int64_t batches, int block_n, cudaStream_t stream);

}  // namespace ember::cuda::sm90
