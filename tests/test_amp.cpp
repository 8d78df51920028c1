// Mixed precision (ember/amp.h): autocast by op category on the CPU and the device under test
// (the stand-in fake:0 in CI), the parameter cast cache, and the GradScaler (skips, backoff,
// growth, clipping order, state and checkpoints, recovery from a huge initial scale).
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "test_util.h"

using namespace ember;

namespace {

std::vector<Device> amp_devices() {
  std::vector<Device> d{Device::cpu()};
  if (!ember_test::test_device().is_cpu()) d.push_back(ember_test::test_device());
  return d;
}

// Counts to_dtype calls whose input is `source` (the casts autocast makes of it).
struct CastCounter final : OpObserver {
  const TensorImpl* source;
  int casts = 0;
  explicit CastCounter(const Tensor& s) : source(&s.impl()) {}
  void before(const OpCall& c) override {
    if (c.def->id == OpId::to_dtype && !c.inputs.empty() && &c.inputs[0].impl() == source) ++casts;
  }
  void after(const OpCall&) override {}
};

// The bits of every tensor of a state dict (for "unchanged bit for bit").
std::vector<std::vector<double>> snapshot(const std::vector<Tensor>& ts) {
  std::vector<std::vector<double>> r;
  for (const Tensor& t : ts) r.push_back(to_dtype(t.detach(), DType::f64).to(Device::cpu()).to_vector<double>());
  return r;
}
std::vector<Tensor> optimizer_tensors(const optim::Optimizer& opt) {
  std::vector<Tensor> r;
  for (const auto& [n, t] : opt.state_dict().tensors) r.push_back(t);
  return r;
}

struct Mlp {
  std::shared_ptr<nn::Linear> l1, l2;
  nn::Sequential net;
  Mlp(int64_t in, int64_t hidden, int64_t out, uint64_t seed) {
    Generator g(seed);
    l1 = std::make_shared<nn::Linear>(in, hidden, true, &g);
    l2 = std::make_shared<nn::Linear>(hidden, out, true, &g);
    net.add(l1).add(std::make_shared<nn::ReLU>()).add(l2);
  }
};

}  // namespace

