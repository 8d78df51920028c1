// Tests of the examples' flag table (flags.h): values of every kind land in their fields, bad
// values and bad command lines raise ember::Error with the exact text the examples print (the
// program, the flag, what it got), --preset is applied before the other flags wherever it
// stands, and a custom flag sees its value.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "flags.h"

namespace {

constexpr const char* kProg = "prog";

struct Args {
  bool resume = false, help = false;
  int64_t epochs = 3;
  uint64_t seed = 7;
  int threads = 0;
  double lr = 0.1, dropout = 0.2, decay = 0.0;
  std::string device = "cpu", norm = "train", mode = "a", preset = "small";
  std::optional<ember::DType> amp;
  std::vector<std::string> custom;  // every value --tag saw, in order
};

void apply_preset(Args& a, const std::string& name) {
  EMBER_CHECK(name == "small" || name == "full", kProg, "--preset expects small or full, got \"", name, "\"");
  a.preset = name;
  if (name == "full") a.epochs = 100, a.lr = 0.5, a.threads = 8;
}

// Parses `words` (the program name first) with the table every test uses.
Args parse(std::vector<std::string> words) {
  words.insert(words.begin(), kProg);
  std::vector<const char*> argv;
  for (const std::string& w : words) argv.push_back(w.c_str());
  Args a;
  example::Flags f(kProg);
  f.preset([&](const std::string& v) { apply_preset(a, v); });
  f.boolean("--resume", &a.resume);
  f.integer("--epochs", &a.epochs, 1).integer("--seed", &a.seed, 0).integer("--threads", &a.threads, 1);
  f.real("--lr", &a.lr, 0.0, /*strict=*/true).real("--dropout", &a.dropout, 0.0, false, /*below=*/1.0);
  f.real("--decay", &a.decay, 0.0, false);
  f.text("--device", &a.device).amp("--amp", &a.amp);
  f.choice("--norm", &a.norm, {"train", "window"}, " (or leave it out)");
  f.choice("--mode", &a.mode, {"a", "b", "c"});
  f.custom("--tag", [&](const std::string& v) {
    EMBER_CHECK(v != "bad", kProg, "--tag cannot be \"bad\"");
    a.custom.push_back(v);
  });
  a.help = f.parse(static_cast<int>(argv.size()), argv.data());
  return a;
}

}  // namespace

TEST_CASE("defaults stay when no flag is given") {
  const Args a = parse({});
  CHECK(a.epochs == 3);
  CHECK(a.seed == 7);
  CHECK(a.lr == 0.1);
  CHECK(a.device == "cpu");
  CHECK_FALSE(a.resume);
  CHECK_FALSE(a.help);
  CHECK_FALSE(a.amp.has_value());
  CHECK(a.preset == "small");
}

TEST_CASE("values of every kind land in their fields") {
  const Args a = parse({"--epochs", "12", "--seed", "0", "--threads", "4", "--lr", "2.5e-3", "--dropout", "0",
                        "--decay", "0", "--device", "cuda:1", "--amp", "bf16", "--norm", "window", "--mode", "c",
                        "--resume"});
  CHECK(a.epochs == 12);
  CHECK(a.seed == 0);
  CHECK(a.threads == 4);
  CHECK(a.lr == doctest::Approx(2.5e-3));
  CHECK(a.dropout == 0.0);
  CHECK(a.device == "cuda:1");
  REQUIRE(a.amp.has_value());
  CHECK(*a.amp == ember::DType::bf16);
  CHECK(a.norm == "window");
  CHECK(a.mode == "c");
  CHECK(a.resume);
  CHECK(parse({"--amp", "f16"}).amp == ember::DType::f16);
  CHECK_FALSE(parse({"--amp", "bf16", "--amp", "off"}).amp.has_value());
}

TEST_CASE("a later flag overrides an earlier one; a value is taken as given") {
  CHECK(parse({"--epochs", "2", "--epochs", "5"}).epochs == 5);
  CHECK(parse({"--device", ""}).device.empty());
  // A value that looks like a flag is still the value.
  const Args a = parse({"--device", "--resume"});
  CHECK(a.device == "--resume");
  CHECK_FALSE(a.resume);
  CHECK(parse({"--seed", "18446744073709551"}).seed == 18446744073709551ULL);
}

TEST_CASE("--help and -h") {
  CHECK(parse({"--help"}).help);
  CHECK(parse({"--epochs", "2", "-h"}).help);
}

