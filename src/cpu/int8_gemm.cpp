// Dynamic int8 on the CPU (contracts in prim/primitives.h): symmetric row quantisation and the
// int8 x int8 -> int32 GEMM, out = a . b^T with a (M, K4), b (N, K4), four int8 values to an i32.
//
// Three paths, the best the CPU has picked at run time (int8_gemm.h):
//  - AVX-512 VNNI: vpdpbusd multiplies unsigned by signed bytes, so the activations are shifted
//    to unsigned (a + 128, one xor of the sign bit) and 128 * (column sum of b) is subtracted
//    at the end. b is packed per panel of 32 columns, k-quad-major ([K4][32] i32), so one
//    broadcast quad of a row times two vector loads feeds 32 accumulators lanes with no
//    horizontal sums; a micro-tile is 8 rows x 32 columns (16 zmm accumulators).
//  - AVX2: vpmaddubsw adds two u8*s8 products into a saturating int16; with |a| <= 127 and
//    |b| <= 127 (the quantiser never emits -128) |a| * sign(b, a) pairs stay below 32767, so the
//    sums are exact; vpmaddwd widens to int32. Same packing, 4 rows x 16 columns per pass.
//  - scalar: the reference, and the fallback elsewhere.
// Every path sums in wrapping int32 (no saturation), so the result is exact whenever the true
// sum fits int32 (the op layer bounds K). Threads split the (panel, row-chunk) tasks.
#include "cpu/int8_gemm.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"

namespace ember::cpu {
namespace {

constexpr int kMR = 8;                      // rows of a per VNNI micro-tile
constexpr int kNR = 32;                     // columns of a packed panel
constexpr int64_t kParallelMacs = 1 << 18;  // below this many multiply-adds, one thread

Int8Isa detect_isa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni"))
    return Int8Isa::avx512_vnni;
  if (__builtin_cpu_supports("avx2")) return Int8Isa::avx2;
#endif
  return Int8Isa::scalar;
}

const Int8Isa g_best = detect_isa();
std::atomic<Int8Isa> g_isa{g_best};

// Where and how a tile's sums are written.
struct Epilogue {
  int32_t* out_i = nullptr;  // raw sums (i32 output), or
  float* out_f = nullptr;    // sum * sa[m] * sb[n] + bias[n]
  int64_t N = 0;
  const float* sa = nullptr;
  const float* sb = nullptr;
  const float* bias = nullptr;
};

// Writes one row's sums (nc <= 32 columns from n0) through the epilogue: the scalar tail of
// the vector paths and the scalar path itself.
void write_row(const Epilogue& e, int64_t m, int64_t n0, int nc, const int32_t* sums) {
  if (e.out_i) {
    std::memcpy(e.out_i + m * e.N + n0, sums, sizeof(int32_t) * nc);
    return;
  }
  float* o = e.out_f + m * e.N + n0;
  const float sa = e.sa[m];
  for (int j = 0; j < nc; ++j) {
    float v = static_cast<float>(sums[j]) * (sa * e.sb[n0 + j]);
    o[j] = e.bias ? v + e.bias[n0 + j] : v;
  }
}

// b rows n0.. (nc of them) -> bp[k][j] (K4 x 32), zero columns past nc.
void pack_panel(const int32_t* b, int64_t K4, int64_t n0, int nc, int32_t* bp) {
  if (nc < kNR) std::fill(bp, bp + K4 * kNR, 0);
  for (int j = 0; j < nc; ++j) {
    const int32_t* row = b + (n0 + j) * K4;
    for (int64_t k = 0; k < K4; ++k) bp[k * kNR + j] = row[k];
  }
}

// Splits work into (panel, row-chunk) tasks and runs task(panel, m_begin, m_end, buffer) on
// the OpenMP threads, each with its own panel buffer.
template <class Task>
void run_tasks(int64_t M, int64_t N, int64_t K4, int64_t row_block, Task&& task) {
  const int64_t panels = (N + kNR - 1) / kNR;
  const bool parallel = M * N * K4 * 4 >= kParallelMacs && !omp_in_parallel() && omp_get_max_threads() > 1;
  const int64_t threads = parallel ? omp_get_max_threads() : 1;
  const int64_t row_blocks = (M + row_block - 1) / row_block;
  // Enough tasks for every thread; a panel is packed once per row chunk, so split rows only
  // when there are fewer panels than threads.
  const int64_t chunks = panels >= threads ? 1 : std::min(row_blocks, (threads + panels - 1) / panels);
  const int64_t chunk_rows = ((row_blocks + chunks - 1) / chunks) * row_block;
  const int64_t tasks = panels * chunks;
  auto body = [&](int64_t t0, int64_t t1) {
    static thread_local std::vector<int32_t> buf;
    if (buf.size() < static_cast<size_t>(K4 * kNR)) buf.resize(static_cast<size_t>(K4 * kNR));
    int64_t packed = -1;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t p = t / chunks, c = t % chunks;
      const int64_t m0 = c * chunk_rows, m1 = std::min(M, m0 + chunk_rows);
      if (m0 >= m1) continue;
      task(p, m0, m1, buf.data(), packed != p);
      packed = p;
    }
  };
  if (threads == 1) {
    body(0, tasks);
    return;
  }
#pragma omp parallel num_threads(static_cast <int>(threads))
  {
    const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
    const int64_t per = (tasks + nt - 1) / nt;
    const int64_t t0 = id * per, t1 = std::min(tasks, t0 + per);
    if (t0 < t1) body(t0, t1);
  }
}

