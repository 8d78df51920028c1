// kernels/attention_mma.cuh (fused attention forward on mma.sync) and attention_mma_bwd.cuh (its
// backward: dK/dV and dQ kernels) run under the host emulation and compared with a
// double-precision reference: f16 and bf16, head sizes 64 and 128, ragged query and key
// counts, causal masks with Tk != Tq (rows with no key at all), key padding, a batch whose keys
// are all padded; the output, the logsumexp and dQ, dK, dV; and dropout (the kDrop
// instantiations), whose reference draws the mask with the CPU kernel's own expression
// (src/cpu/attention.cpp: Philox block offset + e / 4, lane e % 4, kept when uniform < 1 - p).
#include "emu_runtime.h"  // first: the CUDA keywords on the host

// Before the kernel headers, whose `extern __shared__` declarations must name known arrays.
EMBER_EMU_DYNAMIC_SHARED(ember::cuda::attn_mma, smem_raw);
EMBER_EMU_DYNAMIC_SHARED(ember::cuda::attn_mma_bwd, smem_raw);

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "attention_mma.cuh"
#include "attention_mma_bwd.cuh"
#include "core/philox.h"
#include "emu_test_util.h"

namespace emu_attention_test {

namespace et = ember::emu::test;
namespace fw = ember::cuda::attn_mma;
namespace bw = ember::cuda::attn_mma_bwd;

// The kernels' mask interface (kernels/attention.cu's MaskArgs and allowed() have the same
// shape): fields Tq, Tk, causal, and allowed() found by argument-dependent lookup.
struct Mask {
  const bool* pad;  // (B, Tk), true = ignore the key; or null
  int64_t Tq, Tk;
  bool causal;
};
inline bool allowed(const Mask& m, int64_t b, int64_t /*h*/, int64_t i, int64_t j) {
  if (i >= m.Tq || j >= m.Tk) return false;
  if (m.causal && j > i + (m.Tk - m.Tq)) return false;
  if (m.pad && m.pad[b * m.Tk + j]) return false;
  return true;
}

struct Case {
  int64_t B, H, Tq, Tk;
  bool causal;
  int pad_mode;  // 0: none; 1: the last third of batch 1's keys; 2: every key of batch 1
};

constexpr float kLog2e = 1.4426950408889634f;

template <class T, int D>
struct AttentionCase {
  Case c;
  int64_t BH;
  std::vector<T> q, k, v, dout;
  std::vector<unsigned char> pad_bytes;  // bool storage (vector<bool> has no data())
  Mask m{};
  double scale;
  et::Reference out_ref, dq_ref, dk_ref, dv_ref;
  std::vector<double> lse_ref, di_ref;

  double p_drop;  // dropout probability, 0 for none
  uint64_t seed = 0x5eedULL, offset = 12345;  // the Philox stream of the mask

  // Whether score element e of the (B, H, Tq, Tk) draw is kept: the CPU kernel's expression.
  bool kept(uint64_t e) const {
    const ember::PhiloxBlock r = ember::philox_block(offset + e / 4, 0, seed);
    return ember::philox_uniform01(r.v[e % 4]) < 1.0 - p_drop;
  }

