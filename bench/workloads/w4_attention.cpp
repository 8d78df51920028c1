// W4_attention (WORKLOADS.md): one post-norm TransformerEncoderLayer, d_model 256, 4 heads,
// feed-forward 1024 with ReLU, dropout 0; x (128, 8, 256) as (T, N, C) ~ N(0, 1);
// loss = mean(output^2); plain SGD lr 0.01, zero_grad after the step (as W1_mlp).
#include <cmath>
#include <memory>

#include "bench_util.h"
#include "ember/ember.h"

namespace {

bench::Instance make_w4_attention() {
  using namespace ember;
  auto gen = std::make_shared<Generator>(bench::kSeed);
  auto layer = std::make_shared<nn::TransformerEncoderLayer>(256, 4, 1024, /*dropout=*/0.0, nn::Activation::relu,
                                                             /*norm_first=*/false, /*batch_first=*/false, 1e-5,
                                                             gen.get());
  Tensor x = randn({128, 8, 256}, {}, gen.get());  // (T, N, C) f32
  optim::SGDOptions sgd;
  sgd.lr = 0.01;
  auto opt = std::make_shared<optim::SGD>(layer->parameters(), sgd);
  auto last = std::make_shared<Tensor>();

  bench::Instance w;
  w.step = [gen, layer, x, opt, last] {
    Tensor y = layer->forward(x);  // (T, N, C)
    Tensor loss = mean(y * y);
    loss.backward();
    opt->step();
    opt->zero_grad();
    *last = loss.detach();
  };
  w.last_loss = [last] { return last->defined() ? static_cast<double>(last->item<float>()) : NAN; };
  return w;
}

const bench::Register w4("W4_attention",
                         "post-norm TransformerEncoderLayer d256 4 heads ff1024 ReLU, x (128, 8, 256) (T, N, C), SGD",
                         make_w4_attention);

}  // namespace
