// Batched GEMM on CUDA: out (B, n, m) contiguous = a (B, n, k) @ b (B, k, m).
//
// Two back ends, picked by cuda::gemm_backend() (EMBER_GEMM=ember|cublas):
// - cublas: cublasGemmStridedBatchedEx. cuBLAS is column-major, so we ask it for
//   C^T (m, n) = B^T (m, k) @ A^T (k, n); a row-major operand read as column-major already is
//   its transpose (CUBLAS_OP_N), a column-major one needs CUBLAS_OP_T. f32 computes in plain
//   f32 (no TF32), f64 in f64, f16/bf16 in f32.
// - ember: hand-written kernels.
//   * f16/bf16: the tensor-core kernel in gemm_mma.cuh (mma.sync m16n8k16, ldmatrix,
//     cp.async 4-stage pipeline, 128x128x32 block tile, f32 accumulators), when both operands
//     have 16-byte aligned bases and leading dimensions / batch strides that are multiples of
//     8 elements; otherwise the SIMT kernel below with f32 accumulation.
//   * f32: the SIMT kernel: 128x128 block tile, BK = 8, 256 threads each computing an 8x8
//     piece of C from registers (two 4-wide strips in each direction so that the shared reads
//     are 16-byte vectors without bank conflicts), shared tiles double-buffered and the next
//     tile fetched into registers while the current one is multiplied. It reads operands
//     through general strides, so any layout works; the fetch order follows whichever
//     dimension is contiguous so that global loads coalesce.
//   * f64: the same SIMT kernel at 64x64 with 4x4 per thread (double registers are twice as
//     wide; f64 matmul is for gradient checks, not speed).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <type_traits>
#include <vector>

#include "cuda/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"
#include "cuda/runtime.h"
#include "ember/core/storage.h"
#include "ember/cuda.h"
#include "cuda/gemm_select.h"
#include "cuda/once_verdict.h"
#include "gemm_mma.cuh"
#ifdef EMBER_WITH_SM90A
#include "sm90/gemm_wgmma.h"
#endif

namespace ember::cuda {

prim::copy::Fn copy;  // kernels/elementwise.cu
namespace gemm_detail {

template <class T>
__device__ __forceinline__ float load_as_float(const T* p) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(*p);
  else if constexpr (std::is_same_v<T, __half>) return __half2float(*p);
  else return *p;
}
template <class T, class Acc>
__device__ __forceinline__ Acc load_acc(const T* p) {
  if constexpr (std::is_same_v<T, Acc>) return *p;
  else return load_as_float(p);
}
template <class T, class Acc>
__device__ __forceinline__ void store_acc(T* p, Acc v) {
  if constexpr (std::is_same_v<T, Acc>) *p = v;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) *p = __float2bfloat16_rn(v);
  else *p = __float2half_rn(v);
}

template <class Acc, int N>
struct alignas(sizeof(Acc) * N) Vec {
  Acc v[N];
};

// An operand of the SIMT kernel: R rows by K columns (A, or B^T), element (r, k) at
// ptr[batch * bs + r * sr + k * sk]; k_fast says which index to walk across threads.
template <class T>
struct SimtOperand {
  const T* ptr;
  int64_t bs, sr, sk, rows;
  bool k_fast;
};

constexpr int kSimtThreads = 256;  // 16 x 16

// Moves one operand's kBR x kBK tiles: global -> registers (converted to Acc, zero past the
// edges) -> shared [kBK][kBR + kPad] (k-major, so a thread's strip of rows is one vector read).
// Element i of thread t is element e = t + 256 i of the tile; consecutive threads walk the
// operand's contiguous dimension so global loads coalesce:
//   k_fast: r = t / kBK + i * (256 / kBK), k = t % kBK
//   else:   r = t % kBR,                  k = t / kBR + i * (256 / kBR)
// Either way r and k move by a fixed step per i, so everything but the k offset is per thread.
template <int kBR, int kBK, int kPad, class T, class Acc>
struct SimtTileMover {
  static_assert(kSimtThreads % kBR == 0 && kSimtThreads % kBK == 0, "threads tile the block evenly");
  static constexpr int kElems = kBR * kBK / kSimtThreads;
  static_assert(kElems <= 32, "row mask holds one bit per element");
  // Registers are what this kernel runs out of, so the per-thread state is kept small and
  // advanced as the k-tiles go by.
  const T* p;         // element i = 0 of the next k-tile
  int64_t step;       // pointer step per i
  int64_t tile_step;  // pointer step per k-tile (kBK * sk)
  int k_left;         // K - (k of element i = 0 in the next k-tile); the host keeps K < 2^31
  unsigned row_ok;    // bit i: element i's row exists
  bool k_fast;