// --- scalar ------------------------------------------------------------------------------------

void gemm_scalar(const int32_t* a, const int32_t* b, int64_t M, int64_t N, int64_t K4, const Epilogue& e) {
  const int64_t K = K4 * 4;
  auto rows = [&](int64_t m0, int64_t m1) {
    std::vector<int32_t> sums(kNR);
    for (int64_t m = m0; m < m1; ++m) {
      const auto* ar = reinterpret_cast<const int8_t*>(a + m * K4);
      for (int64_t n0 = 0; n0 < N; n0 += kNR) {
        const int nc = static_cast<int>(std::min<int64_t>(kNR, N - n0));
        for (int j = 0; j < nc; ++j) {
          const auto* br = reinterpret_cast<const int8_t*>(b + (n0 + j) * K4);
          int32_t s = 0;
          for (int64_t k = 0; k < K; ++k) s += int32_t{ar[k]} * int32_t{br[k]};
          sums[j] = s;
        }
        write_row(e, m, n0, nc, sums.data());
      }
    }
  };
  if (M * N * K < kParallelMacs || omp_in_parallel() || M == 1) {
    rows(0, M);
    return;
  }
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
    const int64_t per = (M + nt - 1) / nt;
    const int64_t m0 = id * per, m1 = std::min(M, m0 + per);
    if (m0 < m1) rows(m0, m1);
  }
}

#if defined(__x86_64__)

// --- AVX-512 VNNI -------------------------------------------------------------------------------

#define EMBER_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

// au: rows m0.. of a with the sign bit of every byte flipped (a + 128 as u8), stride K4.
// corr: 128 * column sums of the panel (subtracted from every row's sums).
template <int MR>
EMBER_VNNI void tile_vnni(const int32_t* au, int64_t K4, const int32_t* bp, const int32_t* corr, int64_t m0, int64_t n0,
                          int nc, const Epilogue& e) {
  __m512i acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
  for (int64_t k = 0; k < K4; ++k) {
    const __m512i b0 = _mm512_loadu_si512(bp + k * kNR), b1 = _mm512_loadu_si512(bp + k * kNR + 16);
    for (int r = 0; r < MR; ++r) {
      const __m512i av = _mm512_set1_epi32(au[r * K4 + k]);
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, b0);
      acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, b1);
    }
  }
  const __mmask16 k0 = nc >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << nc) - 1);
  const __mmask16 k1 = nc >= 32 ? 0xFFFF : nc > 16 ? static_cast<__mmask16>((1u << (nc - 16)) - 1) : 0;
  const __m512i c0 = _mm512_loadu_si512(corr), c1 = _mm512_loadu_si512(corr + 16);
  __m512 sb0 = _mm512_setzero_ps(), sb1 = sb0, bias0 = sb0, bias1 = sb0;
  if (e.out_f) {
    sb0 = _mm512_maskz_loadu_ps(k0, e.sb + n0);
    sb1 = _mm512_maskz_loadu_ps(k1, e.sb + n0 + 16);
    if (e.bias) {
      bias0 = _mm512_maskz_loadu_ps(k0, e.bias + n0);
      bias1 = _mm512_maskz_loadu_ps(k1, e.bias + n0 + 16);
    }
  }
  for (int r = 0; r < MR; ++r) {
    const int64_t m = m0 + r;
    const __m512i v0 = _mm512_sub_epi32(acc[r][0], c0), v1 = _mm512_sub_epi32(acc[r][1], c1);
    if (e.out_i) {
      _mm512_mask_storeu_epi32(e.out_i + m * e.N + n0, k0, v0);
      _mm512_mask_storeu_epi32(e.out_i + m * e.N + n0 + 16, k1, v1);
    } else {
      const __m512 sa = _mm512_set1_ps(e.sa[m]);
      const __m512 f0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v0), _mm512_mul_ps(sa, sb0), bias0);
      const __m512 f1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v1), _mm512_mul_ps(sa, sb1), bias1);
      _mm512_mask_storeu_ps(e.out_f + m * e.N + n0, k0, f0);
      _mm512_mask_storeu_ps(e.out_f + m * e.N + n0 + 16, k1, f1);
    }
  }
}

