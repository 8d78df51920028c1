// Index kernels (gather/scatter, index_select/index_add, one_hot) and random fills.
//
// Tensors are viewed as (outer, dim, inner) blocks around the indexed dim. Index bounds are
// checked by the ops layer before these run.
#include <cmath>
#include <cstring>

#include "cpu/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"
#include "cpu/loops.h"
#include "core/philox.h"

namespace ember::cpu {
namespace {

int64_t prod_range(const Shape& s, int64_t b, int64_t e) {
  int64_t p = 1;
  for (int64_t i = b; i < e; ++i) p *= s[i];
  return p;
}

// Calls f(offset_in_index_like_tensor, coordinate_vector) is too slow; instead gather and
// scatter walk the index tensor linearly and map each position to x's offset.
template <class F>
void walk_index(const Tensor& index, int64_t dim, const Shape& target_strides, F f) {
  const Shape& is = index.shape();
  const int64_t nd = index.dim();
  const int64_t n = index.numel();
  const int64_t* pi = index.data<int64_t>();
  std::vector<int64_t> coord(nd, 0);
  for (int64_t lin = 0; lin < n; ++lin) {
    int64_t off = 0;
    for (int64_t d = 0; d < nd; ++d)
      if (d != dim) off += coord[d] * target_strides[d];
    f(lin, off + pi[lin] * target_strides[dim]);
    for (int64_t d = nd - 1; d >= 0; --d) {
      if (++coord[d] < is[d]) break;
      coord[d] = 0;
    }
  }
}

}  // namespace

void gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  EMBER_DISPATCH_ALL(x.dtype(), "gather", [&] {
    const scalar_t* px = static_cast<const scalar_t*>(x.data_ptr());
    scalar_t* po = static_cast<scalar_t*>(out.data_ptr());
    walk_index(index, dim, x.strides(), [&](int64_t lin, int64_t xoff) { po[lin] = px[xoff]; });
  });
}

void scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  EMBER_DISPATCH_NUMERIC(out.dtype(), "scatter_add", [&] {
    scalar_t* po = static_cast<scalar_t*>(out.data_ptr());
    const scalar_t* ps = static_cast<const scalar_t*>(src.data_ptr());
    walk_index(index, dim, out.strides(), [&](int64_t lin, int64_t ooff) { po[ooff] += ps[lin]; });
  });
}

void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  const int64_t outer = prod_range(x.shape(), 0, dim), D = x.size(dim);
  const int64_t inner = prod_range(x.shape(), dim + 1, x.dim());
  const int64_t n = index.numel();
  const int64_t* pi = index.data<int64_t>();
  const size_t es = x.element_size();
  const char* px = static_cast<const char*>(x.data_ptr());
  char* po = static_cast<char*>(out.data_ptr());
  parallel_for(outer * n, inner, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t o = r / n, j = r % n;
      std::memcpy(po + (r * inner) * es, px + ((o * D + pi[j]) * inner) * es, inner * es);
    }
  });
}

void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, double alpha) {
  const int64_t outer = prod_range(out.shape(), 0, dim), D = out.size(dim);
  const int64_t inner = prod_range(out.shape(), dim + 1, out.dim());
  const int64_t n = index.numel();
  const int64_t* pi = index.data<int64_t>();
  EMBER_DISPATCH_NUMERIC(out.dtype(), "index_add", [&] {
    scalar_t* po = static_cast<scalar_t*>(out.data_ptr());
    const scalar_t* ps = static_cast<const scalar_t*>(src.data_ptr());
    const scalar_t a = static_cast<scalar_t>(alpha);
    // Threads split the inner dim, so repeated indices never race.
    parallel_for(inner, outer * n, [&](int64_t c0, int64_t c1) {
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < n; ++j) {
          scalar_t* d = po + (o * D + pi[j]) * inner;
          const scalar_t* s = ps + (o * n + j) * inner;
          for (int64_t c = c0; c < c1; ++c) d[c] += a * s[c];
        }
    });
  });
}

void one_hot(const Tensor& index, const Tensor& out, int64_t classes) {
  int64_t* po = out.data<int64_t>();
  const int64_t* pi = index.data<int64_t>();
  std::memset(po, 0, out.numel() * sizeof(int64_t));
  for (int64_t i = 0; i < index.numel(); ++i) po[i * classes + pi[i]] = 1;
}

void random_fill(RandomKind kind, const Tensor& out, uint64_t seed, uint64_t offset, double a, double b) {
  const int64_t n = out.numel();
  const int64_t blocks = (n + 3) / 4;
  EMBER_DISPATCH_NUMERIC(out.dtype(), "random", [&] {
    scalar_t* po = static_cast<scalar_t*>(out.data_ptr());
    parallel_for(blocks, 64, [&](int64_t b0, int64_t b1) {
      for (int64_t blk = b0; blk < b1; ++blk) {
        const PhiloxBlock r = philox_block(offset + blk, 0, seed);
        for (int lane = 0; lane < 4 && blk * 4 + lane < n; ++lane)
          po[blk * 4 + lane] = static_cast<scalar_t>(random_value(kind, r, lane, a, b));
      }
    });
  });
}

void register_index_kernels() {
  prim::define<prim::gather>(prim::Backend::cpu, &gather);
  prim::define<prim::scatter_add>(prim::Backend::cpu, &scatter_add);
  prim::define<prim::index_select>(prim::Backend::cpu, &index_select);
  prim::define<prim::index_add>(prim::Backend::cpu, &index_add);
  prim::define<prim::one_hot>(prim::Backend::cpu, &one_hot);
  prim::define<prim::random_fill>(prim::Backend::cpu, &random_fill);
}

}  // namespace ember::cpu