TEST_CASE("ranges: integers, numbers, strict and upper bounds") {
  CHECK_THROWS_WITH_AS(parse({"--epochs", "0"}), "[prog] --epochs must be >= 1, got 0", ember::Error);
  CHECK_THROWS_WITH_AS(parse({"--epochs", "3x"}), "[prog] --epochs expects an integer, got \"3x\"", ember::Error);
  CHECK_THROWS_WITH_AS(parse({"--epochs", ""}), "[prog] --epochs expects an integer, got \"\"", ember::Error);
  CHECK_THROWS_WITH_AS(parse({"--seed", "-1"}), "[prog] --seed must be >= 0, got -1", ember::Error);
  CHECK_THROWS_WITH_AS(parse({"--lr", "0"}), "[prog] --lr must be > 0, got 0", ember::Error);
  CHECK_THROWS_WITH_AS(parse({"--lr", "fast"}), "[prog] --lr expects a number, got \"fast\"", ember::Error);
  CHECK_THROWS_WITH_AS(parse({"--lr", "inf"}), "[prog] --lr expects a number, got \"inf\"", ember::Error);
  CHECK_THROWS_WITH_AS(parse({"--decay", "-0.5"}), "[prog] --decay must be >= 0, got -0.5", ember::Error);
  CHECK_THROWS_WITH_AS(parse({"--dropout", "1"}), "[prog] --dropout must be < 1, got 1", ember::Error);
  CHECK_THROWS_WITH_AS(parse({"--dropout", "1.5"}), "[prog] --dropout must be < 1, got 1.5", ember::Error);
  CHECK(parse({"--dropout", "0.99"}).dropout == doctest::Approx(0.99));
}

TEST_CASE("choices name what they allow") {
  CHECK_THROWS_WITH_AS(parse({"--norm", "batch"}),
                       "[prog] --norm expects train or window, got \"batch\" (or leave it out)", ember::Error);
  CHECK_THROWS_WITH_AS(parse({"--mode", "d"}), "[prog] --mode expects a, b or c, got \"d\"", ember::Error);
  CHECK_THROWS_WITH_AS(parse({"--amp", "fp8"}), "[prog] --amp expects bf16, f16 or off, got \"fp8\"", ember::Error);
}

TEST_CASE("unknown options, stray words and missing values") {
  CHECK_THROWS_WITH_AS(parse({"--epoch", "3"}), "[prog] unknown option \"--epoch\" (see --help)", ember::Error);
  // An unknown flag at the end is named as unknown, not as one that needs a value.
  CHECK_THROWS_WITH_AS(parse({"--verbose"}), "[prog] unknown option \"--verbose\" (see --help)", ember::Error);
  CHECK_THROWS_WITH_AS(parse({"-v"}), "[prog] unexpected argument \"-v\" (see --help)", ember::Error);
  CHECK_THROWS_WITH_AS(parse({"data.txt"}), "[prog] unexpected argument \"data.txt\" (see --help)", ember::Error);
  CHECK_THROWS_WITH_AS(parse({"--epochs", "3", "4"}), "[prog] unexpected argument \"4\" (see --help)", ember::Error);
  CHECK_THROWS_WITH_AS(parse({"--resume", "--epochs"}), "[prog] --epochs needs a value (see --help)", ember::Error);
  CHECK_THROWS_WITH_AS(parse({"--tag"}), "[prog] --tag needs a value (see --help)", ember::Error);
  CHECK_THROWS_WITH_AS(parse({"--preset"}), "[prog] --preset needs a value (see --help)", ember::Error);
  // A boolean takes no value: what follows it is the next flag.
  CHECK_THROWS_WITH_AS(parse({"--resume", "yes"}), "[prog] unexpected argument \"yes\" (see --help)", ember::Error);
  // The first bad flag is the one reported.
  CHECK_THROWS_WITH_AS(parse({"--lr", "0", "--bogus"}), "[prog] --lr must be > 0, got 0", ember::Error);
}

TEST_CASE("--preset is applied first, wherever it stands, and the other flags override it") {
  Args a = parse({"--preset", "full"});
  CHECK(a.preset == "full");
  CHECK(a.epochs == 100);
  CHECK(a.threads == 8);
  // Flags before and after it win over what it sets; what they leave alone keeps the preset's.
  a = parse({"--epochs", "5", "--preset", "full", "--lr", "0.25"});
  CHECK(a.epochs == 5);
  CHECK(a.lr == 0.25);
  CHECK(a.threads == 8);
  // Every --preset runs, in order.
  a = parse({"--preset", "full", "--preset", "small"});
  CHECK(a.preset == "small");
  CHECK(a.epochs == 100);
  // A bad preset is reported before any other flag is looked at.
  CHECK_THROWS_WITH_AS(parse({"--epochs", "0", "--preset", "huge"}),
                       "[prog] --preset expects small or full, got \"huge\"", ember::Error);
}

TEST_CASE("a custom flag sees each value and may refuse it") {
  CHECK(parse({"--tag", "x", "--epochs", "2", "--tag", "y"}).custom == std::vector<std::string>{"x", "y"});
  CHECK_THROWS_WITH_AS(parse({"--tag", "bad"}), "[prog] --tag cannot be \"bad\"", ember::Error);
}

TEST_CASE("a table that declares a flag twice is refused") {
  bool b = false;
  example::Flags f(kProg);
  f.boolean("--x", &b);
  CHECK_THROWS_AS(f.boolean("--x", &b), ember::Error);
  CHECK_THROWS_AS(f.boolean("--help", &b), ember::Error);
  CHECK_THROWS_AS(f.boolean("x", &b), ember::Error);
}
