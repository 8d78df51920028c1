// W3_lstm (WORKLOADS.md): one LSTM layer, input 128, hidden 256, batch_first, x (32, 64, 128)
// as (N, T, C) ~ N(0, 1), loss = mean(output^2), plain SGD lr 0.01, zero_grad; as W1_mlp.
#include <cmath>
#include <memory>

#include "bench_util.h"
#include "ember/ember.h"

namespace {

bench::Instance make_w3_lstm() {
  using namespace ember;
  auto gen = std::make_shared<Generator>(bench::kSeed);
  nn::RNNOptions o;
  o.input_size = 128;
  o.hidden_size = 256;
  o.batch_first = true;
  auto model = std::make_shared<nn::LSTM>(o, gen.get());
  Tensor x = randn({32, 64, 128}, {}, gen.get());  // (N, T, C) f32
  optim::SGDOptions sgd;
  sgd.lr = 0.01;
  auto opt = std::make_shared<optim::SGD>(model->parameters(), sgd);
  auto last = std::make_shared<Tensor>();

  bench::Instance w;
  w.step = [gen, model, x, opt, last] {
    Tensor out = model->forward(x).output;  // (N, T, 256)
    Tensor loss = mean(out * out);
    loss.backward();
    opt->step();
    opt->zero_grad();
    *last = loss.detach();
  };
  w.last_loss = [last] { return last->defined() ? static_cast<double>(last->item<float>()) : NAN; };
  return w;
}

const bench::Register w3("W3_lstm", "LSTM 128->256, batch_first, x (32, 64, 128), loss mean(out^2), SGD",
                         make_w3_lstm);

}  // namespace
