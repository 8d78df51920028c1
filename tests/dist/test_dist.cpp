// Collectives, the sampler and DistributedDataParallel, run on every rank of the job
// (tests/dist/CMakeLists.txt: 1, 2 and 3 ranks under mpirun).
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "ember/ember.h"

using namespace ember;

namespace {

int R() { return dist::rank(); }
int W() { return dist::world_size(); }

// Rank r's values for a collective test: distinct per rank and element.
Tensor rank_values(int r, int64_t n, DType dt) {
  Tensor t = arange(0, static_cast<double>(n), 1.0, DType::f64) * 0.5 + static_cast<double>(3 * r + 1);
  return to_dtype(t, dt);
}

std::shared_ptr<nn::Sequential> mlp(uint64_t seed) {
  Generator g(seed);
  auto m = std::make_shared<nn::Sequential>();
  m->add(std::make_shared<nn::Linear>(6, 16, true, &g))
      .add(std::make_shared<nn::Tanh>())
      .add(std::make_shared<nn::Linear>(16, 12, true, &g))
      .add(std::make_shared<nn::Tanh>())
      .add(std::make_shared<nn::Linear>(12, 3, true, &g));
  return m;
}

// The global batch every rank can rebuild; rank r trains on rows [r B, (r + 1) B).
struct Batch {
  Tensor x, y;
};
Batch global_batch(int64_t rows, int step) {
  Generator g(1000 + static_cast<uint64_t>(step));
  Tensor x = randn({rows, 6}, DType::f32, &g);
  Tensor y = randint(0, 3, {rows}, DType::i64, &g);
  return {x, y};
}

// Two sequence models: conv1d -> relu -> mean over time -> linear, and LSTM -> last step -> linear.
struct ConvNet : nn::Module {
  explicit ConvNet(uint64_t seed) {
    Generator g(seed);
    conv = register_module("conv", std::make_shared<nn::Conv1d>(3, 5, 3, nn::Conv1dOptions{.padding = 1}, &g));
    fc = register_module("fc", std::make_shared<nn::Linear>(5, 3, true, &g));
  }
  Tensor forward(const Tensor& x) { return fc->forward(mean(relu(conv->forward(x)), {2})); }
  std::shared_ptr<nn::Conv1d> conv;
  std::shared_ptr<nn::Linear> fc;
};
struct LstmNet : nn::Module {
  explicit LstmNet(uint64_t seed) {
    Generator g(seed);
    lstm = register_module("lstm", std::make_shared<nn::LSTM>(
                                       nn::RNNOptions{.input_size = 3, .hidden_size = 6, .batch_first = true}, &g));
    fc = register_module("fc", std::make_shared<nn::Linear>(6, 3, true, &g));
  }
  Tensor forward(const Tensor& x) {
    const Tensor out = lstm->forward(x).output;  // (N, T, H)
    return fc->forward(out.select(1, out.size(1) - 1));
  }
  std::shared_ptr<nn::LSTM> lstm;
  std::shared_ptr<nn::Linear> fc;
};
Batch sequence_batch(int64_t rows, int step, Shape shape) {
  Generator g(2000 + static_cast<uint64_t>(step));
  Tensor x = randn(shape, DType::f32, &g);
  Tensor y = randint(0, 3, {rows}, DType::i64, &g);
  return {x, y};
}

// DDP on W ranks, each on its B rows of a global batch, against one process on all W B rows
// (same initial parameters: DDP broadcasts rank 0's, so the others start from different ones
// on purpose): 5 SGD-with-momentum steps, then every parameter matches the reference within f32
// rounding of the reduction order and is bit-identical across ranks.
template <class Make, class Data>
void check_ddp_equivalence(Make make, Data data) {
  const int64_t B = 4;  // rows per rank
  auto ref = make(42);
  auto model = make(42 + static_cast<uint64_t>(R()));
  nn::DistributedDataParallel ddp(*model, {.bucket_cap_mb = 0.0005, .first_bucket_mb = 0.0002});
  CHECK(ddp.num_buckets() > 1);
  optim::SGD opt(model->parameters(), {.lr = 0.5, .momentum = 0.9});
  optim::SGD ref_opt(ref->parameters(), {.lr = 0.5, .momentum = 0.9});
  for (int step = 0; step < 5; ++step) {
    const Batch all = data(B * W(), step);
    opt.zero_grad();
    nn::cross_entropy(model->forward(all.x.narrow(0, R() * B, B)), all.y.narrow(0, R() * B, B)).backward();
    opt.step();
    ref_opt.zero_grad();
    nn::cross_entropy(ref->forward(all.x), all.y).backward();
    ref_opt.step();
    const nn::DDPStats& st = ddp.last_stats();
    CHECK(st.buckets == ddp.num_buckets());
    REQUIRE(!st.bucket_started.empty());
    CHECK(st.bucket_started.front() <= st.backward_finished);  // the first bucket went out during backward
  }
  const auto mine = model->named_parameters(), want = ref->named_parameters();
  REQUIRE(mine.size() == want.size());
  for (size_t i = 0; i < mine.size(); ++i) {
    CAPTURE(mine[i].first);
    CHECK(allclose(mine[i].second, want[i].second, 1e-4, 1e-5));
    const std::vector<Tensor> every = dist::all_gather(mine[i].second);
    for (const Tensor& t : every) CHECK(equal(t, every.front()));  // bit-identical across ranks
  }
}

}  // namespace

