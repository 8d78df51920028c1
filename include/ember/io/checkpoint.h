// Training checkpoints: model, optimizer, schedule and loop position in ONE .safetensors file,
// so a run stopped at any point continues bit for bit (on the same device and thread count).
//
// File layout (docs/checkpoints.md):
//   tensors  "model.<name>"   Module::state_dict() (parameters, then buffers)
//            "optim.<name>"   Optimizer::state_dict() tensors (momentum buffers, Adam moments)
//   meta     "ember.checkpoint" = "2" (format version), "ember.sections" = "model,optim[,sched],train"
//            "optim.<key>"    Optimizer::state_dict() meta
//            "sched.<key>"    LRScheduler::state_dict() meta (only when a schedule was saved)
//            "scaler.<key>"   amp::GradScaler::state_dict() meta (only when a scaler was saved;
//                             "ember.sections" then lists "scaler")
//            "train.epoch", "train.step", "train.data_position", "train.rng_seed",
//            "train.rng_offset", "train.extra.<key>"
// Version 2 files carry "ember.checksum" (io/safetensors.h: a CRC-32 of the whole header and
// the data), and the loader refuses one without it; version 1 files (ember.crc32 over the data
// only) still load, with the weaker check.
// The "model." tensors are exactly the model's state_dict under a prefix, so PyTorch reads the
// weights with safetensors.torch.load_file and a dict comprehension that strips "model.".
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "ember/amp.h"
#include "ember/core/generator.h"
#include "ember/io/state_dict.h"
#include "ember/nn/module.h"
#include "ember/optim/optimizer.h"
#include "ember/optim/schedule.h"

namespace ember::io {

// Where the training loop is. The library stores these; what they mean is the loop's choice
// (the Fashion-MNIST example: epoch = epochs finished, step = optimizer steps so far,
// data_position = samples consumed in the current epoch). epoch, step and data_position are
// counts: save and load refuse negative ones.
struct TrainingState {
  int64_t epoch = 0;
  int64_t step = 0;
  int64_t data_position = 0;
  uint64_t rng_seed = 0;    // the data-order Generator's seed ...
  uint64_t rng_offset = 0;  // ... and its Philox offset: together its whole state
  std::map<std::string, std::string> extra;  // anything else, as text (keys without '\0')

  // A state with rng_seed/rng_offset taken from g (the other fields zero).
  static TrainingState from(const Generator& g) {
    TrainingState s;
    s.capture(g);
    return s;
  }
  // Records g's seed and offset.
  void capture(const Generator& g) {
    rng_seed = g.seed();
    rng_offset = g.offset();
  }
  // Puts g where capture() found it: the next draw is the one the saved run made next.
  void apply_to(Generator& g) const {
    g.manual_seed(rng_seed);
    g.set_offset(rng_offset);
  }
};

// Writes model, optimizer, schedule (nullable) and training state to `path` as one
// .safetensors file (format version 2), atomically (io::save_safetensors: a temporary file renamed over path), so
// a crash while saving leaves the previous checkpoint intact.
// A GradScaler (mixed precision) is saved too when given.
// In a job of several ranks (ember/dist.h) every rank calls it: rank 0 writes (DDP keeps the
// ranks' models and optimizers identical), and it returns on every rank once the file is in
// place, or throws on every rank when rank 0 could not write it. Every rank loads the same file
// with load_checkpoint; the job may have another world size then (docs/distributed.md).
void save_checkpoint(const std::string& path, const nn::Module& model, const optim::Optimizer& opt,
                     const optim::LRScheduler* sched, const TrainingState& state,
                     const amp::GradScaler* scaler = nullptr);

// Restores what save_checkpoint wrote into a model, optimizer and schedule built the same way
// (same layers, same parameter groups, same schedule class), and fills `state`. The load is
// all or nothing: on any problem it throws one ember::Error naming the file and the problem,
// and model, optimizer, schedule and state are as they were. Problems: not a checkpoint, a
// missing section (e.g. `sched` given but the file has no schedule), a model that does not
// match (every missing, unexpected and mis-shaped key, an integer tensor for a float
// parameter), an optimizer or schedule of another kind or shape, hyper-parameters or counters
// out of range (a negative or NaN lr, a negative epoch), a damaged file (truncation, any
// flipped bit in a version 2 file). A schedule in the file is ignored when sched is null. A
// scaler's state is restored when both the file and the call have one (a bad one fails the
// whole load); a file without one leaves the scaler as it is.
void load_checkpoint(const std::string& path, nn::Module& model, optim::Optimizer& opt, optim::LRScheduler* sched,
                     TrainingState& state, amp::GradScaler* scaler = nullptr);

// load_checkpoint on a file's bytes held in memory; `name` names them in error messages.
void load_checkpoint_from_memory(const void* data, size_t size, const std::string& name, nn::Module& model,
                                 optim::Optimizer& opt, optim::LRScheduler* sched, TrainingState& state,
                                 amp::GradScaler* scaler = nullptr);

// The StateDict save_checkpoint writes and load_checkpoint reads (for keeping checkpoints in
// memory or another container). `where` names the source in error messages. A StateDict has
// no bytes to checksum: load_checkpoint_state_dict checks everything else, all or nothing.
StateDict checkpoint_state_dict(const nn::Module& model, const optim::Optimizer& opt, const optim::LRScheduler* sched,
                                const TrainingState& state, const amp::GradScaler* scaler = nullptr);
void load_checkpoint_state_dict(const StateDict& ckpt, nn::Module& model, optim::Optimizer& opt,
                                optim::LRScheduler* sched, TrainingState& state,
                                const std::string& where = "checkpoint", amp::GradScaler* scaler = nullptr);

}  // namespace ember::io