  __device__ __forceinline__ SimtTileMover(const SimtOperand<T>& op, const T* base, int64_t K, int64_t r0, int tid)
      : k_fast(op.k_fast) {
    const int r = k_fast ? tid / kBK : tid % kBR;
    const int k = k_fast ? tid % kBK : tid / kBR;
    const int r_step = k_fast ? kSimtThreads / kBK : 0, k_step = k_fast ? 0 : kSimtThreads / kBR;
    p = base + (r0 + r) * op.sr + k * op.sk;
    step = r_step * op.sr + k_step * op.sk;
    tile_step = kBK * op.sk;
    k_left = static_cast<int>(K - k);
    row_ok = 0;
#pragma unroll
    for (int i = 0; i < kElems; ++i) row_ok |= (r0 + r + int64_t(i) * r_step < op.rows ? 1u : 0u) << i;
  }
  // Loads the next k-tile into registers and moves on to the one after it.
  __device__ __forceinline__ void fetch(Acc (&reg)[kElems]) {
    const int k_step = k_fast ? 0 : kSimtThreads / kBR;
#pragma unroll
    for (int i = 0; i < kElems; ++i)
      reg[i] = ((row_ok >> i) & 1u) && i * k_step < k_left ? load_acc<T, Acc>(p + i * step) : Acc(0);
    p += tile_step;
    k_left -= kBK;
  }
  __device__ __forceinline__ void stash(Acc* tile, const Acc (&reg)[kElems], int tid) const {
    const int r = k_fast ? tid / kBK : tid % kBR;
    const int k = k_fast ? tid % kBK : tid / kBR;
    const int s_step = k_fast ? kSimtThreads / kBK : (kSimtThreads / kBR) * (kBR + kPad);
#pragma unroll
    for (int i = 0; i < kElems; ++i) tile[k * (kBR + kPad) + r + i * s_step] = reg[i];
  }
};

