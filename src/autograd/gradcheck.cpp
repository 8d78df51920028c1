// Central-difference gradient check.
#include "ember/autograd/gradcheck.h"

#include <cmath>
#include <sstream>

#include "ember/autograd/grad_mode.h"
#include "ember/ops/ops.h"

namespace ember {

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, GradcheckOptions opt) {
  GradcheckResult res;
  for (size_t i = 0; i < inputs.size(); ++i)
    EMBER_CHECK(inputs[i].device().is_cpu(), "gradcheck", "input ", i, " is on ", inputs[i].device(),
                "; gradcheck perturbs inputs on the CPU (compare CUDA gradients against CPU ones)");
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].requires_grad())
      EMBER_CHECK(inputs[i].dtype() == DType::f64, "gradcheck", "input ", i, " is ", inputs[i].dtype(),
                  "; use f64 inputs for a meaningful check");
  Tensor out0 = fn(inputs);
  EMBER_CHECK(out0.requires_grad(), "gradcheck", "the function's output does not require grad");
  Generator gen(1234);
  Tensor w = randn(out0.shape(), DType::f64, &gen);
  for (const auto& x : inputs)
    if (x.requires_grad()) x.set_grad(Tensor());
  sum(mul(to_dtype(out0, DType::f64), w)).backward();

  auto objective = [&]() {
    NoGradGuard ng;
    return sum(mul(to_dtype(fn(inputs), DType::f64), w)).item<double>();
  };
  std::ostringstream msg;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.requires_grad()) continue;
    Tensor analytic = x.grad().defined() ? contiguous(x.grad()) : zeros(x.shape(), DType::f64);
    const double* ga = analytic.data<double>();
    double* base = static_cast<double*>(x.impl().storage->data());
    // Walk x's logical elements through its strides.
    const int64_t n = x.numel();
    std::vector<int64_t> coord(x.dim(), 0);
    for (int64_t lin = 0; lin < n; ++lin) {
      int64_t off = x.offset();
      for (int64_t d = 0; d < x.dim(); ++d) off += coord[d] * x.stride(d);
      const double orig = base[off];
      base[off] = orig + opt.eps;
      const double fp = objective();
      base[off] = orig - opt.eps;
      const double fm = objective();
      base[off] = orig;
      const double numeric = (fp - fm) / (2 * opt.eps);
      const double diff = std::abs(numeric - ga[lin]);
      if (!(diff <= opt.atol + opt.rtol * std::abs(numeric))) {
        if (res.ok) msg << "gradient mismatch";
        res.ok = false;
        msg << "\n  input " << i << " " << shape_str(x.shape()) << " element " << lin << ": analytical " << ga[lin]
            << ", numerical " << numeric;
      }
      for (int64_t d = x.dim() - 1; d >= 0; --d) {
        if (++coord[d] < x.size(d)) break;
        coord[d] = 0;
      }
    }
  }
  res.message = msg.str();
  return res;
}

}  // namespace ember
