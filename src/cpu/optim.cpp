// Fused optimizer updates and gradient clipping on the CPU (contracts: prim/primitives.h and
// prim/optim_records.h). The arithmetic is written exactly as in kernels/optim.cu, so the CPU and
// CUDA results differ only by rounding: computed in double for f64 parameters, in float
// otherwise (f16/bf16 are widened on load and rounded to nearest even on store).
#include "cpu/kernels.h"
#include "prim/primitives.h"
#include "prim/registry.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "cpu/loops.h"
#include "ember/core/error.h"
#include "prim/update_math.h"

namespace ember::cpu {
namespace {

using prim::AdamArgs;
using prim::GradArgs;
using prim::GradBucket;
using prim::SGDArgs;

// Elements per work item: every thread gets whole chunks of any tensor, so one big tensor and
// many small ones spread over the threads alike.
constexpr int64_t kChunk = 16384;

struct Chunk {
  size_t tensor;
  int64_t begin, end;
};

template <class Rec>
std::vector<Chunk> plan_chunks(const std::vector<Rec>& recs) {
  std::vector<Chunk> chunks;
  for (size_t t = 0; t < recs.size(); ++t)
    for (int64_t b = 0; b < recs[t].numel; b += kChunk) chunks.push_back({t, b, std::min(recs[t].numel, b + kChunk)});
  return chunks;
}

// Runs body(chunk) for every chunk, the chunks split over the OpenMP threads.
template <class Rec, class Body>
void for_each_chunk(const std::vector<Rec>& recs, Body&& body) {
  const std::vector<Chunk> chunks = plan_chunks(recs);
  parallel_for(static_cast<int64_t>(chunks.size()), kChunk, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) body(chunks[c]);
  });
}

// The type a parameter of type T computes (and keeps its state) in.
template <class T> using acc_of = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class T>
inline acc_of<T> load(T v) {
  if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) return to_float(v);
  else return v;
}
template <class T>
inline T store(acc_of<T> v) {
  if constexpr (std::is_same_v<T, Half>) return to_half(v);
  else if constexpr (std::is_same_v<T, BFloat16>) return to_bfloat16(v);
  else return v;
}

// Parameter dtypes of the fused updates: defines `param_t` inside the lambda.
#define EMBER_OPTIM_DISPATCH(dt, op, ...)                                    \
  switch (dt) {                                                              \
    case DType::f32: { using param_t = float; __VA_ARGS__(); break; }        \
    case DType::f64: { using param_t = double; __VA_ARGS__(); break; }       \
    case DType::f16: { using param_t = Half; __VA_ARGS__(); break; }         \
    case DType::bf16: { using param_t = BFloat16; __VA_ARGS__(); break; }    \
    default: EMBER_FAIL(op, "expected f32, f64, f16 or bf16 tensors, got ", dt); \
  }

template <class T>
void sgd_chunk(const SGDArgs& a, int64_t begin, int64_t end) {
  using A = acc_of<T>;
  T* p = static_cast<T*>(a.param);
  const T* g = static_cast<const T*>(a.grad);
  A* buf = static_cast<A*>(a.momentum_buffer);
  if (a.skip != nullptr && *a.skip != 0.0f) return;  // a captured step the GradScaler skips
  const A lr = A(a.hyper ? a.hyper[0] : a.lr), wd = A(a.weight_decay), mom = A(a.momentum), damp = A(1.0 - a.dampening);
  for (int64_t i = begin; i < end; ++i)
    p[i] = store<T>(optim_math::sgd_update(load(p[i]), load(g[i]), buf ? buf + i : nullptr, a.first,
                                           a.nesterov, lr, wd, mom, damp));
}

template <class T>
void adam_chunk(const AdamArgs& a, bool decoupled, int64_t begin, int64_t end) {
  using A = acc_of<T>;
  T* p = static_cast<T*>(a.param);
  const T* g = static_cast<const T*>(a.grad);
  A* m = static_cast<A*>(a.exp_avg);
  A* v = static_cast<A*>(a.exp_avg_sq);
  A* vmax = static_cast<A*>(a.max_exp_avg_sq);
  if (a.skip != nullptr && *a.skip != 0.0f) return;  // a captured step the GradScaler skips
  const A lr = A(a.hyper ? a.hyper[0] : a.lr), wd = A(a.weight_decay), b1 = A(a.beta1), b2 = A(a.beta2),
          eps = A(a.eps);
  const A step_size = A(a.hyper ? a.hyper[1] : a.step_size),
          bc2_sqrt = A(a.hyper ? a.hyper[2] : a.bias_correction2_sqrt);
  for (int64_t i = begin; i < end; ++i)
    p[i] = store<T>(optim_math::adam_update(load(p[i]), load(g[i]), m[i], v[i], vmax ? vmax + i : nullptr,
                                            decoupled, lr, wd, b1, b2, eps, step_size, bc2_sqrt));
}

// max that lets a NaN through from either side.
inline double nan_max(double a, double b) { return (std::isnan(a) || a > b) ? a : b; }

}  // namespace

void sgd_step(Device, DType dtype, const std::vector<SGDArgs>& tensors) {
  EMBER_OPTIM_DISPATCH(dtype, "SGD", [&] {
    for_each_chunk(tensors, [&](const Chunk& c) { sgd_chunk<param_t>(tensors[c.tensor], c.begin, c.end); });
  });
}

void adam_step(Device, DType dtype, bool decoupled, const std::vector<AdamArgs>& tensors) {
  EMBER_OPTIM_DISPATCH(dtype, decoupled ? "AdamW" : "Adam", [&] {
    for_each_chunk(tensors, [&](const Chunk& c) { adam_chunk<param_t>(tensors[c.tensor], decoupled, c.begin, c.end); });
  });
}

