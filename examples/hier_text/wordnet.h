// A reader for WordNet's noun database (data.noun, format wndb(5)) and for the example's plain
// labelled-text format. Both reject damaged input with an ember::Error naming the program, the
// file, the line and the problem.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace wordnet {

// One synset line of data.noun:
//   synset_offset lex_filenum ss_type w_cnt(2 hex) word lex_id(1 hex) [...] p_cnt(3 digits)
//   [pointer_symbol offset pos source/target(4 hex)]... | gloss
struct Synset {
  std::string offset;                   // 8 digits: the synset's id
  int lex = 0;                          // lexicographer file number (lexnames(5)): 3..28 for nouns
  std::vector<std::string> words;       // underscores as spaces
  std::vector<std::string> hypernyms;   // offsets of '@' and '@i' noun pointers, in file order
  std::string gloss;                    // after "| "
  size_t line = 0;                      // 1-based, for errors
};

struct Database {
  std::string path;
  std::vector<Synset> synsets;
  std::unordered_map<std::string, size_t> by_offset;
};

// Reads data.noun. Lines starting with two spaces are the licence header. Errors name
// FILE:LINE: a field missing or malformed, a word count that runs past the line, a pointer
// with a bad part of speech, no "|" before the gloss, a repeated offset, a hypernym that
// points at no synset of the file, a hypernym cycle.
Database read(const std::string& path, const char* prog);

// Synset i's first-hypernym chain, root first, ending with i itself.
std::vector<size_t> chain(const Database& db, size_t i);

// lexnames(5): the name of lexicographer file `lex` ("noun.animal"), or "lex<N>".
std::string lex_name(int lex);

// The plain format for your own data: one example per line, "LABEL_PATH<TAB>TEXT", where
// LABEL_PATH is the class's labels from the root joined by " > " ("animal > mammal > dog").
// Every line has the same number of levels (>= 2). Blank lines and lines starting with '#'
// are skipped. Errors name FILE:LINE (no tab, empty text or label, a different depth).
struct Labelled {
  std::vector<std::string> path;
  std::string text;
};
std::vector<Labelled> read_tsv(const std::string& path, const char* prog);

}  // namespace wordnet
