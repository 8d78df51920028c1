// Command-line value parsing shared by the bundled examples: a bad value is an ember::Error
// that names the program, the flag and what it got (main prints it as "error: ...").
#pragma once
#include <cmath>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>

#include <cstdio>
#include <numeric>
#include <vector>

#include "ember/amp.h"
#include "ember/core/device.h"
#include "ember/core/dtype.h"
#include "ember/core/error.h"
#include "ember/cuda.h"
#include "ember/dist.h"
#include "ember/ops/ops.h"

namespace example {

// An integer >= min.
inline int64_t parse_int(const char* prog, const std::string& flag, const std::string& v, int64_t min) {
  size_t pos = 0;
  long long x = 0;
  try {
    x = std::stoll(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  EMBER_CHECK(pos == v.size() && !v.empty(), prog, flag, " expects an integer, got \"", v, "\"");
  EMBER_CHECK(x >= min, prog, flag, " must be >= ", min, ", got ", x);
  return static_cast<int64_t>(x);
}

// A finite number >= min, or > min when `strict`.
inline double parse_double(const char* prog, const std::string& flag, const std::string& v, double min,
                           bool strict) {
  size_t pos = 0;
  double x = 0;
  try {
    x = std::stod(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  EMBER_CHECK(pos == v.size() && !v.empty() && std::isfinite(x), prog, flag, " expects a number, got \"", v, "\"");
  EMBER_CHECK(strict ? x > min : x >= min, prog, flag, " must be ", strict ? "> " : ">= ", min, ", got ", x);
  return x;
}

// --amp bf16|f16|off: autocast's low dtype, or none (off).
inline std::optional<ember::DType> parse_amp(const char* prog, const std::string& v) {
  if (v == "bf16") return ember::DType::bf16;
  if (v == "f16") return ember::DType::f16;
  EMBER_CHECK(v == "off", prog, "--amp expects bf16, f16 or off, got \"", v, "\"");
  return std::nullopt;
}
inline const char* amp_name(std::optional<ember::DType> amp) {
  return !amp ? "off" : *amp == ember::DType::f16 ? "f16" : "bf16";
}

// The loss scaler an --amp choice needs: on for f16 (its narrow range underflows small
// gradients), off for bf16 (f32's range) and for f32 training; off, it passes everything through.
inline ember::amp::GradScalerOptions scaler_options(std::optional<ember::DType> amp) {
  ember::amp::GradScalerOptions o;
  o.enabled = amp == ember::DType::f16;
  return o;
}

// --- --dist: data-parallel runs under mpirun or srun (docs/distributed.md) -----------------

// printf on rank 0 only (every line when not in a job), flushed: the progress a job prints once.
template <class... A>
void say(const char* fmt, A... args) {
  if (ember::dist::rank() != 0) return;
  std::printf(fmt, args...);
  std::fflush(stdout);
}

// The device this rank trains on: "cuda" becomes cuda:(local rank mod GPUs on the node), so
// one process per GPU needs no per-rank flag; everything else is taken as given.
inline ember::Device rank_device(const std::string& requested) {
  ember::Device d(requested);
  if (d.is_cuda() && requested == "cuda" && ember::cuda::is_available())
    d = ember::Device::cuda(ember::dist::local_rank() % ember::cuda::device_count());
  return d;
}

// This rank's rows of a global batch `idx` (positions r, r + W, r + 2W, ...) and the factor its
// mean loss is multiplied by so that DDP's average over ranks is the mean over the whole batch,
// also when the batch does not divide by the world size. A rank with no rows of a short last
// batch gets none and a weight of 0 (it still takes part in the all-reduce).
struct Shard {
  ember::Tensor rows;
  int64_t count = 0;
  double weight = 1.0;
};
inline Shard shard_of(const ember::Tensor& idx) {
  const int W = ember::dist::world_size(), r = ember::dist::rank();
  const int64_t len = idx.size(0);
  if (W == 1) return {idx, len, 1.0};
  std::vector<int64_t> pos;
  for (int64_t i = r; i < len; i += W) pos.push_back(i);
  Shard s;
  s.count = static_cast<int64_t>(pos.size());
  s.weight = static_cast<double>(s.count * W) / static_cast<double>(len);
  if (pos.empty()) pos.push_back(0);  // a stand-in row whose loss counts 0
  s.rows = ember::index_select(idx, 0, ember::from_vector(pos, {static_cast<int64_t>(pos.size())}));
  return s;
}

// Sums of a few counters over every rank (progress lines, evaluation): one all-reduce in f64.
inline std::vector<double> sum_over_ranks(std::vector<double> v) {
  if (ember::dist::world_size() == 1) return v;
  ember::Tensor t = ember::from_vector(v, {static_cast<int64_t>(v.size())});
  ember::dist::all_reduce(t, ember::dist::ReduceOp::sum);
  return t.to_vector<double>();
}

}  // namespace example
