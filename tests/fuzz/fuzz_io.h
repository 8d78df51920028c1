// The fuzz target over ember's file readers, shared by the libFuzzer binary (fuzz_libfuzzer.cpp,
// clang, EMBER_FUZZ=ON), the corpus replay (replay_main.cpp, any compiler, CTest
// ember.fuzz_replay) and the test that writes the seed corpus (tests/test_io_hostile.cpp).
//
// An input is one selector byte and a file's bytes. The selector (first byte % 3) picks the
// reader: 0 io::parse_safetensors, 1 io::load_checkpoint_from_memory into an SGD + StepLR
// setup, 2 the same into an Adam + WarmupCosineLR setup. After a successful read the target
// uses what it read (converts every tensor; takes a training step), so a file that passes the
// checks but holds something unusable shows up too.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "ember/ember.h"
#include "ember/io/checkpoint.h"
#include "ember/io/safetensors.h"

namespace ember_fuzz {

enum Target : uint8_t { kSafetensors = 0, kCheckpointSgd = 1, kCheckpointAdam = 2, kTargets = 3 };

// The model every checkpoint input is loaded into: Linear(3 -> 2) and an i64 step counter.
struct TinyModel : ember::nn::Module {
  std::shared_ptr<ember::nn::Linear> fc;
  ember::Tensor steps;
  explicit TinyModel(ember::Generator* g);
  ember::Tensor forward(const ember::Tensor& x) { return (*fc)(x); }
};

// Model, optimizer and schedule for a checkpoint target, freshly built (same values each time).
struct Setup {
  ember::Generator gen{7};
  TinyModel model{&gen};
  std::unique_ptr<ember::optim::Optimizer> opt;
  std::unique_ptr<ember::optim::LRScheduler> sched;
  ember::io::TrainingState state;
  explicit Setup(Target t);
  void train_step();  // one forward/backward/step/schedule step on fixed data
};

// Runs one input. Returns normally or throws ember::Error; anything else (another exception,
// a crash, a sanitizer report) is a bug.
void run_one(const uint8_t* data, size_t size);

}  // namespace ember_fuzz
