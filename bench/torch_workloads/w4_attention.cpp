// W4_attention in libtorch: torch::nn::TransformerEncoderLayer(d_model 256, nhead 4,
// dim_feedforward 1024, dropout 0, ReLU), post-norm, (T, N, C) input; loss = mean(output^2);
// SGD lr 0.01, gradients dropped after the step (as W1_mlp).
#include <torch/torch.h>

#include <cmath>
#include <memory>

#include "bench_util.h"

namespace {

bench::Instance make_w4_attention() {
  torch::manual_seed(bench::kSeed);
  torch::nn::TransformerEncoderLayer layer(
      torch::nn::TransformerEncoderLayerOptions(256, 4).dim_feedforward(1024).dropout(0.0).activation(torch::kReLU));
  torch::Tensor x = torch::randn({128, 8, 256});  // (T, N, C)
  auto opt = std::make_shared<torch::optim::SGD>(layer->parameters(), torch::optim::SGDOptions(0.01));
  auto last = std::make_shared<torch::Tensor>();

  bench::Instance w;
  w.step = [layer, x, opt, last]() mutable {
    torch::Tensor y = layer->forward(x);
    torch::Tensor loss = (y * y).mean();
    loss.backward();
    opt->step();
    for (auto& p : layer->parameters()) p.mutable_grad() = torch::Tensor();
    *last = loss.detach();
  };
  w.last_loss = [last] { return last->defined() ? last->item<double>() : NAN; };
  return w;
}

const bench::Register w4("W4_attention", "", make_w4_attention);

}  // namespace
