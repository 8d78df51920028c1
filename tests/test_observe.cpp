// Kernel observers (ember/ops/observe.h): every primitive call of an op, its forward and its
// backward passes one hook with the primitive's name, device and tensors.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "test_util.h"

using namespace ember;

namespace {

struct Recorder final : KernelObserver {
  std::vector<std::string> names;
  std::vector<Device> devices;
  std::vector<std::vector<Shape>> shapes;
  int open = 0, max_open = 0;
  void before(const KernelCall& c) override {
    names.emplace_back(c.primitive);
    devices.push_back(c.device);
    std::vector<Shape> s;
    for (const Tensor& t : c.tensors) s.push_back(t.shape());
    shapes.push_back(s);
    max_open = std::max(max_open, ++open);
  }
  void after(const KernelCall&) override { --open; }
  bool saw(const std::string& n) const { return std::find(names.begin(), names.end(), n) != names.end(); }
};

}  // namespace

TEST_SUITE("observe") {
  TEST_CASE("an observer sees every kernel of a training step, on the device it runs on") {
    const Device dev = ember_test::test_device();
    Generator g(5);
    nn::Linear lin(7, 3, true, &g);
    lin.to(dev);
    const Tensor x = randn({4, 7}, DType::f32, &g).to(dev);
    const Tensor t = from_vector(std::vector<int64_t>{0, 2, 1, 2}, {4}).to(dev);
    Recorder r;
    {
      ObserveKernels watch(r);
      Tensor loss = nn::cross_entropy(lin.forward(x), t);
      loss.backward();
    }
    REQUIRE(!r.names.empty());
    CHECK(r.saw("bmm"));                     // the forward GEMM and the backward ones
    CHECK(r.saw("cross_entropy_forward"));
    CHECK(r.saw("cross_entropy_backward"));
    for (size_t i = 0; i < r.names.size(); ++i) {
      CAPTURE(r.names[i]);
      CHECK(r.devices[i] == dev);  // nothing ran on the CPU behind the device's back
    }
    // The forward GEMM: x (4, 7) against the weight, into a (1, 4, 3) output, bias (3).
    const auto first_bmm = std::find(r.names.begin(), r.names.end(), "bmm") - r.names.begin();
    const std::vector<Shape>& s = r.shapes[static_cast<size_t>(first_bmm)];
    REQUIRE(s.size() == 4);
    CHECK(s[2] == Shape{1, 4, 3});
    CHECK(s[3] == Shape{3});
    CHECK(r.open == 0);      // every before has its after
    CHECK(r.max_open == 1);  // kernels do not nest

    // Off after the guard.
    const size_t seen = r.names.size();
    (void)add(x, x);
    CHECK(r.names.size() == seen);
  }

  TEST_CASE("guards nest: the inner observer sees the calls while it lives") {
    Recorder outer, inner;
    const Tensor a = randn({5});
    {
      ObserveKernels o(outer);
      (void)exp(a);
      {
        ObserveKernels i(inner);
        (void)mul(a, a);
      }
      (void)neg(a);
    }
    CHECK(inner.names == std::vector<std::string>{"binary"});
    REQUIRE(outer.names.size() >= 2);
    CHECK(outer.names.front() == "unary");
    CHECK(outer.names.back() == "unary");
    CHECK(!outer.saw("binary"));
  }
}
