// Checkpoints across world sizes. `save DIR` (2 ranks): DDP training with a global batch of 12
// (6 rows per rank), a checkpoint written after step 3 (mid-epoch), then on to step 7 (into the
// second epoch); rank 0 writes the final parameters as the reference. `resume DIR` (1 or 3
// ranks): loads the checkpoint, trains steps 3..7 with the same global batch (12 / world rows per
// rank) from the sampler position the checkpoint holds, and must end at the reference
// parameters (within f32 rounding of the reduction order), bit-identical across its ranks.
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "ember/ember.h"

using namespace ember;

namespace {

constexpr int64_t kSamples = 60, kGlobalBatch = 12, kSaveAt = 3, kSteps = 7;

std::shared_ptr<nn::Sequential> make_model() {
  Generator g(7);
  auto m = std::make_shared<nn::Sequential>();
  m->add(std::make_shared<nn::Linear>(5, 16, true, &g)).add(std::make_shared<nn::Tanh>());
  m->add(std::make_shared<nn::Linear>(16, 3, true, &g));
  return m;
}

int fail(const std::string& why) {
  std::printf("rank %d of %d: FAILED: %s\n", dist::rank(), dist::world_size(), why.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  dist::init({.timeout = 60.0});
  const int W = dist::world_size();
  if (argc != 3 || (std::strcmp(argv[1], "save") != 0 && std::strcmp(argv[1], "resume") != 0))
    return fail("usage: dist_resume save|resume DIR");
  const bool resume = std::strcmp(argv[1], "resume") == 0;
  const std::string dir = argv[2], ckpt = dir + "/dist_resume.ckpt", ref = dir + "/dist_resume_ref.safetensors";
  if (kGlobalBatch % W != 0) return fail("the world size must divide the global batch");
  const int64_t B = kGlobalBatch / W;

  Generator data_gen(99);
  const Tensor X = randn({kSamples, 5}, DType::f32, &data_gen);
  const Tensor Y = randint(0, 3, {kSamples}, DType::i64, &data_gen);
  auto model = make_model();
  nn::DistributedDataParallel ddp(*model);
  optim::Adam opt(model->parameters(), {.lr = 0.05});
  io::TrainingState state;
  if (resume) {
    io::load_checkpoint(ckpt, *model, opt, nullptr, state);
    if (state.step != kSaveAt) return fail("the checkpoint holds step " + std::to_string(state.step));
  }
  dist::DistributedSampler sampler(kSamples, true, 5);
  sampler.set_epoch(state.epoch);
  sampler.set_start(state.data_position);
  std::vector<int64_t> idx = sampler.indices();
  size_t next = 0;
  while (state.step < kSteps) {
    if (next + static_cast<size_t>(B) > idx.size()) {  // a new epoch
      ++state.epoch;
      state.data_position = 0;
      sampler.set_epoch(state.epoch);
      sampler.set_start(0);
      idx = sampler.indices();
      next = 0;
    }
    const Tensor rows = from_vector<int64_t>({idx.begin() + static_cast<std::ptrdiff_t>(next),
                                              idx.begin() + static_cast<std::ptrdiff_t>(next) + B},
                                             {B});
    next += static_cast<size_t>(B);
    opt.zero_grad();
    nn::cross_entropy(model->forward(index_select(X, 0, rows)), index_select(Y, 0, rows)).backward();
    opt.step();
    ++state.step;
    state.data_position += B * W;  // positions, not this rank's samples
    if (!resume && state.step == kSaveAt) io::save_checkpoint(ckpt, *model, opt, nullptr, state);
  }
  if (!resume) {
    if (dist::rank() == 0) io::save_safetensors(ref, model->state_dict());
    dist::barrier();
    std::printf("rank %d of %d: trained %lld steps, checkpoint at step %lld\n", dist::rank(), W,
                static_cast<long long>(kSteps), static_cast<long long>(kSaveAt));
  } else {
    const StateDict want = io::load_safetensors(ref);
    for (const auto& [name, t] : model->state_dict().tensors) {
      const Tensor w = want.find(name);
      if (!w.defined()) return fail(name + " is not in the reference");
      if (!allclose(t, w, 1e-4, 1e-5))
        return fail(name + " differs from the uninterrupted 2-rank run: max |diff| " +
                    std::to_string(max(abs(t - w)).item<double>()));
      for (const Tensor& other : dist::all_gather(t))
        if (!equal(other, t)) return fail(name + " differs across ranks");
    }
    std::printf("rank %d of %d: resumed the 2-rank checkpoint at step %lld and matched the 2-rank run\n",
                dist::rank(), W, static_cast<long long>(kSaveAt));
  }
  dist::finalize();
  return 0;
}