// 128 * the column sums of a packed panel: vpdpbusd of all-one bytes with b.
EMBER_VNNI void panel_correction_vnni(const int32_t* bp, int64_t K4, int32_t* corr) {
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i s0 = _mm512_setzero_si512(), s1 = s0;
  for (int64_t k = 0; k < K4; ++k) {
    s0 = _mm512_dpbusd_epi32(s0, ones, _mm512_loadu_si512(bp + k * kNR));
    s1 = _mm512_dpbusd_epi32(s1, ones, _mm512_loadu_si512(bp + k * kNR + 16));
  }
  _mm512_storeu_si512(corr, _mm512_slli_epi32(s0, 7));
  _mm512_storeu_si512(corr + 16, _mm512_slli_epi32(s1, 7));
}

template <int MR>
EMBER_VNNI void tiles_vnni(const int32_t* au, int64_t K4, const int32_t* bp, const int32_t* corr, int64_t m0,
                           int64_t m1, int64_t n0, int nc, const Epilogue& e) {
  int64_t m = m0;
  for (; m + MR <= m1; m += MR) tile_vnni<MR>(au + m * K4, K4, bp, corr, m, n0, nc, e);
  switch (m1 - m) {
    case 0:
      break;
    case 1:
      tile_vnni<1>(au + m * K4, K4, bp, corr, m, n0, nc, e);
      break;
    case 2:
      tile_vnni<2>(au + m * K4, K4, bp, corr, m, n0, nc, e);
      break;
    case 3:
      tile_vnni<3>(au + m * K4, K4, bp, corr, m, n0, nc, e);
      break;
    case 4:
      tile_vnni<4>(au + m * K4, K4, bp, corr, m, n0, nc, e);
      break;
    case 5:
      tile_vnni<5>(au + m * K4, K4, bp, corr, m, n0, nc, e);
      break;
    case 6:
      tile_vnni<6>(au + m * K4, K4, bp, corr, m, n0, nc, e);
      break;
    default:
      tile_vnni<7>(au + m * K4, K4, bp, corr, m, n0, nc, e);
      break;
  }
}

void gemm_vnni(const int32_t* a, const int32_t* b, int64_t M, int64_t N, int64_t K4, const Epilogue& e) {
  // a + 128 as unsigned bytes, once for every panel.
  // Kept per thread across calls: a fresh buffer each call costs a page fault per 4 KiB.
  static thread_local std::vector<int32_t> au;
  if (au.size() < static_cast<size_t>(M * K4)) au.resize(static_cast<size_t>(M * K4));
  for (int64_t i = 0; i < M * K4; ++i) au[i] = a[i] ^ static_cast<int32_t>(0x80808080u);
  const int32_t* aup = au.data();  // the lambda runs on other threads: not their own (empty) `au`
  run_tasks(M, N, K4, kMR, [&](int64_t p, int64_t m0, int64_t m1, int32_t* bp, bool pack) {
    const int64_t n0 = p * kNR;
    const int nc = static_cast<int>(std::min<int64_t>(kNR, N - n0));
    alignas(64) int32_t corr_local[kNR];
    if (pack) pack_panel(b, K4, n0, nc, bp);
    panel_correction_vnni(bp, K4, corr_local);
    tiles_vnni<kMR>(aup, K4, bp, corr_local, m0, m1, n0, nc, e);
  });
}

