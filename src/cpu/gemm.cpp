// Batched matrix multiply on the CPU through Eigen's GEMM. Each operand may be row-major or
// column-major with any leading dimension, so transposed views need no copy.
#include <Eigen/Core>

#include "cpu/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"
#include "cpu/loops.h"

namespace ember::cpu {
namespace {

using Eigen::Dynamic;
using Eigen::OuterStride;
template <class T, int Order>
using MatMap = Eigen::Map<const Eigen::Matrix<T, Dynamic, Dynamic, Order>, 0, OuterStride<>>;
template <class T>
using OutMap = Eigen::Map<Eigen::Matrix<T, Dynamic, Dynamic, Eigen::RowMajor>>;

// Row-major when the last dim has unit stride, else column-major.
bool row_major(const Tensor& t) { return t.stride(2) == 1 || t.size(2) == 1; }
int64_t lead(const Tensor& t) {
  if (row_major(t)) return std::max<int64_t>(t.stride(1), t.size(2));
  return std::max<int64_t>(t.stride(2), t.size(1));
}

template <class T, int OA, int OB>
void bmm_typed(const Tensor& a, const Tensor& b, const Tensor& out, const Tensor& bias) {
  const int64_t B = a.size(0), n = a.size(1), k = a.size(2), m = b.size(2);
  const T* pa = static_cast<const T*>(a.data_ptr());
  const T* pb = static_cast<const T*>(b.data_ptr());
  T* po = static_cast<T*>(out.data_ptr());
  const T* pbias = ptr_or_null<T>(bias);
  const int64_t la = lead(a), lb = lead(b);
  auto one = [&](int64_t i) {
    MatMap<T, OA> A(pa + i * a.stride(0), n, k, OuterStride<>(la));
    MatMap<T, OB> Bm(pb + i * b.stride(0), k, m, OuterStride<>(lb));
    OutMap<T> C(po + i * n * m, n, m);
    if (pbias) {
      // The bias is the GEMM's starting value: one write pass, then Eigen accumulates onto it
      // (its GEMM always computes C += A B; plain assignment zeroes C first).
      C.rowwise() = Eigen::Map<const Eigen::Matrix<T, 1, Dynamic>>(pbias, m);
      if (k > 0) C.noalias() += A * Bm;
    } else if (k == 0) {
      C.setZero();
    } else {
      C.noalias() = A * Bm;
    }
  };
  // Many small matrices: one per thread (Eigen runs single-threaded inside a parallel region).
  // Few large ones: Eigen threads each product itself.
  if (B > 1 && n * m * k < (1 << 21)) {
    parallel_for(B, n * m * k, [&](int64_t b0, int64_t b1) {
      for (int64_t i = b0; i < b1; ++i) one(i);
    });
  } else {
    for (int64_t i = 0; i < B; ++i) one(i);
  }
}

template <class T>
void bmm_dispatch(const Tensor& a, const Tensor& b, const Tensor& out, const Tensor& bias) {
  const bool ra = row_major(a), rb = row_major(b);
  if (ra && rb) bmm_typed<T, Eigen::RowMajor, Eigen::RowMajor>(a, b, out, bias);
  else if (ra) bmm_typed<T, Eigen::RowMajor, Eigen::ColMajor>(a, b, out, bias);
  else if (rb) bmm_typed<T, Eigen::ColMajor, Eigen::RowMajor>(a, b, out, bias);
  else bmm_typed<T, Eigen::ColMajor, Eigen::ColMajor>(a, b, out, bias);
}

}  // namespace

void bmm(const Tensor& a, const Tensor& b, const Tensor& out, const Tensor& bias) {
  EMBER_DISPATCH_FLOAT(a.dtype(), "matmul", [&] { bmm_dispatch<scalar_t>(a, b, out, bias); });
}

void register_gemm_kernels() {
  prim::define<prim::bmm>(prim::Backend::cpu, &bmm);
}

}  // namespace ember::cpu
