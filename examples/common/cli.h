// Command-line value parsing shared by the bundled examples: a bad value is an ember::Error
// that names the program, the flag and what it got (main prints it as "error: ...").
#pragma once
#include <cmath>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>

#include "ember/amp.h"
#include "ember/core/dtype.h"
#include "ember/core/error.h"

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

}  // namespace example
