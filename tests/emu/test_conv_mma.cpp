// kernels/conv_mma.cuh (conv1d's three implicit GEMMs on mma.sync) run under the host emulation
// and compared with a double-precision reference: forward, backward-input, backward-weight;
// f16, bf16 and f32 as TF32; both block tile heights (64 and 128 rows); stride, padding,
// dilation, groups and sizes that leave partial tiles everywhere.
#include "emu_runtime.h"  // first: the CUDA keywords on the host

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "conv_mma.cuh"
#include "conv_problem.cuh"
#include "emu_test_util.h"

namespace {

using ember::cuda::BackwardInputProblem;
using ember::cuda::BackwardWeightProblem;
using ember::cuda::ConvGeom;
using ember::cuda::ForwardProblem;
namespace conv_mma = ember::cuda::conv_mma;
namespace et = ember::emu::test;

struct Shape {
  int N, C_in, L, C_out, K, stride, padding, dilation, groups, splits;
  bool sanitized;  // also run under AddressSanitizer (et::kSanitized)
};

ConvGeom make_geom(const Shape& s) {
  ConvGeom g{};
  g.N = s.N, g.C_in = s.C_in, g.L = s.L, g.C_out = s.C_out, g.K = s.K;
  g.stride = s.stride, g.padding = s.padding, g.dilation = s.dilation, g.groups = s.groups;
  g.cg = s.C_in / s.groups, g.og = s.C_out / s.groups;
  g.L_out = (s.L + 2 * s.padding - s.dilation * (s.K - 1) - 1) / s.stride + 1;
  return g;
}

// The kernel's grid (as conv.cu's launch_mma_tiles): x = column tiles * Z, y = row tiles; the
// tile height as conv.cu's mma_tile_rows.
template <int kPass, class Prob>
void run_conv(const Prob& prob, int M, int P, int Z) {
  const int col_tiles = (P + conv_mma::kBP - 1) / conv_mma::kBP;
  const auto launch = [&](auto kernel, int bm) {
    ember::emu::launch(dim3(static_cast<unsigned>(col_tiles * Z), static_cast<unsigned>((M + bm - 1) / bm)),
                       dim3(conv_mma::kThreads), 0, kernel, prob, col_tiles);
  };
  if (M > 64) launch(&conv_mma::conv1d_mma_kernel<kPass, 128, Prob>, 128);
  else launch(&conv_mma::conv1d_mma_kernel<kPass, 64, Prob>, 64);
}

template <class T>
struct ConvCase {
  Shape s;
  ConvGeom g;
  std::vector<T> x, w, bias, dy;
  et::Reference y_ref, dx_ref, dw_ref;

  explicit ConvCase(const Shape& shape) : s(shape), g(make_geom(shape)) {
    const uint32_t seed = static_cast<uint32_t>(s.N * 7919 + s.C_in * 104729 + s.L * 31 + s.K);
    x = et::random_values<T>(static_cast<size_t>(s.N) * s.C_in * s.L, seed);
    w = et::random_values<T>(static_cast<size_t>(s.C_out) * g.cg * s.K, seed + 1);
    bias = et::random_values<T>(static_cast<size_t>(s.C_out), seed + 2);
    dy = et::random_values<T>(static_cast<size_t>(s.N) * s.C_out * g.L_out, seed + 3);
    y_ref = et::Reference(dy.size());
    dx_ref = et::Reference(x.size());
    dw_ref = et::Reference(w.size());
    // One loop over every (output, tap) pair feeds all three references.
    for (int n = 0; n < s.N; ++n)
      for (int co = 0; co < s.C_out; ++co)
        for (int j = 0; j < g.L_out; ++j) {
          const size_t yi = (static_cast<size_t>(n) * s.C_out + co) * g.L_out + j;
          const int grp = co / g.og;
          y_ref.add(yi, et::to_double(bias[co]));
          for (int c = 0; c < g.cg; ++c)
            for (int k = 0; k < s.K; ++k) {
              const int pos = j * s.stride - s.padding + k * s.dilation;
              if (pos < 0 || pos >= s.L) continue;
              const size_t xi = (static_cast<size_t>(n) * s.C_in + grp * g.cg + c) * s.L + pos;
              const size_t wi = (static_cast<size_t>(co) * g.cg + c) * s.K + k;
              const double xv = et::to_double(x[xi]), wv = et::to_double(w[wi]), gv = et::to_double(dy[yi]);
              y_ref.add(yi, wv * xv);
              dx_ref.add(xi, wv * gv);
              dw_ref.add(wi, gv * xv);
            }
        }
  }

