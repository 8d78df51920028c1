// W5_full_softmax_100k in libtorch: Linear 256->100000, cross-entropy, x (256, 256), labels in
// [0, 100000), SGD lr 0.01, gradients dropped after the step (as ember's zero_grad does).
// libtorch has no hierarchical softmax, so W5_hsoftmax_100k has no peer here.
#include <torch/torch.h>

#include <cmath>
#include <memory>

#include "bench_util.h"

namespace {

using bench::Instance;

Instance make_full() {
  torch::manual_seed(bench::kSeed);
  torch::nn::Linear fc(256, 100000);
  torch::Tensor x = torch::randn({256, 256});                        // (B, 256) f32
  torch::Tensor y = torch::randint(0, 100000, {256}, torch::kLong);  // (B)
  auto opt = std::make_shared<torch::optim::SGD>(fc->parameters(), torch::optim::SGDOptions(0.01));
  auto last = std::make_shared<torch::Tensor>();
  Instance w;
  w.step = [fc, x, y, opt, last]() mutable {
    torch::Tensor loss = torch::nn::functional::cross_entropy(fc->forward(x), y);
    loss.backward();
    opt->step();
    for (auto& p : fc->parameters()) p.mutable_grad() = torch::Tensor();
    *last = loss.detach();
  };
  w.last_loss = [last] { return last->defined() ? last->item<double>() : NAN; };
  return w;
}

const bench::Register w5f("W5_full_softmax_100k",
                          "Linear 256->100000 + cross-entropy, x (256, 256), labels in [0, 100000), SGD", make_full);

}  // namespace
