// Text from files (tensor names, metadata values, parser messages) goes into error messages
// only through printable(): at most `max` bytes, control and non-ASCII bytes escaped, so a
// hostile file can neither flood a log nor write terminal escapes into it.
#pragma once
#include <cstddef>
#include <cstdio>
#include <string>

namespace ember::io::detail {

inline std::string printable(const std::string& s, size_t max = 80) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > max) out += "...(" + std::to_string(s.size()) + " bytes)";
  return out;
}

}  // namespace ember::io::detail
