#!/usr/bin/env python3
"""Check that every public header reaches, through its own includes, the standard header that
declares each standard name it uses.

Why: a header that uses uint8_t but includes only <string> compiles with GCC 12 (its <string>
pulls in <cstdint>) and breaks with GCC 13 (whose <string> does not). Compiling each header on
its own (tests/headers) only catches what the compiler in hand happens not to include; this
check asks what the C++ standard guarantees.

How: for each header, its *include closure* is the set of standard headers it includes
directly plus those included by the project headers it includes, transitively (a project
header is one that resolves inside --include-dir; standard headers are never opened, so only
what the standard guarantees counts, not what one library happens to include). Comments,
string and character literals are stripped, then every use of a name from RULES is looked up:
the closure must hold one of the headers accepted for it. Conditional includes (#if) count as
reached. Each violation prints as

    include/ember/x.h:LINE: uses uint8_t but reaches no <cstdint>

and the exit status is 1 when there is any (0 when clean, 2 on a usage error).

The accepted headers per name are listed explicitly in RULES and are strict: size_t is
accepted from the headers the standard says declare it (<cstddef>, <cstdio>, <cstdlib>,
<cstring>, <ctime>, <cuchar>, <cwchar> and their C forms), not from <cstdint> or a container;
std::initializer_list from <initializer_list> and the headers whose synopsis includes it.

  scripts/check_header_includes.py                      # include/ember/** of this checkout
  scripts/check_header_includes.py --known-failure include/ember/core/device.h:uint8_t
  scripts/check_header_includes.py --self-test          # the checker against its fixtures

--known-failure PATH:NAME tolerates one name in one header (reported as a note); a known
failure that no longer occurs is reported as a note too, so the entry can be dropped.
--self-test runs the check on tests/headers/fixtures/, whose lines carry
`expect-violation: NAME` markers, and fails unless exactly the marked violations are reported.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

# --- what each standard name needs ------------------------------------------------------------

CSTDINT = ("cstdint", "stdint.h", "cinttypes", "inttypes.h")  # <cinttypes> includes <cstdint>
# [support.types.layout], [cstdio.syn], [cstdlib.syn], [cstring.syn], [ctime.syn], [cuchar.syn],
# [cwchar.syn]: the headers that declare size_t.
SIZE_T = ("cstddef", "stddef.h", "cstdio", "stdio.h", "cstdlib", "stdlib.h", "cstring",
          "string.h", "ctime", "time.h", "cuchar", "uchar.h", "cwchar", "wchar.h")
CSTDDEF = ("cstddef", "stddef.h")
# Headers whose synopsis includes <initializer_list> (C++20).
INITIALIZER_LIST = ("initializer_list", "utility", "string", "string_view", "array", "deque",
                    "forward_list", "list", "vector", "map", "set", "unordered_map",
                    "unordered_set", "queue", "stack", "algorithm", "random", "regex",
                    "valarray")
# <iosfwd> declares the stream typedefs; <ios> includes <iosfwd>; <iostream> includes <ios>,
# <istream> and <ostream>.
OSTREAM = ("ostream", "iosfwd", "ios", "iostream")
ISTREAM = ("istream", "iosfwd", "ios", "iostream")


def _std(*names: str) -> str:
    """A regex for std::NAME (also ::std::NAME) for each of names."""
    return r"\bstd::(?:" + "|".join(names) + r")\b"


# (regex, header named in the message, accepted headers). First match wins per token.
RULES: list[tuple[str, str, tuple[str, ...]]] = [
    # <cstdint>: the fixed-width types, with or without std::, and their macros.
    (r"\b(?:std::)?u?int(?:_least|_fast)?(?:8|16|32|64)_t\b", "cstdint", CSTDINT),
    (r"\b(?:std::)?u?int(?:max|ptr)_t\b", "cstdint", CSTDINT),
    (r"\bU?INT(?:_LEAST|_FAST)?(?:8|16|32|64)_(?:MAX|MIN)\b", "cstdint", CSTDINT),
    (r"\bU?INT(?:MAX|PTR)_(?:MAX|MIN)\b", "cstdint", CSTDINT),
    (r"\b(?:SIZE_MAX|PTRDIFF_MAX|PTRDIFF_MIN)\b", "cstdint", CSTDINT),
    (r"\bU?INT(?:8|16|32|64|MAX)_C\b", "cstdint", CSTDINT),
    # <cstddef> and the other headers that declare size_t.
    (r"\b(?:std::)?size_t\b", "cstddef", SIZE_T),
    (r"\b(?:std::)?(?:ptrdiff_t|nullptr_t|max_align_t)\b", "cstddef", CSTDDEF),
    (_std("byte"), "cstddef", CSTDDEF),
    # Library names.
    (_std("string_view", "wstring_view", "basic_string_view"), "string_view", ("string_view",)),
    (_std("string", "wstring", "basic_string", "to_string", "stoi", "stol", "stoll", "stod",
          "stof"), "string", ("string",)),
    (_std("vector"), "vector", ("vector",)),
    (_std("array"), "array", ("array",)),
    (_std("map", "multimap"), "map", ("map",)),
    (_std("set", "multiset"), "set", ("set",)),
    (_std("unordered_map", "unordered_multimap"), "unordered_map", ("unordered_map",)),
    (_std("unordered_set", "unordered_multiset"), "unordered_set", ("unordered_set",)),
    (_std("deque"), "deque", ("deque",)),
    (_std("list"), "list", ("list",)),
    (_std("span"), "span", ("span",)),
    (_std("function", "hash", "reference_wrapper", "bind_front", "invoke"), "functional",
     ("functional",)),
    (_std("shared_ptr", "unique_ptr", "weak_ptr", "make_shared", "make_unique",
          "allocate_shared", "enable_shared_from_this", "dynamic_pointer_cast",
          "static_pointer_cast"), "memory", ("memory",)),
    (_std("optional", "nullopt", "nullopt_t", "make_optional"), "optional", ("optional",)),
    (_std("variant", "monostate", "visit", "holds_alternative", "get_if"), "variant",
     ("variant",)),
    (_std("tuple", "make_tuple", "tie", "forward_as_tuple", "apply"), "tuple", ("tuple",)),
    (_std("pair", "make_pair", "move", "forward", "exchange", "swap", "declval",
          "index_sequence", "make_index_sequence", "in_place", "in_place_t"), "utility",
     ("utility",)),
    (_std("initializer_list"), "initializer_list", INITIALIZER_LIST),
    (_std("ostream"), "ostream", OSTREAM),
    (_std("istream"), "istream", ISTREAM),
    (_std("ostringstream", "istringstream", "stringstream"), "sstream", ("sstream",)),
    (_std("runtime_error", "logic_error", "invalid_argument", "out_of_range", "domain_error",
          "length_error", "range_error", "overflow_error", "underflow_error"), "stdexcept",
     ("stdexcept",)),
    (_std("exception", "exception_ptr", "current_exception", "rethrow_exception"),
     "exception", ("exception", "stdexcept")),  # <stdexcept>'s classes derive from exception
    (_std("numeric_limits"), "limits", ("limits",)),
    (_std("min", "max", "minmax", "clamp", "sort", "stable_sort", "fill", "fill_n", "copy",
          "copy_n", "find", "find_if", "any_of", "all_of", "none_of", "count", "count_if",
          "reverse", "transform", "max_element", "min_element", "equal", "lower_bound",
          "upper_bound", "remove_if", "for_each"), "algorithm", ("algorithm",)),
    (_std("accumulate", "iota", "inner_product", "partial_sum", "gcd", "lcm"), "numeric",
     ("numeric",)),
    (_std("sqrt", "exp", "log", "log1p", "expm1", "pow", "tanh", "fabs", "floor", "ceil",
          "isnan", "isinf", "isfinite", "erf", "sin", "cos", "round", "lround", "fma",
          "nan"), "cmath", ("cmath", "math.h")),
    (_std("abs"), "cmath", ("cmath", "math.h", "cstdlib", "stdlib.h")),
    (_std("memcpy", "memset", "memcmp", "memmove", "strlen", "strcmp"), "cstring",
     ("cstring", "string.h")),
    (_std("is_same", "is_same_v", "is_integral", "is_integral_v", "is_floating_point",
          "is_floating_point_v", "is_arithmetic", "is_arithmetic_v", "is_signed",
          "is_signed_v", "is_unsigned", "is_unsigned_v", "is_trivially_copyable",
          "is_trivially_copyable_v", "is_convertible", "is_convertible_v", "is_base_of",
          "is_base_of_v", "enable_if", "enable_if_t", "conditional", "conditional_t", "decay",
          "decay_t", "remove_cv", "remove_cv_t", "remove_reference", "remove_reference_t",
          "remove_cvref", "remove_cvref_t", "underlying_type", "underlying_type_t",
          "common_type", "common_type_t", "integral_constant", "true_type", "false_type",
          "invoke_result", "invoke_result_t"), "type_traits", ("type_traits",)),
    (_std("atomic", "atomic_flag", "memory_order"), "atomic", ("atomic",)),
    (_std("mutex", "lock_guard", "unique_lock", "scoped_lock", "once_flag", "call_once"),
     "mutex", ("mutex",)),
    (_std("thread"), "thread", ("thread",)),
    (r"\bstd::chrono::", "chrono", ("chrono",)),
    (r"\bstd::filesystem::", "filesystem", ("filesystem",)),
    (r"\bstd::numbers::", "numbers", ("numbers",)),
    (_std("bit_cast", "popcount", "countl_zero", "countr_zero", "bit_width", "has_single_bit"),
     "bit", ("bit",)),
]

_RULE_RE = re.compile("|".join(f"(?P<r{i}>{rx})" for i, (rx, _, _) in enumerate(RULES)))
_INCLUDE_RE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*([<"])([^>"\n]+)[>"]', re.M)
_DIRECTIVE_RE = re.compile(r"^[ \t]*#[ \t]*include\b.*$", re.M)
HEADER_SUFFIXES = (".h", ".hh", ".hpp", ".cuh", ".inl")


# --- lexing -----------------------------------------------------------------------------------

def strip_code(text: str, keep_strings: bool) -> str:
    """text with comments (and, unless keep_strings, string and character literals) blanked
    out. Newlines are kept, so line numbers stay right; digit separators (1'000) are not taken
    for character literals; raw strings R"d(...)d" are handled."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            j = text.find("\n", i)
            j = n if j < 0 else j
            # A backslash-newline continues a // comment.
            while j < n and text[j - 1] == "\\":
                k = text.find("\n", j + 1)
                out.append("\n")
                j = n if k < 0 else k
            out.append(" ")
            i = j
        elif c == "/" and nxt == "*":
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(" " + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"' or (c == "'" and not (i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_"))):
            raw = c == '"' and i > 0 and text[i - 1] == "R"
            if raw:
                m = re.compile(r'"([^()\\ \n]{0,16})\(').match(text, i)
                end = text.find(")" + m.group(1) + '"', i) if m else -1
                j = n if end < 0 else end + len(m.group(1)) + 2
            else:
                j = i + 1
                while j < n and text[j] != c and text[j] != "\n":
                    j += 2 if text[j] == "\\" else 1
                j = min(j + 1, n)
            lit = text[i:j]
            out.append(lit if keep_strings else c + "\n" * lit.count("\n") + c)
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


# --- the check --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Violation:
    path: Path
    line: int
    name: str
    header: str  # the header named in the message

    def show(self, root: Path) -> str:
        return f"{display(self.path, root)}:{self.line}: uses {self.name} but reaches no <{self.header}>"


def display(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


class Checker:
    def __init__(self, include_dir: Path, root: Path):
        self.include_dir = include_dir.resolve()
        self.root = root
        self._parsed: dict[Path, tuple[set[str], list[Path]]] = {}
        self._closure: dict[Path, frozenset[str]] = {}
        self.errors: list[str] = []

    def _parse(self, path: Path) -> tuple[set[str], list[Path]]:
        """(standard headers included directly, project headers included directly)."""
        if path not in self._parsed:
            code = strip_code(path.read_text(encoding="utf-8", errors="replace"), keep_strings=True)
            std: set[str] = set()
            project: list[Path] = []
            for m in _INCLUDE_RE.finditer(code):
                kind, name = m.group(1), m.group(2).strip()
                candidates = [self.include_dir / name]
                if kind == '"':
                    candidates.insert(0, path.parent / name)
                found = next((c.resolve() for c in candidates if c.is_file()), None)
                if found is not None and (found.is_relative_to(self.include_dir) or kind == '"'):
                    project.append(found)
                elif kind == '"' or (self.include_dir / name.split("/")[0]).is_dir():
                    # A quoted include, or <ember/...>, names a project header that is missing.
                    line = code.count("\n", 0, m.start()) + 1
                    close = ">" if kind == "<" else '"'
                    self.errors.append(f"{display(path, self.root)}:{line}: cannot resolve "
                                       f"#include {kind}{name}{close}")
                else:
                    std.add(name)
            self._parsed[path] = (std, project)
        return self._parsed[path]

    def closure(self, path: Path, active: frozenset[Path] = frozenset()) -> frozenset[str]:
        path = path.resolve()
        if path in self._closure:
            return self._closure[path]
        std, project = self._parse(path)
        reached = set(std)
        for dep in project:
            if dep not in active:  # an include cycle; the guard stops it
                reached |= self.closure(dep, active | {path})
        self._closure[path] = frozenset(reached)
        return self._closure[path]

    def check(self, path: Path) -> list[Violation]:
        path = path.resolve()
        reached = self.closure(path)
        code = strip_code(path.read_text(encoding="utf-8", errors="replace"), keep_strings=False)
        code = _DIRECTIVE_RE.sub("", code)
        found: list[Violation] = []
        seen: set[tuple[int, str]] = set()
        for m in _RULE_RE.finditer(code):
            rule = int(m.lastgroup[1:])
            _, header, accepted = RULES[rule]
            if reached.intersection(accepted):
                continue
            line = code.count("\n", 0, m.start()) + 1
            name = m.group(0).rstrip(":")
            if (line, name) not in seen:
                seen.add((line, name))
                found.append(Violation(path, line, name, header))
        return found


def collect(paths: list[Path]) -> list[Path]:
    headers: list[Path] = []
    for p in paths:
        if p.is_dir():
            headers += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in HEADER_SUFFIXES)
        else:
            headers.append(p)
    return headers


def run(include_dir: Path, paths: list[Path], root: Path, known: list[str]) -> int:
    headers = collect(paths)
    if not headers:
        print(f"check_header_includes: no headers under {', '.join(map(str, paths))}")
        return 2
    checker = Checker(include_dir, root)
    known_left = {k: False for k in known}
    bad = 0
    for h in headers:
        for v in checker.check(h):
            key = f"{display(v.path, root)}:{v.name}"
            if key in known_left:
                known_left[key] = True
                print(f"note: known failure: {v.show(root)}")
            else:
                print(v.show(root))
                bad += 1
    for e in checker.errors:
        print(e)
    for k, hit in known_left.items():
        if not hit:
            print(f"note: known failure {k} no longer occurs; drop it from the list")
    status = "FAILED" if bad or checker.errors else "ok"
    print(f"check_header_includes: {len(headers)} headers, {bad} violations, "
          f"{len(checker.errors)} unresolved includes: {status}")
    return 1 if bad or checker.errors else 0


# --- the checker's own test -------------------------------------------------------------------

_EXPECT_RE = re.compile(r"expect-violation:\s*(\S+)")


def self_test(fixtures: Path, root: Path) -> int:
    """Check fixtures/ and compare with its `expect-violation: NAME` markers, both ways."""
    headers = collect([fixtures])
    expected: set[tuple[str, int, str]] = set()
    for h in headers:
        for no, line in enumerate(h.read_text(encoding="utf-8").splitlines(), 1):
            for m in _EXPECT_RE.finditer(line):
                expected.add((display(h, root), no, m.group(1)))
    if not expected:
        print(f"self-test: no expect-violation markers under {fixtures}")
        return 1
    checker = Checker(fixtures, root)
    got = {(display(v.path, root), v.line, v.name) for h in headers for v in checker.check(h)}
    missed, extra = sorted(expected - got), sorted(got - expected)
    for p, line, name in missed:
        print(f"self-test: MISSED {p}:{line}: {name}")
    for p, line, name in extra:
        print(f"self-test: UNEXPECTED {p}:{line}: {name}")
    # The command line too: exit status 1 and the documented message format.
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = run(fixtures, [fixtures], root, [])
    fmt = re.compile(r"^\S+\.h:\d+: uses \S+ but reaches no <[\w.]+>$", re.M)
    ok_cli = rc == 1 and len(fmt.findall(buf.getvalue())) == len(got)
    if not ok_cli:
        print(f"self-test: command line gave exit status {rc} and output:\n{buf.getvalue()}")
    # A known failure is tolerated; the same run is then clean if it was the only violation.
    ok = not missed and not extra and ok_cli and not checker.errors
    for e in checker.errors:
        print(f"self-test: {e}")
    print(f"self-test: {len(expected)} expected violations in {len(headers)} fixture headers, "
          f"{len(got & expected)} reported: {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    root_default = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", type=Path,
                    help="headers or folders to check (default: ROOT/include/ember)")
    ap.add_argument("--root", type=Path, default=root_default,
                    help="repository root; paths print relative to it (default: %(default)s)")
    ap.add_argument("--include-dir", type=Path,
                    help="where project includes resolve (default: ROOT/include)")
    ap.add_argument("--known-failure", action="append", default=[], metavar="PATH:NAME",
                    help="tolerate NAME in PATH (relative to ROOT); may repeat")
    ap.add_argument("--self-test", action="store_true",
                    help="check ROOT/tests/headers/fixtures against its expect-violation markers")
    args = ap.parse_args(argv)
    root = args.root
    if args.self_test:
        return self_test(root / "tests" / "headers" / "fixtures", root)
    include_dir = args.include_dir or root / "include"
    paths = args.paths or [include_dir / "ember"]
    return run(include_dir, paths, root, args.known_failure)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
