// WordNet noun database and labelled-TSV readers (wordnet.h).
#include "wordnet.h"

#include <algorithm>
#include <cctype>
#include <fstream>

#include "ember/core/error.h"

namespace wordnet {
namespace {

bool all_of(const std::string& s, int (*pred)(int)) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [&](char c) { return pred(static_cast<unsigned char>(c)) != 0; });
}
int is_digit(int c) { return std::isdigit(c); }
int is_hex(int c) { return std::isxdigit(c); }

std::vector<std::string> split_ws(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') ++i;
    size_t j = i;
    while (j < s.size() && s[j] != ' ') ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

}  // namespace

std::string lex_name(int lex) {
  static const char* const kNames[] = {
      "adj.all",        "adj.pert",       "adv.all",         "noun.Tops",       "noun.act",       "noun.animal",
      "noun.artifact",  "noun.attribute", "noun.body",       "noun.cognition",  "noun.communication",
      "noun.event",     "noun.feeling",   "noun.food",       "noun.group",      "noun.location",  "noun.motive",
      "noun.object",    "noun.person",    "noun.phenomenon", "noun.plant",      "noun.possession",
      "noun.process",   "noun.quantity",  "noun.relation",   "noun.shape",      "noun.state",     "noun.substance",
      "noun.time",      "verb.body",      "verb.change",     "verb.cognition",  "verb.communication",
      "verb.competition", "verb.consumption", "verb.contact", "verb.creation",   "verb.emotion",   "verb.motion",
      "verb.perception", "verb.possession", "verb.social",   "verb.stative",    "verb.weather",   "adj.ppl"};
  if (lex >= 0 && lex < static_cast<int>(sizeof kNames / sizeof kNames[0])) return kNames[lex];
  return "lex" + std::to_string(lex);
}

Database read(const std::string& path, const char* prog) {
  std::ifstream in(path, std::ios::binary);
  EMBER_CHECK(static_cast<bool>(in), prog, "cannot open ", path);
  Database db;
  db.path = path;
  std::vector<std::pair<size_t, std::string>> hyper_lines;  // for the target check: (line, target)
  std::string line;
  size_t lineno = 0;
  auto fail = [&](const std::string& what) { EMBER_FAIL(prog, path, ":", lineno, ": ", what); };
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind("  ", 0) == 0) continue;  // licence header
    if (trim(line).empty()) fail("empty line (a synset line or a licence line starting with two spaces expected)");
    const size_t bar = line.find(" | ");
    if (bar == std::string::npos) fail("no \" | \" before the gloss (truncated line?)");
    const std::vector<std::string> t = split_ws(line.substr(0, bar));
    Synset s;
    s.line = lineno;
    s.gloss = trim(line.substr(bar + 3));
    if (t.size() < 4) fail("too few fields before the gloss (offset, lex_filenum, ss_type, w_cnt expected)");
    if (t[0].size() != 8 || !all_of(t[0], is_digit)) fail("synset offset \"" + t[0] + "\" is not 8 digits");
    s.offset = t[0];
    if (t[1].size() != 2 || !all_of(t[1], is_digit)) fail("lex_filenum \"" + t[1] + "\" is not 2 digits");
    s.lex = std::stoi(t[1]);
    if (s.lex < 3 || s.lex > 28) fail("lex_filenum " + t[1] + " is not a noun file (03..28, lexnames(5))");
    if (t[2] != "n") fail("ss_type \"" + t[2] + "\" is not n (a noun synset)");
    if (t[3].size() != 2 || !all_of(t[3], is_hex)) fail("w_cnt \"" + t[3] + "\" is not 2 hex digits");
    const size_t w = std::stoul(t[3], nullptr, 16);
    if (w == 0) fail("w_cnt is 0 (a synset has at least one word)");
    size_t i = 4;
    if (t.size() < i + 2 * w + 1) fail("the line ends inside its " + std::to_string(w) + " words and p_cnt");
    for (size_t k = 0; k < w; ++k, i += 2) {
      if (!all_of(t[i + 1], is_hex)) fail("lex_id \"" + t[i + 1] + "\" of word \"" + t[i] + "\" is not hex");
      std::string word = t[i];
      std::replace(word.begin(), word.end(), '_', ' ');
      s.words.push_back(word);
    }
    if (t[i].size() != 3 || !all_of(t[i], is_digit)) fail("p_cnt \"" + t[i] + "\" is not 3 digits");
    const size_t p = std::stoul(t[i]);
    ++i;
    if (t.size() < i + 4 * p) fail("the line ends inside its " + std::to_string(p) + " pointers");
    for (size_t k = 0; k < p; ++k, i += 4) {
      const std::string &sym = t[i], &tgt = t[i + 1], &pos = t[i + 2], &st = t[i + 3];
      if (tgt.size() != 8 || !all_of(tgt, is_digit)) fail("pointer target \"" + tgt + "\" is not 8 digits");
      if (pos.size() != 1 || std::string("nvasr").find(pos) == std::string::npos)
        fail("pointer part of speech \"" + pos + "\" is not one of n v a s r");
      if (st.size() != 4 || !all_of(st, is_hex)) fail("pointer source/target \"" + st + "\" is not 4 hex digits");
      if ((sym == "@" || sym == "@i") && pos == "n") {
        s.hypernyms.push_back(tgt);
        hyper_lines.emplace_back(lineno, tgt);
      }
    }
    if (i != t.size()) fail("unexpected field \"" + t[i] + "\" after the pointers (nouns have no verb frames)");
    if (!db.by_offset.emplace(s.offset, db.synsets.size()).second)
      fail("synset offset " + s.offset + " repeats the synset of line " +
           std::to_string(db.synsets[db.by_offset.at(s.offset)].line));
    db.synsets.push_back(std::move(s));
  }
  EMBER_CHECK(!db.synsets.empty(), prog, path, ": no synset lines (is this WordNet's data.noun?)");
  for (const auto& [ln, tgt] : hyper_lines) {
    lineno = ln;
    if (db.by_offset.count(tgt) == 0) fail("hypernym " + tgt + " is not a synset of this file");
  }
  // Cycles: follow every first-hypernym chain; more steps than synsets means a loop.
  for (size_t k = 0; k < db.synsets.size(); ++k) {
    size_t cur = k, steps = 0;
    while (!db.synsets[cur].hypernyms.empty()) {
      cur = db.by_offset.at(db.synsets[cur].hypernyms[0]);
      if (++steps > db.synsets.size()) {
        lineno = db.synsets[k].line;
        fail("the hypernym chain of synset " + db.synsets[k].offset + " loops");
      }
    }
  }
  return db;
}