  explicit AttentionCase(const Case& cs, double p = 0.0)
      : c(cs), BH(cs.B * cs.H), scale(1.0 / std::sqrt(double(D))), p_drop(p) {
    const uint32_t seed = static_cast<uint32_t>(c.Tq * 1009 + c.Tk * 31 + D + c.pad_mode * 7 + c.causal);
    q = et::random_values<T>(static_cast<size_t>(BH * c.Tq * D), seed);
    k = et::random_values<T>(static_cast<size_t>(BH * c.Tk * D), seed + 1);
    v = et::random_values<T>(static_cast<size_t>(BH * c.Tk * D), seed + 2);
    dout = et::random_values<T>(static_cast<size_t>(BH * c.Tq * D), seed + 3);
    // Larger logits than unit q.k / sqrt(D) would give, so that the softmax is far from uniform.
    for (auto& e : q) e = et::from_float<T>(static_cast<float>(et::to_double(e) * 3));
    pad_bytes.assign(static_cast<size_t>(c.B * c.Tk), 0);
    if (c.pad_mode != 0 && c.B > 1)
      for (int64_t j = c.pad_mode == 1 ? c.Tk - c.Tk / 3 : 0; j < c.Tk; ++j)
        pad_bytes[static_cast<size_t>(c.Tk + j)] = 1;  // batch 1's keys
    static_assert(sizeof(bool) == 1, "bool masks are bytes");
    m = Mask{c.pad_mode != 0 ? reinterpret_cast<const bool*>(pad_bytes.data()) : nullptr, c.Tq, c.Tk, c.causal};
    reference();
  }

  double at(const std::vector<T>& x, int64_t bh, int64_t row, int64_t rows, int d) const {
    return et::to_double(x[static_cast<size_t>((bh * rows + row) * D + d)]);
  }

  void reference() {
    out_ref = et::Reference(q.size());
    dq_ref = et::Reference(q.size());
    dk_ref = et::Reference(k.size());
    dv_ref = et::Reference(v.size());
    lse_ref.assign(static_cast<size_t>(BH * c.Tq), -INFINITY);
    di_ref.assign(static_cast<size_t>(BH * c.Tq), 0.0);
    std::vector<double> s(static_cast<size_t>(c.Tk)), p(static_cast<size_t>(c.Tk)), dp(static_cast<size_t>(c.Tk));
    for (int64_t bh = 0; bh < BH; ++bh) {
      const int64_t b = bh / c.H, h = bh % c.H;
      for (int64_t i = 0; i < c.Tq; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < c.Tk; ++j) {
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += at(q, bh, i, c.Tq, d) * at(k, bh, j, c.Tk, d);
          s[j] = allowed(m, b, h, i, j) ? dot * scale : -INFINITY;
          mx = std::max(mx, s[j]);
        }
        if (mx == -INFINITY) continue;  // no key: output 0, logsumexp -inf, zero gradients
        double l = 0;
        for (int64_t j = 0; j < c.Tk; ++j) l += s[j] == -INFINITY ? 0.0 : std::exp(s[j] - mx);
        const double lse = mx + std::log(l);
        lse_ref[static_cast<size_t>(bh * c.Tq + i)] = lse;
        for (int64_t j = 0; j < c.Tk; ++j) p[j] = s[j] == -INFINITY ? 0.0 : std::exp(s[j] - lse);
        // Dropout: pd = P kept and scaled by float(1 / (1 - p)) (the CPU's multiplier), else 0.
        const double mult = static_cast<float>(1.0 / (1.0 - p_drop));
        std::vector<double> pd(p);
        std::vector<bool> keep(static_cast<size_t>(c.Tk), true);
        if (p_drop > 0)
          for (int64_t j = 0; j < c.Tk; ++j) {
            keep[j] = kept(static_cast<uint64_t>((bh * c.Tq + i) * c.Tk + j));
            pd[j] = keep[j] ? p[j] * mult : 0.0;
          }
        const size_t orow = static_cast<size_t>((bh * c.Tq + i) * D);
        for (int d = 0; d < D; ++d)
          for (int64_t j = 0; j < c.Tk; ++j)
            if (pd[j] != 0) out_ref.add(orow + d, pd[j] * at(v, bh, j, c.Tk, d));
        // Backward: D_i = dO_i . O_i, dP = dO V^T (then the mask and multiplier), dS = P (dP - D_i),
        // dQ = scale dS K, dK = scale dS^T Q, dV = Pd^T dO.
        double di = 0;
        for (int d = 0; d < D; ++d) di += at(dout, bh, i, c.Tq, d) * out_ref.value[orow + d];
        di_ref[static_cast<size_t>(bh * c.Tq + i)] = di;
        for (int64_t j = 0; j < c.Tk; ++j) {
          if (p[j] == 0) continue;
          double dpj = 0;
          for (int d = 0; d < D; ++d) dpj += at(dout, bh, i, c.Tq, d) * at(v, bh, j, c.Tk, d);
          if (p_drop > 0) dpj = keep[j] ? dpj * mult : 0.0;
          const double ds = scale * p[j] * (dpj - di);
          const size_t krow = static_cast<size_t>((bh * c.Tk + j) * D);
          for (int d = 0; d < D; ++d) {
            dq_ref.add(orow + d, ds * at(k, bh, j, c.Tk, d));
            dk_ref.add(krow + d, ds * at(q, bh, i, c.Tq, d));
            if (pd[j] != 0) dv_ref.add(krow + d, pd[j] * at(dout, bh, i, c.Tq, d));
          }
        }
      }
    }
  }

