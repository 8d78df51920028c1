// Hostile and damaged files: what io::parse_safetensors / load_safetensors and the checkpoint
// loader promise (docs/reliability.md): refuse with an ember::Error naming the file and the
// problem, never crash, never accept what the format forbids, never change anything on a failed
// load, and — for checkpoint format version 2 — refuse every flipped bit. Also writes the fuzz
// seed corpus (tests/fuzz/corpus) on request.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "ember/ember.h"
#include "ember/io/checkpoint.h"
#include "ember/io/safetensors.h"
#include "fuzz/fuzz_io.h"
#include "test_util.h"

using namespace ember;
using ember_test::as_v1_checkpoint;
using ember_test::check_error;
using ember_test::join_safetensors;
using ember_test::split_safetensors;
using ember_test::with_meta;
using ember_test::without_meta;

namespace {

StateDict parse(const std::string& file, io::SafetensorsChecks* checks = nullptr) {
  return io::parse_safetensors(file.data(), file.size(), "hostile.safetensors", checks);
}

// A header with one F32 tensor "t" of 1 element whose `field` is `value` (raw JSON).
std::string one_tensor(const std::string& field, const std::string& value) {
  std::string dtype = "\"F32\"", shape = "[1]", offsets = "[0,4]";
  if (field == "dtype") dtype = value;
  if (field == "shape") shape = value;
  if (field == "data_offsets") offsets = value;
  return join_safetensors("{\"t\":{\"dtype\":" + dtype + ",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}}",
                          std::string(4, '\0'));
}

std::string nested(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// Two F32 tensors of 2 elements (8 bytes each) at the given ranges over `data_bytes` of data.
std::string two_tensors(const std::string& a_off, const std::string& b_off, size_t data_bytes) {
  return join_safetensors("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":" + a_off +
                              "},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":" + b_off + "}}",
                          std::string(data_bytes, '\0'));
}

// Everything a failed load must leave alone.
struct Snapshot {
  StateDict model, opt, sched;
  std::vector<double> lrs;
  io::TrainingState state;
};

StateDict cloned(const StateDict& sd) {
  StateDict out = sd;
  for (auto& [n, t] : out.tensors) t = t.clone();
  return out;
}

Snapshot take(const ember_fuzz::Setup& s) {
  return {cloned(s.model.state_dict()), cloned(s.opt->state_dict()), s.sched->state_dict(), s.sched->last_lr(), s.state};
}

void check_same(const Snapshot& a, const Snapshot& b) {
  for (const auto* pair : {&a.model, &a.opt, &a.sched}) {
    const StateDict& x = *pair;
    const StateDict& y = pair == &a.model ? b.model : pair == &a.opt ? b.opt : b.sched;
    CHECK(x.meta == y.meta);
    REQUIRE(x.tensors.size() == y.tensors.size());
    for (size_t i = 0; i < x.tensors.size(); ++i) {
      CAPTURE(x.tensors[i].first);
      CHECK(x.tensors[i].first == y.tensors[i].first);
      CHECK(equal(x.tensors[i].second, y.tensors[i].second));
    }
  }
  CHECK(a.lrs == b.lrs);
  CHECK(a.state.epoch == b.state.epoch);
  CHECK(a.state.step == b.state.step);
  CHECK(a.state.data_position == b.state.data_position);
  CHECK(a.state.rng_seed == b.state.rng_seed);
  CHECK(a.state.rng_offset == b.state.rng_offset);
  CHECK(a.state.extra == b.state.extra);
}

// A small checkpoint of the fuzz target's setup after two training steps (momentum buffers or
// Adam moments exist, the schedule has moved), as version 2 bytes.
std::string small_checkpoint(ember_fuzz::Target t) {
  ember_fuzz::Setup s(t);
  s.train_step();
  s.train_step();
  s.state.epoch = 1;
  s.state.data_position = 8;
  s.state.rng_seed = 1234;
  s.state.rng_offset = 56;
  s.state.extra["note"] = "x";
  return io::serialize_safetensors(io::checkpoint_state_dict(s.model, *s.opt, s.sched.get(), s.state), "ckpt");
}

