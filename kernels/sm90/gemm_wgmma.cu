// The launcher of the Hopper GEMM (gemm_wgmma.cuh: the kernel, its design and the tensor-map
// parameters). sm_90a only: compiled with -gencode arch=compute_90a,code=sm_90a by its own CMake
// target.
#include <cuda.h>  // CUtensorMap and its enums only; the encoder comes from the driver at run time
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cstdint>
#include <mutex>

#include "cuda/runtime.h"
#include "gemm_wgmma.cuh"
#include "gemm_wgmma.h"

namespace ember::cuda::sm90 {
namespace {

using wgmma_detail::gemm_wgmma_kernel;
using wgmma_detail::kBM;
using wgmma_detail::kThreads;
using wgmma_detail::smem_bytes;

// ---- host -------------------------------------------------------------------------------

PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      p = nullptr;
    cudaGetLastError();  // a failed lookup must not linger as the sticky "last error"
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// A (rows, K) operand as a 3-D tensor map (wgmma_detail::tensor_map_args has the parameters).
CUtensorMap make_map(bool bf16, const Operand& op, int64_t K, int64_t batches, int box_rows) {
  CUtensorMap map;
  const wgmma_detail::TensorMapArgs m = wgmma_detail::tensor_map_args(bf16, op, K, batches, box_rows);
  const CUresult r = tensor_map_encoder()(&map, m.dtype, m.rank, m.address, m.dims, m.strides, m.box, m.elem_strides,
                                          m.interleave, m.swizzle, m.l2_promotion, m.oob_fill);
  EMBER_CHECK(r == CUDA_SUCCESS, "matmul", "cuTensorMapEncodeTiled failed (CUresult ", static_cast<int>(r),
              ") for an operand of ", op.rows, " x ", K, " (ld ", op.ld, ", batch stride ", op.batch_stride, ")");
  return map;
}

template <class T, int BN, bool kAKMajor, bool kBKMajor>
void launch(const Operand& a, const Operand& bt, void* out, const void* bias, int64_t M, int64_t N, int64_t K,
            int64_t batches, cudaStream_t stream) {
  constexpr bool bf16 = std::is_same_v<T, __nv_bfloat16>;
  const CUtensorMap ma = make_map(bf16, a, K, batches, kBM);
  const CUtensorMap mb = make_map(bf16, bt, K, batches, BN);
  const int device = current_device();
  static std::once_flag attr_once[64];
  std::call_once(attr_once[device % 64], [] {
    EMBER_CUDA_CHECK(cudaFuncSetAttribute(gemm_wgmma_kernel<T, BN, kAKMajor, kBKMajor>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes<BN>()));
  });
  const unsigned grid = wgmma_detail::grid_blocks(M, N, batches, BN, multiprocessor_count(device));
  const bool pair_store = N % 2 == 0 && reinterpret_cast<uintptr_t>(out) % 4 == 0;
  gemm_wgmma_kernel<T, BN, kAKMajor, kBKMajor><<<grid, kThreads, smem_bytes<BN>(), stream>>>(
      ma, mb, static_cast<T*>(out), static_cast<const T*>(bias), static_cast<int>(M), static_cast<int>(N),
      static_cast<int>(K), static_cast<int>(batches), pair_store);
  EMBER_CUDA_LAUNCH_CHECK();
}

}  // namespace

const char* wgmma_unsupported(bool half, const Operand& a, const Operand& bt, int64_t K, int64_t batches, int device) {
  if (!half) return "not f16/bf16";
  for (const Operand* op : {&a, &bt}) {
    if (!aligned16(op->ptr)) return "an operand's base is not 16-byte aligned";
    if (op->ld % 8 != 0) return "a leading dimension is not a multiple of 8 elements";
    if (batches > 1 && (op->batch_stride == 0 || op->batch_stride % 8 != 0))
      return "a batch stride is 0 (broadcast) or not a multiple of 8 elements";
    if (op->rows > INT_MAX) return "more than 2^31 rows";
  }
  if (K > INT_MAX || batches > INT_MAX) return "K or the batch count is 2^31 or more";
  if (device_compute_capability(device) != 90) return "not a compute capability 9.0 device";
  if (tensor_map_encoder() == nullptr) return "the driver has no cuTensorMapEncodeTiled";
  return nullptr;
}

namespace {
template <class T, int BN>
void launch_layout(const Operand& a, const Operand& bt, void* out, const void* bias, int64_t M, int64_t N, int64_t K,
                   int64_t batches, cudaStream_t stream) {
  if (a.k_major && bt.k_major)
    launch<T, BN, true, true>(a, bt, out, bias, M, N, K, batches, stream);
  else if (a.k_major)
    launch<T, BN, true, false>(a, bt, out, bias, M, N, K, batches, stream);
  else if (bt.k_major)
    launch<T, BN, false, true>(a, bt, out, bias, M, N, K, batches, stream);
  else
    launch<T, BN, false, false>(a, bt, out, bias, M, N, K, batches, stream);
}
}  // namespace

void bmm_wgmma(bool bf16, const Operand& a, const Operand& bt, void* out, const void* bias, int64_t M, int64_t N,
               int64_t K, int64_t batches, int block_n, cudaStream_t stream) {
  if (block_n == 0) block_n = N > 128 ? 256 : 128;
  EMBER_CHECK(block_n == 128 || block_n == 256, "matmul", "wgmma tile width must be 128 or 256, got ", block_n);
  if (bf16) {
    if (block_n == 256)
      launch_layout<__nv_bfloat16, 256>(a, bt, out, bias, M, N, K, batches, stream);
    else
      launch_layout<__nv_bfloat16, 128>(a, bt, out, bias, M, N, K, batches, stream);
  } else {
    if (block_n == 256)
      launch_layout<__half, 256>(a, bt, out, bias, M, N, K, batches, stream);
    else
      launch_layout<__half, 128>(a, bt, out, bias, M, N, K, batches, stream);
  }
}

}  // namespace ember::cuda::sm90
