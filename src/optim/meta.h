// Numbers in StateDict meta: written with enough digits for an exact round trip, read back with
// a complaint (appended to `problems`) naming the key when it is missing or not a number.
#pragma once
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ember/core/state_dict.h"
#include "core/untrusted_text.h"

namespace ember::optim::meta {

inline std::string fmt(double v) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}
inline std::string fmt(int64_t v) { return std::to_string(v); }
inline std::string fmt(bool v) { return v ? "true" : "false"; }

inline const std::string* find(const StateDict& sd, const std::string& key) {
  auto it = sd.meta.find(key);
  return it == sd.meta.end() ? nullptr : &it->second;
}

inline bool parse(const std::string& s, double& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (*end != '\0' || errno == ERANGE) return false;
  out = v;
  return true;
}
inline bool parse(const std::string& s, int64_t& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (*end != '\0' || errno == ERANGE) return false;
  out = v;
  return true;
}
inline bool parse(const std::string& s, bool& out) {
  if (s == "true" || s == "1") out = true;
  else if (s == "false" || s == "0") out = false;
  else return false;
  return true;
}

// Reads meta[key] into out; on failure appends to problems and leaves out alone. The value may
// come from a hostile file: the complaint quotes at most a printable prefix of it.
template <class T>
bool read(const StateDict& sd, const std::string& key, T& out, std::vector<std::string>& problems) {
  const std::string* s = find(sd, key);
  if (!s) {
    problems.push_back("missing meta \"" + key + "\"");
    return false;
  }
  T v{};
  if (!parse(*s, v)) {
    problems.push_back("meta \"" + key + "\" = \"" + io::detail::printable(*s) + "\" is not a valid value");
    return false;
  }
  out = v;
  return true;
}

inline std::string join(const std::vector<std::string>& parts, const char* sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? sep : "") + parts[i];
  return out;
}

}  // namespace ember::optim::meta
