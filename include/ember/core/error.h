// ember::Error and the check macros every public entry uses.
//
// An Error carries the op that raised it and a message that prints shapes, dtypes and
// devices, e.g. "[matmul] inner dimensions differ: (32, 64) @ (128, 10)".
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace ember {

class Error : public std::runtime_error {
 public:
  Error(std::string op, const std::string& msg)
      : std::runtime_error("[" + op + "] " + msg), op_(std::move(op)) {}
  const std::string& op() const noexcept { return op_; }

 private:
  std::string op_;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <class T, class... R>
void append(std::ostringstream& os, const T& v, const R&... rest) {
  os << v;
  append(os, rest...);
}
template <class... A>
std::string cat(const A&... a) {
  std::ostringstream os;
  append(os, a...);
  return os.str();
}
}  // namespace detail

}  // namespace ember

// EMBER_CHECK(cond, "op", parts...): throws ember::Error("op", parts...) when cond is false.
#define EMBER_CHECK(cond, op, ...)                                 \
  do {                                                             \
    if (!(cond)) throw ::ember::Error((op), ::ember::detail::cat(__VA_ARGS__)); \
  } while (0)

#define EMBER_FAIL(op, ...) throw ::ember::Error((op), ::ember::detail::cat(__VA_ARGS__))