// Thread (ty, tx) of a 16 x 16 grid owns rows {ty*kTM/2 + i, kBM/2 + ty*kTM/2 + i} and the
// matching columns: two strips per direction keep each strip's shared read one 16-byte
// vector and the warp's reads free of bank conflicts.
template <class T, class Acc, int kBM, int kBN, int kBK, int kTM, int kTN>
__global__ void __launch_bounds__(kSimtThreads, 2)
    gemm_simt_kernel(SimtOperand<T> a, SimtOperand<T> bt, T* __restrict__ out, const T* __restrict__ bias,
                     int64_t M, int64_t N, int64_t K, int64_t batches) {
  static_assert(kBM == 16 * kTM && kBN == 16 * kTN, "16 x 16 threads cover the tile");
  static_assert((kTM / 2) * sizeof(Acc) == 16 && (kTN / 2) * sizeof(Acc) == 16, "strips are 16 bytes");
  constexpr int kPad = 16 / sizeof(Acc);  // keeps rows 16-byte aligned and stores conflict-free
  constexpr int kEA = kBM * kBK / kSimtThreads, kEB = kBN * kBK / kSimtThreads;
  __shared__ __align__(16) Acc As[2][kBK * (kBM + kPad)];  // [k][m]
  __shared__ __align__(16) Acc Bs[2][kBK * (kBN + kPad)];  // [k][n]

  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const int64_t tiles_m = (M + kBM - 1) / kBM, tiles_n = (N + kBN - 1) / kBN;
  int64_t tm, tn;
  grouped_tile(blockIdx.x, tiles_m, tiles_n, tm, tn);
  const int64_t m0 = tm * kBM, n0 = tn * kBN;
  const int k_tiles = static_cast<int>((K + kBK - 1) / kBK);

  const int64_t batch = int64_t(blockIdx.z) * gridDim.y + blockIdx.y;
  if (batch >= batches) return;  // the whole block leaves before any barrier
  const T* pa = a.ptr + batch * a.bs;
  const T* pb = bt.ptr + batch * bt.bs;
  Acc acc[kTM][kTN];
#pragma unroll
  for (int i = 0; i < kTM; ++i)
#pragma unroll
    for (int j = 0; j < kTN; ++j) acc[i][j] = Acc(0);

  SimtTileMover<kBM, kBK, kPad, T, Acc> move_a(a, pa, K, m0, tid);
  SimtTileMover<kBN, kBK, kPad, T, Acc> move_b(bt, pb, K, n0, tid);
  Acc ra[kEA], rb[kEB];
  move_a.fetch(ra);
  move_b.fetch(rb);
  move_a.stash(As[0], ra, tid);
  move_b.stash(Bs[0], rb, tid);
  __syncthreads();

  for (int kt = 0; kt < k_tiles; ++kt) {
    const int cur = kt & 1;
    const bool more = kt + 1 < k_tiles;
    if (more) {  // global loads in flight during the multiply below
      move_a.fetch(ra);
      move_b.fetch(rb);
    }
#pragma unroll
    for (int k = 0; k < kBK; ++k) {
      const Acc* as = As[cur] + k * (kBM + kPad);
      const Acc* bs = Bs[cur] + k * (kBN + kPad);
      Vec<Acc, kTM / 2> a_lo = *reinterpret_cast<const Vec<Acc, kTM / 2>*>(as + ty * (kTM / 2));
      Vec<Acc, kTM / 2> a_hi = *reinterpret_cast<const Vec<Acc, kTM / 2>*>(as + kBM / 2 + ty * (kTM / 2));
      Vec<Acc, kTN / 2> b_lo = *reinterpret_cast<const Vec<Acc, kTN / 2>*>(bs + tx * (kTN / 2));
      Vec<Acc, kTN / 2> b_hi = *reinterpret_cast<const Vec<Acc, kTN / 2>*>(bs + kBN / 2 + tx * (kTN / 2));
#pragma unroll
      for (int i = 0; i < kTM; ++i) {
        const Acc av = i < kTM / 2 ? a_lo.v[i] : a_hi.v[i - kTM / 2];
#pragma unroll
        for (int j = 0; j < kTN; ++j) {
          const Acc bv = j < kTN / 2 ? b_lo.v[j] : b_hi.v[j - kTN / 2];
          acc[i][j] = fma(av, bv, acc[i][j]);
        }
      }
    }
    if (more) {  // the other buffer was last read before the previous barrier
      move_a.stash(As[cur ^ 1], ra, tid);
      move_b.stash(Bs[cur ^ 1], rb, tid);
    }
    __syncthreads();
  }

  T* po = out + batch * M * N;
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    const int lr = i < kTM / 2 ? ty * (kTM / 2) + i : kBM / 2 + ty * (kTM / 2) + (i - kTM / 2);
    const int64_t row = m0 + lr;
    if (row >= M) continue;
#pragma unroll
    for (int j = 0; j < kTN; ++j) {
      const int lc = j < kTN / 2 ? tx * (kTN / 2) + j : kBN / 2 + tx * (kTN / 2) + (j - kTN / 2);
      const int64_t col = n0 + lc;
      if (col < N) store_acc<T, Acc>(po + row * N + col, bias ? acc[i][j] + static_cast<Acc>(bias[col]) : acc[i][j]);
    }
  }
}

}  // namespace gemm_detail

