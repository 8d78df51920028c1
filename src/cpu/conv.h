// The CPU conv1d's algorithm switch (src/cpu/conv.cpp; the primitives themselves are declared
// in prim/primitives.h). ember::set_conv1d_cpu_path (ember/ops/conv.h) sets it.
#pragma once
#include <cstdint>

#include "ember/core/tensor.h"

namespace ember::cpu {

enum class Conv1dAlgo {
  automatic,  // by size: direct when one group's weight slab (C_out/groups x C_in/groups x K)
              // has fewer than 256 entries — depthwise and tiny layers, where each GEMM would be
              // too small to pay for packing and the unfold — im2col otherwise
  direct,     // loops over (channel, tap); a vectorised axpy over positions
  im2col,     // per (sample, group): unfold windows into a (C_in/groups*K, L_out) buffer, one GEMM
};

// The algorithm the three conv1d primitives use (process-wide; starts from the environment
// variable EMBER_CONV1D_CPU = auto|direct|im2col). ember::set_conv1d_cpu_path sets it.
void set_conv1d_algo(Conv1dAlgo algo);
Conv1dAlgo conv1d_algo();

}  // namespace ember::cpu
