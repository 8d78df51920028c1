// GenBank flat-file reader: see genbank.h.
#include "genbank.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "../common/seqdata.h"
#include "ember/core/error.h"

namespace genbank {
namespace {

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

bool blank(const std::string& s) { return trim(s).empty(); }

// Leading spaces of a line (tabs are not part of the format: they count as text).
size_t indent(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && s[i] == ' ') ++i;
  return i;
}

// Quote characters in a qualifier value, "" (an escaped quote) counted as none.
size_t open_quotes(const std::string& v) {
  size_t n = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] != '"') continue;
    if (i + 1 < v.size() && v[i + 1] == '"' && n % 2 == 1) {
      ++i;  // "" inside a quoted value
      continue;
    }
    ++n;
  }
  return n;
}

// The declared length on a LOCUS line ("LOCUS  NAME  1042519 bp ..."), or -1.
int64_t locus_length(const std::string& l) {
  std::istringstream is(l);
  std::string tok, prev;
  while (is >> tok) {
    if ((tok == "bp" || tok == "aa") && !prev.empty() &&
        std::all_of(prev.begin(), prev.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
      return prev.size() > 15 ? -1 : std::stoll(prev);
    prev = tok;
  }
  return -1;
}

struct Parser {
  Parser(const std::vector<std::string>& l, const std::string& p, const char* pr) : lines(l), path(p), prog(pr) {}
  const std::vector<std::string>& lines;
  const std::string& path;
  const char* prog;
  std::vector<Record> out;

  enum class State { outside, header, features, origin };
  State state = State::outside;
  int64_t declared = -1;        // LOCUS length of the current record
  std::string qualifier;        // the qualifier being read ("" when none is open)
  bool quote_open = false;      // its quoted value continues on the next line
  size_t quote_line = 0;
  std::string* value = nullptr;  // where the open qualifier's value is read to
  std::string scratch;

  [[noreturn]] void fail(size_t lineno, const std::string& what) const {
    EMBER_FAIL(prog, path, ":", lineno, ": ", what);
  }

  Record& rec() { return out.back(); }

  void finish_record(size_t lineno) {
    if (quote_open) fail(quote_line, "qualifier /" + qualifier + " has an unclosed quote");
    if (rec().sequence.empty()) fail(lineno, "record " + rec().name + " has no ORIGIN sequence");
    if (declared >= 0 && declared != static_cast<int64_t>(rec().sequence.size()))
      fail(lineno, "record " + rec().name + ": LOCUS line says " + std::to_string(declared) + " bp but ORIGIN holds " +
                       std::to_string(rec().sequence.size()) + " (truncated?)");
    state = State::outside;
  }

  void feature_line(const std::string& l, size_t lineno) {
    const size_t ind = indent(l);
    if (ind == 5) {  // a new feature: key at column 6, location from column 22
      if (quote_open) fail(quote_line, "qualifier /" + qualifier + " has an unclosed quote");
      std::istringstream is(l);
      Feature f;
      is >> f.key;
      std::string rest;
      std::getline(is, rest);
      rest = trim(rest);
      if (rest.empty()) fail(lineno, "feature " + f.key + " has no location");
      f.line = lineno;
      rest.erase(std::remove_if(rest.begin(), rest.end(), [](unsigned char c) { return std::isspace(c); }), rest.end());
      f.location = rest;
      rec().features.push_back(std::move(f));
      qualifier.clear();
      return;
    }
    if (ind != 21) fail(lineno, "feature table line indented by " + std::to_string(ind) +
                                    " spaces (5 for a feature key, 21 for its location and qualifiers)");
    if (rec().features.empty()) fail(lineno, "qualifier or location text before the first feature key");
    Feature& f = rec().features.back();
    const std::string text = trim(l);
    if (quote_open) {  // the quoted value goes on; protein translations are one word
      std::string& v = *value;
      if (qualifier != "translation") v += ' ';
      v += text;
      if (open_quotes(v) % 2 == 0) {
        quote_open = false;
        close_value(v, lineno);
      }
      return;
    }
    if (text[0] == '/') {
      const size_t eq = text.find('=');
      qualifier = text.substr(1, eq == std::string::npos ? std::string::npos : eq - 1);
      if (qualifier.empty()) fail(lineno, "a '/' without a qualifier name");
      // The first value of a repeated qualifier is kept; later ones are read into `scratch`.
      const auto [it, fresh] = f.qualifiers.emplace(qualifier, std::string());
      value = fresh ? &it->second : &scratch;
      std::string& v = *value;
      v = eq == std::string::npos ? "" : text.substr(eq + 1);
      if (!v.empty() && v[0] == '"') {
        if (open_quotes(v) % 2 == 1) {
          quote_open = true;
          quote_line = lineno;
        } else {
          close_value(v, lineno);
        }
      }
      return;
    }
    if (!qualifier.empty()) fail(lineno, "text \"" + text.substr(0, 40) + "\" after qualifier /" + qualifier +
                                              " (a qualifier starts with '/')");
    std::string more = text;  // the location goes on
    more.erase(std::remove_if(more.begin(), more.end(), [](unsigned char c) { return std::isspace(c); }), more.end());
    f.location += more;
  }

  // A complete quoted value: the quotes removed, "" unescaped.
  void close_value(std::string& v, size_t lineno) {
    if (v.size() < 2 || v.front() != '"' || v.back() != '"')
      fail(lineno, "qualifier /" + qualifier + ": text after its closing quote");
    std::string s;
    for (size_t i = 1; i + 1 < v.size(); ++i) {
      s.push_back(v[i]);
      if (v[i] == '"' && v[i + 1] == '"') ++i;
    }
    v = s;
  }

  void origin_line(const std::string& l, size_t lineno) {
    std::istringstream is(l);
    std::string num;
    is >> num;
    size_t pos = 0;
    long long n = -1;
    try {
      n = std::stoll(num, &pos);
    } catch (const std::exception&) {
      pos = 0;
    }
    if (pos != num.size() || num.empty())
      fail(lineno, "ORIGIN line starts with \"" + num.substr(0, 20) + "\", expected a base number");
    const long long want = static_cast<long long>(rec().sequence.size()) + 1;
    if (n != want)
      fail(lineno, "ORIGIN line numbered " + std::to_string(n) + ", expected " + std::to_string(want) +
                       " (lines missing or out of order)");
    std::string chunk;
    while (is >> chunk) {
      for (char c : chunk) {
        const unsigned char u = static_cast<unsigned char>(c);
        if (!std::isalpha(u)) fail(lineno, std::string("unexpected character '") + c + "' in the ORIGIN sequence");
        rec().sequence.push_back(static_cast<char>(std::toupper(u)));
      }
    }
  }

  void run() {
    size_t lineno = 0;
    for (const std::string& l : lines) {
      ++lineno;
      if (state == State::outside) {
        if (blank(l)) continue;
        if (!starts_with(l, "LOCUS")) fail(lineno, "expected a LOCUS line (not a GenBank file?)");
        std::istringstream is(l.substr(5));
        Record r;
        is >> r.name;
        if (r.name.empty()) fail(lineno, "LOCUS line without a name");
        r.line = lineno;
        out.push_back(std::move(r));
        declared = locus_length(l);
        state = State::header;
        continue;
      }
      if (starts_with(l, "//")) {
        finish_record(lineno);
        continue;
      }
      if (starts_with(l, "LOCUS"))
        fail(lineno, "LOCUS line inside record " + rec().name + " (line " + std::to_string(rec().line) +
                         "): its \"//\" end line is missing");
      if (state == State::origin) {
        if (!blank(l)) origin_line(l, lineno);
        continue;
      }
      const bool section = !l.empty() && l[0] != ' ';  // a top-level keyword
      if (section) {
        if (quote_open) fail(quote_line, "qualifier /" + qualifier + " has an unclosed quote");
        if (starts_with(l, "FEATURES")) state = State::features;
        else if (starts_with(l, "ORIGIN")) state = State::origin;
        else state = State::header;
        continue;
      }
      if (state == State::features && !blank(l)) feature_line(l, lineno);
    }
    if (state != State::outside)
      fail(lineno, "file ends inside record " + rec().name + " (line " + std::to_string(rec().line) +
                       ") without its \"//\" end line (truncated?)");
    if (out.empty()) EMBER_FAIL(prog, path, ": no GenBank records (no LOCUS line)");
  }
};

// Recursive-descent evaluation of a location string.
struct Location {
  Location(const std::string& loc, const std::string& sq, const std::string& p, size_t ln, const char* pr)
      : s(loc), seq(sq), path(p), line(ln), prog(pr) {}
  const std::string& s;
  const std::string& seq;
  const std::string& path;
  size_t line;
  const char* prog;
  size_t i = 0;
  bool remote = false;

  [[noreturn]] void fail(const std::string& what) const {
    EMBER_FAIL(prog, path, ":", line, ": location \"", s.substr(0, 80), "\": ", what);
  }
  bool eat(const char* word) {
    const size_t n = std::char_traits<char>::length(word);
    if (s.compare(i, n, word) != 0) return false;
    i += n;
    return true;
  }
  void expect(char c) {
    if (i >= s.size() || s[i] != c) fail(std::string("expected '") + c + "' at column " + std::to_string(i + 1));
    ++i;
  }
  int64_t number() {
    const size_t a = i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
    if (i == a || i - a > 15) fail("expected a base number at column " + std::to_string(a + 1));
    return std::stoll(s.substr(a, i - a));
  }
  std::string span() {
    // A remote span: accession[.version]:span
    const size_t colon = s.find(':', i);
    const size_t stop = s.find_first_of("(),", i);
    if (colon != std::string::npos && (stop == std::string::npos || colon < stop)) {
      remote = true;  // not checked against this record's sequence
      i = stop == std::string::npos ? s.size() : stop;
      return {};
    }
    if (i < s.size() && s[i] == '<') ++i;
    const int64_t a = number();
    int64_t b = a;
    if (eat("..")) {
      if (i < s.size() && s[i] == '>') ++i;
      b = number();
    } else if (eat("^")) {
      const int64_t c = number();
      if (c != a + 1 && !(a == static_cast<int64_t>(seq.size()) && c == 1))
        fail("a site a^b needs b = a + 1");
      if (a < 1 || a > static_cast<int64_t>(seq.size())) fail("site outside the sequence (1.." + std::to_string(seq.size()) + ")");
      return {};
    }
    if (a > b) fail("span " + std::to_string(a) + ".." + std::to_string(b) + " starts after it ends");
    if (a < 1 || b > static_cast<int64_t>(seq.size()))
      fail("span " + std::to_string(a) + ".." + std::to_string(b) + " is outside the sequence (1.." +
           std::to_string(seq.size()) + ")");
    return seq.substr(static_cast<size_t>(a - 1), static_cast<size_t>(b - a + 1));
  }
  std::string loc() {
    if (eat("complement(")) {
      std::string inner = loc();
      expect(')');
      return reverse_complement(inner);
    }
    if (eat("join(") || eat("order(")) {
      std::string all = loc();
      while (i < s.size() && s[i] == ',') {
        ++i;
        all += loc();
      }
      expect(')');
      return all;
    }
    if (i < s.size() && s[i] == '>') {  // ">467": a one-base partial
      ++i;
      const int64_t a = number();
      if (a < 1 || a > static_cast<int64_t>(seq.size())) fail("base outside the sequence");
      return seq.substr(static_cast<size_t>(a - 1), 1);
    }
    return span();
  }
};

}  // namespace

std::vector<Record> parse(const std::vector<std::string>& lines, const std::string& path, const char* prog) {
  Parser p(lines, path, prog);
  p.run();
  return std::move(p.out);
}

std::vector<Record> read(const std::string& path, const char* prog) {
  return parse(example::read_lines(path, prog), path, prog);
}

std::optional<std::string> extract(const Feature& f, const Record& rec, const std::string& path, const char* prog) {
  Location l(f.location, rec.sequence, path, f.line, prog);
  if (f.location.empty()) l.fail("empty");
  std::string s = l.loc();
  if (l.i != f.location.size()) l.fail("unexpected text at column " + std::to_string(l.i + 1));
  if (l.remote) return std::nullopt;
  return s;
}

std::string reverse_complement(const std::string& s) {
  static const std::string from = "ACGTUMRWSYKVHDBN", to = "TGCAAKYWSRMBDHVN";
  std::string r(s.rbegin(), s.rend());
  for (char& c : r) {
    const size_t k = from.find(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
    c = k == std::string::npos ? 'N' : to[k];
  }
  return r;
}

std::string translate(const std::string& dna) {
  // Codons in TCAG order: TTT TTC TTA TTG TCT ... GGG.
  static const char* code = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG";
  auto base = [](char c) {
    switch (std::toupper(static_cast<unsigned char>(c))) {
      case 'T': case 'U': return 0;
      case 'C': return 1;
      case 'A': return 2;
      case 'G': return 3;
      default: return -1;
    }
  };
  std::string p;
  for (size_t i = 0; i + 3 <= dna.size(); i += 3) {
    const int a = base(dna[i]), b = base(dna[i + 1]), c = base(dna[i + 2]);
    p.push_back(a < 0 || b < 0 || c < 0 ? 'X' : code[a * 16 + b * 4 + c]);
  }
  return p;
}

}  // namespace genbank