namespace {
using namespace gemm_detail;

// One matrix operand of the contract: row-major when its last dim has unit stride (or size 1),
// else column-major (unit stride in the middle dim); ld is its leading dimension.
struct Layout {
  bool row_major;
  int64_t ld;
};
Layout layout_of(const Tensor& t, const char* name, const Tensor& a, const Tensor& b) {
  if (t.stride(2) == 1 || t.size(2) == 1) return {true, std::max<int64_t>(t.stride(1), t.size(2))};
  EMBER_CHECK(t.stride(1) == 1 || t.size(1) == 1, "matmul", "operand ", name,
              " needs unit stride in one of its last two dims, got strides ", shape_str(t.strides()),
              " in ", shape_str(a.shape()), " @ ", shape_str(b.shape()));
  return {false, std::max<int64_t>(t.stride(2), t.size(1))};
}

int64_t batch_stride(const Tensor& t) { return t.size(0) == 1 ? 0 : t.stride(0); }

// ---- cuBLAS -----------------------------------------------------------------------------

void bmm_cublas(const Tensor& a, const Tensor& b, const Tensor& out, const Tensor& bias, const Layout& la,
                const Layout& lb) {
  const int64_t B = a.size(0), n = a.size(1), k = a.size(2), m = b.size(2);
  for (int64_t v : {n, k, m, la.ld, lb.ld, B})
    EMBER_CHECK(v <= INT_MAX, "matmul", "cuBLAS takes 32-bit sizes; got ", shape_str(a.shape()), " @ ",
                shape_str(b.shape()));
  cudaDataType_t type;
  cublasComputeType_t compute;
  const float one_f = 1.f, zero_f = 0.f;
  const double one_d = 1.0, zero_d = 0.0;
  const void* alpha = &one_f;
  // With a bias, out starts as the bias broadcast over rows and cuBLAS accumulates onto it.
  const bool acc = bias.defined();
  const void* beta = acc ? &one_f : &zero_f;
  switch (a.dtype()) {
    case DType::f32:
      type = CUDA_R_32F;
      compute = allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
      break;
    case DType::f16: type = CUDA_R_16F; compute = CUBLAS_COMPUTE_32F; break;
    case DType::bf16: type = CUDA_R_16BF; compute = CUBLAS_COMPUTE_32F; break;
    case DType::f64:
      type = CUDA_R_64F;
      compute = CUBLAS_COMPUTE_64F;
      alpha = &one_d;
      beta = acc ? &one_d : &zero_d;
      break;
    default: EMBER_FAIL("matmul", "no CUDA matmul for dtype ", a.dtype());
  }
  // Column-major C^T (m, n), ldc = m, = op(B) (m, k) @ op(A) (k, n).
  const cublasOperation_t op_b = lb.row_major ? CUBLAS_OP_N : CUBLAS_OP_T;
  const cublasOperation_t op_a = la.row_major ? CUBLAS_OP_N : CUBLAS_OP_T;
  if (acc) copy(bias.reshape({1, 1, m}).expand(out.shape()), out);
  cublasHandle_t h = cublas_handle();
  EMBER_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      h, op_b, op_a, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, b.data_ptr(), type,
      static_cast<int>(lb.ld), static_cast<long long>(batch_stride(b)), a.data_ptr(), type,
      static_cast<int>(la.ld), static_cast<long long>(batch_stride(a)), beta, out.data_ptr(), type,
      static_cast<int>(m), static_cast<long long>(B == 1 ? 0 : n * m), static_cast<int>(B), compute,
      CUBLAS_GEMM_DEFAULT));
  note_gemm_kernel("cublas");
}

// ---- hand-written -------------------------------------------------------------------------

// Grid: x = tiles in grouped order; batch = z * gridDim.y + y (y and z are at most 65535).
dim3 gemm_grid(int64_t M, int64_t N, int64_t B, int bm, int bn) {
  const int64_t tiles = ((M + bm - 1) / bm) * ((N + bn - 1) / bn);
  const int64_t gy = std::min<int64_t>(B, 65535), gz = (B + gy - 1) / gy;
  EMBER_CHECK(tiles <= INT_MAX && gz <= 65535, "matmul", "too large for one launch: ", B, " x ", M, " x ", N);
  return dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(gy), static_cast<unsigned>(gz));
}