TEST_SUITE("dist") {
  TEST_CASE("the job: rank, world, and init twice is an error") {
    CHECK(dist::is_initialized());
    CHECK(R() >= 0);
    CHECK(R() < W());
    CHECK(dist::local_rank() >= 0);
    CHECK_THROWS_WITH_AS(dist::init(), doctest::Contains("called twice"), Error);
    MESSAGE("rank " << R() << " of " << W());
  }

  TEST_CASE("all_reduce: every op and dtype, sizes that do not divide by the world") {
    for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64, DType::f16, DType::bf16}) {
      for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{13}, int64_t{1000}}) {
        for (dist::ReduceOp op : {dist::ReduceOp::sum, dist::ReduceOp::avg, dist::ReduceOp::max, dist::ReduceOp::min}) {
          if (op == dist::ReduceOp::avg && !is_floating(dt)) continue;
          CAPTURE(dt);
          CAPTURE(n);
          CAPTURE(dist::reduce_op_name(op));
          Tensor t = rank_values(R(), n, dt);
          dist::all_reduce(t, op);
          Tensor want = to_dtype(rank_values(0, n, dt), DType::f64);
          for (int r = 1; r < W(); ++r) {
            const Tensor v = to_dtype(rank_values(r, n, dt), DType::f64);
            if (op == dist::ReduceOp::sum || op == dist::ReduceOp::avg) want = want + v;
            else if (op == dist::ReduceOp::max) want = maximum(want, v);
            else want = minimum(want, v);
          }
          if (op == dist::ReduceOp::avg) want = want * (1.0 / W());
          CHECK(t.dtype() == dt);
          const double tol = dt == DType::bf16 ? 2e-2 : dt == DType::f16 ? 2e-3 : 1e-6;
          CHECK(allclose(to_dtype(t, DType::f64), to_dtype(to_dtype(want, dt), DType::f64), tol, tol));
        }
      }
    }
    // bool: max is "any", min is "all"
    Tensor b = from_vector(std::vector<bool>{R() == 0, true, false}, {3});
    Tensor any = b.clone(), all = b.clone();
    dist::all_reduce(any, dist::ReduceOp::max);
    dist::all_reduce(all, dist::ReduceOp::min);
    CHECK(any.to_vector<bool>() == std::vector<bool>{true, true, false});
    CHECK(all.to_vector<bool>() == std::vector<bool>{W() == 1, true, false});
  }

  TEST_CASE("all_reduce on the stand-in device and on a strided view") {
    Tensor t = rank_values(R(), 6, DType::f32).to(Device("fake:0"));
    dist::all_reduce(t, dist::ReduceOp::sum);
    CHECK(t.device() == Device("fake:0"));
    Tensor base = zeros({4, 6});
    Tensor col = base.select(1, 2);  // strided: staged and copied back
    col.copy_(full({4}, static_cast<double>(R() + 1)));
    dist::all_reduce(col, dist::ReduceOp::sum);
    const double want = W() * (W() + 1) / 2.0;
    CHECK(base.select(1, 2).to_vector<float>() == std::vector<float>(4, static_cast<float>(want)));
    CHECK(sum(base).item<double>() == doctest::Approx(4 * want));  // the other columns untouched
  }

  TEST_CASE("async all_reduce, broadcast, all_gather, reduce_scatter") {
    Tensor a = rank_values(R(), 5, DType::f32);
    dist::Work w = dist::all_reduce_async(a, dist::ReduceOp::sum);
    w.wait();
    CHECK(w.is_completed());
    double s = 0;
    for (int r = 0; r < W(); ++r) s += 3 * r + 1;
    CHECK(a.to_vector<float>()[0] == doctest::Approx(s));

    Tensor b = rank_values(R(), 4, DType::i64);
    dist::broadcast(b, W() - 1);
    CHECK(equal(b, rank_values(W() - 1, 4, DType::i64)));

    const std::vector<Tensor> g = dist::all_gather(rank_values(R(), 3, DType::f64).reshape({3, 1}));
    REQUIRE(static_cast<int>(g.size()) == W());
    for (int r = 0; r < W(); ++r) CHECK(equal(g[static_cast<size_t>(r)], rank_values(r, 3, DType::f64).reshape({3, 1})));

    // 7 rows of 2 over the world: the first (7 % W) ranks get one row more.
    Tensor rows = rank_values(R(), 14, DType::f32).reshape({7, 2});
    Tensor mine = dist::reduce_scatter(rows, dist::ReduceOp::sum);
    const std::vector<int64_t> split = dist::split_rows(7, W());
    int64_t start = 0;
    for (int r = 0; r < R(); ++r) start += split[static_cast<size_t>(r)];
    CHECK(mine.size(0) == split[static_cast<size_t>(R())]);
    Tensor want = zeros({7, 2});
    for (int r = 0; r < W(); ++r) want = want + rank_values(r, 14, DType::f32).reshape({7, 2});
    CHECK(allclose(mine, want.narrow(0, start, mine.size(0))));

    // The async forms fill their outputs at completion; `then` runs after that, once.
    std::vector<Tensor> g2;
    Tensor mine2;
    int thens = 0;
    dist::Work wg = dist::all_gather_async(rank_values(R(), 3, DType::bf16), g2);
    dist::Work wr = dist::reduce_scatter_async(rows, mine2, dist::ReduceOp::avg);
    wr.then([&] { thens += mine2.defined() ? 1 : 100; });
    wg.wait();
    wr.wait();
    wr.wait();
    CHECK(thens == 1);
    REQUIRE(static_cast<int>(g2.size()) == W());
    for (int r = 0; r < W(); ++r) CHECK(equal(g2[static_cast<size_t>(r)], rank_values(r, 3, DType::bf16)));
    CHECK(allclose(mine2, want.narrow(0, start, mine.size(0)) * (1.0 / W()), 1e-5, 1e-6));
    wr.then([&] { ++thens; });  // already complete: runs at once
    CHECK(thens == 2);
  }

  TEST_CASE("tensors that differ across ranks are an error on every rank, not a hang") {
    if (W() == 1) return;
    Tensor t = zeros({R() == 0 ? 3 : 4});
    CHECK_THROWS_WITH_AS(dist::all_reduce(t), doctest::Contains("differ across ranks"), Error);
    Tensor ok = ones({2});
    dist::all_reduce(ok);  // the job goes on
    CHECK(ok.to_vector<float>()[0] == static_cast<float>(W()));
  }

  TEST_CASE("DistributedSampler: equal shards that cover the data set, reshuffled by epoch") {
    for (int world : {1, 2, 3}) {
      std::multiset<int64_t> seen;
      int64_t per = -1;
      for (int r = 0; r < world; ++r) {
        dist::DistributedSampler s(10, true, 7, r, world);
        s.set_epoch(3);
        const auto idx = s.indices();
        if (per < 0) per = static_cast<int64_t>(idx.size());
        CHECK(static_cast<int64_t>(idx.size()) == per);
        seen.insert(idx.begin(), idx.end());
      }
      for (int64_t i = 0; i < 10; ++i) CHECK(seen.count(i) >= 1);
      CHECK(static_cast<int64_t>(seen.size()) == per * world);
    }
    // A start position is a count of samples, the same for every world size: the 2-rank run's
    // first 8 positions, then any world from position 8 on, cover the epoch exactly once
    // (before padding).
    std::vector<int64_t> first;
    for (int64_t k = 0; k < 4; ++k)
      for (int r = 0; r < 2; ++r) {
        dist::DistributedSampler s(20, true, 4, r, 2);
        first.push_back(s.indices()[static_cast<size_t>(k)]);
      }
    for (int world : {1, 2, 3}) {
      CAPTURE(world);
      std::multiset<int64_t> seen(first.begin(), first.end());
      for (int r = 0; r < world; ++r) {
        dist::DistributedSampler s(20, true, 4, r, world);
        s.set_start(8);
        CHECK(s.num_samples() == (12 + world - 1) / world);
        const auto idx = s.indices();
        seen.insert(idx.begin(), idx.end());
      }
      std::set<int64_t> distinct(seen.begin(), seen.end());
      CHECK(distinct.size() == 20u);
      CHECK(static_cast<int64_t>(seen.size()) == 8 + (12 + world - 1) / world * world);  // padding only
    }
    dist::DistributedSampler bad(20);
    CHECK_THROWS_WITH_AS(bad.set_start(21), doctest::Contains("outside the epoch"), Error);
    dist::DistributedSampler a(50, true, 1, 0, 1), b(50, true, 1, 0, 1);
    b.set_epoch(1);
    CHECK(a.indices() != b.indices());
  }

  TEST_CASE("DDP: W ranks on shards give the parameters of one process on the whole batch") {
    SUBCASE("MLP") {
      check_ddp_equivalence([](uint64_t seed) { return mlp(seed); },
                            [](int64_t rows, int step) { return global_batch(rows, step); });
    }
    SUBCASE("conv1d model") {
      check_ddp_equivalence([](uint64_t seed) { return std::make_shared<ConvNet>(seed); },
                            [](int64_t rows, int step) { return sequence_batch(rows, step, {rows, 3, 10}); });
    }
    SUBCASE("LSTM model") {
      check_ddp_equivalence([](uint64_t seed) { return std::make_shared<LstmNet>(seed); },
                            [](int64_t rows, int step) { return sequence_batch(rows, step, {rows, 7, 3}); });
    }
  }

  TEST_CASE("DDP: the first bucket's all-reduce starts before backward ends") {
    auto model = mlp(5);
    nn::DistributedDataParallel ddp(*model, {.bucket_cap_mb = 0.0005, .first_bucket_mb = 0.0002});
    const Batch all = global_batch(8, 0);
    nn::cross_entropy(model->forward(all.x), all.y).backward();
    const nn::DDPStats& st = ddp.last_stats();
    REQUIRE(st.bucket_started.size() == static_cast<size_t>(ddp.num_buckets()));
    // The last layer's gradients are final first: its bucket starts before the first layer's
    // gradient is computed, i.e. strictly before the backward pass ends.
    CHECK(st.bucket_started.front() < st.backward_finished);
    CHECK(ddp.bucket_layout().front().front() == model->named_parameters().back().first);
  }

  TEST_CASE("DDP: no_sync accumulates locally; the next backward averages the sum") {
    auto model = mlp(6), ref = mlp(6);
    nn::DistributedDataParallel ddp(*model);
    const Batch a = global_batch(2 * W(), 1), b = global_batch(2 * W(), 2);
    {
      auto guard = ddp.no_sync();
      nn::cross_entropy(model->forward(a.x.narrow(0, 2 * R(), 2)), a.y.narrow(0, 2 * R(), 2)).backward();
    }
    nn::cross_entropy(model->forward(b.x.narrow(0, 2 * R(), 2)), b.y.narrow(0, 2 * R(), 2)).backward();
    // Reference: the mean over ranks of each rank's two-batch sum.
    for (int r = 0; r < W(); ++r) {
      nn::cross_entropy(ref->forward(a.x.narrow(0, 2 * r, 2)), a.y.narrow(0, 2 * r, 2)).backward();
      nn::cross_entropy(ref->forward(b.x.narrow(0, 2 * r, 2)), b.y.narrow(0, 2 * r, 2)).backward();
    }
    const auto mine = model->parameters(), want = ref->parameters();
    for (size_t i = 0; i < mine.size(); ++i) CHECK(allclose(mine[i].grad(), want[i].grad() * (1.0 / W()), 1e-4, 1e-6));
  }

  TEST_CASE("DDP: an unused parameter is an error naming it, or a zero gradient with find_unused_parameters") {
    Generator g(8);
    auto used = std::make_shared<nn::Linear>(4, 2, true, &g);
    auto unused = std::make_shared<nn::Linear>(4, 2, true, &g);
    nn::Sequential model;
    model.add(used).add(unused);  // forward below calls only `used`
    {
      nn::DistributedDataParallel ddp(model);
      CHECK_THROWS_WITH_AS(sum(used->forward(ones({3, 4}))).backward(), doctest::Contains("1.weight"), Error);
    }
    model.zero_grad();
    nn::DistributedDataParallel ddp(model, {.find_unused_parameters = true});
    sum(used->forward(ones({3, 4}))).backward();
    CHECK(unused->weight.grad().defined());
    CHECK(sum(abs(unused->weight.grad())).item<double>() == 0.0);
    CHECK(sum(abs(used->weight.grad())).item<double>() > 0.0);
  }

  TEST_CASE("GradScaler under DDP: an overflow on one rank skips the step on every rank") {
    auto model = mlp(9);
    nn::DistributedDataParallel ddp(*model);
    optim::SGD opt(model->parameters(), {.lr = 0.1});
    amp::GradScaler scaler({.init_scale = 256.0});
    const Batch all = global_batch(2 * W(), 3);
    scaler.scale(nn::cross_entropy(model->forward(all.x.narrow(0, 2 * R(), 2)), all.y.narrow(0, 2 * R(), 2)))
        .backward();
    if (R() == W() - 1) {
      Tensor gw = model->parameters().front().grad();
      Tensor bad = gw.clone();
      bad.data<float>()[0] = INFINITY;
      gw.copy_(bad);
    }
    const Tensor before = model->parameters().front().clone();
    CHECK(!scaler.step(opt));
    CHECK(equal(model->parameters().front(), before));
    scaler.update();
    CHECK(scaler.get_scale() == 128.0);
  }

  TEST_CASE("DDP inside a captured training step: replays equal eager steps, bit for bit, on every rank") {
    // The stand-in device records the bucket all-reduces with the kernels; every replay runs
    // them over MPI at the same point of the step. Without that the ranks' parameters would
    // drift apart (each trains on its own shard), which the last check would see.
    const Device dev("fake:0");
    const int64_t B = 4;
    auto train = [&](bool graph) {
      auto model = mlp(42 + static_cast<uint64_t>(R()));  // DDP broadcasts rank 0's weights
      model->to(dev);
      nn::DistributedDataParallel ddp(*model, {.bucket_cap_mb = 0.0005, .first_bucket_mb = 0.0002});
      REQUIRE(ddp.num_buckets() > 1);
      optim::AdamW opt(model->parameters(), {.lr = 0.01});
      Tensor x = zeros({B, 6}, TensorOptions(DType::f32).with_device(dev));
      Tensor y = zeros({B}, TensorOptions(DType::i64).with_device(dev));
      auto step = [&] {
        opt.zero_grad();
        nn::cross_entropy(model->forward(x), y).backward();
        opt.step();
      };
      std::unique_ptr<cuda::StepGraph> g;
      if (graph) g = std::make_unique<cuda::StepGraph>(dev, step, cuda::StepGraphOptions{2, {&x, &y}});
      for (int s = 0; s < 6; ++s) {
        const Batch all = global_batch(B * W(), s);
        x.copy_(all.x.narrow(0, R() * B, B));
        y.copy_(all.y.narrow(0, R() * B, B));
        if (g) g->run();
        else step();
      }
      if (g) CHECK(g->replays() == 4);  // 2 warm-up runs, then capture + replay, then replays
      std::vector<Tensor> out;
      for (const Tensor& p : model->parameters()) out.push_back(p.to(Device::cpu()));
      return out;
    };
    const std::vector<Tensor> eager = train(false), replayed = train(true);
    REQUIRE(eager.size() == replayed.size());
    for (size_t i = 0; i < eager.size(); ++i) {
      CAPTURE(i);
      CHECK(equal(replayed[i], eager[i]));
      const std::vector<Tensor> every = dist::all_gather(replayed[i]);
      for (const Tensor& t : every) CHECK(equal(t, every.front()));  // the replays all-reduced
    }
  }

  TEST_CASE("GradScaler under DDP inside a captured step: an overflow on one rank skips the replay on every rank") {
    // `gain` (a static input) is 1, except on the last rank at step 3, where it is inf: that
    // rank's gradients overflow; the captured all-reduce of the scaler's flag makes every rank
    // skip the step, so the ranks stay equal and the scale halves once.
    const Device dev("fake:0");
    auto train = [&](bool graph, double* final_scale) {
      auto model = mlp(11);
      model->to(dev);
      nn::DistributedDataParallel ddp(*model);
      optim::SGD opt(model->parameters(), {.lr = 0.1});
      amp::GradScaler scaler({.init_scale = 256.0, .growth_interval = 1000});
      Tensor x = zeros({2, 6}, TensorOptions(DType::f32).with_device(dev));
      Tensor y = zeros({2}, TensorOptions(DType::i64).with_device(dev));
      Tensor gain = ones({1}, TensorOptions(DType::f32).with_device(dev));
      auto step = [&] {
        opt.zero_grad();
        scaler.scale(nn::cross_entropy(model->forward(x * gain), y)).backward();
        scaler.step(opt);
        scaler.update();
      };
      std::unique_ptr<cuda::StepGraph> g;
      if (graph) g = std::make_unique<cuda::StepGraph>(dev, step, cuda::StepGraphOptions{1, {&x, &y, &gain}});
      for (int s = 0; s < 5; ++s) {
        const Batch all = global_batch(2 * W(), 20 + s);
        x.copy_(all.x.narrow(0, 2 * R(), 2));
        y.copy_(all.y.narrow(0, 2 * R(), 2));
        gain.fill_(s == 3 && R() == W() - 1 ? INFINITY : 1.0);
        if (g) g->run();
        else step();
      }
      *final_scale = scaler.get_scale();
      std::vector<Tensor> out;
      for (const Tensor& p : model->parameters()) out.push_back(p.to(Device::cpu()));
      return out;
    };
    double eager_scale = 0, graph_scale = 0;
    const std::vector<Tensor> eager = train(false, &eager_scale), replayed = train(true, &graph_scale);
    CHECK(eager_scale == 128.0);
    CHECK(graph_scale == 128.0);
    for (size_t i = 0; i < eager.size(); ++i) {
      CAPTURE(i);
      CHECK(equal(replayed[i], eager[i]));
      CHECK(std::isfinite(sum(replayed[i]).item<double>()));
      const std::vector<Tensor> every = dist::all_gather(replayed[i]);
      for (const Tensor& t : every) CHECK(equal(t, every.front()));
    }
  }

  TEST_CASE("inside a capture: other collectives, and an all-reduce off the capture's device, are errors") {
    const Device dev("fake:0");
    Tensor t = ones({3}, TensorOptions(DType::f32).with_device(dev));
    Tensor host = ones({3});
    cuda::Graph g;
    CHECK_THROWS_WITH_AS(g.capture(dev, [&] { dist::broadcast(t, 0); }),
                         doctest::Contains("only all-reduces can be captured"), Error);
    std::vector<Tensor> parts;
    CHECK_THROWS_WITH_AS(g.capture(dev, [&] { dist::all_gather_async(t, parts); }),
                         doctest::Contains("dist.all_gather"), Error);
    CHECK_THROWS_WITH_AS(g.capture(dev, [&] { dist::all_reduce(host, dist::ReduceOp::sum); }),
                         doctest::Contains("must be on the capture's device"), Error);
    CHECK(!g.captured());
    // A captured all-reduce of the stand-in device's tensor: each replay sums over the ranks.
    g.capture(dev, [&] { dist::all_reduce(t, dist::ReduceOp::sum); });
    CHECK(sum(t).item<double>() == 3.0);  // nothing ran at capture
    g.replay();
    CHECK(sum(t).item<double>() == 3.0 * W());
    g.replay();
    CHECK(sum(t).item<double>() == 3.0 * W() * W());
  }

  TEST_CASE("NCCL: every collective's CUDA path against the CPU (a world of 1 on a GPU)") {
    // Two ranks cannot share one GPU under NCCL, so on a one-GPU machine this is the NCCL path
    // with a world of 1: the communicator, stream ordering, staging and every collective.
    if (!cuda::is_available() || W() != 1) {
      MESSAGE("skipped: needs a GPU and a world of 1");
      return;
    }
    std::string why;
    const bool nccl = dist::nccl_available(&why);
    MESSAGE("NCCL: " << (nccl ? std::string("available") : why));
    CHECK(nccl);  // the GPU machines ship NCCL; without it the CUDA path below is not NCCL's
    const Device gpu = Device::cuda(0);
    for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::i64}) {
      CAPTURE(dtype_name(dt));
      const Tensor host = rank_values(0, 37, dt);
      for (dist::ReduceOp op : {dist::ReduceOp::sum, dist::ReduceOp::max, dist::ReduceOp::min}) {
        Tensor t = host.to(gpu) * 1;  // made by a kernel on the compute stream just before
        dist::all_reduce(t, op);
        CHECK(equal(t.to(Device::cpu()), host));
      }
    }
    Tensor m = rank_values(0, 24, DType::f32).reshape({4, 6}).to(gpu);
    Tensor strided = m.transpose(0, 1);
    dist::all_reduce(strided, dist::ReduceOp::avg);
    CHECK(equal(m.to(Device::cpu()), rank_values(0, 24, DType::f32).reshape({4, 6})));
    Tensor flags = from_vector<bool>({true, false, true}, {3}, DType::boolean).to(gpu);
    dist::all_reduce(flags, dist::ReduceOp::max);
    CHECK(flags.to(Device::cpu()).to_vector<bool>() == std::vector<bool>{true, false, true});
    Tensor b = rank_values(0, 10, DType::f32).to(gpu);
    dist::broadcast_async(b, 0).wait();
    CHECK(equal(b.to(Device::cpu()), rank_values(0, 10, DType::f32)));
    const std::vector<Tensor> g = dist::all_gather(m);
    REQUIRE(g.size() == 1);
    CHECK(g[0].device() == gpu);
    CHECK(equal(g[0].to(Device::cpu()), m.to(Device::cpu())));
    const Tensor rs = dist::reduce_scatter(m, dist::ReduceOp::sum);
    CHECK(equal(rs.to(Device::cpu()), m.to(Device::cpu())));
    std::vector<Tensor> ga;
    Tensor rsa;
    dist::Work w1 = dist::all_gather_async(m, ga), w2 = dist::reduce_scatter_async(m, rsa, dist::ReduceOp::max);
    w1.wait();
    w2.wait();
    REQUIRE(ga.size() == 1);
    CHECK(equal(ga[0].to(Device::cpu()), m.to(Device::cpu())));
    CHECK(equal(rsa.to(Device::cpu()), m.to(Device::cpu())));
    // DDP on the GPU: the bucket all-reduces go through NCCL; one rank's average is its gradient.
    auto model = mlp(3), ref = mlp(3);
    model->to(gpu);
    nn::DistributedDataParallel ddp(*model);
    const Batch all = global_batch(8, 0);
    nn::cross_entropy(model->forward(all.x.to(gpu)), all.y.to(gpu)).backward();
    nn::cross_entropy(ref->forward(all.x), all.y).backward();
    const auto mine = model->parameters(), want = ref->parameters();
    for (size_t i = 0; i < mine.size(); ++i) CHECK(allclose(mine[i].grad().to(Device::cpu()), want[i].grad(), 1e-4, 1e-5));
    // DDP inside a CUDA graph: the NCCL all-reduces are captured; replays equal eager steps.
    auto train = [&](bool graph) {
      auto net = mlp(4);
      net->to(gpu);
      nn::DistributedDataParallel d(*net, {.bucket_cap_mb = 0.0005, .first_bucket_mb = 0.0002});
      optim::AdamW opt(net->parameters(), {.lr = 0.01});
      Tensor x = zeros({8, 6}, TensorOptions(DType::f32).with_device(gpu));
      Tensor y = zeros({8}, TensorOptions(DType::i64).with_device(gpu));
      auto step = [&] {
        opt.zero_grad();
        nn::cross_entropy(net->forward(x), y).backward();
        opt.step();
      };
      std::unique_ptr<cuda::StepGraph> g;
      if (graph) g = std::make_unique<cuda::StepGraph>(gpu, step, cuda::StepGraphOptions{2, {&x, &y}});
      for (int s = 0; s < 5; ++s) {
        const Batch bt = global_batch(8, s);
        x.copy_(bt.x);
        y.copy_(bt.y);
        if (g) g->run();
        else step();
      }
      std::vector<Tensor> out;
      for (const Tensor& p : net->parameters()) out.push_back(p.to(Device::cpu()));
      return out;
    };
    const std::vector<Tensor> eager = train(false), replayed = train(true);
    for (size_t i = 0; i < eager.size(); ++i) CHECK(equal(replayed[i], eager[i]));
  }
}