namespace {
double grad_norm_accumulate(DType dtype, const std::vector<GradArgs>& grads, double p) {
  const std::vector<Chunk> chunks = plan_chunks(grads);
  std::vector<double> partial(chunks.size(), 0.0);
  const bool is_inf = std::isinf(p);
  EMBER_OPTIM_DISPATCH(dtype, "clip_grad_norm_", [&] {
    parallel_for(static_cast<int64_t>(chunks.size()), kChunk, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const param_t* g = static_cast<const param_t*>(grads[chunks[c].tensor].grad);
        double acc = 0.0;
        for (int64_t i = chunks[c].begin; i < chunks[c].end; ++i) {
          const double x = std::fabs(static_cast<double>(load(g[i])));
          if (is_inf) acc = nan_max(acc, x);
          else if (p == 2.0) acc += x * x;
          else if (p == 1.0) acc += x;
          else acc += std::pow(x, p);
        }
        partial[c] = acc;
      }
    });
  });
  // Combined in chunk order: the same result at any thread count.
  double total = 0.0;
  for (double v : partial) total = is_inf ? nan_max(total, v) : total + v;
  return total;
}

void scale_grads(DType dtype, const std::vector<GradArgs>& grads, double factor) {
  EMBER_OPTIM_DISPATCH(dtype, "clip_grad_norm_", [&] {
    using A = acc_of<param_t>;
    const A f = A(factor);
    for_each_chunk(grads, [&](const Chunk& c) {
      param_t* g = static_cast<param_t*>(grads[c.tensor].grad);
      for (int64_t i = c.begin; i < c.end; ++i) g[i] = store<param_t>(load(g[i]) * f);
    });
  });
}

}  // namespace

// On the host: the norm is summed in double over every bucket, then written into total_norm.
void clip_grad_norm(Device, const std::vector<GradBucket>& buckets, double norm_type, double max_norm,
                    const Tensor& total_norm, bool scale) {
  const bool is_inf = std::isinf(norm_type);
  double total = 0.0;
  for (const GradBucket& b : buckets) {
    const double part = grad_norm_accumulate(b.dtype, b.grads, norm_type);
    total = is_inf ? ((std::isnan(total) || total > part) ? total : part) : total + part;
  }
  double norm = total;
  if (!is_inf && norm_type == 2.0) norm = std::sqrt(total);
  else if (!is_inf && norm_type != 1.0) norm = std::pow(total, 1.0 / norm_type);
  double factor = max_norm / (norm + 1e-6);
  if (factor > 1.0) factor = 1.0;  // clamp(max=1); NaN stays NaN
  if (scale && !(factor == 1.0))   // multiplying by exactly 1 changes nothing
    for (const GradBucket& b : buckets) scale_grads(b.dtype, b.grads, factor);
  if (total_norm.dtype() == DType::f64) *static_cast<double*>(total_norm.data_ptr()) = norm;
  else *static_cast<float*>(total_norm.data_ptr()) = static_cast<float>(norm);
}

void clamp_grads(Device, DType dtype, const std::vector<GradArgs>& grads, double clip_value) {
  EMBER_OPTIM_DISPATCH(dtype, "clip_grad_value_", [&] {
    using A = acc_of<param_t>;
    const A hi = A(clip_value), lo = -hi;
    for_each_chunk(grads, [&](const Chunk& c) {
      param_t* g = static_cast<param_t*>(grads[c.tensor].grad);
      for (int64_t i = c.begin; i < c.end; ++i) {
        const A x = load(g[i]);
        g[i] = store<param_t>(x < lo ? lo : (x > hi ? hi : x));  // NaN compares false: kept
      }
    });
  });
}

// Each chunk multiplies and notes a non-finite value; the flag is written once, after the
// loop (no shared writes from the threads).
void unscale_grads(Device, DType dtype, const std::vector<GradArgs>& grads, double inv_scale, const Tensor& found_inf) {
  const std::vector<Chunk> chunks = plan_chunks(grads);
  std::vector<unsigned char> bad(chunks.size(), 0);
  EMBER_OPTIM_DISPATCH(dtype, "GradScaler.unscale_", [&] {
    using A = acc_of<param_t>;
    const A f = A(inv_scale);
    parallel_for(static_cast<int64_t>(chunks.size()), kChunk, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        param_t* g = static_cast<param_t*>(grads[chunks[c].tensor].grad);
        bool nonfinite = false;
        for (int64_t i = chunks[c].begin; i < chunks[c].end; ++i) {
          const A x = load(g[i]) * f;
          nonfinite = nonfinite || !std::isfinite(static_cast<double>(x));
          g[i] = store<param_t>(x);
        }
        bad[c] = nonfinite ? 1 : 0;
      }
    });
  });
  if (std::find(bad.begin(), bad.end(), 1) != bad.end()) *static_cast<float*>(found_inf.data_ptr()) = 1.0f;
}

#undef EMBER_OPTIM_DISPATCH

void register_optim_kernels() {
  prim::define<prim::sgd_step>(prim::Backend::cpu, &sgd_step);
  prim::define<prim::adam_step>(prim::Backend::cpu, &adam_step);
  prim::define<prim::clip_grad_norm>(prim::Backend::cpu, &clip_grad_norm);
  prim::define<prim::clamp_grads>(prim::Backend::cpu, &clamp_grads);
  prim::define<prim::unscale_grads>(prim::Backend::cpu, &unscale_grads);
}

}  // namespace ember::cpu
