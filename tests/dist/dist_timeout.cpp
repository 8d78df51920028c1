// A rank that stops taking part: the last rank sleeps past the job's timeout instead of joining
// an all-reduce; every other rank must end with the timeout error (not hang). CTest
// ember.dist_timeout passes on that message.
#include <chrono>
#include <cstdio>
#include <thread>

#include "ember/ember.h"

int main() {
  using namespace ember;
  dist::init({.timeout = 2.0});
  if (dist::rank() == dist::world_size() - 1) {
    std::this_thread::sleep_for(std::chrono::seconds(20));  // a hung rank; mpirun ends it
    return 0;
  }
  try {
    Tensor t = ones({4});
    dist::Work w = dist::all_reduce_async(t);
    w.wait();
    std::printf("rank %d: the all-reduce completed without the hung rank\n", dist::rank());
    return 1;
  } catch (const Error& e) {
    std::printf("rank %d: %s\n", dist::rank(), e.what());
    std::fflush(stdout);
    return 3;  // non-zero: mpirun takes the job down
  }
}
