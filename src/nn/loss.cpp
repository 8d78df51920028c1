// cross_entropy = log_softmax over classes, then pick each row's target log-prob (gather).
#include "ember/nn/loss.h"

#include "ember/core/error.h"
#include "ember/ops/ops.h"

namespace ember::nn {

Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction r) {
  const char* op = "cross_entropy";
  EMBER_CHECK(logits.defined() && target.defined(), op, "logits and target must be defined tensors");
  EMBER_CHECK(logits.dim() == 2, op, "logits must be 2-D (N, C), got ", shape_str(logits.shape()));
  EMBER_CHECK(is_floating(logits.dtype()), op, "logits must be a float tensor, got ", logits.dtype());
  EMBER_CHECK(target.dim() == 1, op, "target must be 1-D (N), got ", shape_str(target.shape()));
  EMBER_CHECK(is_integral(target.dtype()), op, "target must be i64 or i32 class indices, got ",
              target.dtype());
  const int64_t n = logits.size(0), c = logits.size(1);
  EMBER_CHECK(target.size(0) == n, op, "logits ", shape_str(logits.shape()), " and target ",
              shape_str(target.shape()), " disagree on N");
  EMBER_CHECK(c > 0, op, "logits ", shape_str(logits.shape()), " have no classes");
  if (n > 0) {
    const int64_t lo = amin(target).item<int64_t>();
    const int64_t hi = amax(target).item<int64_t>();
    EMBER_CHECK(lo >= 0 && hi < c, op, "target values must lie in [0, ", c, ") for logits ",
                shape_str(logits.shape()), ", found ", (lo < 0 ? lo : hi));
  }

  Tensor index = target.dtype() == DType::i64 ? target : to_dtype(target, DType::i64);
  Tensor logp = log_softmax(logits, 1);                          // (N, C)
  Tensor nll = neg(gather(logp, 1, index.unsqueeze(1)).squeeze(1));  // (N)
  switch (r) {
    case Reduction::none: return nll;
    case Reduction::sum: return sum(nll);
    case Reduction::mean: return mean(nll);
  }
  EMBER_FAIL(op, "unknown reduction");
}

}  // namespace ember::nn
