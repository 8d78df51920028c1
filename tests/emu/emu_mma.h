// kernels/mma.cuh's API for the host emulation (emu_runtime.h): the same namespace, names and
// signatures, computed in C++ instead of inline PTX. kernels/mma.cuh includes this file instead
// of its own body when EMBER_KERNEL_EMULATION is defined.
//
// Everything here follows the PTX ISA's definitions (with g = lane / 4, t = lane % 4):
//   ldmatrix.m8n8.x4.b16: lanes 8j .. 8j+7 give the row addresses of matrix j (16-byte aligned);
//     lane l receives row l/4, elements 2t, 2t+1 of each matrix (.trans: rows 2t, 2t+1 of
//     column l/4), the lower-numbered element in the low half of the register.
//   mma.m16n8k16 (f16/bf16 in, f32 accumulate): a0 = A(g, 2t..2t+1), a1 = A(g+8, 2t..),
//     a2 = A(g, 2t+8..), a3 = A(g+8, 2t+8..); b0 = B(2t..2t+1, g), b1 = B(2t+8.., g);
//     c0, c1 = C(g, 2t..2t+1), c2, c3 = C(g+8, 2t..2t+1).
//   mma.m16n8k8 tf32: a0 = A(g, t), a1 = A(g+8, t), a2 = A(g, t+4), a3 = A(g+8, t+4);
//     b0 = B(t, g), b1 = B(t+4, g); C as above. Only the 19 tf32 bits of an operand are used.
//   cvt.rna.tf32.f32: round to nearest, ties away from zero, to 10 mantissa bits.
//   cp.async.cg 16 with a source size: copies that many bytes and zero-fills the rest of 16;
//     both addresses aligned to 16 bytes.
// Accumulation: the exact products of a k-chunk are summed in double and added to the f32
// accumulator with one rounding. The hardware's internal order and precision are unspecified,
// so tests compare with tolerances, never bit for bit.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "emu_runtime.h"

namespace ember::cuda::mma {

namespace emu_detail {
inline float half_bits_to_float(uint32_t bits, bool bf16) {
  const uint16_t h = static_cast<uint16_t>(bits);
  if (bf16) {
    const uint32_t u = uint32_t{h} << 16;
    float f;
    std::memcpy(&f, &u, sizeof(f));
    return f;
  }
  __half_raw raw;
  raw.x = h;
  return __half2float(__half(raw));
}
// Element `half` (0: low, 1: high) of a b16x2 register.
inline float b16_element(uint32_t reg, int half, bool bf16) { return half_bits_to_float(reg >> (16 * half), bf16); }
inline float tf32_value(uint32_t bits) {
  const uint32_t u = bits & 0xffffe000u;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
inline void check_aligned16(const char* what, uintptr_t address) {
  if (address % 16 != 0) ember::emu::fail(std::string(what) + ": address not aligned to 16 bytes");
}
}  // namespace emu_detail

inline uint32_t smem_u32(const void* p) { return ember::emu::shared_address(p); }

inline void cp_async_16(uint32_t dst, const void* src, int bytes) {
  if (bytes < 0 || bytes > 16) ember::emu::fail("cp.async: source size " + std::to_string(bytes) + " outside 0..16");
  if (src == nullptr) ember::emu::fail("cp.async: null source");
  emu_detail::check_aligned16("cp.async destination", dst);
  emu_detail::check_aligned16("cp.async source", reinterpret_cast<uintptr_t>(src));
  ember::emu::async_copy(ember::emu::shared_pointer(dst), src, bytes, 16);
}
inline void cp_async_commit() { ember::emu::async_commit(); }
template <int N>
inline void cp_async_wait() {
  static_assert(N >= 0, "cp.async.wait_group N >= 0");
  ember::emu::async_wait(N);
}

template <bool kTrans = false>
inline void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  emu_detail::check_aligned16("ldmatrix row", addr);
  const auto& rows = ember::emu::warp_exchange(kTrans ? "ldmatrix.x4.trans" : "ldmatrix.x4", &addr, 1);
  const int l = ember::emu::lane_id(), g = l / 4, t = l % 4;
  for (int j = 0; j < 4; ++j) {
    uint16_t e[2];
    if constexpr (kTrans) {
      for (int h = 0; h < 2; ++h)  // column g of rows 2t and 2t + 1
        std::memcpy(&e[h], ember::emu::shared_pointer(rows[8 * j + 2 * t + h][0]) + 2 * g, 2);
    } else {
      const int row = ember::emu::injected_fault == ember::emu::Fault::kLdmatrixRow ? (g + 1) % 8 : g;
      std::memcpy(e, ember::emu::shared_pointer(rows[8 * j + row][0]) + 4 * t, 4);
    }
    r[j] = uint32_t{e[0]} | (uint32_t{e[1]} << 16);
  }
}

// d (16x8 f32) += a (16x16) @ b (16x8), row.col, T = __half or __nv_bfloat16.
template <class T>
inline void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "f16 or bf16 operands");
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  const uint32_t mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
  const auto& all = ember::emu::warp_exchange(kBf16 ? "mma.m16n8k16.bf16" : "mma.m16n8k16.f16", mine, 6);
  const int l = ember::emu::lane_id(), g = l / 4, t = l % 4;
  for (int e = 0; e < 4; ++e) {
    const int row = g + 8 * (e / 2), col = 2 * t + (e % 2);
    double s = 0;
    for (int k = 0; k < 16; ++k) {
      // A(row, k): lane (row % 8, k % 8 / 2), register row / 8 + 2 (k / 8); B(k, col): lane
      // (col, k % 8 / 2), register b0 / b1 = k / 8; the element k % 2 of the pair.
      const float av = emu_detail::b16_element(all[(row % 8) * 4 + (k % 8) / 2][row / 8 + 2 * (k / 8)], k % 2, kBf16);
      const float bv = emu_detail::b16_element(all[col * 4 + (k % 8) / 2][4 + k / 8], k % 2, kBf16);
      s += static_cast<double>(av) * bv;
    }
    d[e] = static_cast<float>(static_cast<double>(d[e]) + s);
  }
}

// d (16x8 f32) += a (16x8 tf32) @ b (8x8 tf32), row.col.
inline void mma_1688_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const uint32_t mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
  const auto& all = ember::emu::warp_exchange("mma.m16n8k8.tf32", mine, 6);
  const int l = ember::emu::lane_id(), g = l / 4, t = l % 4;
  for (int e = 0; e < 4; ++e) {
    const int row = g + 8 * (e / 2), col = 2 * t + (e % 2);
    double s = 0;
    for (int k = 0; k < 8; ++k) {
      const float av = emu_detail::tf32_value(all[(row % 8) * 4 + k % 4][row / 8 + 2 * (k / 4)]);
      const float bv = emu_detail::tf32_value(all[col * 4 + k % 4][4 + k / 4]);
      s += static_cast<double>(av) * bv;
    }
    d[e] = static_cast<float>(static_cast<double>(d[e]) + s);
  }
}

// f32 -> tf32 (round to nearest, ties away from zero), as a b32 register; NaN stays NaN.
inline uint32_t to_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffffffu;
  return (u + 0x1000u) & 0xffffe000u;  // sign-magnitude: adding half an ulp rounds the magnitude
}

// Two f32 values rounded to T and packed low, high into one register (an A/B fragment word).
template <class T>
inline uint32_t pack2(float lo, float hi) {
  uint32_t r;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    std::memcpy(&r, &v, sizeof(r));
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    std::memcpy(&r, &v, sizeof(r));
  }
  return r;
}

}  // namespace ember::cuda::mma
