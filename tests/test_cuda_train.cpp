// Autograd and training on the device under test (cuda:0 on a GPU machine, the stand-in fake:0
// everywhere else; tests/device_util.h) against the CPU: backward formulas make their gradients
// on the input's device (and the engine rejects one that does not), gradients of small graphs,
// gradients across device copies, Module::to(device) moving parameters in place and a few SGD
// steps matching the CPU, and random streams giving the same numbers on both devices.
#include <doctest/doctest.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "device_util.h"
#include "op_harness.h"
#include "test_util.h"

using namespace ember;
using V = std::vector<Tensor>;

namespace {

using namespace ember_test::device;

// Runs loss_fn on both sets of leaves, backward, and compares loss and every leaf's .grad().
void check_grads(const std::string& what, DType dt, Leaves& l, const std::function<Tensor(const V&)>& loss_fn) {
  const Tol tol = grad_tol(dt);
  Tensor loss_cpu = loss_fn(l.cpu);
  Tensor loss_dev = loss_fn(l.dev);
  check_matches(what + ": loss", loss_dev, loss_cpu, tol);
  loss_cpu.backward();
  loss_dev.backward();
  for (size_t i = 0; i < l.cpu.size(); ++i) {
    if (!l.cpu[i].requires_grad()) continue;
    const std::string ctx = what + ": grad of leaf " + std::to_string(i);
    REQUIRE_MESSAGE(l.cpu[i].grad().defined(), ctx << " missing on the CPU");
    REQUIRE_MESSAGE(l.dev[i].grad().defined(), ctx << " missing on CUDA");
    check_matches(ctx, l.dev[i].grad(), l.cpu[i].grad(), tol);
  }
}

}  // namespace