  std::vector<T> forward() const {
    std::vector<T> y(y_ref.value.size());
    ForwardProblem<T> p{x.data(), w.data(), bias.data(), y.data(), g};
    run_conv<conv_mma::kForward>(p, g.og, g.L_out, s.N * s.groups);
    return y;
  }
  std::vector<T> backward_input() const {
    std::vector<T> dx(dx_ref.value.size());
    BackwardInputProblem<T> p{dy.data(), w.data(), dx.data(), g};
    run_conv<conv_mma::kBackwardInput>(p, g.cg, s.L, s.N * s.groups);
    return dx;
  }
  // As conv.cu's weight_split: splits of whole reduction chunks; with more than one the kernel
  // writes f32 partials, summed here in split order (conv.cu's sum_partials_kernel).
  std::vector<T> backward_weight() const {
    constexpr int BR = conv_mma::Cfg<T>::kBR;
    const int total = s.N * g.L_out, chunks = (total + BR - 1) / BR;
    int splits = std::max(1, std::min(s.splits, chunks));
    const int len = ((chunks + splits - 1) / splits) * BR;
    splits = (total + len - 1) / len;
    std::vector<T> dw(dw_ref.value.size());
    std::vector<float> partial(static_cast<size_t>(splits) * dw.size());
    BackwardWeightProblem<T> p{dy.data(), x.data(), dw.data(), splits > 1 ? partial.data() : nullptr, splits, len, g};
    run_conv<conv_mma::kBackwardWeight>(p, g.og, g.cg * s.K, splits * s.groups);
    if (splits > 1)
      for (size_t i = 0; i < dw.size(); ++i) {
        float sum = 0;
        for (int k = 0; k < splits; ++k) sum += partial[static_cast<size_t>(k) * dw.size() + i];
        dw[i] = et::from_float<T>(sum);
      }
    return dw;
  }
};

const Shape kShapes[] = {
    // N C_in L C_out K stride pad dil groups splits sanitized
    {3, 80, 150, 72, 3, 2, 3, 2, 2, 1, false},  // groups, stride 2, dilation 2: 36-row tiles (BM 64)
    {2, 70, 161, 130, 5, 1, 2, 1, 1, 3, true},  // 130 output channels (BM 128), three weight splits
    {2, 37, 45, 33, 1, 1, 0, 1, 1, 1, false},   // 1x1, odd everything
    {1, 64, 40, 96, 9, 64, 0, 1, 1, 2, false},  // stride past the input: one output position
    {2, 96, 77, 80, 3, 3, 3, 2, 2, 2, true},    // stride 3 with groups: backward-input keeps 1 tap in 3
};

template <class T>
void check_all_passes() {
  for (const Shape& s : kShapes) {
    if (et::kSanitized && !s.sanitized) continue;
    INFO("N " << s.N << " C_in " << s.C_in << " L " << s.L << " C_out " << s.C_out << " K " << s.K << " stride "
              << s.stride << " padding " << s.padding << " dilation " << s.dilation << " groups " << s.groups
              << " (" << std::string(et::type_name<T>()) << ")");
    const ConvCase<T> c(s);
    const et::Worst fw = et::worst_error(c.forward(), c.y_ref);
    const et::Worst bi = et::worst_error(c.backward_input(), c.dx_ref);
    const et::Worst bw = et::worst_error(c.backward_weight(), c.dw_ref);
    INFO("forward " << fw.str() << "; backward-input " << bi.str() << "; backward-weight " << bw.str());
    CHECK(fw.error <= et::tolerance<T>());
    CHECK(bi.error <= et::tolerance<T>());
    CHECK(bw.error <= et::tolerance<T>());
  }
}

}  // namespace

TEST_SUITE("kernel_emu") {
  TEST_CASE("conv_mma f16: forward, backward-input, backward-weight") { check_all_passes<__half>(); }
  TEST_CASE("conv_mma bf16: forward, backward-input, backward-weight") { check_all_passes<__nv_bfloat16>(); }
  TEST_CASE("conv_mma f32 as TF32: forward, backward-input, backward-weight") { check_all_passes<float>(); }

  // The same check must fail when the emulated ldmatrix hands out the wrong fragment row: the
  // comparison can see a layout mistake.
  TEST_CASE("conv_mma: a wrong ldmatrix row is caught") {
    const ConvCase<__half> c(kShapes[2]);
    ember::emu::injected_fault = ember::emu::Fault::kLdmatrixRow;
    std::vector<__half> y;
    try {
      y = c.forward();
    } catch (...) {
      ember::emu::injected_fault = ember::emu::Fault::kNone;
      throw;
    }
    ember::emu::injected_fault = ember::emu::Fault::kNone;
    const et::Worst fw = et::worst_error(y, c.y_ref);
    INFO(fw.str());
    CHECK(fw.error > 10 * et::tolerance<__half>());
  }
}
