// Elementwise CUDA kernels: copy/convert, fill, unary, binary, where (the contracts of
// prim/primitives.h, mirroring src/cpu/elementwise.cpp).
//
// Every op is a functor mapped over the output's shape by one of two kernels:
//   map_dense_kernel    all operands dense, same layout and 16-byte aligned: each thread moves
//                       one pack per step (float4, 8 halves, 16 bools...), scalar tail after;
//   map_strided_kernel  anything else (transposed, sliced, broadcast with zero strides):
//                       each operand's offset comes from StridedInfo (coalesced on the host,
//                       so a broadcast scalar next to a dense tensor is a 1-dim walk).
// Shapes: out (any shape, any strides); inputs have out's shape (broadcast by strides).
// The op (UnaryOp/BinaryOp) is a kernel argument, not a template parameter: the switch in
// unary_apply is warp-uniform and cheap next to the memory traffic, and 16 ops x 4 float types
// x 2 kernels would multiply compile time on a 2-core machine. f16/bf16 compute in float.
#include <algorithm>
#include <utility>

#include "common.cuh"
#include "cuda/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"

namespace ember::cuda {
namespace {

// --- the two map kernels ------------------------------------------------------------------------

template <int N, class T>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p, int64_t pack) {
  return reinterpret_cast<const Pack<T, N>*>(p)[pack];
}

// Lane k of the result is f(lane k of every input pack).
template <int N, class Out, class F, class... P>
__device__ __forceinline__ Pack<Out, N> apply_lanes(const F& f, const P&... packs) {
  Pack<Out, N> o;
#pragma unroll
  for (int k = 0; k < N; ++k) o.v[k] = f(packs.v[k]...);
  return o;
}

// out[i] = f(in[i]...) over n dense elements, N per step. out may alias an input (in-place):
// each element is read and written by the same thread.
template <int N, class Out, class F, class... In>
__global__ void map_dense_kernel(int64_t n, F f, Out* out, const In*... in) {
  const int64_t packs = n / N;
  for (int64_t p = grid_start(); p < packs; p += grid_step())
    reinterpret_cast<Pack<Out, N>*>(out)[p] = apply_lanes<N, Out>(f, load_pack<N>(in, p)...);
  for (int64_t i = packs * N + grid_start(); i < n; i += grid_step()) out[i] = f(in[i]...);
}

template <class Out, class F, class... In, size_t... Is>
__device__ __forceinline__ void map_at(const StridedInfo<1 + sizeof...(In)>& info, int64_t i, const F& f,
                                       Out* out, std::index_sequence<Is...>, const In*... in) {
  int64_t off[1 + sizeof...(In)];
  strided_offsets(info, i, off);
  out[off[0]] = f(in[off[Is + 1]]...);
}

// out[off0(i)] = f(in[offk(i)]...) for i in [0, n): operand 0 of info is out.
template <class Out, class F, class... In>
__global__ void map_strided_kernel(StridedInfo<1 + sizeof...(In)> info, int64_t n, F f, Out* out,
                                   const In*... in) {
  for (int64_t i = grid_start(); i < n; i += grid_step())
    map_at(info, i, f, out, std::index_sequence_for<In...>{}, in...);
}

// A typed pointer to a tensor's first element plus its strides.
template <class T>
struct Operand {
  T* ptr;
  const Shape* strides;
};
template <class T>
Operand<T> operand(const Tensor& t) {
  return {static_cast<T*>(t.data_ptr()), &t.strides()};
}

// Maps f over `shape`: picks the dense or the strided kernel and checks the launch.
template <class F, class Out, class... In>
void launch_map(const char* op, cudaStream_t stream, const Shape& shape, F f, Operand<Out> out,
                Operand<const In>... in) {
  const int64_t n = numel_of(shape);
  if (n == 0) return;
  constexpr int kOperands = 1 + sizeof...(In);
  const StridedInfo<kOperands> info = make_strided_info<kOperands>(op, shape, {out.strides, in.strides...});
  constexpr int kN = 16 / static_cast<int>(std::max({sizeof(Out), sizeof(In)...}));
  const bool aligned = is_aligned(out.ptr, sizeof(Out) * kN) && (is_aligned(in.ptr, sizeof(In) * kN) && ...);
  if (is_dense(info) && aligned && n >= kN) {
    map_dense_kernel<kN, Out, F, In...><<<grid_for(n / kN, kThreads), kThreads, 0, stream>>>(n, f, out.ptr, in.ptr...);
  } else {
    map_strided_kernel<Out, F, In...><<<grid_for(n, kThreads), kThreads, 0, stream>>>(info, n, f, out.ptr, in.ptr...);
  }
  EMBER_CUDA_LAUNCH_CHECK();
}

// --- functors -------------------------------------------------------------------------------------

template <class T>
struct IdentityFn {
  __device__ T operator()(T v) const { return v; }
};
template <class D, class S>
struct ConvertFn {
  __device__ D operator()(S s) const { return convert<D>(s); }
};
template <class T>
struct ConstantFn {
  T value;
  __device__ T operator()() const { return value; }
};
template <class T>
struct SelectFn {
  __device__ T operator()(bool c, T a, T b) const { return c ? a : b; }
};
struct LogicalNotFn {
  __device__ bool operator()(bool v) const { return !v; }
};
// Floats: the shared math in acc_t<T> (float for halves), rounded back to T.
template <class T>
struct FloatUnaryFn {
  UnaryOp op;
  UnaryArgs args;
  __device__ T operator()(T x) const { return from_acc<T>(unary_apply<acc_t<T>>(op, to_acc(x), args)); }
};
// Integers: clamp bounds arrive already converted (saturated) to T; the rest is the shared math
// (pow_scalar computes in double and truncates, as the CPU's std::pow on integers does).
template <class T>
struct IntUnaryFn {
  UnaryOp op;
  T lo, hi;
  UnaryArgs args;
  __device__ T operator()(T x) const {
    if (op == UnaryOp::clamp) return x < lo ? lo : (x > hi ? hi : x);
    return unary_apply<T>(op, x, args);
  }
};
template <class T>
struct ArithFn {
  BinaryOp op;
  acc_t<T> alpha;
  __device__ T operator()(T a, T b) const {
    return from_acc<T>(binary_apply<acc_t<T>>(op, to_acc(a), to_acc(b), alpha));
  }
};
template <class T>
struct CompareFn {
  BinaryOp op;
  __device__ bool operator()(T a, T b) const { return compare_apply<acc_t<T>>(op, to_acc(a), to_acc(b)); }
};

// double -> integer without the undefined behaviour of static_cast out of range (an absent
// clamp bound arrives as +-2^63).
template <class T>
T saturate_to(double v) {
  if (v != v) return T(0);
  if (v <= static_cast<double>(std::numeric_limits<T>::min())) return std::numeric_limits<T>::min();
  if (v >= static_cast<double>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
  return static_cast<T>(v);
}

template <class D, class S>
void launch_convert(cudaStream_t stream, const Tensor& src, const Tensor& dst) {
  if constexpr (!std::is_same_v<D, S>)  // same dtypes never get here (see copy)
    launch_map("copy", stream, dst.shape(), ConvertFn<D, S>{}, operand<D>(dst), operand<const S>(src));
}

template <class T>
void launch_fill(cudaStream_t stream, const Tensor& dst, T value) {
  // Move bits, not values: 4 kernels serve all 7 dtypes.
  EMBER_CUDA_DISPATCH_BITS(sizeof(T), "fill", B, [&] {
    B bits;
    std::memcpy(&bits, &value, sizeof(B));
    const auto info = make_strided_info<1>("fill", dst.shape(), {&dst.strides()});
    unsigned char bytes[sizeof(B)];
    std::memcpy(bytes, &bits, sizeof(B));
    const bool one_byte_pattern = std::all_of(bytes, bytes + sizeof(B), [&](unsigned char c) { return c == bytes[0]; });
    if (is_dense(info) && one_byte_pattern) {  // zeros, bool, 0xFF..: a memset
      EMBER_CUDA_CHECK(cudaMemsetAsync(dst.data_ptr(), bytes[0], static_cast<size_t>(dst.numel()) * sizeof(B), stream));
      return;
    }
    launch_map("fill", stream, dst.shape(), ConstantFn<B>{bits}, operand<B>(dst));
  });
}

}  // namespace

// --- entry points -------------------------------------------------------------------------------

void copy(const Tensor& src, const Tensor& dst) {
  if (dst.numel() == 0) return;
  DeviceScope scope(dst);
  if (src.dtype() == dst.dtype()) {
    const auto info = make_strided_info<2>("copy", dst.shape(), {&dst.strides(), &src.strides()});
    if (is_dense(info)) {
      EMBER_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), static_cast<size_t>(dst.numel()) * dst.element_size(),
                                       cudaMemcpyDeviceToDevice, scope.stream));
      return;
    }
    EMBER_CUDA_DISPATCH_BITS(dst.element_size(), "copy", B, [&] {
      launch_map("copy", scope.stream, dst.shape(), IdentityFn<B>{}, operand<B>(dst), operand<const B>(src));
    });
    return;
  }
  EMBER_CUDA_DISPATCH_ALL(src.dtype(), "copy", S, [&] {
    EMBER_CUDA_DISPATCH_ALL(dst.dtype(), "copy", D, [&] { launch_convert<D, S>(scope.stream, src, dst); });
  });
}

