// Faults: a rank stops taking part in the middle of a DDP training step, and every other rank
// must end with the timeout error, never hang. `hang`: the last rank sleeps past the job's
// timeout instead of running backward; `exit`: the last rank's process ends there (a crash, an
// OOM kill). CTest ember.dist_timeout / ember.dist_rank_exit pass on the survivors' message.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "ember/ember.h"

int main(int argc, char** argv) {
  using namespace ember;
  const bool exit_mode = argc > 1 && std::strcmp(argv[1], "exit") == 0;
  dist::init({.timeout = 2.0});
  Generator g(1);
  nn::Sequential model;
  model.add(std::make_shared<nn::Linear>(8, 8, true, &g)).add(std::make_shared<nn::Tanh>());
  model.add(std::make_shared<nn::Linear>(8, 2, true, &g));
  try {
    nn::DistributedDataParallel ddp(model);  // a first collective every rank joins
    Tensor loss = sum(model.forward(randn({4, 8}, DType::f32, &g)));
    if (dist::rank() == dist::world_size() - 1) {
      std::printf("rank %d: leaving mid-step (%s)\n", dist::rank(), exit_mode ? "exit" : "hang");
      std::fflush(stdout);
      if (exit_mode) std::_Exit(0);
      std::this_thread::sleep_for(std::chrono::seconds(20));  // a hung rank; mpirun ends it
      return 0;
    }
    loss.backward();  // the gradient all-reduces wait for the missing rank
    std::printf("rank %d: the step completed without the missing rank\n", dist::rank());
    return 1;
  } catch (const Error& e) {
    std::printf("rank %d: %s\n", dist::rank(), e.what());
    std::fflush(stdout);
    return 3;  // non-zero: mpirun takes the job down
  }
}
