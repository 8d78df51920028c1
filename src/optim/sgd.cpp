// SGD with momentum and weight decay, PyTorch's rule (dampening 0, no Nesterov):
//   g = grad + wd * p;  buf = momentum * buf + g (buf = g on the first step);  p -= lr * buf
// Updates run under NoGradGuard and edit the leaf parameters in place.
#include "ember/optim/sgd.h"

#include "ember/autograd/grad_mode.h"
#include "ember/core/error.h"
#include "ember/ops/ops.h"

namespace ember::optim {

SGD::SGD(std::vector<Tensor> params, SGDOptions opt) : params_(std::move(params)), opt_(opt) {
  EMBER_CHECK(opt_.lr >= 0.0, "SGD", "lr must be >= 0, got ", opt_.lr);
  EMBER_CHECK(opt_.momentum >= 0.0, "SGD", "momentum must be >= 0, got ", opt_.momentum);
  EMBER_CHECK(opt_.weight_decay >= 0.0, "SGD", "weight_decay must be >= 0, got ", opt_.weight_decay);
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    EMBER_CHECK(p.defined(), "SGD", "parameter ", i, " is an undefined tensor");
    EMBER_CHECK(p.is_leaf() && p.requires_grad(), "SGD", "parameter ", i, " ", p.str(),
                " must be a leaf that requires grad");
  }
  momentum_.resize(params_.size());
}

void SGD::step() {
  NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    Tensor g = p.grad();
    if (!g.defined()) continue;
    EMBER_CHECK(g.shape() == p.shape(), "SGD", "gradient ", shape_str(g.shape()),
                " does not match parameter ", i, " ", shape_str(p.shape()));
    if (opt_.weight_decay != 0.0) g = add(g, p, opt_.weight_decay);
    if (opt_.momentum != 0.0) {
      Tensor& buf = momentum_[i];
      if (!buf.defined()) {
        buf = clone(g);  // own copy: g may be .grad itself, which the next backward changes
      } else {
        buf.mul_(opt_.momentum);
        buf.add_(g);
      }
      g = buf;
    }
    p.add_(g, -opt_.lr);
  }
}

void SGD::zero_grad() {
  for (auto& p : params_) p.set_grad(Tensor());
}

}  // namespace ember::optim