  void forward(std::vector<T>& out, std::vector<float>& lse) const {
    if (p_drop > 0) forward_as<true>(out, lse);
    else forward_as<false>(out, lse);
  }
  template <bool kDrop>
  void forward_as(std::vector<T>& out, std::vector<float>& lse) const {
    out.assign(q.size(), et::from_float<T>(NAN));
    lse.assign(static_cast<size_t>(BH * c.Tq), NAN);
    const float scale_log2 = static_cast<float>(scale) * kLog2e;
    const fw::Dropout dr = kDrop ? ember::cuda::attn_dropout::make_dropout(p_drop, seed, offset) : fw::Dropout{};
    // attention.cu's grid: x = query tiles, y = (b, h) pairs.
    ember::emu::launch(dim3(static_cast<unsigned>((c.Tq + fw::kBQ - 1) / fw::kBQ), static_cast<unsigned>(BH)),
                       dim3(fw::kThreads), static_cast<size_t>(fw::smem_bytes<D, kDrop>()),
                       &fw::forward_kernel<T, D, Mask, kDrop>, q.data(), k.data(), v.data(), out.data(), lse.data(), m,
                       BH, c.H, scale_log2, dr);
  }

  // The backward kernels on the reference logsumexp and D_i (what the forward and attention.cu's
  // row kernel hand them), so that their own error is what is measured.
  void backward(std::vector<T>& dq, std::vector<T>& dk, std::vector<T>& dv) const {
    if (p_drop > 0) backward_as<true>(dq, dk, dv);
    else backward_as<false>(dq, dk, dv);
  }
  template <bool kDrop>
  void backward_as(std::vector<T>& dq, std::vector<T>& dk, std::vector<T>& dv) const {
    const bw::Dropout dr = kDrop ? ember::cuda::attn_dropout::make_dropout(p_drop, seed, offset) : bw::Dropout{};
    std::vector<float> lse(lse_ref.begin(), lse_ref.end()), di(di_ref.begin(), di_ref.end());
    dq.assign(q.size(), et::from_float<T>(NAN));
    dk.assign(k.size(), et::from_float<T>(NAN));
    dv.assign(v.size(), et::from_float<T>(NAN));
    const float sc = static_cast<float>(scale), scale_log2 = sc * kLog2e;
    ember::emu::launch(dim3(static_cast<unsigned>((c.Tk + bw::kBK - 1) / bw::kBK), static_cast<unsigned>(BH)),
                       dim3(bw::kThreads), static_cast<size_t>(bw::kv_smem_bytes<D, kDrop>()),
                       &bw::kv_kernel<T, D, Mask, kDrop>, q.data(), k.data(), v.data(), dout.data(), lse.data(),
                       di.data(), dk.data(), dv.data(), m, BH, c.H, sc, scale_log2, dr);
    ember::emu::launch(dim3(static_cast<unsigned>((c.Tq + bw::kBQ - 1) / bw::kBQ), static_cast<unsigned>(BH)),
                       dim3(bw::kThreads), static_cast<size_t>(bw::q_smem_bytes<D, kDrop>()),
                       &bw::q_kernel<T, D, Mask, kDrop>, q.data(), k.data(), v.data(), dout.data(), lse.data(),
                       di.data(), dq.data(), m, BH, c.H, sc, scale_log2, dr);
  }
};