// --- AVX2 ---------------------------------------------------------------------------------------

#define EMBER_AVX2 __attribute__((target("avx2,fma")))

// Rows m0.. (MR of them) x 16 columns (h = 0: the panel's first 16, 1: the last 16).
template <int MR>
EMBER_AVX2 void tile_avx2(const int32_t* a, int64_t K4, const int32_t* bp, int h, int64_t m0, int64_t n0, int nc,
                          const Epilogue& e) {
  __m256i acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t k = 0; k < K4; ++k) {
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + k * kNR + h * 16));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + k * kNR + h * 16 + 8));
    for (int r = 0; r < MR; ++r) {
      const __m256i av = _mm256_set1_epi32(a[r * K4 + k]);
      const __m256i aa = _mm256_abs_epi8(av);
      const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(aa, _mm256_sign_epi8(b0, av)), ones);
      const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(aa, _mm256_sign_epi8(b1, av)), ones);
      acc[r][0] = _mm256_add_epi32(acc[r][0], p0);
      acc[r][1] = _mm256_add_epi32(acc[r][1], p1);
    }
  }
  const int cols = std::clamp(nc - h * 16, 0, 16);
  alignas(32) int32_t sums[16];
  for (int r = 0; r < MR; ++r) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums), acc[r][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums + 8), acc[r][1]);
    write_row(e, m0 + r, n0 + h * 16, cols, sums);
  }
}

template <int MR>
EMBER_AVX2 void tiles_avx2(const int32_t* a, int64_t K4, const int32_t* bp, int64_t m0, int64_t m1, int64_t n0, int nc,
                           const Epilogue& e) {
  for (int h = 0; h < 2 && h * 16 < nc; ++h) {
    int64_t m = m0;
    for (; m + MR <= m1; m += MR) tile_avx2<MR>(a + m * K4, K4, bp, h, m, n0, nc, e);
    for (; m < m1; ++m) tile_avx2<1>(a + m * K4, K4, bp, h, m, n0, nc, e);
  }
}

void gemm_avx2(const int32_t* a, const int32_t* b, int64_t M, int64_t N, int64_t K4, const Epilogue& e) {
  run_tasks(M, N, K4, 4, [&](int64_t p, int64_t m0, int64_t m1, int32_t* bp, bool pack) {
    const int64_t n0 = p * kNR;
    const int nc = static_cast<int>(std::min<int64_t>(kNR, N - n0));
    if (pack) pack_panel(b, K4, n0, nc, bp);
    tiles_avx2<4>(a, K4, bp, m0, m1, n0, nc, e);
  });
}

#endif  // __x86_64__

// --- the kernels --------------------------------------------------------------------------------

#if defined(__x86_64__)
// One row: max |x| and the codes 16 at a time (vcvtps2dq rounds half to even, as nearbyint in the
// default rounding mode; vpmovsdb saturates, and the clamp to +-127 comes first).
__attribute__((target("avx512f,avx512bw"))) float quantize_row_avx512(const float* xr, int8_t* qr, int64_t K,
                                                                      int64_t K4) {
  const __m512 sign = _mm512_set1_ps(-0.f);
  __m512 vmax = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) vmax = _mm512_max_ps(vmax, _mm512_andnot_ps(sign, _mm512_loadu_ps(xr + k)));
  float amax = _mm512_reduce_max_ps(vmax);
  for (; k < K; ++k) amax = std::max(amax, std::fabs(xr[k]));
  if (!std::isfinite(amax)) {  // inf/NaN in the row: zero codes, NaN scale (the outputs become NaN)
    std::memset(qr, 0, static_cast<size_t>(K4 * 4));
    return std::numeric_limits<float>::quiet_NaN();
  }
  const float inv = amax > 0.f ? 127.f / amax : 0.f;
  const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-127.f), hi = _mm512_set1_ps(127.f);
  for (k = 0; k + 16 <= K; k += 16) {
    const __m512 v = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_mul_ps(_mm512_loadu_ps(xr + k), vinv)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qr + k), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v)));
  }
  for (; k < K; ++k) qr[k] = static_cast<int8_t>(std::clamp(std::nearbyint(xr[k] * inv), -127.f, 127.f));
  for (; k < K4 * 4; ++k) qr[k] = 0;
  return amax / 127.f;
}
const bool g_avx512_rows = [] {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}();
#endif