void load_into(const std::string& file, ember_fuzz::Setup& s) {
  io::load_checkpoint_from_memory(file.data(), file.size(), "ckpt.safetensors", s.model, *s.opt, s.sched.get(),
                                  s.state);
}

// Replaces `from` (which must occur) by `to` of the same length, in place: the header length
// and padding stay, so only what the edit changes can be noticed.
std::string edit_in_place(std::string file, const std::string& from, const std::string& to) {
  REQUIRE(from.size() == to.size());
  const size_t at = file.find(from);
  REQUIRE_MESSAGE(at != std::string::npos, "no \"" << from << "\"");
  file.replace(at, from.size(), to);
  return file;
}

// The file with tensor `name` (F32) declared I32, in place: same size, so only the dtype changes.
std::string retyped(std::string file, const std::string& name) {
  const size_t entry = file.find("\"" + name + "\":{");
  REQUIRE(entry != std::string::npos);
  const size_t at = file.find("\"dtype\":\"F32\"", entry);
  REQUIRE(at != std::string::npos);
  file.replace(at, 13, "\"dtype\":\"I32\"");
  return file;
}

std::string meta_value(const std::string& file, const std::string& key) {
  const std::string h = split_safetensors(file).header, needle = "\"" + key + "\":\"";
  const size_t at = h.find(needle);
  REQUIRE_MESSAGE(at != std::string::npos, "no metadata " << key);
  const size_t b = at + needle.size();
  return h.substr(b, h.find('"', b) - b);
}

