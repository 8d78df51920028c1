// W5: a 100000-class output layer, full softmax vs hierarchical softmax (WORKLOADS.md).
//
// W5_full_softmax_100k: Linear 256->100000, cross-entropy; x (256, 256) ~ N(0, 1), labels
// uniform in [0, 100000), plain SGD lr 0.01, step + zero_grad as in W1.
// W5_hsoftmax_100k: the same classes, inputs and optimizer through nn::HierarchicalSoftmax over
// a balanced binary tree (depth 17, 99999 rows of one sigmoid each; docs/hsoftmax.md).
#include <cmath>
#include <memory>

#include "bench_util.h"
#include "ember/ember.h"
#include "ember/nn/hsoftmax.h"

namespace {

using bench::Instance;
constexpr int64_t kClasses = 100000, kHidden = 256, kBatch = 256;

Instance finish(std::shared_ptr<ember::optim::SGD> opt, std::function<ember::Tensor()> loss_fn) {
  auto last = std::make_shared<ember::Tensor>();
  Instance w;
  w.step = [opt, loss_fn, last] {
    ember::Tensor loss = loss_fn();
    loss.backward();
    opt->step();
    opt->zero_grad();
    *last = loss.detach();  // keep the value, not the graph
  };
  w.last_loss = [last] { return last->defined() ? static_cast<double>(last->item<float>()) : NAN; };
  return w;
}

Instance make_full() {
  using namespace ember;
  auto gen = std::make_shared<Generator>(bench::kSeed);
  auto fc = std::make_shared<nn::Linear>(kHidden, kClasses, true, gen.get());
  Tensor x = randn({kBatch, kHidden}, {}, gen.get());                 // (B, 256) f32
  Tensor y = randint(0, kClasses, {kBatch}, DType::i64, gen.get());  // (B) class indices
  optim::SGDOptions sgd;
  sgd.lr = 0.01;
  auto opt = std::make_shared<optim::SGD>(fc->parameters(), sgd);
  return finish(opt, [fc, x, y] { return nn::cross_entropy(fc->forward(x), y); });  // logits (B, 100000)
}

Instance make_hsoftmax() {
  using namespace ember;
  auto gen = std::make_shared<Generator>(bench::kSeed);
  auto hsm = std::make_shared<nn::HierarchicalSoftmax>(kHidden, nn::ClassTree::balanced(kClasses), true, gen.get());
  Tensor x = randn({kBatch, kHidden}, {}, gen.get());
  Tensor y = randint(0, kClasses, {kBatch}, DType::i64, gen.get());
  optim::SGDOptions sgd;
  sgd.lr = 0.01;
  auto opt = std::make_shared<optim::SGD>(hsm->parameters(), sgd);
  return finish(opt, [hsm, x, y] { return (*hsm)(x, y); });
}

const bench::Register w5f("W5_full_softmax_100k",
                          "Linear 256->100000 + cross-entropy, x (256, 256), labels in [0, 100000), SGD", make_full);
const bench::Register w5h("W5_hsoftmax_100k",
                          "HierarchicalSoftmax 256 -> 100000 classes, balanced binary tree, x (256, 256), SGD",
                          make_hsoftmax);

}  // namespace
