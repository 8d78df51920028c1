// Training checkpoints: one .safetensors file with prefixed sections (see
// include/ember/io/checkpoint.h and docs/checkpoints.md).
#include "ember/io/checkpoint.h"

#include <cerrno>
#include <cstdlib>
#include <exception>
#include <vector>

#include "ember/core/error.h"
#include "ember/dist.h"
#include "ember/io/safetensors.h"
#include "ember/ops/ops.h"
#include "core/untrusted_text.h"

namespace ember::io {
namespace {

constexpr const char* kOp = "checkpoint";
constexpr const char* kVersion = "2";     // written; "1" still reads (docs/checkpoints.md)
constexpr size_t kMaxProblemsShown = 20;  // a hostile file can list a million bad keys

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

// The problems of a load, each cut to a readable length, at most kMaxProblemsShown of them.
std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < kMaxProblemsShown; ++i) s += (i ? sep : "") + detail::printable(v[i], 600);
  if (v.size() > kMaxProblemsShown) s += std::string(sep) + "... and " + std::to_string(v.size() - kMaxProblemsShown) + " more";
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
                                const TrainingState& state, const amp::GradScaler* scaler) {
  StateDict ck;
  add_section(ck, model.state_dict(), "model.");
  add_section(ck, opt.state_dict(), "optim.");
  if (sched) add_section(ck, sched->state_dict(), "sched.");
  if (scaler) add_section(ck, scaler->state_dict(), "scaler.");
  // emplace, not operator= with a const char*: GCC 12 raises a false -Wrestrict on the latter.
  ck.meta.emplace("ember.checkpoint", std::string(kVersion));
  std::string sections = "model,optim";
  if (sched) sections.append(",sched");
  if (scaler) sections.append(",scaler");
  sections.append(",train");
  ck.meta.emplace("ember.sections", std::move(sections));
  EMBER_CHECK(state.epoch >= 0 && state.step >= 0 && state.data_position >= 0, kOp,
              "TrainingState counts must be >= 0, got epoch ", state.epoch, ", step ", state.step, ", data_position ",
              state.data_position);
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
                     const optim::LRScheduler* sched, const TrainingState& state, const amp::GradScaler* scaler) {
  if (dist::world_size() == 1) return save_safetensors(path, checkpoint_state_dict(model, opt, sched, state, scaler));
  // A job: rank 0 writes (DDP keeps every rank's model and optimizer identical), then every
  // rank learns whether it worked, so no rank goes on (or reads the file) after a failed save.
  std::exception_ptr error;
  if (dist::rank() == 0) {
    try {
      save_safetensors(path, checkpoint_state_dict(model, opt, sched, state, scaler));
    } catch (const Error&) {
      error = std::current_exception();
    }
  }
  Tensor failed = full({1}, error ? 1.0 : 0.0, DType::i32);
  dist::all_reduce(failed, dist::ReduceOp::max);
  if (error) std::rethrow_exception(error);
  EMBER_CHECK(failed.item<int64_t>() == 0, "io.save_checkpoint", "rank 0 could not write ", path,
              " (its error says why); this is rank ", dist::rank(), " of ", dist::world_size());
}