std::vector<size_t> chain(const Database& db, size_t i) {
  std::vector<size_t> c{i};
  while (!db.synsets[c.back()].hypernyms.empty()) c.push_back(db.by_offset.at(db.synsets[c.back()].hypernyms[0]));
  std::reverse(c.begin(), c.end());
  return c;
}

std::vector<Labelled> read_tsv(const std::string& path, const char* prog) {
  std::ifstream in(path, std::ios::binary);
  EMBER_CHECK(static_cast<bool>(in), prog, "cannot open ", path);
  std::vector<Labelled> out;
  std::string line;
  size_t lineno = 0, depth = 0, depth_line = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (trim(line).empty() || line[0] == '#') continue;
    const size_t tab = line.find('\t');
    EMBER_CHECK(tab != std::string::npos, prog, path, ":", lineno, ": no tab between the label path and the text");
    Labelled r;
    r.text = trim(line.substr(tab + 1));
    EMBER_CHECK(!r.text.empty(), prog, path, ":", lineno, ": empty text");
    const std::string labels = line.substr(0, tab);
    size_t a = 0;
    while (true) {
      const size_t b = labels.find(" > ", a);
      const std::string l = trim(labels.substr(a, b == std::string::npos ? std::string::npos : b - a));
      EMBER_CHECK(!l.empty(), prog, path, ":", lineno, ": empty label in \"", labels, "\"");
      r.path.push_back(l);
      if (b == std::string::npos) break;
      a = b + 3;
    }
    EMBER_CHECK(r.path.size() >= 2, prog, path, ":", lineno, ": label path \"", labels,
                "\" has one level; give at least two, joined by \" > \"");
    if (depth == 0) depth = r.path.size(), depth_line = lineno;
    EMBER_CHECK(r.path.size() == depth, prog, path, ":", lineno, ": label path has ", r.path.size(),
                " levels, line ", depth_line, " has ", depth, " (every line needs the same depth)");
    out.push_back(std::move(r));
  }
  EMBER_CHECK(!out.empty(), prog, path, ": no labelled lines");
  return out;
}

}  // namespace wordnet
