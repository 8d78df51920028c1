// Bad input: every class of user error raises ember::Error (never a crash, never another
// exception type) whose message names the op in brackets and prints the shapes, dtypes or
// devices involved.
#include <doctest/doctest.h>

#include <cctype>

#include "ember/nn/quantized.h"
#include "test_util.h"

using namespace ember;
using ember_test::check_error;
using ember_test::contains;

namespace {
std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
Tensor i64s(std::vector<int64_t> v) {
  Shape s{static_cast<int64_t>(v.size())};
  return from_vector<int64_t>(v, s);
}
}  // namespace

TEST_SUITE("errors") {
  TEST_CASE("Error carries the op name") {
    Error e("matmul", "inner dimensions differ: (32, 64) @ (128, 10)");
    CHECK(e.op() == "matmul");
    CHECK(std::string(e.what()) == "[matmul] inner dimensions differ: (32, 64) @ (128, 10)");
    const std::runtime_error& base = e;  // derives from std::runtime_error
    CHECK(contains(base.what(), "[matmul]"));
  }

  TEST_CASE("shape mismatch") {
    Tensor a = zeros({2, 3}), b = zeros({4, 5});
    CHECK_EMBER_ERROR(add(a, b), "[add]", "(2, 3)", "(4, 5)");
    CHECK_EMBER_ERROR(mul(a, b), "[mul]", "(2, 3)", "(4, 5)");
    CHECK_EMBER_ERROR(a + b, "(2, 3)", "(4, 5)");
    CHECK_EMBER_ERROR(where(zeros({2, 3}, DType::boolean), a, b), "[where]", "(2, 3)", "(4, 5)");
    CHECK_EMBER_ERROR(matmul(zeros({2, 3}), zeros({4, 5})), "[matmul]", "(2, 3)", "(4, 5)");
    CHECK_EMBER_ERROR(matmul(zeros({3}), zeros({4})), "[matmul]", "(3", "(4");
    CHECK_EMBER_ERROR(matmul(zeros({2, 2, 3}), zeros({3, 3, 4})), "[matmul]", "(2, 2, 3)", "(3, 3, 4)");
    CHECK_EMBER_ERROR(bmm(zeros({2, 3, 4}), zeros({2, 5, 6})), "[bmm]", "(2, 3, 4)", "(2, 5, 6)");
    CHECK_EMBER_ERROR(bmm(zeros({2, 3, 4}), zeros({3, 4, 6})), "[bmm]", "(2, 3, 4)", "(3, 4, 6)");
    CHECK_EMBER_ERROR(bmm(zeros({3, 4}), zeros({4, 6})), "[bmm]", "(3, 4)");
    CHECK_EMBER_ERROR(linear(zeros({2, 3}), zeros({5, 4})), "[linear]", "(2, 3)", "(5, 4)");
    CHECK_EMBER_ERROR(linear(zeros({2, 4}), zeros({5, 4}), zeros({4})), "[linear]", "(5, 4)", "(4,)");
    CHECK_EMBER_ERROR(linear(zeros({2, 4}), zeros({4})), "[linear]", "weight", "(4,)");
    CHECK_EMBER_ERROR(linear(zeros({2, 4}), zeros({5, 4}, DType::f64)), "[linear]", "f32", "f64");
    CHECK_EMBER_ERROR(linear(zeros({2, 4}), zeros({5, 4}), zeros({5}, DType::f64)), "[linear]", "f64");
    CHECK_EMBER_ERROR(cat({zeros({2, 3}), zeros({2, 4})}, 0), "[cat]", "(2, 3)", "(2, 4)");
    CHECK_EMBER_ERROR(stack({zeros({2, 3}), zeros({3, 2})}, 0), "[stack]", "(2, 3)", "(3, 2)");
    CHECK_EMBER_ERROR(expand(zeros({2, 3}), {4, 3}), "[expand]", "(2, 3)", "(4, 3)");
    CHECK_EMBER_ERROR(broadcast_to(zeros({2, 3}), {3}), "[broadcast_to]", "(2, 3)");
    CHECK_EMBER_ERROR(masked_fill(zeros({2, 3}), zeros({4}, DType::boolean), 1.0), "[masked_fill]", "(2, 3)", "(4");
    CHECK_EMBER_ERROR(zeros({2, 3}).copy_(zeros({4})), "(2, 3)", "(4");
    CHECK_EMBER_ERROR(gather(zeros({2, 3}), 1, zeros({2, 3, 1}, DType::i64)), "[gather]", "(2, 3)", "(2, 3, 1)");
  }

  TEST_CASE("bad dim") {
    Tensor x = zeros({2, 3});
    CHECK_EMBER_ERROR(sum(x, {5}), "[sum]", "5");
    CHECK_EMBER_ERROR(mean(x, {-3}), "[mean]", "-3");
    CHECK_EMBER_ERROR(softmax(x, 2), "[softmax]", "2");
    CHECK_EMBER_ERROR(transpose(x, 0, 2), "[transpose]", "2");
    CHECK_EMBER_ERROR(permute(x, {0}), "[permute]");
    CHECK_EMBER_ERROR(permute(x, {0, 0}), "[permute]");
    CHECK_EMBER_ERROR(cat({x, x}, 2), "[cat]", "2");
    CHECK_EMBER_ERROR(max(x, 2), "[max]", "2");
    CHECK_EMBER_ERROR(argmax(x, -5), "[argmax]", "-5");
    CHECK_EMBER_ERROR(unsqueeze(x, 4), "[unsqueeze]", "4");
    CHECK(squeeze(x, 0).shape() == Shape{2, 3});  // PyTorch: squeezing a dim that is not 1 is a no-op
    CHECK_EMBER_ERROR(squeeze(x, 2), "[squeeze]", "2");
  }

  TEST_CASE("out-of-range index") {
    Tensor x = zeros({3, 4});
    CHECK_EMBER_ERROR(index_select(x, 0, i64s({0, 3})), "[index_select]", "3");
    CHECK_EMBER_ERROR(index_select(x, 1, i64s({-1})), "[index_select]", "-1");
    CHECK_EMBER_ERROR(gather(x, 1, from_vector<int64_t>({0, 4, 1, 1, 2, 2}, {3, 2})), "[gather]", "4");
    CHECK_EMBER_ERROR(embedding(zeros({5, 2}), i64s({1, 5})), "[embedding]", "5");
    CHECK_EMBER_ERROR(embedding(zeros({5, 2}), i64s({-2})), "[embedding]", "-2");
    CHECK_EMBER_ERROR(select(x, 0, 3), "[select]", "3");
    CHECK_EMBER_ERROR(select(x, 1, -5), "[select]", "-5");
    CHECK_EMBER_ERROR(narrow(x, 1, 2, 3), "[narrow]", "(3, 4)");
    CHECK_EMBER_ERROR(narrow(x, 0, 4, 1), "[narrow]", "4");
    CHECK_EMBER_ERROR(scatter_add(x, 1, from_vector<int64_t>({7}, {1, 1}), zeros({1, 1})), "[scatter_add]", "7");
    CHECK_EMBER_ERROR(index_add(x, 0, i64s({3}), zeros({1, 4})), "[index_add]", "3");
    CHECK_EMBER_ERROR(one_hot(i64s({0, 3}), 3), "[one_hot]", "3");
  }

  TEST_CASE("dtype mismatch") {
    Tensor x = zeros({2, 3});
    CHECK_EMBER_ERROR(gather(x, 1, zeros({2, 3})), "[gather]", "f32");
    CHECK_EMBER_ERROR(index_select(x, 0, zeros({2})), "[index_select]", "f32");
    CHECK_EMBER_ERROR(embedding(x, zeros({2})), "[embedding]", "f32");
    CHECK_EMBER_ERROR(where(zeros({2, 3}), x, x), "[where]", "f32");  // condition must be bool
    CHECK_EMBER_ERROR(masked_fill(x, zeros({2, 3}), 1.0), "[masked_fill]", "f32");
    // int8: the packed weight rows are i32 (ember/nn/quantized.h)
    CHECK_EMBER_ERROR(linear_int8(x, zeros({4, 3}), zeros({4})), "[linear_int8]", "i32", "f32");
    CHECK_EMBER_ERROR(quantize_rows(zeros({2, 3}, DType::i64)), "[quantize_rows]", "i64");
    // matmul of f32 with i64: either promoted (PyTorch raises; both are fine) or a clear error
    Tensor a = tensor({{1, 2}, {3, 4}});
    Tensor b = tensor({{1, 0}, {0, 1}}, DType::i64);
    try {
      Tensor r = matmul(a, b);
      CHECK(r.dtype() == DType::f32);
      ember_test::check_tensor(r, {2, 2}, {1, 2, 3, 4});
    } catch (const Error& e) {
      CHECK(contains(e.what(), "[matmul]"));
      CHECK(contains(e.what(), "f32"));
      CHECK(contains(e.what(), "i64"));
    }
    // integer matmul is not a thing on this backend or it works; it must not crash
    try {
      Tensor r = matmul(b, b);
      ember_test::check_tensor(r, {2, 2}, {1, 0, 0, 1});
    } catch (const Error& e) {
      CHECK(contains(e.what(), "[matmul]"));
    }
  }

  // Follows the build and the machine: without a visible GPU (a CPU-only build, or a CUDA build
  // on a machine without one) every CUDA request fails with a clear error; with one, a device
  // index past the last does.
  TEST_CASE("device: CUDA tensors need a visible GPU; a missing device index fails; bad device strings") {
    const int n = cuda::device_count();
    const Device missing = Device::cuda(n);  // cuda:0 without a GPU, one past the last with
    const std::string name = missing.str();
    check_error([&] { (void)zeros({2, 3}, TensorOptions().with_device(missing)); }, "zeros on a missing GPU", {name});
    CHECK_EMBER_ERROR(empty({4}, TensorOptions().with_device(missing)), name);
    CHECK_EMBER_ERROR(randn({4}, TensorOptions().with_device(missing)), name);
    CHECK_EMBER_ERROR(tensor({1, 2}, TensorOptions().with_device(missing)), name);
    CHECK_THROWS_AS(Storage(16, missing), Error);
    if (cuda::is_available()) {  // and the devices that exist work
      CHECK(zeros({2, 3}, TensorOptions().with_device(Device::cuda(0))).device() == Device::cuda(0));
    }
    CHECK_EMBER_ERROR(Device("gpu7"), "gpu7");
    CHECK_EMBER_ERROR(Device("cuda:x"), "cuda:x");
    CHECK_EMBER_ERROR(Device("cuda:-1"), "cuda:-1");
    CHECK_EMBER_ERROR(Device("fake:"), "fake:");
    CHECK_EMBER_ERROR(Device("fake:+1"), "fake:+1");
    CHECK_EMBER_ERROR(Device(""));
  }

  TEST_CASE("backward twice without retain_graph") {
    Tensor x = tensor({1, 2}, DType::f64).requires_grad_(true);
    Tensor y = sum(x * x);
    y.backward();
    check_error([&] { y.backward(); }, "second backward", {"retain_graph"});
  }

  TEST_CASE("in-place change of a saved tensor") {
    Tensor a = tensor({1, 2}, DType::f64).requires_grad_(true);
    Tensor b = tensor({3, 4}, DType::f64);
    Tensor c = a * b;
    b.mul_(2.0);
    std::string msg = lower(check_error([&] { sum(c).backward(); }, "backward after in-place", {}));
    CHECK_MESSAGE(contains(msg, "mul"), "message does not name the op whose input changed: " << msg);
    CHECK_MESSAGE((contains(msg, "in-place") || contains(msg, "in place") || contains(msg, "inplace")), msg);
    // in-place on a leaf that requires grad
    std::string leaf_msg = lower(check_error([&] { a.add_(b); }, "add_ on a leaf", {}));
    CHECK_MESSAGE((contains(leaf_msg, "leaf") || contains(leaf_msg, "in-place")), leaf_msg);
  }

  TEST_CASE("views and reshapes of the wrong size") {
    Tensor x = zeros({2, 3});
    CHECK_EMBER_ERROR(view(x, {7}), "[view]", "(2, 3)", "7");
    CHECK_EMBER_ERROR(x.view({4, -1}), "[view]", "(2, 3)");
    CHECK_EMBER_ERROR(view(x, {-1, -1}), "[view]");
    CHECK_EMBER_ERROR(reshape(x, {5}), "[reshape]", "(2, 3)", "5");
    CHECK_EMBER_ERROR(view(x.t(), {6}), "[view]", "(3, 2)");  // strides do not allow it
    CHECK_EMBER_ERROR(flatten(x, 1, 0), "[flatten]");
    CHECK_EMBER_ERROR(split_sizes(x, {1, 3}, 1), "[split_sizes]", "(2, 3)");
    CHECK_EMBER_ERROR(pad(x, {1}), "[pad]");
    CHECK_EMBER_ERROR(slice(x, 1, 0, 3, 0), "[slice]");  // step must be positive
  }

  TEST_CASE("data<T> with the wrong T, item on many elements, undefined tensors") {
    Tensor x = zeros({2, 3});
    CHECK_EMBER_ERROR(x.data<double>(), "[data]", "f64", "f32");
    CHECK_EMBER_ERROR(x.data<int64_t>(), "[data]", "i64", "f32");
    CHECK_EMBER_ERROR(x.item<float>(), "[item]", "(2, 3)");
    CHECK_EMBER_ERROR(zeros({0}).item<float>(), "[item]");
    Tensor u;
    CHECK_EMBER_ERROR(u.shape(), "[tensor]", "undefined");
    CHECK_EMBER_ERROR(add(u, x), "undefined");
  }

  TEST_CASE("bad arguments to creation and random ops") {
    CHECK_EMBER_ERROR(arange(0, 5, 0), "[arange]");
    CHECK_EMBER_ERROR(zeros({2, -3}), "-3");
    CHECK_EMBER_ERROR(randint(5, 5, {3}), "[randint]", "5");
    CHECK_EMBER_ERROR(bernoulli({3}, 1.5), "[bernoulli]", "1.5");
    CHECK_EMBER_ERROR(dropout(zeros({3}), -0.1), "[dropout]", "-0.1");
    CHECK_EMBER_ERROR(uniform({3}, 2.0, 1.0), "[uniform]");
    CHECK_EMBER_ERROR(from_vector<float>({1, 2, 3}, {2, 2}), "[from_vector]", "(2, 2)", "3");
    CHECK_EMBER_ERROR(tensor({{1, 2}, {3}}), "[tensor]");  // ragged rows
    CHECK_EMBER_ERROR(chunk(zeros({4}), 0), "[chunk]");
    CHECK_EMBER_ERROR(split(zeros({4}), 0), "[split]");
    CHECK_EMBER_ERROR(cat({}, 0), "[cat]");
    CHECK_EMBER_ERROR(linspace(0, 1, -1), "[linspace]");
  }
}