template <class T, int D>
void check_case(const Case& c, double p_drop = 0.0) {
  INFO("B " << c.B << " H " << c.H << " Tq " << c.Tq << " Tk " << c.Tk << " causal " << c.causal << " pad_mode "
            << c.pad_mode << " D " << D << " (" << std::string(et::type_name<T>()) << "), dropout " << p_drop);
  const AttentionCase<T, D> a(c, p_drop);
  // P is rounded to T before P V and dS before dS K / dS^T Q: twice the GEMMs' tolerance.
  const double tol = 2 * et::tolerance<T>();

  std::vector<T> out;
  std::vector<float> lse;
  a.forward(out, lse);
  const et::Worst wo = et::worst_error(out, a.out_ref);
  double lse_err = 0;
  for (size_t i = 0; i < lse.size(); ++i) {
    const double want = a.lse_ref[i], got = lse[i];
    const double e =
        want == -INFINITY ? (got == -INFINITY ? 0.0 : INFINITY) : std::fabs(got - want) / (1 + std::fabs(want));
    lse_err = std::max(lse_err, std::isnan(e) ? INFINITY : e);
  }
  INFO("forward output " << wo.str() << "; logsumexp error " << lse_err);
  CHECK(wo.error <= tol);
  CHECK(lse_err <= 1e-5);

  std::vector<T> dq, dk, dv;
  a.backward(dq, dk, dv);
  const et::Worst wq = et::worst_error(dq, a.dq_ref), wk = et::worst_error(dk, a.dk_ref),
                  wv = et::worst_error(dv, a.dv_ref);
  INFO("dQ " << wq.str() << "; dK " << wk.str() << "; dV " << wv.str());
  CHECK(wq.error <= tol);
  CHECK(wk.error <= tol);
  CHECK(wv.error <= tol);
}

const Case kCases[] = {
    // B H Tq Tk causal pad_mode
    {2, 2, 70, 130, true, 1},   // causal with more keys than queries, padded keys in batch 1
    {1, 2, 130, 17, true, 0},   // causal with more queries: the first 113 rows see no key
    {2, 1, 17, 70, false, 2},   // batch 1 has every key padded: all its rows are dead
};

}  // namespace emu_attention_test

TEST_SUITE("kernel_emu") {
  namespace at = emu_attention_test;
  TEST_CASE("attention_mma f16, D 64: forward and backward") {
    for (const auto& c : at::kCases)
      if (!ember::emu::test::kSanitized || &c != &at::kCases[1]) at::check_case<__half, 64>(c);
  }
  TEST_CASE("attention_mma bf16, D 64: forward and backward") {
    for (const auto& c : at::kCases)
      if (!ember::emu::test::kSanitized || &c != &at::kCases[1]) at::check_case<__nv_bfloat16, 64>(c);
  }
  TEST_CASE("attention_mma f16 and bf16, D 128: forward and backward") {
    if (!ember::emu::test::kSanitized) at::check_case<__half, 128>(at::kCases[0]);
    at::check_case<__nv_bfloat16, 128>(at::kCases[2]);
  }
  TEST_CASE("attention_mma with dropout 0.3 (the kDrop kernels): the CPU's mask, element for element") {
    // Tk 130 is not a multiple of 4 (a Philox block spans two rows) nor of the 64-key tile.
    at::check_case<__half, 64>(at::kCases[0], 0.3);
    if (!ember::emu::test::kSanitized) at::check_case<__nv_bfloat16, 64>(at::kCases[2], 0.3);
    if (!ember::emu::test::kSanitized) at::check_case<__nv_bfloat16, 128>(at::kCases[0], 0.3);
  }
}