// The fuzz corpus: seeds (ember's own files, which load) and known-* reproducers of every bug
// found so far (which must be refused with an ember::Error). Names carry the selector byte's
// meaning: st = safetensors, sgd / adam = a checkpoint for that setup.
std::vector<std::pair<std::string, std::string>> fuzz_corpus() {
  using ember_fuzz::Target;
  auto with = [](Target t, const std::string& file) { return std::string(1, static_cast<char>(t)) + file; };
  std::vector<std::pair<std::string, std::string>> c;
  {
    c.emplace_back("seed-st-weights", with(Target::kSafetensors, io::serialize_safetensors(ember_test::sample_state())));
    c.emplace_back("seed-st-empty", with(Target::kSafetensors, io::serialize_safetensors(StateDict{})));
    // as other tools write them: no ember metadata, space padding
    c.emplace_back("seed-st-foreign",
                   with(Target::kSafetensors, join_safetensors("{\"__metadata__\":{\"format\":\"pt\"},\"w\":{\"dtype\":"
                                                               "\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                                                               std::string(8, '\x3f'))));
  }
  for (Target t : {Target::kCheckpointSgd, Target::kCheckpointAdam}) {
    const std::string kind = t == Target::kCheckpointSgd ? "sgd" : "adam";
    const std::string v2 = small_checkpoint(t), v1 = as_v1_checkpoint(v2);
    c.emplace_back("seed-" + kind + "-v2", with(t, v2));
    c.emplace_back("seed-" + kind + "-v1", with(t, v1));
    c.emplace_back("known-" + kind + "-v1-nan-base-lr", with(t, with_meta(v1, "sched.base_lr.0", "nan")));
    c.emplace_back("known-" + kind + "-v1-negative-lr", with(t, with_meta(v1, "optim.defaults.lr", "-0.5")));
    c.emplace_back("known-" + kind + "-v1-min-sched-epoch",
                   with(t, with_meta(v1, "sched.last_epoch", "-9223372036854775808")));
    c.emplace_back("known-" + kind + "-v1-min-train-epoch", with(t, with_meta(v1, "train.epoch", "-9223372036854775808")));
    c.emplace_back("known-" + kind + "-v1-retyped-weight",
                   with(t, retyped(v1, "model.fc.weight")));
    c.emplace_back("known-" + kind + "-v2-no-checksum", with(t, without_meta(v2, "ember.checksum")));
  }
  c.emplace_back("known-sgd-v1-nan-gamma", with(Target::kCheckpointSgd, with_meta(as_v1_checkpoint(small_checkpoint(
                                                                                     Target::kCheckpointSgd)),
                                                                                 "sched.gamma", "nan")));
  c.emplace_back("known-st-deep-dtype", with(Target::kSafetensors, one_tensor("dtype", nested(100000))));
  c.emplace_back("known-st-deep-shape", with(Target::kSafetensors, one_tensor("shape", nested(100000))));
  c.emplace_back("known-st-bool-byte-2",
                 with(Target::kSafetensors,
                      join_safetensors("{\"m\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[0,3]}}",
                                       std::string("\x01\x02\x00", 3))));
  c.emplace_back("known-st-overlap", with(Target::kSafetensors, two_tensors("[0,8]", "[4,12]", 12)));
  c.emplace_back("known-st-aliased", with(Target::kSafetensors, two_tensors("[0,8]", "[0,8]", 8)));
  c.emplace_back("known-st-gap", with(Target::kSafetensors, two_tensors("[0,8]", "[12,20]", 20)));
  c.emplace_back("known-st-huge-shape", with(Target::kSafetensors, one_tensor("shape", "[4294967296,4294967296]")));
  std::string dims = "[1";
  for (int i = 0; i < 64; ++i) dims += ",1";
  c.emplace_back("known-st-65-dims", with(Target::kSafetensors, one_tensor("shape", dims + "]")));
  return c;
}

}  // namespace

TEST_SUITE("io_hostile") {

TEST_CASE("JSON nested 100k deep in dtype, shape or metadata is refused without deep recursion") {
  check_error([&] { parse(one_tensor("dtype", nested(100000))); }, "deep dtype",
              {"[safetensors]", "hostile.safetensors", "nested deeper"});
  check_error([&] { parse(one_tensor("shape", nested(100000))); }, "deep shape", {"nested deeper"});
  check_error([&] { parse(one_tensor("data_offsets", std::string(100000, '{'))); }, "deep objects, unterminated",
              {"hostile.safetensors"});
  const std::string deep_meta =
      join_safetensors("{\"__metadata__\":{\"k\":" + nested(100000) + "}}", "");
  check_error([&] { parse(deep_meta); }, "deep metadata", {"nested deeper"});
  // the format's own nesting (and a little more) is fine
  CHECK(parse(one_tensor("shape", "[1]")).tensors.size() == 1);
}

TEST_CASE("error messages never print untrusted JSON values: the type, or a short escaped prefix") {
  std::string msg = check_error([&] { parse(one_tensor("dtype", "{\"a\":[1,2,3]}")); }, "object dtype",
                                {"tensor 't'", "object", "not a string"});
  msg = check_error([&] { parse(one_tensor("dtype", "\"" + std::string(10000, 'Q') + "\"")); }, "long dtype",
                    {"unsupported dtype", "10000 bytes"});
  CHECK(msg.size() < 400);
  msg = check_error([&] { parse(one_tensor("shape", "[1,[2],3]")); }, "array in shape", {"array", "unsigned"});
  const std::string long_name = join_safetensors(
      "{\"" + std::string(5000, 'n') + "\\u001b[31m\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}",
      std::string(8, '\0'));
  msg = check_error([&] { parse(long_name); }, "long tensor name", {"needs 4 bytes but spans 8"});
  CHECK(msg.size() < 400);
  CHECK(msg.find('\x1b') == std::string::npos);
}

TEST_CASE("BOOL tensors must hold 0 or 1 bytes") {
  auto bools = [](const std::string& bytes) {
    return join_safetensors("{\"m\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[0,3]}}", bytes);
  };
  check_error([&] { parse(bools(std::string("\x01\x02\x00", 3))); }, "byte 2",
              {"BOOL tensor 'm'", "(3,)", "byte 2", "element 1"});
  check_error([&] { parse(bools(std::string("\x00\x00\xff", 3))); }, "byte 255", {"byte 255", "element 2"});
  const StateDict ok = parse(bools(std::string("\x01\x00\x01", 3)));
  CHECK(ok.tensors.at(0).second.to_vector<bool>() == std::vector<bool>{true, false, true});
}

TEST_CASE("data ranges must tile the data section: overlap, aliasing, gaps and trailing bytes are refused") {
  check_error([&] { parse(two_tensors("[0,8]", "[4,12]", 12)); }, "overlap", {"overlaps", "'b'", "'a'", "disjoint"});
  check_error([&] { parse(two_tensors("[0,8]", "[0,8]", 8)); }, "aliased", {"overlaps"});
  check_error([&] { parse(two_tensors("[0,8]", "[12,20]", 20)); }, "gap", {"4 bytes before tensor 'b'", "gap"});
  check_error([&] { parse(two_tensors("[4,12]", "[12,20]", 20)); }, "gap at the start", {"4 bytes before tensor 'a'"});
  check_error([&] { parse(two_tensors("[0,8]", "[8,16]", 20)); }, "trailing", {"trailing", "16", "20"});
  check_error([&] { parse(two_tensors("[0,8]", "[8,16]", 12)); }, "truncated", {"truncated", "16", "12"});
  // key order is not offset order: fine, and tensors come back in offset (file) order
  const StateDict r = parse(two_tensors("[8,16]", "[0,8]", 16));
  REQUIRE(r.tensors.size() == 2);
  CHECK(r.tensors[0].first == "b");
  CHECK(r.tensors[1].first == "a");
  // zero-size tensors sit anywhere in the tiling
  const StateDict z = parse(join_safetensors(
      "{\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},\"t\":{\"dtype\":\"F32\",\"shape\":[1],"
      "\"data_offsets\":[0,4]}}",
      std::string(4, '\0')));
  CHECK(z.tensors.size() == 2);
}

TEST_CASE("shapes: too many dims, dims beyond int64, element and byte counts that overflow") {
  check_error([&] { parse(one_tensor("shape", "[4294967296,4294967296]")); }, "2^32 x 2^32",
              {"tensor 't'", "(4294967296, 4294967296)", "overflows int64"});
  check_error([&] { parse(one_tensor("shape", "[4611686018427387904]")); }, "bytes overflow",
              {"byte count", "overflows"});
  check_error([&] { parse(one_tensor("shape", "[9223372036854775808]")); }, "beyond int64", {"beyond int64"});
  check_error([&] { parse(one_tensor("shape", "[0,4294967296,4294967296]")); }, "zero-size with huge strides",
              {"overflows int64"});
  check_error([&] { parse(one_tensor("shape", "[-1]")); }, "negative dim", {"malformed shape"});
  check_error([&] { parse(one_tensor("shape", "[1.5]")); }, "float dim", {"malformed shape"});
  std::string dims64 = "[1", dims65;
  for (int i = 1; i < 64; ++i) dims64 += ",1";
  dims65 = dims64 + ",1]";
  dims64 += "]";
  CHECK(parse(one_tensor("shape", dims64)).tensors.at(0).second.dim() == 64);
  check_error([&] { parse(one_tensor("shape", dims65)); }, "65 dims", {"65 dimensions", "at most 64"});
  check_error([&] { parse(one_tensor("data_offsets", "[4,0]")); }, "reversed offsets", {"end before they begin"});
  check_error([&] { parse(one_tensor("data_offsets", "[0,18446744073709551615]")); }, "huge end",
              {"needs 4 bytes"});
}

TEST_CASE("headers: NUL bytes, trailing garbage, non-objects and bad metadata are refused") {
  std::string h = "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  check_error([&] { parse(join_safetensors(h + std::string(1, '\0') + "garbage", std::string(4, '\0'))); }, "NUL",
              {"NUL"});
  check_error([&] { parse(join_safetensors(h + "x", std::string(4, '\0'))); }, "trailing x", {"corrupted header"});
  check_error([&] { parse(join_safetensors("[1,2]", "")); }, "array header", {"corrupted header"});
  check_error([&] { parse(join_safetensors("{\"__metadata__\":[1]}", "")); }, "array metadata", {"array"});
  check_error([&] { parse(join_safetensors("{\"__metadata__\":{\"k\":1}}", "")); }, "number metadata",
              {"metadata 'k'", "number"});
  check_error([&] { parse(join_safetensors("{\"t\":5}", "")); }, "number entry", {"entry 't'", "number"});
  check_error([&] { parse(join_safetensors("{\"t\":{\"dtype\":\"F32\"}}", "")); }, "missing fields", {"no shape"});
  CHECK(parse(join_safetensors(h + "\n", std::string(4, '\0'))).tensors.size() == 1);  // JSON whitespace is fine
}

TEST_CASE("a directory, an empty file and a missing file are reported as such") {
  const std::string dir = ember_test::temp_path("a_directory.safetensors");
  std::filesystem::create_directories(dir);
  check_error([&] { io::load_safetensors(dir); }, "directory", {"[safetensors]", dir, "is a directory"});
  const std::string empty_file = ember_test::temp_path("empty.safetensors");
  ember_test::write_bytes(empty_file, "");
  check_error([&] { io::load_safetensors(empty_file); }, "empty", {empty_file, "truncated"});
  check_error([&] { io::load_safetensors(ember_test::temp_path("nope.safetensors")); }, "missing", {"cannot open"});
  ember_fuzz::Setup s(ember_fuzz::kCheckpointSgd);
  check_error([&] { io::load_checkpoint(dir, s.model, *s.opt, s.sched.get(), s.state); }, "checkpoint dir",
              {"is a directory"});
}

TEST_CASE("parse_safetensors reads what serialize_safetensors and save_safetensors write, checksums included") {
  StateDict s;
  s.tensors.emplace_back("w", arange(0, 6, 1, DType::f32).reshape({2, 3}));
  s.tensors.emplace_back("m", gt(arange(0, 4, 1, DType::f32), scalar_tensor(1.5)));
  s.meta["k"] = "v";
  const std::string bytes = io::serialize_safetensors(s);
  const std::string path = ember_test::temp_path("mem.safetensors");
  io::save_safetensors(path, s);
  CHECK(ember_test::read_bytes(path) == bytes);
  io::SafetensorsChecks checks;
  const StateDict r = parse(bytes, &checks);
  CHECK(checks.checksum);
  CHECK(checks.data_crc32);
  CHECK(r.meta == s.meta);
  REQUIRE(r.tensors.size() == 2);
  CHECK(equal(r.tensors[0].second, s.tensors[0].second));
  CHECK(equal(r.tensors[1].second, s.tensors[1].second));
  io::SafetensorsChecks none;
  parse(two_tensors("[0,8]", "[8,16]", 16), &none);  // a file from another tool
  CHECK_FALSE(none.checksum);
  CHECK_FALSE(none.data_crc32);
  // a header edit the data checksum cannot see is caught by ember.checksum
  check_error([&] { parse(edit_in_place(bytes, "\"k\":\"v\"", "\"k\":\"w\"")); }, "meta edit",
              {"corrupted", "checksum of header and data"});
}

TEST_CASE("every single-bit flip anywhere in a version 2 checkpoint is refused, and changes nothing") {
  for (auto target : {ember_fuzz::kCheckpointSgd, ember_fuzz::kCheckpointAdam}) {
    CAPTURE(static_cast<int>(target));
    const std::string good = small_checkpoint(target);
    ember_fuzz::Setup s(target);
    const Snapshot before = take(s);
    std::vector<size_t> accepted;
    for (size_t bit = 0; bit < good.size() * 8; ++bit) {
      std::string bad = good;
      bad[bit / 8] = static_cast<char>(bad[bit / 8] ^ (1 << (bit % 8)));
      try {
        load_into(bad, s);
        accepted.push_back(bit);
      } catch (const Error&) {
      }
    }
    CHECK_MESSAGE(accepted.empty(), accepted.size() << " of " << good.size() * 8 << " flips loaded, first at bit "
                                                    << (accepted.empty() ? 0 : accepted[0]));
    check_same(before, take(s));
    load_into(good, s);  // and the good file loads
    CHECK(s.state.rng_seed == 1234);
  }
}

TEST_CASE("version 2: metadata digit edits, a retyped weight and swapped offsets are refused") {
  const std::string good = small_checkpoint(ember_fuzz::kCheckpointSgd);
  ember_fuzz::Setup s(ember_fuzz::kCheckpointSgd);
  const Snapshot before = take(s);
  auto refused = [&](const std::string& bad, const char* what) {
    check_error([&] { load_into(bad, s); }, what, {"[safetensors]", "ckpt.safetensors", "corrupted"});
  };
  // lr 0.1 -> 0.3 (one digit), weight_decay 0 -> 2, gamma 0.5 -> 8.5, counters, the rng seed
  const std::string lr = meta_value(good, "optim.defaults.lr");
  REQUIRE(lr.substr(0, 3) == "0.1");
  refused(edit_in_place(good, "\"optim.defaults.lr\":\"0.1", "\"optim.defaults.lr\":\"0.3"), "lr");
  refused(edit_in_place(good, "\"optim.defaults.weight_decay\":\"0\"", "\"optim.defaults.weight_decay\":\"2\""),
          "weight_decay");
  refused(edit_in_place(good, "\"sched.gamma\":\"0.5\"", "\"sched.gamma\":\"8.5\""), "gamma");
  refused(edit_in_place(good, "\"sched.last_epoch\":\"2\"", "\"sched.last_epoch\":\"0\""), "sched epoch");
  refused(edit_in_place(good, "\"optim.state.0.0.step\":\"2\"", "\"optim.state.0.0.step\":\"7\""), "step count");
  refused(edit_in_place(good, "\"train.rng_seed\":\"1234\"", "\"train.rng_seed\":\"1235\""), "rng seed");
  refused(edit_in_place(good, "\"train.step\":\"2\"", "\"train.step\":\"9\""), "train step");
  // F32 weight retyped as I32 (same size: the data checksum alone would pass it)
  refused(retyped(good, "model.fc.weight"),
          "retype");
  // two same-size tensors' data offsets swapped: model.fc.weight (2, 3) and its momentum buffer
  {
    ember_test::SafetensorsParts p = split_safetensors(good);
    std::string& h = p.header;
    auto offsets_at = [&](const std::string& name) { return h.find("\"data_offsets\":", h.find("\"" + name + "\":{")); };
    auto offsets = [&](size_t at) { return h.substr(at, h.find(']', at) + 1 - at); };
    const size_t at_a = offsets_at("model.fc.weight"), at_b = offsets_at("optim.state.0.0.momentum_buffer");
    REQUIRE(at_a < at_b);
    const std::string a = offsets(at_a), b = offsets(at_b);
    REQUIRE(a != b);
    h.replace(at_b, b.size(), a);  // the later one first: at_a stays valid
    h.replace(at_a, a.size(), b);
    refused(join_safetensors(h.substr(0, h.find_last_not_of(' ') + 1), p.data), "swapped offsets");
  }
  // a version 2 file that lost its checksum
  check_error([&] { load_into(without_meta(good, "ember.checksum"), s); }, "no checksum",
              {"[checkpoint]", "must carry \"ember.checksum\""});
  check_same(before, take(s));
}

TEST_CASE("version 1 checkpoints still load; a retyped weight is refused there too") {
  const std::string good = small_checkpoint(ember_fuzz::kCheckpointAdam);
  const std::string v1 = as_v1_checkpoint(good);
  ember_fuzz::Setup a(ember_fuzz::kCheckpointAdam), b(ember_fuzz::kCheckpointAdam);
  load_into(good, a);
  load_into(v1, b);
  check_same(take(a), take(b));
  CHECK(b.state.step == 2);
  ember_fuzz::Setup c(ember_fuzz::kCheckpointAdam);
  const Snapshot before = take(c);
  check_error([&] {
    load_into(retyped(v1, "model.fc.weight"), c);
  }, "v1 retype", {"[checkpoint]", "fc.weight", "i32 in the file but f32 in the module"});
  check_error([&] { load_into(with_meta(v1, "ember.checkpoint", "3"), c); }, "unknown version",
              {"format version \"3\"", "versions 1 and 2"});
  check_same(before, take(c));
}

TEST_CASE("a failed load changes nothing: bad hyper-parameters and counters in the file") {
  struct Case {
    ember_fuzz::Target target;
    const char* key;
    const char* value;
    const char* needle;
  };
  const std::string int_min = "-9223372036854775808";
  const Case cases[] = {
      {ember_fuzz::kCheckpointSgd, "sched.base_lr.0", "nan", "base_lr.0 must be finite"},
      {ember_fuzz::kCheckpointSgd, "sched.base_lr.0", "-0.5", "base_lr.0 must be finite and >= 0"},
      {ember_fuzz::kCheckpointSgd, "sched.gamma", "nan", "gamma must be finite"},
      {ember_fuzz::kCheckpointSgd, "sched.step_size", "0", "step_size must be > 0"},
      {ember_fuzz::kCheckpointSgd, "sched.last_epoch", int_min.c_str(), "last_epoch"},
      {ember_fuzz::kCheckpointSgd, "sched.last_epoch", "-1", "last_epoch"},
      {ember_fuzz::kCheckpointSgd, "optim.defaults.lr", "nan", "lr must be"},
      {ember_fuzz::kCheckpointSgd, "optim.defaults.lr", "-0.01", "lr must be"},
      {ember_fuzz::kCheckpointSgd, "optim.defaults.weight_decay", "-2", "weight_decay"},
      {ember_fuzz::kCheckpointSgd, "optim.defaults.momentum", "inf", "momentum"},
      {ember_fuzz::kCheckpointSgd, "optim.state.0.0.step", int_min.c_str(), "out of range"},
      {ember_fuzz::kCheckpointSgd, "optim.state.0.0.step", "9223372036854775807", "out of range"},
      {ember_fuzz::kCheckpointSgd, "train.epoch", int_min.c_str(), "train.epoch\" is negative"},
      {ember_fuzz::kCheckpointSgd, "train.data_position", "-8", "negative"},
      {ember_fuzz::kCheckpointAdam, "optim.defaults.beta1", "1", "beta1"},
      {ember_fuzz::kCheckpointAdam, "optim.defaults.beta2", "nan", "beta2"},
      {ember_fuzz::kCheckpointAdam, "optim.defaults.eps", "-1", "eps"},
      {ember_fuzz::kCheckpointAdam, "sched.min_lr", "inf", "finite"},
      {ember_fuzz::kCheckpointAdam, "sched.start_factor", "nan", "start_factor"},
      {ember_fuzz::kCheckpointAdam, "sched.base_lr.0", "nan", "base_lr.0"},
  };
  const std::string sgd = as_v1_checkpoint(small_checkpoint(ember_fuzz::kCheckpointSgd));
  const std::string adam = as_v1_checkpoint(small_checkpoint(ember_fuzz::kCheckpointAdam));
  for (const Case& c : cases) {
    CAPTURE(c.key);
    CAPTURE(c.value);
    const std::string bad = with_meta(c.target == ember_fuzz::kCheckpointSgd ? sgd : adam, c.key, c.value);
    // a setup that has trained (so there is state to lose), then a failed load
    ember_fuzz::Setup s(c.target);
    s.train_step();
    s.state.epoch = 5;
    const Snapshot before = take(s);
    check_error([&] { load_into(bad, s); }, c.key, {"[checkpoint]", "ckpt.safetensors", c.needle});
    check_same(before, take(s));
    // the same through the in-memory StateDict entry point
    const StateDict sd = parse(bad);
    check_error([&] { io::load_checkpoint_state_dict(sd, s.model, *s.opt, s.sched.get(), s.state, "mem"); }, c.key,
                {"[checkpoint]", "mem", c.needle});
    check_same(before, take(s));
  }
}

TEST_CASE("an empty TrainingState::extra key in a file is refused (it could not be saved again)") {
  ember_test::SafetensorsParts p = split_safetensors(as_v1_checkpoint(small_checkpoint(ember_fuzz::kCheckpointSgd)));
  const size_t at = p.header.find("\"train.extra.note\"");
  REQUIRE(at != std::string::npos);
  p.header.replace(at, 18, "\"train.extra.\"");
  ember_fuzz::Setup s(ember_fuzz::kCheckpointSgd);
  const Snapshot before = take(s);
  check_error([&] { load_into(join_safetensors(p.header.substr(0, p.header.find_last_not_of(' ') + 1), p.data), s); },
              "empty extra key", {"[checkpoint]", "empty key"});
  check_same(before, take(s));
}

TEST_CASE("schedules and optimizers refuse out-of-range state in load_state_dict and keep theirs") {
  ember_fuzz::Setup s(ember_fuzz::kCheckpointSgd);
  s.train_step();
  s.train_step();
  s.train_step();
  const StateDict good = s.sched->state_dict();
  const std::vector<double> lrs = s.sched->last_lr();
  const int64_t epoch = s.sched->last_epoch();
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"base_lr.0", "nan"}, {"base_lr.0", "-1"}, {"gamma", "nan"}, {"gamma", "-0.5"},
           {"last_epoch", "-9223372036854775808"}, {"last_epoch", "9223372036854775807"}, {"step_size", "-3"}}) {
    CAPTURE(key);
    StateDict bad = good;
    bad.meta[key] = value;
    CHECK_THROWS_AS(s.sched->load_state_dict(bad), Error);
    CHECK(s.sched->state_dict().meta == good.meta);
    CHECK(s.sched->last_lr() == lrs);
    CHECK(s.sched->last_epoch() == epoch);
  }
  s.sched->load_state_dict(good);
  CHECK(s.sched->last_lr() == lrs);

  optim::ReduceLROnPlateau plateau(*s.opt, {});
  const StateDict pgood = plateau.state_dict();
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"last_epoch", "-1"}, {"num_bad_epochs", "-9223372036854775808"}, {"best", "nan"},
           {"min_lr", "inf"}, {"factor", "nan"}, {"cooldown_counter", "-2"}}) {
    CAPTURE(key);
    StateDict bad = pgood;
    bad.meta[key] = value;
    CHECK_THROWS_AS(plateau.load_state_dict(bad), Error);
    CHECK(plateau.state_dict().meta == pgood.meta);
  }

  const StateDict ogood = cloned(s.opt->state_dict());
  StateDict obad = ogood;
  obad.meta["state.0.0.step"] = "9223372036854775807";
  check_error([&] { s.opt->load_state_dict(obad); }, "step max", {"state.0.0.step", "out of range"});
  obad = ogood;
  obad.meta["optimizer"] = std::string(5000, 'Z');
  const std::string msg = check_error([&] { s.opt->load_state_dict(obad); }, "long kind", {"5000 bytes"});
  CHECK(msg.size() < 400);
  CHECK(s.opt->state_dict().meta == ogood.meta);
}

