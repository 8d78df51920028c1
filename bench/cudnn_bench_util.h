// What the cuDNN comparison benches share beyond gpu_bench_util.h: the status check.
#pragma once
#include <cudnn.h>

#include <stdexcept>
#include <string>

// Throws std::runtime_error naming the statement when a cuDNN call fails.
#define BENCH_CUDNN(stmt)                                                                                  \
  do {                                                                                                     \
    cudnnStatus_t s_ = (stmt);                                                                             \
    if (s_ != CUDNN_STATUS_SUCCESS) throw std::runtime_error(std::string(#stmt) + ": " + cudnnGetErrorString(s_)); \
  } while (0)
