// Sentence pairs for the translate example: the Ding German-English dictionary (Debian's
// trans-de-en) and the user's own TSV. Both readers stop at the first damaged line with
// "FILE:LINE: problem" (an ember::Error naming the program).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pairs {

struct Pair {
  std::string src, tgt;  // one sentence each, UTF-8, single spaces
  int64_t line = 0;      // where it came from
};

struct DingStats {
  int64_t entries = 0, alternatives = 0, sentence_pairs = 0;
};

// Ding lines: "German | German ... :: English | English ...", '#' comments. The two sides must
// have the same number of '|' alternatives (they are aligned one to one). From each aligned
// alternative the first ';' variant of each side is taken, annotations in {} [] () removed,
// "a/b" word alternatives reduced to "a", and the pair kept when both sides are sentences: a
// capital first letter, a final . ! or ?, at least `min_words` words.
// Errors: no " :: " separator (or more than one), an empty side, unequal alternative counts,
// bytes that are not UTF-8, a NUL byte.
std::vector<Pair> read_ding(const std::string& path, const char* prog, int min_words, DingStats* stats);

// The user's pairs: "source<TAB>target" per line, UTF-8; empty lines and lines starting with
// '#' are skipped. Errors: no tab, more than one tab, an empty side, bad UTF-8, no pairs.
std::vector<Pair> read_tsv(const std::string& path, const char* prog);

// Checks that s is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF);
// returns the byte offset of the first bad byte, or npos.
size_t bad_utf8_at(const std::string& s);

// The sentence cleaning used on Ding alternatives (exposed for the tests).
std::string clean_alternative(const std::string& alt);
bool is_sentence(const std::string& s, int min_words);

}  // namespace pairs