template <class T, class Acc, int kBM, int kBN, int kTM, int kTN>
void launch_simt(const Tensor& a, const Tensor& b, const Tensor& out, const T* bias, cudaStream_t stream) {
  const int64_t B = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  // A is (rows M, K); B^T is (rows N, K): element (n, k) = b[k, n].
  SimtOperand<T> oa{static_cast<const T*>(a.data_ptr()), batch_stride(a), a.stride(1), a.stride(2), M,
                    a.stride(2) == 1};
  SimtOperand<T> ob{static_cast<const T*>(b.data_ptr()), batch_stride(b), b.stride(2), b.stride(1), N,
                    b.stride(1) == 1 && b.stride(2) != 1};
  gemm_simt_kernel<T, Acc, kBM, kBN, 8, kTM, kTN><<<gemm_grid(M, N, B, kBM, kBN), kSimtThreads, 0, stream>>>(
      oa, ob, static_cast<T*>(out.data_ptr()), bias, M, N, K, B);
  EMBER_CUDA_LAUNCH_CHECK();
  note_gemm_kernel("simt");
}

// Raises the kernel's dynamic shared-memory limit once per device (over the 48 KB default).
template <class T, bool kAK, bool kBK>
void prepare_mma_kernel(int device) {
  static std::atomic<uint64_t> done{0};
  const uint64_t bit = device < 64 ? (uint64_t(1) << device) : 0;
  if (bit != 0 && (done.load() & bit)) return;
  EMBER_CUDA_CHECK(cudaFuncSetAttribute(gemm_mma_kernel<T, kAK, kBK>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        tc_smem_bytes(kAK, kBK)));
  done.fetch_or(bit);
}

template <class T, bool kAK, bool kBK>
void launch_mma_variant(const TcOperand<T>& oa, const TcOperand<T>& ob, T* out, const T* bias, int64_t M, int64_t N,
                        int64_t K, int64_t B, bool pair_store, cudaStream_t stream) {
  prepare_mma_kernel<T, kAK, kBK>(current_device());
  gemm_mma_kernel<T, kAK, kBK><<<gemm_grid(M, N, B, kTcBM, kTcBN), kTcThreads, tc_smem_bytes(kAK, kBK), stream>>>(
      oa, ob, out, bias, M, N, K, B, pair_store);
  EMBER_CUDA_LAUNCH_CHECK();
  note_gemm_kernel("mma");
}