namespace {

// The load behind every entry point. `checks` is null for an in-memory StateDict (no bytes to
// checksum), else what the safetensors reader verified: a version 2 file must have carried
// ember.checksum.
void load_checked(const StateDict& ck, nn::Module& model, optim::Optimizer& opt, optim::LRScheduler* sched,
                  TrainingState& state, amp::GradScaler* scaler, const std::string& where,
                  const SafetensorsChecks* checks) {
  auto version = ck.meta.find("ember.checkpoint");
  EMBER_CHECK(version != ck.meta.end(), kOp, where,
              " is not an ember training checkpoint (no \"ember.checkpoint\" metadata); a plain weights file "
              "loads with io::load_safetensors + Module::load_state_dict");
  EMBER_CHECK(version->second == "1" || version->second == kVersion, kOp, where, " has checkpoint format version \"",
              detail::printable(version->second, 16), "\"; this ember reads versions 1 and ", kVersion);
  EMBER_CHECK(!checks || version->second == "1" || checks->checksum, kOp, where,
              " is corrupted: a version ", kVersion, " checkpoint must carry \"ember.checksum\" and this one does not");

  // Split into sections; anything outside them is a problem (a file from elsewhere).
  StateDict model_sd, optim_sd, sched_sd, scaler_sd;
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
    else if (starts_with(k, "scaler.")) scaler_sd.meta[k.substr(7)] = v;
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
      problems.push_back(std::string("meta \"train.") + key + "\" is not an integer: \"" + detail::printable(it->second) + "\"");
    else if (out < 0)
      problems.push_back(std::string("meta \"train.") + key + "\" is negative: " + it->second);
  };
  auto read_u64 = [&](const char* key, uint64_t& out) {
    auto it = ck.meta.find(std::string("train.") + key);
    if (it == ck.meta.end()) problems.push_back(std::string("missing meta \"train.") + key + "\"");
    else if (!parse_u64(it->second, out))
      problems.push_back(std::string("meta \"train.") + key + "\" is not an unsigned integer: \"" +
                         detail::printable(it->second) + "\"");
  };
  if (has("train")) {
    read_i64("epoch", parsed.epoch);
    read_i64("step", parsed.step);
    read_i64("data_position", parsed.data_position);
    read_u64("rng_seed", parsed.rng_seed);
    read_u64("rng_offset", parsed.rng_offset);
    for (const auto& [k, v] : ck.meta) {
      if (!starts_with(k, "train.extra.")) continue;
      if (k.size() == 12) problems.push_back("meta \"train.extra.\" has an empty key (save_checkpoint refuses those)");
      else parsed.extra[k.substr(12)] = v;
    }
  }
  if (has("model")) {
    for (const std::string& p : model.check_state_dict(model_sd, /*strict=*/true)) problems.push_back("model: " + p);
    // Module::load_state_dict converts dtypes (weights files may be f16), but a checkpoint
    // holds the model's own tensors: an integer tensor for a float one (or back) is damage.
    StateDict mine = model.state_dict();
    for (const auto& [name, t] : model_sd.tensors) {
      const Tensor own = mine.find(name);
      if (own.defined() && t.defined() && is_floating(own.dtype()) != is_floating(t.dtype()))
        problems.push_back("model: tensor \"" + name + "\" is " + dtype_name(t.dtype()) + " in the file but " +
                           dtype_name(own.dtype()) + " in the module");
    }
  }
  // The loss scaler: checked on a scratch copy now, loaded last (it cannot fail then). A file
  // saved without one (older checkpoints, runs without mixed precision) leaves it as it is.
  const bool load_scaler = scaler != nullptr && has("scaler");
  if (load_scaler) {
    try {
      amp::GradScaler scratch;
      scratch.load_state_dict(scaler_sd);
    } catch (const Error& e) {
      problems.push_back(std::string("scaler: ") + detail::printable(e.what(), 400));
    }
  }
  EMBER_CHECK(problems.empty(), kOp, "cannot load ", where, ": ", join(problems, "; "));

  // The optimizer and the schedule check their own state (kinds, shapes, hyper-parameters in
  // range) and change nothing when they refuse. The schedule loads after the optimizer and
  // the model last; should a later one fail, the earlier ones go back to snapshots, so a
  // failed load leaves everything as it was.
  StateDict opt_snapshot = opt.state_dict();
  for (auto& [name, t] : opt_snapshot.tensors) t = clone(t);
  const StateDict sched_snapshot = sched ? sched->state_dict() : StateDict{};
  const char* stage = "optimizer";
  // Puts back what changed before `stage` failed. These states were valid a moment ago, so
  // they load; the schedule first, since loading it sets the optimizer's learning rates.
  auto restore = [&] {
    const std::string failed = stage;
    try {
      if (sched && failed == "model") sched->load_state_dict(sched_snapshot);
      if (failed != "optimizer") opt.load_state_dict(opt_snapshot);
    } catch (...) {
    }
  };
  try {
    opt.load_state_dict(optim_sd);
    if (sched) {
      stage = "schedule";
      sched->load_state_dict(sched_sd);
    }
    stage = "model";
    model.load_state_dict(model_sd, /*strict=*/true);  // checked above
  } catch (const Error& e) {
    restore();
    EMBER_FAIL(kOp, "cannot load ", where, ": ", stage, ": ", detail::printable(e.what(), 2000));
  } catch (...) {  // out of memory, say: the same rollback, the exception as it is
    restore();
    throw;
  }
  if (load_scaler) scaler->load_state_dict(scaler_sd);
  state = std::move(parsed);
}

}  // namespace

void load_checkpoint_state_dict(const StateDict& ck, nn::Module& model, optim::Optimizer& opt,
                                optim::LRScheduler* sched, TrainingState& state, const std::string& where,
                                amp::GradScaler* scaler) {
  load_checked(ck, model, opt, sched, state, scaler, where, nullptr);
}

void load_checkpoint(const std::string& path, nn::Module& model, optim::Optimizer& opt, optim::LRScheduler* sched,
                     TrainingState& state, amp::GradScaler* scaler) {
  SafetensorsChecks checks;
  const StateDict ck = load_safetensors(path, &checks);
  load_checked(ck, model, opt, sched, state, scaler, path, &checks);
}

void load_checkpoint_from_memory(const void* data, size_t size, const std::string& name, nn::Module& model,
                                 optim::Optimizer& opt, optim::LRScheduler* sched, TrainingState& state,
                                 amp::GradScaler* scaler) {
  SafetensorsChecks checks;
  const StateDict ck = parse_safetensors(data, size, name, &checks);
  load_checked(ck, model, opt, sched, state, scaler, name, &checks);
}

}  // namespace ember::io