TEST_CASE("saving text that is not UTF-8 raises ember::Error") {
  StateDict s;
  s.tensors.emplace_back("w", ones({1}));
  s.meta["bad"] = std::string("\xff\xfe", 2);
  check_error([&] { io::serialize_safetensors(s, "x.safetensors"); }, "bad meta", {"[safetensors]", "UTF-8"});
}

TEST_CASE("save_checkpoint refuses negative training counts") {
  ember_fuzz::Setup s(ember_fuzz::kCheckpointSgd);
  s.state.epoch = -1;
  check_error([&] { io::checkpoint_state_dict(s.model, *s.opt, s.sched.get(), s.state); }, "negative epoch",
              {"[checkpoint]", "epoch -1"});
}

TEST_CASE("fuzz corpus: seeds load, known reproducers are refused (EMBER_FUZZ_CORPUS_OUT=dir writes them)") {
  const auto corpus = fuzz_corpus();
  const char* out = std::getenv("EMBER_FUZZ_CORPUS_OUT");
  for (const auto& [name, bytes] : corpus) {
    CAPTURE(name);
    if (out && *out) ember_test::write_bytes((std::filesystem::path(out) / name).string(), bytes);
    const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
    if (name.rfind("seed-", 0) == 0) {
      CHECK_NOTHROW(ember_fuzz::run_one(data, bytes.size()));
    } else {
      CHECK_THROWS_AS(ember_fuzz::run_one(data, bytes.size()), Error);
    }
  }
  // the committed corpus: every seed still loads, every reproducer is still refused
  const std::filesystem::path dir = std::filesystem::path(EMBER_TEST_SOURCE_DIR) / "fuzz" / "corpus";
  size_t seen = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string name = e.path().filename().string(), bytes = ember_test::read_bytes(e.path().string());
    CAPTURE(name);
    const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
    if (name.rfind("seed-", 0) == 0) {
      CHECK_NOTHROW(ember_fuzz::run_one(data, bytes.size()));
      ++seen;
    } else if (name.rfind("known-", 0) == 0) {
      CHECK_THROWS_AS(ember_fuzz::run_one(data, bytes.size()), Error);
      ++seen;
    }
  }
  CHECK(seen >= corpus.size());
}

}  // TEST_SUITE
