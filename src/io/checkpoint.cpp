// Training checkpoints: one .safetensors file with prefixed sections (see
// include/ember/io/checkpoint.h and docs/checkpoints.md).
#include "ember/io/checkpoint.h"

#include <cerrno>
#include <cstdlib>
#include <vector>

#include "ember/core/error.h"
#include "ember/io/safetensors.h"
#include "ember/ops/ops.h"

namespace ember::io {
namespace {

constexpr const char* kOp = "checkpoint";
constexpr const char* kVersion = "1";

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

bool parse_i64(const std::string& s, int64_t& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (*end != '\0' || errno == ERANGE) return false;
  out = v;
  return true;
}

bool parse_u64(const std::string& s, uint64_t& out) {
  if (s.empty() || s[0] == '-') return false;
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (*end != '\0' || errno == ERANGE) return false;
  out = v;
  return true;
}

// Prefixes a section's entries: "model." + name.
void add_section(StateDict& out, const StateDict& part, const std::string& prefix) {
  for (const auto& [name, t] : part.tensors) out.tensors.emplace_back(prefix + name, t);
  for (const auto& [k, v] : part.meta) out.meta[prefix + k] = v;
}

}  // namespace

StateDict checkpoint_state_dict(const nn::Module& model, const optim::Optimizer& opt, const optim::LRScheduler* sched,
                                const TrainingState& state) {
  StateDict ck;
  add_section(ck, model.state_dict(), "model.");
  add_section(ck, opt.state_dict(), "optim.");
  if (sched) add_section(ck, sched->state_dict(), "sched.");
  // emplace, not operator= with a const char*: GCC 12 raises a false -Wrestrict on the latter.
  ck.meta.emplace("ember.checkpoint", std::string(kVersion));
  ck.meta.emplace("ember.sections", std::string(sched ? "model,optim,sched,train" : "model,optim,train"));
  ck.meta["train.epoch"] = std::to_string(state.epoch);
  ck.meta["train.step"] = std::to_string(state.step);
  ck.meta["train.data_position"] = std::to_string(state.data_position);
  ck.meta["train.rng_seed"] = std::to_string(state.rng_seed);
  ck.meta["train.rng_offset"] = std::to_string(state.rng_offset);
  for (const auto& [k, v] : state.extra) {
    EMBER_CHECK(!k.empty(), kOp, "TrainingState::extra has an empty key");
    ck.meta["train.extra." + k] = v;
  }
  return ck;
}

void save_checkpoint(const std::string& path, const nn::Module& model, const optim::Optimizer& opt,
                     const optim::LRScheduler* sched, const TrainingState& state) {
  save_safetensors(path, checkpoint_state_dict(model, opt, sched, state));
}

void load_checkpoint_state_dict(const StateDict& ck, nn::Module& model, optim::Optimizer& opt,
                                optim::LRScheduler* sched, TrainingState& state, const std::string& where) {
  auto version = ck.meta.find("ember.checkpoint");
  EMBER_CHECK(version != ck.meta.end(), kOp, where,
              " is not an ember training checkpoint (no \"ember.checkpoint\" metadata); a plain weights file "
              "loads with io::load_safetensors + Module::load_state_dict");
  EMBER_CHECK(version->second == kVersion, kOp, where, " has checkpoint format version ", version->second,
              "; this ember reads version ", kVersion);

  // Split into sections; anything outside them is a problem (a file from elsewhere).
  StateDict model_sd, optim_sd, sched_sd;
  std::vector<std::string> problems;
  for (const auto& [name, t] : ck.tensors) {
    if (starts_with(name, "model.")) model_sd.tensors.emplace_back(name.substr(6), t);
    else if (starts_with(name, "optim.")) optim_sd.tensors.emplace_back(name.substr(6), t);
    else if (starts_with(name, "sched.")) sched_sd.tensors.emplace_back(name.substr(6), t);
    else problems.push_back("tensor \"" + name + "\" belongs to no section");
  }
  for (const auto& [k, v] : ck.meta) {
    if (starts_with(k, "optim.")) optim_sd.meta[k.substr(6)] = v;
    else if (starts_with(k, "sched.")) sched_sd.meta[k.substr(6)] = v;
  }
  std::string sections = ",";
  if (auto it = ck.meta.find("ember.sections"); it != ck.meta.end()) sections += it->second + ",";
  auto has = [&](const char* s) { return sections.find(std::string(",") + s + ",") != std::string::npos; };
  if (!has("model")) problems.push_back("missing section \"model\"");
  if (!has("optim")) problems.push_back("missing section \"optim\" (optimizer state)");
  if (!has("train")) problems.push_back("missing section \"train\" (training state)");
  if (sched && !has("sched"))
    problems.push_back("missing section \"sched\": the checkpoint was saved without a learning-rate schedule, "
                       "but one was given to restore");

  TrainingState parsed;
  auto read_i64 = [&](const char* key, int64_t& out) {
    auto it = ck.meta.find(std::string("train.") + key);
    if (it == ck.meta.end()) problems.push_back(std::string("missing meta \"train.") + key + "\"");
    else if (!parse_i64(it->second, out))
      problems.push_back(std::string("meta \"train.") + key + "\" is not an integer: \"" + it->second + "\"");
  };
  auto read_u64 = [&](const char* key, uint64_t& out) {
    auto it = ck.meta.find(std::string("train.") + key);
    if (it == ck.meta.end()) problems.push_back(std::string("missing meta \"train.") + key + "\"");
    else if (!parse_u64(it->second, out))
      problems.push_back(std::string("meta \"train.") + key + "\" is not an unsigned integer: \"" + it->second + "\"");
  };
  if (has("train")) {
    read_i64("epoch", parsed.epoch);
    read_i64("step", parsed.step);
    read_i64("data_position", parsed.data_position);
    read_u64("rng_seed", parsed.rng_seed);
    read_u64("rng_offset", parsed.rng_offset);
    for (const auto& [k, v] : ck.meta)
      if (starts_with(k, "train.extra.")) parsed.extra[k.substr(12)] = v;
  }
  if (has("model")) {
    for (const std::string& p : model.check_state_dict(model_sd, /*strict=*/true)) problems.push_back("model: " + p);
  }
  EMBER_CHECK(problems.empty(), kOp, "cannot load ", where, ": ", join(problems, "; "));

  // The optimizer and the schedule check their own state before changing anything. The
  // schedule is loaded after the optimizer; should it fail, the optimizer goes back to a
  // snapshot, so a failed load leaves everything as it was.
  StateDict snapshot = opt.state_dict();
  for (auto& [name, t] : snapshot.tensors) t = clone(t);
  try {
    opt.load_state_dict(optim_sd);
  } catch (const Error& e) {
    EMBER_FAIL(kOp, "cannot load ", where, ": optimizer: ", e.what());
  }
  if (sched) {
    try {
      sched->load_state_dict(sched_sd);
    } catch (const Error& e) {
      opt.load_state_dict(snapshot);
      EMBER_FAIL(kOp, "cannot load ", where, ": schedule: ", e.what());
    }
  }
  model.load_state_dict(model_sd, /*strict=*/true);  // checked above
  state = std::move(parsed);
}

void load_checkpoint(const std::string& path, nn::Module& model, optim::Optimizer& opt, optim::LRScheduler* sched,
                     TrainingState& state) {
  load_checkpoint_state_dict(load_safetensors(path), model, opt, sched, state, path);
}

}  // namespace ember::io