void quantize_rows(const Tensor& x, const Tensor& q, const Tensor& scale, int64_t M, int64_t K) {
  const float* px = static_cast<const float*>(x.data_ptr());
  auto* pq = static_cast<int8_t*>(q.data_ptr());
  float* ps = static_cast<float*>(scale.data_ptr());
  const int64_t K4 = (K + 3) / 4;
  auto rows = [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      const float* xr = px + m * K;
#if defined(__x86_64__)
      if (g_avx512_rows && g_isa.load(std::memory_order_relaxed) != Int8Isa::scalar) {
        ps[m] = quantize_row_avx512(xr, pq + m * K4 * 4, K, K4);
        continue;
      }
#endif
      float amax = 0.f;
      for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(xr[k]));
      // NaN or inf rows: the scale carries it (the outputs become NaN), the codes are zero.
      const bool finite = std::isfinite(amax);
      const float inv = amax > 0.f && finite ? 127.f / amax : 0.f;
      ps[m] = finite ? amax / 127.f : std::numeric_limits<float>::quiet_NaN();
      int8_t* qr = pq + m * K4 * 4;
      if (!finite) {
        std::memset(qr, 0, static_cast<size_t>(K4 * 4));
        continue;
      }
      for (int64_t k = 0; k < K; ++k) {
        const float v = std::nearbyint(xr[k] * inv);
        qr[k] = static_cast<int8_t>(std::clamp(v, -127.f, 127.f));
      }
      for (int64_t k = K; k < K4 * 4; ++k) qr[k] = 0;
    }
  };
  if (M * K < 65536 || M == 1 || omp_in_parallel()) {
    rows(0, M);
    return;
  }
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
    const int64_t per = (M + nt - 1) / nt;
    const int64_t m0 = id * per, m1 = std::min(M, m0 + per);
    if (m0 < m1) rows(m0, m1);
  }
}

void int8_gemm(const Tensor& a, const Tensor& b, const Tensor& a_scale, const Tensor& b_scale, const Tensor& bias,
               const Tensor& out, int64_t M, int64_t N, int64_t K4) {
  if (M == 0 || N == 0) return;
  Epilogue e;
  e.N = N;
  if (out.dtype() == DType::i32) {
    e.out_i = static_cast<int32_t*>(out.data_ptr());
  } else {
    e.out_f = static_cast<float*>(out.data_ptr());
    e.sa = static_cast<const float*>(a_scale.data_ptr());
    e.sb = static_cast<const float*>(b_scale.data_ptr());
    e.bias = bias.defined() ? static_cast<const float*>(bias.data_ptr()) : nullptr;
  }
  const auto* pa = static_cast<const int32_t*>(a.data_ptr());
  const auto* pb = static_cast<const int32_t*>(b.data_ptr());
  if (K4 == 0) {  // empty sums: zeros (and the bias)
    std::vector<int32_t> zeros(kNR, 0);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n0 = 0; n0 < N; n0 += kNR)
        write_row(e, m, n0, static_cast<int>(std::min<int64_t>(kNR, N - n0)), zeros.data());
    return;
  }
  switch (g_isa.load(std::memory_order_relaxed)) {
#if defined(__x86_64__)
    case Int8Isa::avx512_vnni:
      gemm_vnni(pa, pb, M, N, K4, e);
      return;
    case Int8Isa::avx2:
      gemm_avx2(pa, pb, M, N, K4, e);
      return;
#endif
    default:
      gemm_scalar(pa, pb, M, N, K4, e);
      return;
  }
}

}  // namespace

const char* int8_isa_name(Int8Isa isa) {
  switch (isa) {
    case Int8Isa::avx512_vnni:
      return "avx512_vnni";
    case Int8Isa::avx2:
      return "avx2";
    case Int8Isa::scalar:
      return "scalar";
  }
  return "?";
}
Int8Isa int8_best_isa() { return g_best; }
Int8Isa int8_isa() { return g_isa.load(); }
void set_int8_isa(Int8Isa isa) { g_isa.store(std::min(isa, g_best)); }

void register_int8_kernels() {
  prim::define<prim::quantize_rows>(prim::Backend::cpu, &quantize_rows);
  prim::define<prim::int8_gemm>(prim::Backend::cpu, &int8_gemm);
}

}  // namespace ember::cpu
