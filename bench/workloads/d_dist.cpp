// Data-parallel workloads (WORKLOADS.md): D1_allreduce (bus bandwidth of the MPI all-reduce over
// message sizes) and D2_ddp_mlp (W1_mlp under DistributedDataParallel, 2 ranks x 1 thread on
// half the batch each) with its baseline D2_ddp_mlp_1rank (1 process x 1 thread on half the
// batch). ember-bench starts the 2-rank ones under mpirun (bench/ember_bench.cpp).
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bench_util.h"
#include "ember/ember.h"

namespace {

using bench::Instance;

// W1_mlp's model and data with `rows` rows (the first rows of W1's batch of 256).
struct Mlp {
  std::shared_ptr<ember::nn::Sequential> model;
  ember::Tensor x, y;
};
Mlp w1_mlp(int64_t rows) {
  using namespace ember;
  Generator gen(bench::kSeed);
  Mlp m;
  m.model = std::make_shared<nn::Sequential>();
  m.model->add(std::make_shared<nn::Linear>(784, 512, true, &gen)).add(std::make_shared<nn::ReLU>());
  m.model->add(std::make_shared<nn::Linear>(512, 512, true, &gen)).add(std::make_shared<nn::ReLU>());
  m.model->add(std::make_shared<nn::Linear>(512, 10, true, &gen));
  const Tensor x = randn({256, 784}, {}, &gen), y = randint(0, 10, {256}, DType::i64, &gen);
  const int64_t first = dist::rank() * rows;  // rank r: rows [r rows, (r + 1) rows)
  m.x = x.narrow(0, first, rows).contiguous();
  m.y = y.narrow(0, first, rows).contiguous();
  return m;
}

Instance mlp_step(int64_t rows, bool ddp) {
  using namespace ember;
  auto m = std::make_shared<Mlp>(w1_mlp(rows));
  std::shared_ptr<nn::DistributedDataParallel> wrap;
  if (ddp) wrap = std::make_shared<nn::DistributedDataParallel>(*m->model);
  optim::SGDOptions sgd;
  sgd.lr = 0.01;
  auto opt = std::make_shared<optim::SGD>(m->model->parameters(), sgd);
  auto last = std::make_shared<Tensor>();
  Instance w;
  w.step = [m, wrap, opt, last] {
    Tensor loss = nn::cross_entropy(m->model->forward(m->x), m->y);
    loss.backward();  // under DDP: bucket all-reduces overlap the rest of backward
    opt->step();
    opt->zero_grad();
    *last = loss.detach();
  };
  w.last_loss = [last] { return last->defined() ? static_cast<double>(last->item<float>()) : NAN; };
  return w;
}

// Sizes 4 KiB .. 64 MiB by factors of 4; the timed step is the 64 MiB all-reduce, the notes
// give every size's median time and bus bandwidth (nccl-tests' definition for all-reduce:
// bytes / time * 2 (W - 1) / W).
Instance make_d1() {
  using namespace ember;
  const int W = dist::world_size();
  const double factor = 2.0 * (W - 1) / W;
  auto notes = std::make_shared<std::vector<std::string>>();
  for (int64_t bytes = 4 << 10; bytes <= (64 << 20); bytes *= 4) {
    Tensor t = ones({bytes / 4});
    const int steps = bytes <= (1 << 20) ? 200 : 20;
    const bench::Stats s = bench::time_steps([&] { dist::all_reduce(t); }, bench::kWarmupSteps, steps);
    const double gbs = static_cast<double>(bytes) / (s.median_ms * 1e-3) * factor / 1e9;
    char line[160];
    std::snprintf(line, sizeof line, "D1_allreduce %2d ranks %8lld KiB  median %9.3f ms  bus bandwidth %7.2f GB/s", W,
                  static_cast<long long>(bytes >> 10), s.median_ms, gbs);
    notes->push_back(line);
  }
  auto big = std::make_shared<Tensor>(ones({(64 << 20) / 4}));
  Instance w;
  w.step = [big] { dist::all_reduce(*big); };
  w.last_loss = [] { return NAN; };
  w.notes = [notes] { return *notes; };
  return w;
}

const bench::Register d1("D1_allreduce", "MPI all-reduce (sum, f32) over 4 KiB-64 MiB, 2 ranks; timed: 64 MiB",
                         make_d1, /*ranks=*/2, /*threads=*/1);
const bench::Register d2("D2_ddp_mlp", "W1_mlp under DDP, 2 ranks x 1 thread, 128 rows each",
                         [] { return mlp_step(128, true); }, /*ranks=*/2, /*threads=*/1);
const bench::Register d2_base("D2_ddp_mlp_1rank", "D2's baseline: W1_mlp, 1 process x 1 thread, 128 rows",
                              [] { return mlp_step(128, false); }, /*ranks=*/1, /*threads=*/1);

}  // namespace
