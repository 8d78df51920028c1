// ONNX export (ember/io/onnx.h): the graph it writes, its errors and its atomic write. The
// numerical checks against onnxruntime are the ember.onnx.check.* tests (tests/onnx/).
#ifdef EMBER_WITH_ONNX
#include <doctest/doctest.h>
#include <onnx/onnx_pb.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>

#include "ember/ember.h"
#include "ember/io/onnx.h"

using namespace ember;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("ember_test_onnx_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

::onnx::ModelProto load(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  ::onnx::ModelProto m;
  REQUIRE(m.ParseFromIstream(&f));
  return m;
}

std::multiset<std::string> op_types(const ::onnx::ModelProto& m) {
  std::multiset<std::string> r;
  for (const auto& n : m.graph().node()) r.insert(n.op_type());
  return r;
}

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

size_t files_in(const fs::path& d) { return static_cast<size_t>(std::distance(fs::directory_iterator(d), {})); }

// A module whose forward is given per test.
class Holder : public nn::Module {
 public:
  Holder() { fc = register_module("fc", std::make_shared<nn::Linear>(3, 2)); }
  std::shared_ptr<nn::Linear> fc;
};

}  // namespace

TEST_SUITE("onnx") {
  TEST_CASE("a Linear exports with its parameters as initialisers, opset 17, IR 8 and a dynamic batch") {
    const fs::path d = scratch("linear");
    nn::Linear fc(3, 2);
    io::ExportOptions o;
    o.input_names = {"x"};
    o.output_names = {"y"};
    o.dynamic_axes = {{"x", {{0, "batch"}}}, {"y", {{0, "batch"}}}};
    io::export_onnx(fc, randn({4, 3}), (d / "fc.onnx").string(), o);
    const ::onnx::ModelProto m = load(d / "fc.onnx");
    CHECK(m.ir_version() == 8);
    REQUIRE(m.opset_import_size() == 1);
    CHECK(m.opset_import(0).version() == 17);
    std::set<std::string> inits;
    for (const auto& t : m.graph().initializer()) inits.insert(t.name());
    CHECK(inits == std::set<std::string>{"weight", "bias"});
    CHECK(op_types(m).count("Gemm") == 1);
    REQUIRE(m.graph().input_size() == 1);
    CHECK(m.graph().input(0).name() == "x");
    CHECK(m.graph().input(0).type().tensor_type().shape().dim(0).dim_param() == "batch");
    CHECK(m.graph().input(0).type().tensor_type().shape().dim(1).dim_value() == 3);
    CHECK(m.graph().output(0).type().tensor_type().shape().dim(0).dim_param() == "batch");
    CHECK(fc.is_training());  // restored after the eval-mode trace
    CHECK(files_in(d) == 1);  // no temporary left behind
  }

  TEST_CASE("a reshape over a dynamic axis becomes -1 or a shape computed from the input") {
    const fs::path d = scratch("reshape");
    Holder h;
    io::ExportOptions o;
    o.input_names = {"x"};
    o.dynamic_axes = {{"x", {{0, "batch"}, {1, "seq"}}}};
    io::export_onnx(h, {randn({2, 5, 3})}, (d / "m.onnx").string(), o, [&](const std::vector<Tensor>& in) {
      const Tensor& x = in[0];
      const Tensor y = h.fc->forward(x.reshape({x.size(0) * x.size(1), 3}));  // -1
      return std::vector<Tensor>{y.view({x.size(0), x.size(1), 2})};          // two free sizes: Shape ops
    });
    const auto ops = op_types(load(d / "m.onnx"));
    CHECK(ops.count("Reshape") == 2);
    CHECK(ops.count("Shape") == 2);
  }

  TEST_CASE("ops without an ONNX form are errors that name the op; nothing is written") {
    const fs::path d = scratch("unsupported");
    const std::string path = (d / "m.onnx").string();
    Holder h;
    const Tensor x = randn({4, 3});
    auto run = [&](io::ForwardFn f) { io::export_onnx(h, {x}, path, {}, f); };
    CHECK_THROWS_WITH_AS(
        run([&](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{nn::cross_entropy(h.fc->forward(in[0]), from_vector<int64_t>({0, 1, 1, 0}, {4}))};
        }),
        doctest::Contains("op 'cross_entropy'"), Error);
    CHECK_THROWS_WITH_AS(run([&](const std::vector<Tensor>& in) {
                           return std::vector<Tensor>{in[0] + randn({4, 3})};
                         }),
                         doctest::Contains("op 'randn'"), Error);
    CHECK_THROWS_WITH_AS(
        run([&](const std::vector<Tensor>& in) { return std::vector<Tensor>{dropout(in[0], 0.5, true)}; }),
        doctest::Contains("dropout in training mode"), Error);
    CHECK_THROWS_WITH_AS(
        run([&](const std::vector<Tensor>& in) { return std::vector<Tensor>{unfold(in[0], 1, 2, 1)}; }),
        doctest::Contains("op 'unfold'"), Error);
    CHECK(files_in(d) == 0);
  }

  TEST_CASE("a failed export leaves an existing file as it was") {
    const fs::path d = scratch("atomic");
    const fs::path path = d / "m.onnx";
    { std::ofstream(path) << "previous model"; }
    Holder h;
    CHECK_THROWS_AS(io::export_onnx(h, {randn({2, 3})}, path.string(), {},
                                    [&](const std::vector<Tensor>& in) {
                                      return std::vector<Tensor>{in[0] + randn({2, 3})};
                                    }),
                    Error);
    CHECK(read_all(path) == "previous model");
    CHECK(files_in(d) == 1);
    // A successful export replaces it whole.
    io::export_onnx(*h.fc, randn({2, 3}), path.string());
    CHECK(load(path).graph().node_size() >= 1);
    CHECK(files_in(d) == 1);
    // A directory that does not exist: an error naming it, nothing created.
    CHECK_THROWS_WITH_AS(io::export_onnx(*h.fc, randn({2, 3}), (d / "missing" / "m.onnx").string()),
                         doctest::Contains("does not exist"), Error);
  }

  TEST_CASE("a model on another device, f16 weights and unknown axis names are errors") {
    const fs::path d = scratch("device");
    nn::Linear fc(3, 2);
    fc.to(Device::fake(0));
    CHECK_THROWS_WITH_AS(io::export_onnx(fc, randn({2, 3}).to(Device::fake(0)), (d / "m.onnx").string()),
                         doctest::Contains("parameter 'weight' is on fake:0"), Error);
    nn::Linear half(3, 2);
    half.to(DType::f16);
    CHECK_THROWS_WITH_AS(io::export_onnx(half, randn({2, 3}).to(DType::f16), (d / "m.onnx").string()),
                         doctest::Contains("export an f32"), Error);
    nn::Linear fc2(3, 2);
    io::ExportOptions o;
    o.dynamic_axes = {{"nope", {{0, "batch"}}}};
    CHECK_THROWS_WITH_AS(io::export_onnx(fc2, randn({2, 3}), (d / "m.onnx").string(), o), doctest::Contains("'nope'"),
                         Error);
    CHECK(files_in(d) == 0);
  }

  TEST_CASE("control flow that depends on the input size is an error naming the op") {
    const fs::path d = scratch("control");
    Holder h;
    io::ExportOptions o;
    o.input_names = {"x"};
    o.dynamic_axes = {{"x", {{0, "batch"}}}};
    // A host loop over the batch: one op per row, so the op sequence changes with the batch.
    auto loop = [&](const std::vector<Tensor>& in) {
      std::vector<Tensor> rows;
      for (int64_t i = 0; i < in[0].size(0); ++i) rows.push_back(h.fc->forward(in[0].select(0, i)));
      return std::vector<Tensor>{stack(rows, 0)};
    };
    CHECK_THROWS_WITH_AS(io::export_onnx(h, {randn({2, 3})}, (d / "m.onnx").string(), o, loop),
                         doctest::Contains("different ops when the dynamic axes change"), Error);
    // Without dynamic axes the loop is baked in for the example's batch of 2.
    io::export_onnx(h, {randn({2, 3})}, (d / "m.onnx").string(), {}, loop);
    CHECK(op_types(load(d / "m.onnx")).count("Gemm") + op_types(load(d / "m.onnx")).count("MatMul") == 2);
  }

  TEST_CASE("the sample file holds the inputs and ember's outputs") {
    const fs::path d = scratch("sample");
    nn::Linear fc(3, 2);
    const Tensor x = randn({2, 3});
    io::ExportOptions o;
    o.input_names = {"x"};
    o.output_names = {"y"};
    o.sample_path = (d / "m.sample.safetensors").string();
    io::export_onnx(fc, x, (d / "m.onnx").string(), o);
    const StateDict s = io::load_safetensors(o.sample_path);
    REQUIRE(s.find("input.x").defined());
    REQUIRE(s.find("output.y").defined());
    Tensor want;
    {
      NoGradGuard g;
      want = fc.forward(x);
    }
    CHECK(s.find("output.y").to_vector<float>() == want.to_vector<float>());
  }
}
#endif  // EMBER_WITH_ONNX
