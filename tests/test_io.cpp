// Checkpoint files: safetensors round trips, atomic writes, and every kind of damaged file.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "ember/ember.h"
#include "ember/io/safetensors.h"
#include "test_util.h"

using namespace ember;
namespace fs = std::filesystem;

namespace {

using ember_test::read_bytes;
using ember_test::sample_state;
using ember_test::temp_path;
using ember_test::write_bytes;


}  // namespace

TEST_SUITE("io") {

TEST_CASE("safetensors round trip keeps names, order, dtypes, shapes, values and metadata") {
  const std::string path = temp_path("roundtrip.safetensors");
  StateDict s = sample_state();
  io::save_safetensors(path, s);
  StateDict r = io::load_safetensors(path);
  REQUIRE(r.tensors.size() == s.tensors.size());
  for (size_t i = 0; i < s.tensors.size(); ++i) {
    CAPTURE(s.tensors[i].first);
    CHECK(r.tensors[i].first == s.tensors[i].first);
    CHECK(r.tensors[i].second.dtype() == s.tensors[i].second.dtype());
    CHECK(r.tensors[i].second.shape() == s.tensors[i].second.shape());
    CHECK(equal(r.tensors[i].second, s.tensors[i].second));
  }
  CHECK(r.meta == s.meta);  // the checksum entry is consumed by the reader
  CHECK(r.find("ids").defined());
  CHECK_FALSE(r.find("nope").defined());
}

TEST_CASE("saving is atomic: no temporary file is left and an old file is replaced whole") {
  const std::string path = temp_path("atomic.safetensors");
  io::save_safetensors(path, sample_state());
  StateDict small;
  small.tensors.emplace_back("only", ones({2}));
  io::save_safetensors(path, small);
  CHECK(io::load_safetensors(path).tensors.size() == 1);
  for (const auto& e : fs::directory_iterator(fs::path(path).parent_path()))
    CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
}

TEST_CASE("damaged files raise clear errors, never crash") {
  const std::string good = temp_path("good.safetensors");
  io::save_safetensors(good, sample_state());
  const std::string bytes = read_bytes(good);
  const std::string bad = temp_path("bad.safetensors");

  SUBCASE("missing file") { CHECK_EMBER_ERROR(io::load_safetensors(temp_path("missing.safetensors")), "safetensors", "cannot open"); }
  SUBCASE("truncated to a few bytes") {
    write_bytes(bad, bytes.substr(0, 5));
    CHECK_EMBER_ERROR(io::load_safetensors(bad), "safetensors", "truncated");
  }
  SUBCASE("truncated inside the header") {
    write_bytes(bad, bytes.substr(0, 40));
    CHECK_EMBER_ERROR(io::load_safetensors(bad), "safetensors", "truncated");
  }
  SUBCASE("truncated inside the data") {
    write_bytes(bad, bytes.substr(0, bytes.size() - 10));
    CHECK_EMBER_ERROR(io::load_safetensors(bad), "safetensors", "truncated");
  }
  SUBCASE("a flipped bit in the data") {
    std::string b = bytes;
    b[b.size() - 20] ^= 0x10;
    write_bytes(bad, b);
    CHECK_EMBER_ERROR(io::load_safetensors(bad), "safetensors", "checksum");
  }
  SUBCASE("a flipped bit in the header length") {
    std::string b = bytes;
    b[6] ^= 0x01;
    write_bytes(bad, b);
    CHECK_THROWS_AS(io::load_safetensors(bad), Error);
  }
  SUBCASE("a flipped bit in the header JSON") {
    std::string b = bytes;
    b[9] ^= 0x40;  // breaks the first key's quoting or name
    write_bytes(bad, b);
    CHECK_THROWS_AS(io::load_safetensors(bad), Error);
  }
  SUBCASE("not JSON at all") {
    std::string b = bytes;
    for (size_t i = 8; i < 30; ++i) b[i] = '#';
    write_bytes(bad, b);
    CHECK_EMBER_ERROR(io::load_safetensors(bad), "safetensors", "JSON");
  }
  SUBCASE("a header whose shape disagrees with its byte range") {
    StateDict s;
    s.tensors.emplace_back("w", ones({2, 3}));
    io::save_safetensors(bad, s);
    std::string b = read_bytes(bad);
    const size_t at = b.find("[2,3]");
    REQUIRE(at != std::string::npos);
    b.replace(at, 5, "[3,3]");
    write_bytes(bad, b);
    CHECK_EMBER_ERROR(io::load_safetensors(bad), "safetensors", "(3, 3)");
  }
  SUBCASE("an unknown dtype") {
    StateDict s;
    s.tensors.emplace_back("w", ones({2}));
    io::save_safetensors(bad, s);
    std::string b = read_bytes(bad);
    const size_t at = b.find("\"F32\"");
    REQUIRE(at != std::string::npos);
    b.replace(at, 5, "\"F8X\"");
    write_bytes(bad, b);
    CHECK_EMBER_ERROR(io::load_safetensors(bad), "safetensors", "F8X");
  }
}

TEST_CASE("bad save arguments") {
  StateDict s;
  s.tensors.emplace_back("a", ones({1}));
  s.tensors.emplace_back("a", ones({1}));
  CHECK_EMBER_ERROR(io::save_safetensors(temp_path("dup.safetensors"), s), "safetensors", "twice");
  StateDict u;
  u.tensors.emplace_back("u", Tensor());
  CHECK_EMBER_ERROR(io::save_safetensors(temp_path("undef.safetensors"), u), "safetensors", "undefined");
  CHECK_EMBER_ERROR(io::save_safetensors("/nonexistent-dir/x.safetensors", sample_state()), "safetensors",
                    "cannot open");
}

TEST_CASE("the reference Python safetensors package reads ember's files") {
  const std::string path = temp_path("for_python.safetensors");
  StateDict s;
  s.tensors.emplace_back("weight", div(sub(arange(0, 12, 1, DType::f32).reshape({3, 4}), scalar_tensor(5.5)),
                                       scalar_tensor(4.0)));
  s.tensors.emplace_back("counts", from_vector<int64_t>({7, -3, int64_t{1} << 40}, {3}));
  s.tensors.emplace_back("half", to_dtype(tensor({1.5, -2.25, 0.125}), DType::f16));
  s.meta["step"] = "42";
  io::save_safetensors(path, s);
  const std::string cmd = std::string("python3 ") + EMBER_TEST_SOURCE_DIR + "/read_safetensors.py " + path;
  const int rc = std::system(cmd.c_str());
  const int code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  if (code == 77 || code == 127) {
    MESSAGE("skipped: python3 with the safetensors and numpy packages is not installed "
            "(pip install safetensors numpy)");
    return;
  }
  CHECK(code == 0);
}

}  // TEST_SUITE
