// Tests of the SWORD zText reader: the real KJV module when it is installed (verse count, first
// and last verse), markup stripping, and damaged copies of the module (each must raise a
// std::runtime_error that names the problem, never crash or return garbage).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "sword_ztext.h"

namespace fs = std::filesystem;

namespace {
const char* kKjv = "/usr/share/sword/modules/texts/ztext/engKJV2006eb";
bool have_kjv() { return fs::exists(fs::path(kKjv) / "ot.bzs"); }

std::string error_of(const std::string& dir) {
  try {
    sword::read_verses(dir);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

// A copy of the module in a fresh folder, with `edit` applied to one of its files.
fs::path damaged_copy(const std::string& name, const std::string& file, void (*edit)(std::string&)) {
  fs::path dir = fs::temp_directory_path() / ("ember_sword_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* f : {"ot.bzs", "ot.bzv", "ot.bzz", "nt.bzs", "nt.bzv", "nt.bzz"})
    fs::copy_file(fs::path(kKjv) / f, dir / f);
  std::string bytes;
  {
    std::ifstream in(dir / file, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  edit(bytes);
  std::ofstream(dir / file, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return dir;
}
}  // namespace

TEST_CASE("markup is stripped: tags go, notes and titles go with their text, entities are decoded") {
  CHECK(sword::to_plain("<w lemma=\"strong:H7225\">In the beginning</w> <w>God</w>") == "In the beginning God");
  CHECK(sword::to_plain("Hello<note type=\"x\">a <i>footnote</i></note> world") == "Hello world");
  CHECK(sword::to_plain("<title type=\"main\">GENESIS</title>The &amp; sign &lt;here&gt;") == "The & sign <here>");
  CHECK(sword::to_plain("one<lb/>two<milestone type=\"x\"/>three") == "one two three");
  CHECK(sword::to_plain("  many   spaces\n\there ") == "many spaces here");
  CHECK(sword::to_plain("<chapter n=\"1\"/>") == "");
  CHECK(sword::to_plain("cut off <w lemma=") == "cut off");
}

TEST_CASE("the King James module reads as 31,102 verses" * doctest::skip(!have_kjv())) {
  auto v = sword::read_verses(kKjv);
  CHECK(v.size() == 31102);
  CHECK(v.front() == "In the beginning God created the heaven and the earth.");
  CHECK(v.back() == "The grace of our Lord Jesus Christ be with you all. Amen.");
  for (const std::string& s : v) {
    CHECK_FALSE(s.empty());
    CHECK(s.find('<') == std::string::npos);
  }
}

TEST_CASE("damaged modules raise clear errors" * doctest::skip(!have_kjv())) {
  CHECK(error_of("/nonexistent") .find("no zText module") != std::string::npos);
  auto truncated = damaged_copy("trunc", "nt.bzz", [](std::string& b) { b.resize(b.size() / 2); });
  CHECK(error_of(truncated.string()).find("truncated") != std::string::npos);
  auto flipped = damaged_copy("flip", "ot.bzz", [](std::string& b) {
    for (size_t i = b.size() / 2; i < b.size() / 2 + 300; ++i) b[i] = static_cast<char>(b[i] ^ 0x5a);
  });
  CHECK(error_of(flipped.string()).find("does not inflate") != std::string::npos);
  auto odd_index = damaged_copy("odd", "ot.bzs", [](std::string& b) { b.push_back('x'); });
  CHECK(error_of(odd_index.string()).find("12-byte records") != std::string::npos);
  auto bad_block = damaged_copy("block", "nt.bzv", [](std::string& b) {
    b[20] = '\x7f';  // the third verse record's block number becomes huge
    b[23] = '\x7f';
  });
  CHECK(error_of(bad_block.string()).find("names block") != std::string::npos);
  for (const char* n : {"trunc", "flip", "odd", "block"}) fs::remove_all(fs::temp_directory_path() / (std::string("ember_sword_") + n));
}
