// EMBER_HD marks a function that runs on the host and, compiled by nvcc, on the device: the
// math that both backends share (Philox here; elementwise functors, update math and the
// hierarchical-softmax tables in src/prim) is written once with it.
#pragma once

#ifdef __CUDACC__
#define EMBER_HD __host__ __device__ __forceinline__
#else
#define EMBER_HD inline
#endif
