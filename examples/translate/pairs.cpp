#include "pairs.h"

#include <fstream>

#include "ember/core/error.h"

namespace pairs {
namespace {

std::vector<std::string> split_on(const std::string& s, const std::string& sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t p = s.find(sep); p != std::string::npos; p = s.find(sep, start)) {
    out.push_back(s.substr(start, p - start));
    start = p + sep.size();
  }
  out.push_back(s.substr(start));
  return out;
}

std::string squeeze_spaces(const std::string& s) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (c == ' ' || c == '\t') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

// Reads the whole file as lines, with the checks every line gets (UTF-8, no NUL).
std::vector<std::string> read_checked_lines(const std::string& path, const char* prog) {
  std::ifstream f(path, std::ios::binary);
  EMBER_CHECK(static_cast<bool>(f), prog, "cannot open ", path);
  std::vector<std::string> lines;
  std::string l;
  while (std::getline(f, l)) {
    if (!l.empty() && l.back() == '\r') l.pop_back();
    const size_t lineno = lines.size() + 1;
    EMBER_CHECK(l.find('\0') == std::string::npos, prog, path, ":", lineno, ": a NUL byte (not a text file?)");
    const size_t bad = bad_utf8_at(l);
    EMBER_CHECK(bad == std::string::npos, prog, path, ":", lineno, ": bytes that are not UTF-8 at column ", bad + 1);
    lines.push_back(std::move(l));
  }
  EMBER_CHECK(!f.bad(), prog, "error reading ", path);
  return lines;
}

}  // namespace

size_t bad_utf8_at(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07;
    } else {
      return i;
    }
    if (i + n >= s.size()) return i;  // truncated
    for (size_t k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (d & 0x3F);
    }
    static const uint32_t kMin[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += n + 1;
  }
  return std::string::npos;
}

std::string clean_alternative(const std::string& alt) {
  // The first ';' variant.
  std::string s = alt.substr(0, alt.find("; "));
  // Annotations {..} [..] (..) out (unbalanced ones: to the end of the text).
  std::string t;
  int depth = 0;
  for (char c : s) {
    if (c == '{' || c == '[' || c == '(') ++depth;
    else if ((c == '}' || c == ']' || c == ')') && depth > 0) --depth;
    else if (depth == 0) t += c;
  }
  // "a/b" word alternatives: keep "a" (the text up to the next space, keeping final punctuation).
  std::string u;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '/' && i > 0 && t[i - 1] != ' ' && i + 1 < t.size() && t[i + 1] != ' ') {
      size_t j = i + 1;
      while (j < t.size() && t[j] != ' ') ++j;
      // keep a trailing . ! ? , of the skipped alternative
      size_t k = j;
      while (k > i + 1 && (t[k - 1] == '.' || t[k - 1] == '!' || t[k - 1] == '?' || t[k - 1] == ',')) --k;
      u.append(t, k, j - k);
      i = j - 1;
      continue;
    }
    u += t[i];
  }
  std::string v = squeeze_spaces(u);
  // A space left before final punctuation by a removed annotation ("Er kommt (bald) .").
  if (v.size() >= 2 && v.compare(v.size() - 2, 2, " .") == 0) v.erase(v.size() - 2, 1);
  return v;
}

bool is_sentence(const std::string& s, int min_words) {
  if (s.size() < 2) return false;
  const auto c0 = static_cast<unsigned char>(s[0]);
  const bool upper = (c0 >= 'A' && c0 <= 'Z') ||
                     (c0 == 0xC3 && (static_cast<unsigned char>(s[1]) == 0x84 || static_cast<unsigned char>(s[1]) == 0x96 ||
                                     static_cast<unsigned char>(s[1]) == 0x9C));  // Ä Ö Ü
  const char last = s.back();
  if (!upper || (last != '.' && last != '!' && last != '?')) return false;
  int words = 1;
  for (char c : s) words += c == ' ';
  return words >= min_words;
}

std::vector<Pair> read_ding(const std::string& path, const char* prog, int min_words, DingStats* stats) {
  const std::vector<std::string> lines = read_checked_lines(path, prog);
  std::vector<Pair> out;
  DingStats st;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    if (l.empty() || l[0] == '#') continue;
    const size_t lineno = i + 1;
    const std::vector<std::string> sides = split_on(l, " :: ");
    EMBER_CHECK(sides.size() == 2, prog, path, ":", lineno, ": expected \"German :: English\", found ",
                sides.size() - 1, " \" :: \" separators");
    EMBER_CHECK(!squeeze_spaces(sides[0]).empty() && !squeeze_spaces(sides[1]).empty(), prog, path, ":", lineno,
                ": an empty ", squeeze_spaces(sides[0]).empty() ? "German" : "English", " side");
    const std::vector<std::string> de = split_on(sides[0], " | "), en = split_on(sides[1], " | ");
    EMBER_CHECK(de.size() == en.size(), prog, path, ":", lineno, ": the German side has ", de.size(),
                " alternatives ('|'), the English side ", en.size(), "; they must pair up");
    ++st.entries;
    for (size_t k = 0; k < de.size(); ++k) {
      ++st.alternatives;
      const std::string s = clean_alternative(de[k]), t = clean_alternative(en[k]);
      if (is_sentence(s, min_words) && is_sentence(t, min_words)) {
        out.push_back({s, t, static_cast<int64_t>(lineno)});
        ++st.sentence_pairs;
      }
    }
  }
  EMBER_CHECK(!out.empty(), prog, path, ": no sentence pairs found (is this a Ding dictionary file?)");
  if (stats != nullptr) *stats = st;
  return out;
}

std::vector<Pair> read_tsv(const std::string& path, const char* prog) {
  const std::vector<std::string> lines = read_checked_lines(path, prog);
  std::vector<Pair> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    if (l.empty() || l[0] == '#') continue;
    const size_t lineno = i + 1;
    const size_t tab = l.find('\t');
    EMBER_CHECK(tab != std::string::npos, prog, path, ":", lineno, ": no tab (expected \"source<TAB>target\")");
    EMBER_CHECK(l.find('\t', tab + 1) == std::string::npos, prog, path, ":", lineno,
                ": more than one tab (expected \"source<TAB>target\")");
    Pair p{squeeze_spaces(l.substr(0, tab)), squeeze_spaces(l.substr(tab + 1)), static_cast<int64_t>(lineno)};
    EMBER_CHECK(!p.src.empty(), prog, path, ":", lineno, ": empty source sentence");
    EMBER_CHECK(!p.tgt.empty(), prog, path, ":", lineno, ": empty target sentence");
    out.push_back(std::move(p));
  }
  EMBER_CHECK(!out.empty(), prog, path, ": no sentence pairs (expected \"source<TAB>target\" lines)");
  return out;
}

}  // namespace pairs
