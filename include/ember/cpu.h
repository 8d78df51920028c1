// The CPU runtime as ember users see it: threads and floating-point mode. (CPU memory: the
// caching allocator in ember/core/allocator.h.)
#pragma once

namespace ember::cpu {

// OpenMP threads ember's CPU kernels (and Eigen's GEMM) use; set_num_threads(n) with n >= 1.
//
// Per calling thread: set_num_threads is omp_set_num_threads, which sets the OpenMP
// nthreads-var of the calling thread only. Ops run on the thread that calls them and their
// parallel regions use that thread's setting; another std::thread keeps its own, which starts
// at the process default (OMP_NUM_THREADS, else the number of cores), not at what this thread
// set. So a program that runs ember ops on several threads calls set_num_threads in each of
// them (or sets OMP_NUM_THREADS before start). num_threads() is the calling thread's value.
// Results at a fixed thread count are bit-identical run to run; see docs/reliability.md for
// what changes with the count.
int num_threads();
void set_num_threads(int n);

// Flush denormal floats to zero (x86 FTZ + DAZ) in the calling thread and in every OpenMP
// worker thread, or stop doing so. Denormals (|x| < 1.2e-38 in f32) appear late in training
// (tiny gradients, sharp softmaxes) and each costs a slow microcode path on x86; flushing them
// changes results only below that magnitude. Off by default, as in PyTorch. Returns false
// (and does nothing) on CPUs without the control.
bool set_flush_denormal(bool on);
bool flush_denormal();  // the calling thread's current mode

}  // namespace ember::cpu
