// What checkpoints hold: named tensors plus string metadata. Modules, optimizers, schedules
// and generators turn their state into a StateDict and back; io/safetensors writes and reads
// one as a .safetensors file (tensors as tensors, meta in the header's "__metadata__").
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "ember/core/tensor.h"

namespace ember {

struct StateDict {
  std::vector<std::pair<std::string, Tensor>> tensors;  // in a stable, meaningful order
  std::map<std::string, std::string> meta;              // scalars as text (steps, lrs, seeds)

  // The tensor named `name`, or an undefined Tensor.
  Tensor find(const std::string& name) const {
    for (const auto& [n, t] : tensors)
      if (n == name) return t;
    return Tensor();
  }
};

}  // namespace ember