TEST_SUITE("amp") {
  TEST_CASE("autocast: each op category's output dtype, on the CPU and the device under test") {
    for (const Device dev : amp_devices()) {
      for (const DType low : {DType::bf16, DType::f16}) {
        CAPTURE(dev);
        CAPTURE(low);
        Generator g(1);
        const auto opts = TensorOptions(DType::f32).with_device(dev);
        const Tensor a = randn({4, 8}, DType::f32, &g).to(dev), b = randn({8, 3}, DType::f32, &g).to(dev);
        const Tensor w = randn({3, 8}, DType::f32, &g).to(dev), bias = randn({3}, DType::f32, &g).to(dev);
        const Tensor seq = randn({2, 8, 9}, DType::f32, &g).to(dev), kern = randn({5, 8, 3}, DType::f32, &g).to(dev);
        const Tensor half = randn({4, 8}, DType::f32, &g).to(dev).to(low);
        const Tensor target = from_vector(std::vector<int64_t>{0, 1, 2, 1}, {4}).to(dev);
        CHECK(!amp::is_autocast_enabled(dev));
        {
          amp::AutocastGuard autocast(dev, low);
          CHECK(amp::is_autocast_enabled(dev));
          CHECK(amp::autocast_dtype(dev) == low);
          // lower
          CHECK(matmul(a, b).dtype() == low);
          CHECK(linear(a, w, bias).dtype() == low);
          CHECK(bmm(a.unsqueeze(0), b.unsqueeze(0)).dtype() == low);
          CHECK(conv1d(seq, kern).dtype() == low);
          // f32
          CHECK(exp(half).dtype() == DType::f32);
          CHECK(log_softmax(half, 1).dtype() == DType::f32);
          CHECK(softmax(half, 1).dtype() == DType::f32);
          CHECK(sum(half).dtype() == DType::f32);
          CHECK(mean(half, {1}).dtype() == DType::f32);
          CHECK(pow(half, 2.0).dtype() == DType::f32);
          CHECK(layer_norm(half, {8}).dtype() == DType::f32);
          CHECK(nn::cross_entropy(matmul(a, b), target).dtype() == DType::f32);
          // widest
          CHECK(add(half, a).dtype() == DType::f32);
          CHECK(cat({half, a}, 0).dtype() == DType::f32);
          CHECK(add(half, half).dtype() == low);
          // keep
          CHECK(relu(a).dtype() == DType::f32);
          CHECK(relu(half).dtype() == low);
          CHECK(a.view({8, 4}).dtype() == DType::f32);
          CHECK(full({2}, 1.0, opts).dtype() == DType::f32);
          // a nested guard that turns it off
          {
            amp::AutocastGuard off(dev, low, false);
            CHECK(!amp::is_autocast_enabled(dev));
            CHECK(matmul(a, b).dtype() == DType::f32);
          }
          CHECK(matmul(a, b).dtype() == low);
        }
        CHECK(!amp::is_autocast_enabled(dev));
        CHECK(matmul(a, b).dtype() == DType::f32);
      }
    }
  }

  TEST_CASE("autocast is per device type, and its results equal the explicit casts") {
    const Device dev = ember_test::test_device();
    Generator g(2);
    const Tensor a = randn({5, 7}, DType::f32, &g).to(dev), b = randn({7, 6}, DType::f32, &g).to(dev);
    const Tensor want = matmul(a.to(DType::bf16), b.to(DType::bf16));
    Tensor got;
    {
      amp::AutocastGuard autocast(dev, DType::bf16);
      got = matmul(a, b);
    }
    CHECK(equal(got, want));
    if (!dev.is_cpu()) {
      amp::AutocastGuard cpu_only(Device::cpu(), DType::bf16);
      CHECK(matmul(a, b).dtype() == DType::f32);  // dev's type is not under autocast
      CHECK(matmul(a.to(Device::cpu()), b.to(Device::cpu())).dtype() == DType::bf16);
    }
  }

  // An LSTM inside an autocast region takes an input or an initial state that another autocast
  // op produced in the low dtype (a Linear that builds h0 from a context vector, an embedding
  // followed by an autocast projection): the recurrence casts its operands itself.
  TEST_CASE("LSTM under autocast takes low-precision states and inputs, with gradients") {
    for (const Device& dev : amp_devices()) {
      CAPTURE(dev.str());
      Generator g(21);
      nn::RNNOptions o;
      o.input_size = 6;
      o.hidden_size = 5;
      o.batch_first = true;
      nn::LSTM lstm(o, &g);
      lstm.to(dev);
      nn::Linear init(4, 5, true, &g);
      init.to(dev);
      const Tensor x = randn({3, 7, 6}, DType::f32, &g).to(dev).requires_grad_();
      const Tensor z = randn({3, 4}, DType::f32, &g).to(dev);
      Tensor out;
      {
        amp::AutocastGuard autocast(dev, DType::bf16);
        const Tensor h0 = init(z).unsqueeze(0);  // bf16: an autocast Linear
        REQUIRE(h0.dtype() == DType::bf16);
        const Tensor c0 = zeros_like(h0);
        out = lstm.forward(x, h0, c0).output;                  // f32 input, bf16 states
        const Tensor again = lstm.forward(x.to(DType::bf16), h0, c0).output;  // bf16 input too
        CHECK(again.shape() == out.shape());
      }
      CHECK(out.shape() == Shape{3, 7, 5});
      sum(out.to(DType::f32)).backward();
      REQUIRE(x.grad().defined());
      REQUIRE(init.weight.grad().defined());
      CHECK(std::isfinite(sum(abs(x.grad().to(DType::f32))).item<double>()));
      // Outside autocast the strict rule stands: a bf16 state for an f32 LSTM is an error.
      const Tensor h_bf16 = zeros({1, 3, 5}, TensorOptions(DType::bf16).with_device(dev));
      CHECK_THROWS_WITH_AS(lstm.forward(x.detach(), h_bf16, Tensor()), doctest::Contains("must match the input"), Error);
    }
  }

  TEST_CASE("a parameter used twice in one autocast region is cast once; the cache ends with the region") {
    const Device dev = ember_test::test_device();
    Generator g(3);
    const Tensor w = randn({4, 6}, DType::f32, &g).to(dev).requires_grad_();
    const Tensor x = randn({3, 6}, DType::f32, &g).to(dev);
    CastCounter counter(w);
    {
      ObserveOps watch(counter);
      amp::AutocastGuard autocast(dev, DType::bf16);
      Tensor y1 = linear(x, w);
      Tensor y2 = linear(mul(x, x), w);
      CHECK(y1.dtype() == DType::bf16);
      CHECK(amp::autocast_cache_size() == 1);
      sum(add(y1, y2)).backward();
      // Reused after a backward in the same region: the cast node saved nothing.
      Tensor y3 = linear(x, w);
      sum(y3).backward();
    }
    CHECK(counter.casts == 1);
    CHECK(amp::autocast_cache_size() == 0);
    // A cast made under NoGradGuard (evaluation inside the region) is not cached: the next
    // use with gradients still reaches the parameter.
    {
      amp::AutocastGuard autocast(dev, DType::bf16);
      {
        NoGradGuard no_grad;
        (void)linear(x, w);
      }
      CHECK(amp::autocast_cache_size() == 0);
      w.set_grad(Tensor());
      sum(linear(x, w)).backward();
      CHECK(w.grad().defined());
    }
    // An activation (not a leaf) is cast at every use.
    const Tensor h = x * 2.0;
    CastCounter per_use(h);
    {
      ObserveOps watch(per_use);
      amp::AutocastGuard autocast(dev, DType::bf16);
      (void)matmul(h, w.detach().t());
      (void)matmul(h, w.detach().t());
    }
    CHECK(per_use.casts == 2);
  }

  TEST_CASE("backward runs in the forward's dtypes; f32 parameters get f32 gradients equal to the explicit casts'") {
    const Device dev = ember_test::test_device();
    Generator g(4);
    const Tensor x = randn({6, 5}, DType::f32, &g).to(dev);
    const Tensor w = randn({4, 5}, DType::f32, &g).to(dev).requires_grad_();
    const Tensor b = randn({4}, DType::f32, &g).to(dev).requires_grad_();
    const Tensor t = from_vector(std::vector<int64_t>{0, 1, 2, 3, 1, 0}, {6}).to(dev);
    {
      amp::AutocastGuard autocast(dev, DType::bf16);
      Tensor loss = nn::cross_entropy(linear(x, w, b), t);
      CHECK(loss.dtype() == DType::f32);
      loss.backward();  // inside the region: backward formulas are not autocast
    }
    REQUIRE(w.grad().defined());
    CHECK(w.grad().dtype() == DType::f32);
    CHECK(b.grad().dtype() == DType::f32);
    const Tensor w2 = w.detach().clone().requires_grad_(), b2 = b.detach().clone().requires_grad_();
    Tensor logits = linear(x.to(DType::bf16), w2.to(DType::bf16), b2.to(DType::bf16));
    nn::cross_entropy(logits.to(DType::f32), t).backward();
    CHECK(equal(w.grad(), w2.grad()));
    CHECK(equal(b.grad(), b2.grad()));
  }

  TEST_CASE("in-place ops are untouched by autocast") {
    const Device dev = ember_test::test_device();
    Tensor p = full({3}, 1.0, TensorOptions(DType::f32).with_device(dev));
    const Tensor d = full({3}, 0.5, TensorOptions(DType::bf16).with_device(dev));
    amp::AutocastGuard autocast(dev, DType::bf16);
    p.add_(d);
    p.mul_(3.0);
    CHECK(p.dtype() == DType::f32);
    CHECK(p.to(Device::cpu()).to_vector<float>() == std::vector<float>{4.5f, 4.5f, 4.5f});
  }

  TEST_CASE("autocast rejects a low dtype that is not bf16 or f16") {
    CHECK_EMBER_ERROR(amp::AutocastGuard(Device::cpu(), DType::f32), "autocast", "bf16 or f16", "f32");
    CHECK_EMBER_ERROR(amp::AutocastGuard(Device::cpu(), DType::i64), "autocast", "i64");
  }

  TEST_CASE("GradScaler: scale, unscale_ exactly, and clipping between unscale_ and step") {
    const Device dev = ember_test::test_device();
    Mlp m(6, 8, 3, 5);
    m.net.to(dev);
    Generator g(6);
    const Tensor x = randn({10, 6}, DType::f32, &g).to(dev);
    const Tensor t = from_vector(std::vector<int64_t>{0, 1, 2, 0, 1, 2, 0, 1, 2, 0}, {10}).to(dev);
    // Reference gradients without scaling.
    nn::cross_entropy(m.net.forward(x), t).backward();
    std::vector<Tensor> ref;
    for (const Tensor& p : m.net.parameters()) ref.push_back(p.grad().clone());
    m.net.zero_grad();

    optim::SGD opt(m.net.parameters(), {.lr = 0.1});
    amp::GradScaler scaler;
    CHECK(scaler.get_scale() == 65536.0);
    Tensor loss = nn::cross_entropy(m.net.forward(x), t);
    const Tensor scaled = scaler.scale(loss);
    CHECK(scaled.item<double>() == doctest::Approx(loss.item<double>() * 65536.0).epsilon(1e-6));
    scaled.backward();
    scaler.unscale_(opt);
    const std::vector<Tensor> params = m.net.parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      CAPTURE(i);
      CHECK(params[i].grad().device() == dev);
      CHECK(allclose(params[i].grad(), ref[i], 1e-5, 1e-7));  // a power of two: exact up to rounding of the sum
    }
    CHECK_EMBER_ERROR(scaler.unscale_(opt), "GradScaler.unscale_", "already");
    const double norm = optim::clip_grad_norm_(params, 0.01).item<double>();
    CHECK(norm > 0.01);  // the clip acted on true (unscaled) gradients
    const auto before = snapshot(params);
    CHECK(scaler.step(opt));
    CHECK(snapshot(params) != before);
    scaler.update();
    CHECK(scaler.get_scale() == 65536.0);
    CHECK(scaler.growth_tracker() == 1);
  }

  TEST_CASE("GradScaler: an inf or NaN gradient skips the step bit for bit and halves the scale") {
    for (const double bad : {INFINITY, NAN}) {
      const Device dev = ember_test::test_device();
      CAPTURE(bad);
      Mlp m(4, 5, 2, 7);
      m.net.to(dev);
      optim::Adam opt(m.net.parameters(), {.lr = 0.01});
      amp::GradScaler scaler({.init_scale = 1024.0});
      Generator g(8);
      const Tensor x = randn({6, 4}, DType::f32, &g).to(dev);
      const Tensor t = from_vector(std::vector<int64_t>{0, 1, 1, 0, 1, 0}, {6}).to(dev);
      // One clean step first, so the optimizer has state to keep.
      scaler.scale(nn::cross_entropy(m.net.forward(x), t)).backward();
      CHECK(scaler.step(opt));
      scaler.update();
      opt.zero_grad();

      scaler.scale(nn::cross_entropy(m.net.forward(x), t)).backward();
      Tensor gw = m.l1->weight.grad();
      Tensor poisoned = gw.to(Device::cpu()).clone();
      poisoned.data<float>()[3] = static_cast<float>(bad);
      gw.copy_(poisoned);
      const auto params_before = snapshot(m.net.parameters());
      const auto state_before = snapshot(optimizer_tensors(opt));
      const int64_t steps_before = opt.step_count(0, 0);
      CHECK(!scaler.step(opt));
      CHECK(snapshot(m.net.parameters()) == params_before);
      CHECK(snapshot(optimizer_tensors(opt)) == state_before);
      CHECK(opt.step_count(0, 0) == steps_before);
      scaler.update();
      CHECK(scaler.get_scale() == 512.0);
      CHECK(scaler.growth_tracker() == 0);
    }
  }

  TEST_CASE("GradScaler: growth_interval clean steps in a row double the scale; it never leaves f32's range") {
    Mlp m(3, 4, 2, 9);
    optim::SGD opt(m.net.parameters(), {.lr = 0.01});
    amp::GradScaler scaler({.init_scale = 8.0, .growth_interval = 3});
    const Tensor x = randn({4, 3});
    const Tensor t = from_vector(std::vector<int64_t>{0, 1, 1, 0}, {4});
    for (int i = 0; i < 7; ++i) {
      opt.zero_grad();
      scaler.scale(nn::cross_entropy(m.net.forward(x), t)).backward();
      CHECK(scaler.step(opt));
      scaler.update();
    }
    CHECK(scaler.get_scale() == 32.0);  // grew after steps 3 and 6
    CHECK(scaler.growth_tracker() == 1);

    // At the top of f32's range it stops growing; at the bottom it stops shrinking.
    amp::GradScaler top({.init_scale = 3.0e38, .growth_interval = 1});
    (void)top.scale(scalar_tensor(1.0));
    opt.zero_grad();
    top.unscale_(opt);  // no gradients: nothing found
    top.update();
    CHECK(std::isfinite(top.get_scale()));
    CHECK(top.get_scale() == 3.0e38);
  }

  TEST_CASE("GradScaler: disabled, it passes everything through") {
    Mlp m(3, 4, 2, 10);
    optim::SGD opt(m.net.parameters(), {.lr = 0.1});
    amp::GradScaler scaler({.enabled = false});
    const Tensor loss = nn::cross_entropy(m.net.forward(randn({4, 3})), from_vector(std::vector<int64_t>{0, 1, 1, 0}, {4}));
    CHECK(&scaler.scale(loss).impl() == &loss.impl());
    loss.backward();
    const auto before = snapshot(m.net.parameters());
    CHECK(scaler.step(opt));
    CHECK(snapshot(m.net.parameters()) != before);
    scaler.update();
    CHECK(scaler.get_scale() == 1.0);
  }

  TEST_CASE("GradScaler: bad options, calls out of order, and bad state are clear errors") {
    CHECK_EMBER_ERROR(amp::GradScaler({.init_scale = 0.0}), "GradScaler", "init_scale");
    CHECK_EMBER_ERROR(amp::GradScaler({.init_scale = INFINITY}), "GradScaler", "init_scale");
    CHECK_EMBER_ERROR(amp::GradScaler({.growth_factor = 1.0}), "GradScaler", "growth_factor");
    CHECK_EMBER_ERROR(amp::GradScaler({.backoff_factor = 1.5}), "GradScaler", "backoff_factor");
    CHECK_EMBER_ERROR(amp::GradScaler({.growth_interval = 0}), "GradScaler", "growth_interval");
    amp::GradScaler scaler;
    CHECK_EMBER_ERROR(scaler.update(), "GradScaler.update", "no unscale_() or step()");
    CHECK_EMBER_ERROR(scaler.scale(from_vector(std::vector<int64_t>{1}, {1})), "GradScaler.scale", "float");
    StateDict sd = scaler.state_dict();
    sd.meta["scale"] = "nan";
    CHECK_EMBER_ERROR(scaler.load_state_dict(sd), "GradScaler.load_state_dict", "scale");
    sd = scaler.state_dict();
    sd.meta.erase("growth_tracker");
    CHECK_EMBER_ERROR(scaler.load_state_dict(sd), "GradScaler.load_state_dict", "growth_tracker");
    CHECK(scaler.get_scale() == 65536.0);  // unchanged by the refused loads
  }

  TEST_CASE("GradScaler: state_dict round trip and checkpoints (old checkpoints still load)") {
    amp::GradScaler a({.init_scale = 3.0 / 7.0, .growth_interval = 5});
    Mlp m(3, 4, 2, 11);
    optim::SGD opt(m.net.parameters(), {.lr = 0.1});
    a.scale(nn::cross_entropy(m.net.forward(randn({4, 3})), from_vector(std::vector<int64_t>{0, 1, 1, 0}, {4})))
        .backward();
    a.step(opt);
    a.update();
    amp::GradScaler b;
    b.load_state_dict(a.state_dict());
    CHECK(b.get_scale() == a.get_scale());  // exact: hex float text
    CHECK(b.growth_tracker() == 1);

    const std::string with = (std::filesystem::temp_directory_path() / "ember_amp_ckpt.safetensors").string();
    const std::string without = (std::filesystem::temp_directory_path() / "ember_amp_old.safetensors").string();
    io::save_checkpoint(with, m.net, opt, nullptr, io::TrainingState{}, &a);
    io::save_checkpoint(without, m.net, opt, nullptr, io::TrainingState{});
    amp::GradScaler c;
    io::TrainingState st;
    io::load_checkpoint(with, m.net, opt, nullptr, st, &c);
    CHECK(c.get_scale() == a.get_scale());
    CHECK(c.growth_tracker() == a.growth_tracker());
    amp::GradScaler d;
    io::load_checkpoint(without, m.net, opt, nullptr, st, &d);
    CHECK(d.get_scale() == 65536.0);
    std::filesystem::remove(with);
    std::filesystem::remove(without);
  }

  TEST_CASE("f16 autocast with a scaler from a huge initial scale backs off and trains as well as f32") {
    const Device dev = ember_test::test_device();
    // Three Gaussian blobs in 8-D.
    Generator g(12);
    const int64_t n = 240;
    Tensor centers = randn({3, 8}, DType::f32, &g) * 3.0;
    std::vector<int64_t> labels(n);
    for (int64_t i = 0; i < n; ++i) labels[static_cast<size_t>(i)] = i % 3;
    const Tensor y = from_vector(labels, {n});
    const Tensor x = add(index_select(centers, 0, y), randn({n, 8}, DType::f32, &g)).to(dev);
    const Tensor yd = y.to(dev);
    auto train = [&](bool amp_on, int* skipped, double* final_scale) {
      Mlp m(8, 16, 3, 13);
      m.net.to(dev);
      optim::SGD opt(m.net.parameters(), {.lr = 0.1});
      amp::GradScaler scaler({.init_scale = 1099511627776.0, .growth_interval = 1000, .enabled = amp_on});
      for (int step = 0; step < 120; ++step) {
        opt.zero_grad();
        Tensor loss;
        {
          amp::AutocastGuard autocast(dev, DType::f16, amp_on);
          loss = nn::cross_entropy(m.net.forward(x), yd);
        }
        scaler.scale(loss).backward();
        if (!scaler.step(opt)) ++*skipped;
        scaler.update();
      }
      *final_scale = scaler.get_scale();
      NoGradGuard ng;
      const Tensor pred = argmax(m.net.forward(x), 1).to(Device::cpu());
      return mean(to_dtype(eq(pred, y), DType::f32)).item<double>();
    };
    int skipped32 = 0, skipped16 = 0;
    double scale32 = 0, scale16 = 0;
    const double acc32 = train(false, &skipped32, &scale32);
    const double acc16 = train(true, &skipped16, &scale16);
    MESSAGE("accuracy f32 " << acc32 << ", f16 autocast + scaler " << acc16 << " (" << skipped16
                            << " steps skipped, final scale " << scale16 << ")");
    CHECK(skipped32 == 0);
    CHECK(skipped16 > 0);             // 2^40 overflows f16 gradients at first
    CHECK(scale16 < 1099511627776.0);  // and the scale backed off
    CHECK(acc32 > 0.9);
    CHECK(acc16 >= acc32 - 0.05);  // the stated margin: 5 points
  }
}
