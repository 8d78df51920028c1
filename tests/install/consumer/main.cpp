// Uses an installed ember: a matmul and its backward with known values, an error that must
// cross the library boundary as ember::Error, and a few SGD steps on a Linear layer that must
// lower the loss. Returns nonzero on any mismatch.
#include <ember/ember.h>

#include <cmath>
#include <cstdio>
#include <vector>

namespace {

int failures = 0;

void expect_values(const char* what, const ember::Tensor& t, const std::vector<float>& want) {
  std::vector<float> got = t.to_vector<float>();
  bool ok = got.size() == want.size();
  for (size_t i = 0; ok && i < got.size(); ++i) ok = std::fabs(got[i] - want[i]) <= 1e-4f * (1 + std::fabs(want[i]));
  std::printf("%-28s %s\n", what, ok ? "ok" : "MISMATCH");
  if (!ok) {
    ++failures;
    std::printf("  got:");
    for (float v : got) std::printf(" %g", v);
    std::printf("\n  want:");
    for (float v : want) std::printf(" %g", v);
    std::printf("\n");
  }
}

}  // namespace

int main() {
  try {
    // (2, 3) @ (3, 2); loss = sum of the product.
    ember::Tensor a = ember::tensor({{1, 2, 3}, {4, 5, 6}});
    ember::Tensor b = ember::tensor({{7, 8}, {9, 10}, {11, 12}});
    a.requires_grad_();
    b.requires_grad_();
    ember::Tensor c = ember::matmul(a, b);  // (2, 2)
    ember::Tensor loss = c.sum();
    loss.backward();
    expect_values("matmul forward", c, {58, 64, 139, 154});
    expect_values("sum", loss, {415});
    expect_values("d loss / d a = 1 b^T", a.grad(), {15, 19, 23, 15, 19, 23});
    expect_values("d loss / d b = a^T 1", b.grad(), {5, 5, 7, 7, 9, 9});

    bool threw = false;
    try {
      ember::matmul(a, a);  // (2, 3) @ (2, 3)
    } catch (const ember::Error& e) {
      threw = true;
      std::printf("%-28s ok (%s)\n", "shape error is ember::Error", e.what());
    }
    if (!threw) {
      std::printf("%-28s MISMATCH (no ember::Error)\n", "shape error is ember::Error");
      ++failures;
    }

    // Linear + cross-entropy + SGD: ten steps on one fixed batch must lower the loss.
    ember::Generator gen(7);
    ember::nn::Linear fc(8, 3, true, &gen);
    ember::Tensor x = ember::randn({16, 8}, {}, &gen);             // (N, 8)
    ember::Tensor y = ember::randint(0, 3, {16}, ember::DType::i64, &gen);  // (N)
    ember::optim::SGDOptions opt_options;
    opt_options.lr = 0.1;
    ember::optim::SGD opt(fc.parameters(), opt_options);
    float first = 0, last = 0;
    for (int step = 0; step < 10; ++step) {
      ember::Tensor l = ember::nn::cross_entropy(fc(x), y);
      l.backward();
      opt.step();
      opt.zero_grad();
      (step == 0 ? first : last) = l.item<float>();
    }
    bool lowered = std::isfinite(last) && last < first;
    std::printf("%-28s %s (%.4f -> %.4f)\n", "SGD lowers the loss", lowered ? "ok" : "MISMATCH", first, last);
    if (!lowered) ++failures;
  } catch (const std::exception& e) {
    std::printf("unexpected exception: %s\n", e.what());
    return 2;
  }
  std::printf("%s\n", failures ? "consumer: FAILED" : "consumer: all checks passed");
  return failures ? 1 : 0;
}
