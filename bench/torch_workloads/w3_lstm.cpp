// W3_lstm in libtorch: one LSTM layer, input 128, hidden 256, batch_first, x (32, 64, 128) as
// (N, T, C), loss = mean(output^2), SGD lr 0.01; gradients dropped after the step as in W1_mlp.
#include <torch/torch.h>

#include <cmath>
#include <memory>

#include "bench_util.h"

namespace {

bench::Instance make_w3_lstm() {
  torch::manual_seed(bench::kSeed);
  torch::nn::LSTM model(torch::nn::LSTMOptions(128, 256).batch_first(true));
  torch::Tensor x = torch::randn({32, 64, 128});  // (N, T, C) f32
  auto opt = std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.01));
  auto last = std::make_shared<torch::Tensor>();

  bench::Instance w;
  w.step = [model, x, opt, last]() mutable {
    torch::Tensor out = std::get<0>(model->forward(x));  // (N, T, 256)
    torch::Tensor loss = (out * out).mean();
    loss.backward();
    opt->step();
    for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();  // as ember's zero_grad
    *last = loss.detach();
  };
  w.last_loss = [last] { return last->defined() ? last->item<double>() : NAN; };
  return w;
}

const bench::Register w3("W3_lstm", "", make_w3_lstm);

}  // namespace
