// clip_grad_norm_ and clip_grad_value_ (see clip.h): argument checks, then the fused
// multi-tensor kernels of src/optim/fused.h.
#include "ember/optim/clip.h"

#include <cmath>

#include "ember/autograd/grad_mode.h"
#include "ember/core/error.h"
#include "ember/ops/ops.h"
#include "optim/fused.h"

namespace ember::optim {
using fused::collect_grads;
using fused::GradList;
using fused::write_back;

Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type, bool error_if_nonfinite) {
  const char* op = "clip_grad_norm_";
  EMBER_CHECK(norm_type > 0.0, op, "norm_type must be > 0 (or kInfNorm), got ", norm_type);
  EMBER_CHECK(!std::isnan(max_norm) && max_norm >= 0.0, op, "max_norm must be >= 0, got ", max_norm);
  NoGradGuard no_grad;
  const GradList grads = collect_grads(params, op, /*one_device=*/true);
  bool any_f64 = false;
  for (const Tensor& g : grads.work) any_f64 = any_f64 || g.dtype() == DType::f64;
  const DType out_dtype = any_f64 ? DType::f64 : DType::f32;
  if (grads.work.empty()) return scalar_tensor(0.0, out_dtype);
  const Device device = grads.work.front().device();
  if (error_if_nonfinite) {
    const double total = fused::clip_grad_norm(device, grads.work, norm_type, max_norm, out_dtype, false).item<double>();
    EMBER_CHECK(std::isfinite(total), op, "the total norm of order ", norm_type, " of the gradients of ",
                grads.work.size(), " parameters on ", device, " is ", total,
                ", so clipping would make every gradient non-finite (error_if_nonfinite=true; gradients unchanged)");
  }
  Tensor norm = fused::clip_grad_norm(device, grads.work, norm_type, max_norm, out_dtype);
  write_back(grads);
  return norm;
}

void clip_grad_value_(const std::vector<Tensor>& params, double clip_value) {
  const char* op = "clip_grad_value_";
  EMBER_CHECK(!std::isnan(clip_value) && clip_value >= 0.0, op, "clip_value must be >= 0, got ", clip_value);
  NoGradGuard no_grad;
  const GradList grads = collect_grads(params, op, /*one_device=*/false);
  fused::clamp_grads(grads.work, clip_value);
  write_back(grads);
}

}  // namespace ember::optim