void fill(const Tensor& dst, double value) {
  if (dst.numel() == 0) return;
  DeviceScope scope(dst);
  // The value is converted once on the host with the CPU's rules (halves via float).
  EMBER_CUDA_DISPATCH_ALL(dst.dtype(), "fill", T, [&] { launch_fill<T>(scope.stream, dst, convert<T>(value)); });
}

void unary(UnaryOp op, const Tensor& x, const Tensor& out, UnaryArgs args) {
  if (out.numel() == 0) return;
  DeviceScope scope(out);
  const DType dt = x.dtype();
  if (dt == DType::boolean) {
    EMBER_CHECK(op == UnaryOp::logical_not, "unary", "bool tensors support only logical_not here, got ",
                unary_op_name(op));
    launch_map("unary", scope.stream, out.shape(), LogicalNotFn{}, operand<bool>(out), operand<const bool>(x));
    return;
  }
  if (is_integral(dt)) {
    EMBER_CHECK(unary_int_ok(op), "unary", unary_op_name(op), " needs a float tensor on CUDA, got ", dt);
    auto run = [&](auto tag) {
      using T = decltype(tag);
      const IntUnaryFn<T> f{op, saturate_to<T>(args.a), saturate_to<T>(args.b), args};
      launch_map("unary", scope.stream, out.shape(), f, operand<T>(out), operand<const T>(x));
    };
    if (dt == DType::i32) run(int32_t{});
    else run(int64_t{});
    return;
  }
  EMBER_CUDA_DISPATCH_FLOAT(dt, "unary", T, [&] {
    launch_map("unary", scope.stream, out.shape(), FloatUnaryFn<T>{op, args}, operand<T>(out), operand<const T>(x));
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, double alpha) {
  if (out.numel() == 0) return;
  DeviceScope scope(out);
  if (is_comparison(op)) {
    EMBER_CUDA_DISPATCH_ALL(a.dtype(), "binary", T, [&] {
      launch_map("binary", scope.stream, out.shape(), CompareFn<T>{op}, operand<bool>(out), operand<const T>(a),
                 operand<const T>(b));
    });
    return;
  }
  EMBER_CHECK(a.dtype() != DType::boolean, "binary", "bool tensors support only comparisons and logical ops");
  EMBER_CUDA_DISPATCH_NUMERIC(a.dtype(), "binary", T, [&] {
    const ArithFn<T> f{op, static_cast<acc_t<T>>(alpha)};
    launch_map("binary", scope.stream, out.shape(), f, operand<T>(out), operand<const T>(a), operand<const T>(b));
  });
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  if (out.numel() == 0) return;
  DeviceScope scope(out);
  EMBER_CUDA_DISPATCH_BITS(out.element_size(), "where", B, [&] {
    launch_map("where", scope.stream, out.shape(), SelectFn<B>{}, operand<B>(out), operand<const bool>(cond),
               operand<const B>(a), operand<const B>(b));
  });
}

void register_elementwise_kernels() {
  prim::define<prim::copy>(prim::Backend::cuda, &copy);
  prim::define<prim::fill>(prim::Backend::cuda, &fill);
  prim::define<prim::unary>(prim::Backend::cuda, &unary);
  prim::define<prim::binary>(prim::Backend::cuda, &binary);
  prim::define<prim::where>(prim::Backend::cuda, &where);
}

}  // namespace ember::cuda
