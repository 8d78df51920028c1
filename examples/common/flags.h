// The bundled examples' command lines as a table: each flag is declared once with where its
// value goes and what it must satisfy, and parse() walks argv. A bad command line is an
// ember::Error naming the program and the flag (main prints it as "error: [prog] ..."):
//   unknown option "--x" (see --help)      a flag nobody declared
//   unexpected argument "x" (see --help)   a word that is no "--" flag and no flag's value ("-x" too)
//   --epochs needs a value (see --help)    a valued flag at the end of the line
// and the value checks of cli.h (parse_int, parse_double, parse_amp). --help and -h are always
// known. A declared --preset (preset()) is applied before every other flag, wherever it stands,
// so that the flags after and before it override what it sets.
#pragma once
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cli.h"
#include "ember/core/dtype.h"
#include "ember/core/error.h"

namespace example {

class Flags {
 public:
  using Setter = std::function<void(const std::string& value)>;

  explicit Flags(const char* prog) : prog_(prog) {}

  // A flag without a value: sets *out to true.
  Flags& boolean(const std::string& name, bool* out) {
    return add(name, /*valued=*/false, [out](const std::string&) { *out = true; });
  }

  // An integer >= min (parse_int), stored as T (an int, int64_t or uint64_t field).
  template <class T>
  Flags& integer(const std::string& name, T* out, int64_t min) {
    static_assert(std::is_integral_v<T>, "integer() stores into an integral field");
    return add(name, true, [prog = prog_, name, out, min](const std::string& v) {
      *out = static_cast<T>(parse_int(prog, name, v, min));
    });
  }

  // A finite number >= min, or > min when `strict` (parse_double); with `below`, also < below
  // ("--dropout must be < 1, got 1").
  Flags& real(const std::string& name, double* out, double min, bool strict,
              double below = std::numeric_limits<double>::infinity()) {
    return add(name, true, [prog = prog_, name, out, min, strict, below](const std::string& v) {
      const double x = parse_double(prog, name, v, min, strict);
      EMBER_CHECK(x < below, prog, name, " must be < ", below, ", got ", x);
      *out = x;
    });
  }

  // Any text, taken as given ("" included).
  Flags& text(const std::string& name, std::string* out) {
    return add(name, true, [out](const std::string& v) { *out = v; });
  }

  // One of `allowed`: "--norm expects train or window, got \"x\"", followed by `hint` when given.
  Flags& choice(const std::string& name, std::string* out, std::vector<std::string> allowed,
                const std::string& hint = "") {
    return add(name, true, [prog = prog_, name, out, allowed = std::move(allowed), hint](const std::string& v) {
      bool ok = false;
      for (const std::string& c : allowed) ok = ok || c == v;
      EMBER_CHECK(ok, prog, name, " expects ", one_of(allowed), ", got \"", v, "\"", hint);
      *out = v;
    });
  }

  // --amp bf16|f16|off (parse_amp).
  Flags& amp(const std::string& name, std::optional<ember::DType>* out) {
    return add(name, true, [prog = prog_, out](const std::string& v) { *out = parse_amp(prog, v); });
  }

  // A valued flag whose value `set` reads and checks itself (errors name prog and the flag).
  Flags& custom(const std::string& name, Setter set) { return add(name, true, std::move(set)); }

  // --preset NAME: `apply` runs for every --preset on the line, in order, before any other flag.
  Flags& preset(Setter apply) {
    preset_ = true;
    return add("--preset", true, std::move(apply));
  }

  // Applies argv[1..argc) to the declared fields; returns whether --help or -h was given. The
  // first bad flag or value throws.
  [[nodiscard]] bool parse(int argc, const char* const* argv) const {
    if (preset_) {
      const Flag& p = *find("--preset");
      for (int i = 1; i + 1 < argc; ++i)
        if (std::string(argv[i]) == "--preset") p.set(argv[i + 1]);
    }
    bool help = false;
    for (int i = 1; i < argc; ++i) {
      const std::string f = argv[i];
      if (f == "--help" || f == "-h") {
        help = true;
        continue;
      }
      const Flag* flag = find(f);
      if (flag == nullptr) {
        EMBER_CHECK(f.rfind("--", 0) == 0, prog_, "unexpected argument \"", f, "\" (see --help)");
        EMBER_FAIL(prog_, "unknown option \"", f, "\" (see --help)");
      }
      if (!flag->valued) {
        flag->set("");
        continue;
      }
      EMBER_CHECK(i + 1 < argc, prog_, f, " needs a value (see --help)");
      const std::string v = argv[++i];
      if (preset_ && f == "--preset") continue;  // applied above
      flag->set(v);
    }
    return help;
  }

 private:
  struct Flag {
    std::string name;
    bool valued = true;
    Setter set;
  };

  Flags& add(const std::string& name, bool valued, Setter set) {
    // A flag declared twice is a mistake in the example's table, not in the command line.
    EMBER_CHECK(name.rfind('-', 0) == 0 && name != "--help" && name != "-h" && find(name) == nullptr, prog_,
                "flag \"", name, "\" declared twice or not a flag name");
    flags_.push_back({name, valued, std::move(set)});
    return *this;
  }
  const Flag* find(const std::string& name) const {
    for (const Flag& f : flags_)
      if (f.name == name) return &f;
    return nullptr;
  }
  // "a", "a or b", "a, b or c".
  static std::string one_of(const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) {
      if (i > 0) s += i + 1 == v.size() ? " or " : ", ";
      s += v[i];
    }
    return s;
  }

  const char* prog_;
  std::vector<Flag> flags_;
  bool preset_ = false;
};

}  // namespace example