TEST_SUITE("cuda_train") {
  // Every tensor a backward formula makes lives on its input's device; the engine checks each
  // gradient it routes against the device of the tensor it belongs to.
  TEST_CASE("backward formulas make their gradients on the input's device; the engine rejects one that does not") {
    PoisonGuard poison;
    Generator g(5);
    const Tensor v = randn({5, 7}, DType::f32, &g);
    const Tensor ids = from_vector<int64_t>({4, 0, 4}, {3});
    const std::vector<std::pair<std::string, std::function<Tensor(const Tensor&)>>> fns = {
        {"gather", [&](const Tensor& x) { return gather(x, 1, from_vector<int64_t>({1, 6, 0, 2, 2}, {5, 1}).to(x.device())); }},
        {"index_select", [&](const Tensor& x) { return index_select(x, 0, ids.to(x.device())); }},
        {"embedding", [&](const Tensor& x) { return embedding(x, ids.to(x.device())); }},
        {"slice", [](const Tensor& x) { return slice(x, 1, 1, 6, 2); }},
        {"select", [](const Tensor& x) { return select(x, 0, 3); }},
        {"narrow", [](const Tensor& x) { return x.narrow(0, 1, 2); }},
        {"max over a dim", [](const Tensor& x) { return max(x, 1).values; }},
        {"min over a dim", [](const Tensor& x) { return min(x, 0, true).values; }},
        {"amax", [](const Tensor& x) { return amax(x, {0}); }},
        {"scatter_add (source)", [&](const Tensor& x) {
           return scatter_add(zeros({5, 9}, on(x.device())), 1, from_vector<int64_t>({8, 0, 3, 3, 1, 2, 7}, {1, 7}).to(x.device()),
                              x.narrow(0, 0, 1));
         }},
        {"index_add (source)", [&](const Tensor& x) {
           return index_add(zeros({6, 7}, on(x.device())), 0, ids.to(x.device()), x.narrow(0, 0, 3));
         }},
        {"pad", [](const Tensor& x) { return pad(x, {2, 1}); }},
        {"split", [](const Tensor& x) { return split(x, 3, 1)[1]; }},
        {"to(cpu) and back", [](const Tensor& x) { return x.to(kCpu).to(x.device()) * 2.0; }},
    };
    for (const auto& [name, fn] : fns) {
      Tensor xc = v.clone().requires_grad_(true), xd = v.to(kCuda).requires_grad_(true);
      try {
        sum(fn(xc) * fn(xc)).backward();
        sum(fn(xd) * fn(xd)).backward();
        REQUIRE_MESSAGE(xd.grad().defined(), name << ": no gradient on the device");
        CHECK_MESSAGE(xd.grad().device() == kCuda, name << ": gradient on " << xd.grad().device());
        check_matches(name + " gradient", xd.grad(), xc.grad(), grad_tol(DType::f32));
      } catch (const std::exception& e) {
        FAIL_CHECK(name << " threw: " << e.what());
      }
    }
    // A backward formula that makes its result on the CPU is stopped by the engine, naming both.
    Tensor x = v.to(kCuda).requires_grad_(true);
    Tensor y = empty(x.shape(), on(kCuda));
    y.copy_(x.detach());
    record("cpu_grad_op", {x}, {y}, [](const std::vector<Tensor>& gs, const std::vector<Tensor>&, const std::vector<bool>&) {
      return std::vector<Tensor>{zeros(gs[0].shape())};  // the bug: no device
    });
    ember_test::check_error([&] { sum(y).backward(); }, "backward through cpu_grad_op", {"cpu_grad_op", "cpu", kCuda.str(), "wrong device"});
  }

  TEST_CASE("gradients on CUDA match the CPU") {
    PoisonGuard poison;
    for (DType dt : {DType::f32, DType::f64}) {
      const std::string n = dtype_name(dt);
      // A two-layer classifier: matmul + bias + relu + log_softmax + gather NLL.
      {
        Leaves l = make_leaves({{16, 37}, {37, 29}, {29}, {29, 11}, {11}}, dt, 7);
        l.cpu[0].requires_grad_(false);
        l.dev[0].requires_grad_(false);
        const Tensor labels = ember_test::random_index(11, {16, 1}, 8);
        check_grads(n + " classifier", dt, l, [&](const V& p) {
          const Tensor h = relu(matmul(p[0], p[1]) + p[2]);
          const Tensor lp = log_softmax(matmul(h, p[3]) + p[4], 1);
          return neg(mean(gather(lp, 1, labels.to(p[0].device()))));
        });
      }
      // Many ops in one graph, leaves used several times, transposed and broadcast operands.
      {
        Leaves l = make_leaves({{6, 7}, {7}, {6, 7}, {7, 5}}, dt, 9);
        const Tensor mask = ember_test::random_mask({6, 7}, 10);
        const Tensor idx = from_vector<int64_t>({5, 0, 2, 2}, {4});
        check_grads(n + " many ops", dt, l, [&](const V& p) {
          const Device dev = p[0].device();
          const Tensor a = p[0], b = p[1], c = p[2], w = p[3];
          Tensor y = tanh(a) * sigmoid(b) + silu(c) - gelu(a) * 0.5 + pow(abs(a) + 0.5, 1.5) / (exp(-abs(c)) + 1.0);
          y = y + where(mask.to(dev), a, c) + masked_fill(c, logical_not(mask.to(dev)), 0.5) + clamp(a, -0.5, 0.5);
          y = y + maximum(a, c) - minimum(a, b) + sqrt(abs(b) + 1.0) * log1p(abs(c));
          const Tensor z = cat({y, softmax(a, 0), log_softmax(c, 1)}, 1);  // (6, 21)
          const auto parts = split(z, 7, 1);
          Tensor s = sum(parts[0] * parts[1], {1}) + amax(parts[2], {1}) + var(a, {1}) + max(c, 1).values;
          s = s + sum(matmul(y, w), {1}) + sum(matmul(c.t(), y), {0}).narrow(0, 0, 6);
          s = s + sum(index_select(a, 0, idx.to(dev)), {1}).sum() + mean(pad(c, {1, 2}), {1});
          s = s + sum(bmm(stack({a, c}, 0), stack({w, w * 2.0}, 0)), {0, 2}) + prod(clamp(b, 0.5, 1.5), {}) * 0.1;
          return sum(s * s) / 100.0 + mean(expand(b, {6, 7}) * a.t().contiguous().t());
        });
      }
      // Embedding and scatter: gradients accumulate over repeated indices.
      {
        Leaves l = make_leaves({{13, 5}, {4, 6}}, dt, 11);
        const Tensor ids = from_vector<int64_t>({3, 3, 12, 0, 3, 7}, {2, 3});
        const Tensor sidx = ember_test::random_index(6, {4, 6}, 12);
        check_grads(n + " embedding and scatter_add", dt, l, [&](const V& p) {
          const Device dev = p[0].device();
          const Tensor e = embedding(p[0], ids.to(dev));  // (2, 3, 5)
          const Tensor s = scatter_add(zeros({4, 6}, on(dev, p[1].dtype())), 1, sidx.to(dev), p[1] * p[1]);
          return sum(e * e) + sum(s * s) + sum(index_add(p[1], 0, from_vector<int64_t>({1, 1}, {2}).to(dev), p[1].narrow(0, 0, 2)));
        });
      }
    }
    // copy_ from a device tensor that requires grad into a CPU tensor: the gradient flows back
    // to the device.
    {
      Generator g(14);
      const Tensor v = randn({4, 6}, DType::f32, &g);
      Tensor src = v.to(kCuda).requires_grad_(true);
      Tensor dst = zeros({4, 6});
      dst.copy_(src * 2.0);
      sum(dst * dst).backward();
      REQUIRE(src.grad().defined());
      CHECK(src.grad().device() == kCuda);
      check_matches("grad through a cross-device copy_", src.grad(), v * 8.0, grad_tol(DType::f32));
    }
    // A CPU leaf moved to CUDA: its gradient comes back to the CPU.
    {
      Generator g(13);
      const Tensor v = randn({7, 13}, DType::f32, &g);
      Tensor x_cpu = v.clone().requires_grad_(true), x_ref = v.clone().requires_grad_(true);
      sum(tanh(x_cpu.to(kCuda)) * 3.0).backward();
      sum(tanh(x_ref) * 3.0).backward();
      REQUIRE(x_cpu.grad().defined());
      CHECK(x_cpu.grad().device().is_cpu());
      check_matches("grad through to(cuda)", x_cpu.grad(), x_ref.grad(), grad_tol(DType::f32), false);
    }
  }

  TEST_CASE("Module::to(cuda) moves parameters in place; a training step matches the CPU") {
    PoisonGuard poison;
    auto build = [] {
      Generator g(21);
      auto m = std::make_shared<nn::Sequential>();
      m->add(std::make_shared<nn::Linear>(37, 29, true, &g)).add(std::make_shared<nn::ReLU>()).add(std::make_shared<nn::Linear>(29, 11, true, &g));
      return m;
    };
    auto cpu_model = build();
    auto dev_model = build();
    std::vector<Tensor> handles = dev_model->parameters();
    std::vector<std::shared_ptr<TensorImpl>> impls;
    for (const Tensor& p : handles) {
      impls.push_back(p.impl_ptr());
      p.set_grad(ones_like(p));
    }
    CHECK(&dev_model->to(kCuda) == dev_model.get());
    const auto cpu_params = cpu_model->parameters();
    for (size_t i = 0; i < handles.size(); ++i) {
      const std::string ctx = "parameter " + std::to_string(i);
      CHECK_MESSAGE(handles[i].impl_ptr() == impls[i], ctx << ": a new TensorImpl");
      CHECK_MESSAGE(handles[i].device() == kCuda, ctx << " is on " << handles[i].device());
      CHECK_MESSAGE(handles[i].requires_grad(), ctx << " lost requires_grad");
      if (kCuda.is_cuda()) CHECK_MESSAGE(!handles[i].grad().defined(), ctx << " kept its CPU gradient");
      CHECK(handles[i].is_leaf());
      check_same(ctx + " values", handles[i], cpu_params[i]);
    }
    // A few SGD steps on the same batch on both devices.
    Generator g(22);
    const Tensor x = randn({16, 37}, DType::f32, &g);
    const Tensor y = ember_test::random_index(11, {16}, 23);
    optim::SGD opt_cpu(cpu_model->parameters(), {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4});
    optim::SGD opt_dev(dev_model->parameters(), {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4});
    for (int step = 0; step < 3; ++step) {
      const Tensor loss_cpu = nn::cross_entropy((*cpu_model)(x), y);
      const Tensor loss_dev = nn::cross_entropy((*dev_model)(x.to(kCuda)), y.to(kCuda));
      check_matches("step " + std::to_string(step) + " loss", loss_dev, loss_cpu, {1e-4, 1e-5});
      opt_cpu.zero_grad();
      opt_dev.zero_grad();
      loss_cpu.backward();
      loss_dev.backward();
      for (size_t i = 0; i < handles.size(); ++i)
        check_matches("step " + std::to_string(step) + " grad " + std::to_string(i), handles[i].grad(), cpu_params[i].grad(), {1e-4, 1e-5});
      opt_cpu.step();
      opt_dev.step();
    }
    for (size_t i = 0; i < handles.size(); ++i)
      check_matches("parameter " + std::to_string(i) + " after 3 steps", handles[i], cpu_params[i], {1e-4, 1e-5});
    // and back
    dev_model->to(kCpu);
    for (size_t i = 0; i < handles.size(); ++i) {
      CHECK(handles[i].device().is_cpu());
      CHECK(handles[i].impl_ptr() == impls[i]);
    }
    CHECK((*dev_model)(x).device().is_cpu());
  }

  TEST_CASE("random streams: the same seed gives the same numbers on CUDA and CPU") {
    PoisonGuard poison;
    for (const Shape& shape : std::vector<Shape>{{1001}, {7, 13}, {3}, {}}) {
      const std::string s = shape_str(shape);
      auto both = [&](const std::string& what, const std::function<Tensor(Generator&, Device)>& draw, bool exact, Tol tol = {0, 0}) {
        Generator gc(1234), gd(1234);
        gc.set_offset(5);
        gd.set_offset(5);
        const Tensor c = draw(gc, kCpu), d = draw(gd, kCuda);
        if (exact) {
          check_same(what + " " + s, d, c);
        } else {
          check_matches(what + " " + s, d, c, tol);
        }
        CHECK_MESSAGE(gc.offset() == gd.offset(), what << " " << s << ": generator offsets differ");
        CHECK(d.device() == kCuda);
      };
      for (DType dt : kFloats) {
        const std::string n = dtype_name(dt);
        both(n + " rand", [&](Generator& g, Device dev) { return rand(shape, on(dev, dt), &g); }, true);
        both(n + " bernoulli", [&](Generator& g, Device dev) { return bernoulli(shape, 0.3, on(dev, dt), &g); }, true);
      }
      for (DType dt : {DType::f32, DType::f64}) {
        const std::string n = dtype_name(dt);
        both(n + " uniform", [&](Generator& g, Device dev) { return uniform(shape, -2.0, 3.0, on(dev, dt), &g); }, true);
        both(n + " randn", [&](Generator& g, Device dev) { return randn(shape, on(dev, dt), &g); }, false,
             dt == DType::f64 ? Tol{1e-12, 1e-14} : Tol{1e-6, 1e-7});
      }
      for (DType dt : {DType::i32, DType::i64}) {
        both(std::string(dtype_name(dt)) + " randint", [&](Generator& g, Device dev) { return randint(-5, 17, shape, on(dev, dt), &g); }, true);
      }
      both("bool bernoulli", [&](Generator& g, Device dev) { return bernoulli(shape, 0.5, on(dev, DType::boolean), &g); }, true);
      // two draws in a row: the second starts where the first stopped on both devices
      both("rand after rand", [&](Generator& g, Device dev) { (void)rand({5}, on(dev), &g); return rand(shape, on(dev), &g); }, true);
    }
    // dropout: the same mask for the same generator
    Generator gx(5);
    const Tensor x = uniform({129, 31}, 0.5, 2.0, DType::f32, &gx);
    for (double p : {0.1, 0.5, 0.9}) {
      Generator gc(77), gd(77);
      const Tensor c = dropout(x, p, true, &gc);
      const Tensor d = dropout(x.to(kCuda), p, true, &gd);
      check_same("dropout mask p=" + std::to_string(p), eq(d, zeros_like(d)), eq(c, zeros_like(c)));
      check_matches("dropout values p=" + std::to_string(p), d, c, base_tol(DType::f32));
    }
    check_same("dropout in eval mode", dropout(x.to(kCuda), 0.5, false), x);
  }

}
