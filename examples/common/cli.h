// Command-line value parsing shared by the bundled examples: a bad value is an ember::Error
// that names the program, the flag and what it got (main prints it as "error: ...").
#pragma once
#include <cmath>
#include <cstdint>
#include <exception>
#include <string>

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

}  // namespace example