// The mma.sync kernel for operands whose K-contiguity is known at run time: ak = A row-major,
// bk = b column-major (B^T K-contiguous).
template <class T>
void launch_mma(bool ak, bool bk, const TcOperand<T>& oa, const TcOperand<T>& ob, T* out, const T* bias, int64_t M,
                int64_t N, int64_t K, int64_t B, bool pair_store, cudaStream_t stream) {
  if (ak && bk) launch_mma_variant<T, true, true>(oa, ob, out, bias, M, N, K, B, pair_store, stream);
  else if (ak) launch_mma_variant<T, true, false>(oa, ob, out, bias, M, N, K, B, pair_store, stream);
  else if (bk) launch_mma_variant<T, false, true>(oa, ob, out, bias, M, N, K, B, pair_store, stream);
  else launch_mma_variant<T, false, false>(oa, ob, out, bias, M, N, K, B, pair_store, stream);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The tensor-core kernel's requirements: 16-byte aligned bases, leading dims and batch strides
// in whole 16-byte chunks, so every cp.async source is 16-byte aligned.
bool mma_eligible(const Tensor& t, const Layout& l) {
  return aligned16(t.data_ptr()) && l.ld % 8 == 0 && batch_stride(t) % 8 == 0;
}

#ifdef EMBER_WITH_SM90A
// ---- the Hopper kernel (kernels/sm90/) ----------------------------------------------------

sm90::Operand sm90_operand(const Tensor& t, const Layout& l, int64_t rows, bool k_major_when_row_major) {
  return {t.data_ptr(), rows, l.ld, batch_stride(t), l.row_major == k_major_when_row_major};
}

// The first time a (device, dtype, layouts, tile) combination would run the sm_90a kernel, it
// runs it once on a small product with ragged edges, a K tail and two batches, beside the
// mma.sync kernel; if the two disagree, that combination keeps the mma.sync kernel for the rest
// of the process and says so on stderr. A safety net for a kernel that is new on a device.
bool sm90_self_check(DType dt, bool a_row, bool b_row, int tile, cudaStream_t stream);

// Runs the product on the sm_90a kernel and returns true, or returns false when it does not
// apply (not a 9.0 device, layout or alignment it cannot take, turned off, failed its check).
template <class T>
bool try_sm90(const Tensor& a, const Tensor& b, const Tensor& out, const T* bias, const Layout& la, const Layout& lb,
              cudaStream_t stream) {
  const int setting = gemm_sm90_tile();
  if (setting == 0) return false;
  const int64_t B = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  const sm90::Operand oa = sm90_operand(a, la, M, true), ob = sm90_operand(b, lb, N, false);
  if (sm90::wgmma_unsupported(true, oa, ob, K, B, current_device()) != nullptr) return false;
  const int tile = setting > 0 ? setting : (N > 128 ? 256 : 128);
  if (!sm90_self_check(a.dtype(), la.row_major, lb.row_major, tile, stream)) return false;
  sm90::bmm_wgmma(std::is_same_v<T, __nv_bfloat16>, oa, ob, out.data_ptr(), bias, M, N, K, B, tile, stream);
  note_gemm_kernel("wgmma");
  return true;
}
#endif

template <class T>
void launch_half(const Tensor& a, const Tensor& b, const Tensor& out, const T* bias, const Layout& la,
                 const Layout& lb, cudaStream_t stream) {
#ifdef EMBER_WITH_SM90A
  if (try_sm90<T>(a, b, out, bias, la, lb, stream)) return;
#endif
  if (!mma_eligible(a, la) || !mma_eligible(b, lb)) {
    launch_simt<T, float, 128, 128, 8, 8>(a, b, out, bias, stream);
    return;
  }
  const int64_t B = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  // B^T (N, K) is K-contiguous exactly when b is column-major.
  TcOperand<T> oa{static_cast<const T*>(a.data_ptr()), la.ld, batch_stride(a), M};
  TcOperand<T> ob{static_cast<const T*>(b.data_ptr()), lb.ld, batch_stride(b), N};
  T* po = static_cast<T*>(out.data_ptr());
  const bool pair_store = N % 2 == 0 && reinterpret_cast<uintptr_t>(po) % 4 == 0;
  launch_mma<T>(la.row_major, !lb.row_major, oa, ob, po, bias, M, N, K, B, pair_store, stream);
}

void bmm_ember(const Tensor& a, const Tensor& b, const Tensor& out, const Tensor& bias, const Layout& la,
               const Layout& lb, cudaStream_t stream) {
  EMBER_CHECK(a.size(2) <= INT_MAX, "matmul", "inner dimension too large for ember's kernels: ",
              shape_str(a.shape()), " @ ", shape_str(b.shape()));
  switch (a.dtype()) {
    case DType::f32:
      launch_simt<float, float, 128, 128, 8, 8>(a, b, out, ptr_or_null<float>(bias), stream);
      break;
    case DType::f64:
      launch_simt<double, double, 64, 64, 4, 4>(a, b, out, ptr_or_null<double>(bias), stream);
      break;
    case DType::f16: launch_half<__half>(a, b, out, ptr_or_null<__half>(bias), la, lb, stream); break;
    case DType::bf16:
      launch_half<__nv_bfloat16>(a, b, out, ptr_or_null<__nv_bfloat16>(bias), la, lb, stream);
      break;
    default: EMBER_FAIL("matmul", "no CUDA matmul for dtype ", a.dtype());
  }
}

#ifdef EMBER_WITH_SM90A
bool sm90_self_check_run(DType dt, bool a_row, bool b_row, int tile, int device, cudaStream_t stream);

bool sm90_self_check(DType dt, bool a_row, bool b_row, int tile, cudaStream_t stream) {
  static OnceVerdict<64 * 16> verdicts;  // device x dtype x layouts x tile width
  const int device = current_device();
  const int index = device * 16 + (dt == DType::bf16 ? 8 : 0) + (a_row ? 4 : 0) + (b_row ? 2 : 0) + (tile == 256 ? 1 : 0);
  return verdicts.get(index, "the sm_90a GEMM self-check", "using the mma.sync kernel",
                      [&] { return sm90_self_check_run(dt, a_row, b_row, tile, device, stream); },
                      stream_capturing(stream));
}

bool sm90_self_check_run(DType dt, bool a_row, bool b_row, int tile, int device, cudaStream_t stream) {
  // 2 x (200 x 136) @ (136 x tile + 72): partial tiles in M and N, a K tail of 8, both tile
  // widths' column counts, two batches. Raw buffers: this layer makes no tensors.
  const int64_t B = 2, M = 200, K = 136, N = tile + 72;
  const int64_t na = B * M * K, nb = B * K * N, nc = B * M * N;
  // Multiples of 1/8 in [-1, 1], deterministic.
  auto value = [](int64_t i, unsigned seed) {
    return static_cast<float>(((static_cast<uint64_t>(i) * 2654435761u + seed) >> 7) % 17) / 8.f - 1.f;
  };
  std::vector<uint16_t> host(static_cast<size_t>(na + nb));
  for (int64_t i = 0; i < na + nb; ++i) {
    const float v = value(i, i < na ? 1u : 2u);
    host[i] = dt == DType::bf16 ? __nv_bfloat16_raw(__float2bfloat16(v)).x : __half_raw(__float2half(v)).x;
  }
  // Scratch from the caching allocator: freed at scope exit, reused only in stream order.
  Storage scratch(static_cast<size_t>(na + nb + 2 * nc) * 2, Device::cuda(device));
  uint16_t* pa = static_cast<uint16_t*>(scratch.data());
  uint16_t* pb = pa + na;
  uint16_t* c_sm90 = pb + nb;
  uint16_t* c_mma = c_sm90 + nc;
  EMBER_CUDA_CHECK(cudaMemcpyAsync(pa, host.data(), static_cast<size_t>(na + nb) * 2, cudaMemcpyHostToDevice, stream));
  // Row-major a is (M, K) with ld K, column-major a is stored (K, M) with ld M; likewise b.
  const Layout la{a_row, a_row ? K : M}, lb{b_row, b_row ? N : K};
  const sm90::Operand oa{pa, M, la.ld, M * K, a_row}, ob{pb, N, lb.ld, K * N, !b_row};
  sm90::bmm_wgmma(dt == DType::bf16, oa, ob, c_sm90, nullptr, M, N, K, B, tile, stream);
  auto run_mma = [&](auto tag) {
    using T = decltype(tag);
    TcOperand<T> ta{reinterpret_cast<const T*>(pa), la.ld, M * K, M};
    TcOperand<T> tb{reinterpret_cast<const T*>(pb), lb.ld, K * N, N};
    launch_mma<T>(a_row, !b_row, ta, tb, reinterpret_cast<T*>(c_mma), nullptr, M, N, K, B, true, stream);
  };
  if (dt == DType::bf16) run_mma(__nv_bfloat16{});
  else run_mma(__half{});
  std::vector<uint16_t> back(static_cast<size_t>(2 * nc));
  EMBER_CUDA_CHECK(cudaMemcpyAsync(back.data(), c_sm90, static_cast<size_t>(2 * nc) * 2, cudaMemcpyDeviceToHost, stream));
  EMBER_CUDA_CHECK(cudaStreamSynchronize(stream));
  auto as_float = [&](uint16_t bits) {
    if (dt == DType::bf16) {
      __nv_bfloat16_raw r;
      r.x = bits;
      return __bfloat162float(__nv_bfloat16(r));
    }
    __half_raw r;
    r.x = bits;
    return __half2float(__half(r));
  };
  std::vector<float> x(static_cast<size_t>(nc)), y(static_cast<size_t>(nc));
  for (int64_t i = 0; i < nc; ++i) {
    x[i] = as_float(back[i]);
    y[i] = as_float(back[nc + i]);
  }
  // The inputs are multiples of 1/8 in [-1, 1] and K = 136, so every partial sum is a multiple
  // of 1/64 below 136 in size: exact in f32 whatever the summation order. Both kernels round the
  // same exact value once, so any difference at all is a bug.
  int64_t wrong = 0;
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i] == y[i]) continue;  // NaN never compares equal, so it counts as wrong
    ++wrong;
    const double d = std::fabs(double(x[i]) - double(y[i]));
    worst = std::isnan(d) || d > worst ? d : worst;
  }
  const bool ok = wrong == 0;
  if (!ok)
    std::fprintf(stderr,
                 "ember: the sm_90a GEMM (%s, a %s, b %s, tile %d) disagreed with the mma.sync kernel on device %d "
                 "(%lld of %lld values differ, largest difference %g); that combination uses the mma.sync kernel "
                 "from now on\n",
                 dtype_name(dt), a_row ? "row-major" : "column-major", b_row ? "row-major" : "column-major", tile,
                 device, static_cast<long long>(wrong), static_cast<long long>(nc), worst);
  return ok;
}
#endif

