// The fuzz target (see fuzz_io.h).
#include "fuzz/fuzz_io.h"

namespace ember_fuzz {

using namespace ember;

TinyModel::TinyModel(Generator* g) {
  fc = register_module("fc", std::make_shared<nn::Linear>(3, 2, true, g));
  steps = register_buffer("steps", zeros({1}, DType::i64));
}

Setup::Setup(Target t) {
  if (t == kCheckpointAdam) {
    opt = std::make_unique<optim::Adam>(model.parameters(), optim::AdamOptions{.lr = 0.01, .amsgrad = true});
    sched = std::make_unique<optim::WarmupCosineLR>(*opt, optim::WarmupCosineOptions{.warmup_steps = 2, .total_steps = 10});
  } else {
    opt = std::make_unique<optim::SGD>(model.parameters(), optim::SGDOptions{.lr = 0.1, .momentum = 0.9});
    sched = std::make_unique<optim::StepLR>(*opt, 2, 0.5);
  }
}

void Setup::train_step() {
  Generator data(3);
  const Tensor x = randn({4, 3}, {}, &data);
  const Tensor loss = sum(model.forward(x));
  opt->zero_grad();
  loss.backward();
  opt->step();
  sched->step();
  ++state.step;
}

void run_one(const uint8_t* data, size_t size) {
  if (size == 0) return;
  const auto target = static_cast<Target>(data[0] % kTargets);
  const uint8_t* file = data + 1;
  const size_t n = size - 1;
  if (target == kSafetensors) {
    const StateDict sd = io::parse_safetensors(file, n, "fuzz input");
    for (const auto& [name, t] : sd.tensors)
      if (t.numel() > 0) (void)to_dtype(t, DType::f64);  // reads every value (bools included)
    return;
  }
  Setup s(target);
  io::load_checkpoint_from_memory(file, n, "fuzz input", s.model, *s.opt, s.sched.get(), s.state);
  s.train_step();
}

}  // namespace ember_fuzz