// Milliseconds per call of one back end on this product (GemmBackend::fastest): one warm-up
// call (first-use costs: cuBLAS heuristics, the sm_90a self-check), then 3 timed calls.
double time_backend(GemmBackend be, const std::function<void(GemmBackend)>& run) {
  run(be);
  Event start, stop;  // on the current stream, which is where run() launches
  start.record();
  for (int i = 0; i < 3; ++i) run(be);
  stop.record();
  return start.elapsed_ms(stop) / 3.0;
}

}  // namespace

void bmm(const Tensor& a, const Tensor& b, const Tensor& out, const Tensor& bias) {
  EMBER_CHECK(a.dim() == 3 && b.dim() == 3 && out.dim() == 3, "matmul", "expects 3-D operands, got ",
              shape_str(a.shape()), " @ ", shape_str(b.shape()), " -> ", shape_str(out.shape()));
  const int64_t B = a.size(0), n = a.size(1), k = a.size(2), m = b.size(2);
  EMBER_CHECK(b.size(0) == B && b.size(1) == k && out.size(0) == B && out.size(1) == n && out.size(2) == m,
              "matmul", "shapes do not match: ", shape_str(a.shape()), " @ ", shape_str(b.shape()), " -> ",
              shape_str(out.shape()));
  EMBER_CHECK(a.dtype() == b.dtype() && a.dtype() == out.dtype(), "matmul", "dtypes differ: ", a.dtype(), " @ ",
              b.dtype(), " -> ", out.dtype());
  EMBER_CHECK(out.is_contiguous(), "matmul", "output must be contiguous, got strides ", shape_str(out.strides()));
  if (B == 0 || n == 0 || m == 0) return;
  DeviceGuard guard(out.device().index);
  cudaStream_t stream = current_stream();
  EMBER_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == m && bias.dtype() == out.dtype() &&
                                  bias.is_contiguous() && bias.device() == out.device()),
              "matmul", "bias must be a contiguous (", m, ") tensor of the output's dtype and device");
  if (k == 0) {
    if (bias.defined()) {  // an empty sum plus the bias
      copy(bias.reshape({1, 1, m}).expand(out.shape()), out);
      return;
    }
    // an empty sum: all-zero bits are 0.0 in every float type
    EMBER_CUDA_CHECK(cudaMemsetAsync(out.data_ptr(), 0, static_cast<size_t>(out.numel()) * out.element_size(), stream));
    return;
  }
  const Layout la = layout_of(a, "a", a, b), lb = layout_of(b, "b", a, b);
  auto run = [&](GemmBackend be) {
    if (be == GemmBackend::cublas) bmm_cublas(a, b, out, bias, la, lb);
    else bmm_ember(a, b, out, bias, la, lb, stream);
  };
  GemmBackend be = gemm_backend();
  if (be == GemmBackend::fastest) {
    const GemmKey key = gemm_key(out.device().index, a.dtype(), la.row_major, lb.row_major, B, n, m, k,
                                 bias.defined(), allow_tf32());
    if (!gemm_chooser().lookup(key, &be)) {
      if (stream_capturing(stream)) {
        be = GemmBackend::cublas;  // nothing can be timed inside a graph capture
      } else {
        // Each timed call writes the whole output, so whichever runs last leaves it correct;
        // the chosen back end then runs once more below.
        be = gemm_chooser().choose(key, [&](GemmBackend cand) { return time_backend(cand, run); });
      }
    }
  }
  run(be);
}

void register_gemm_kernels() {
  prim::define<prim::bmm>(prim::Backend::cuda, &bmm);
}

}  // namespace ember::cuda
