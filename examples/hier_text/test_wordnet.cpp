// The WordNet and TSV readers (wordnet.h): a toy noun file, damaged files, and the real
// data.noun when it has been fetched.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "ember/core/error.h"
#include "wordnet.h"

namespace {

const std::string kDir = HIER_TEXT_TESTDATA;

// The message of the error that reading `file` raises ("" when it reads).
std::string read_error(const std::string& file) {
  try {
    if (file.size() > 4 && file.substr(file.size() - 4) == ".tsv") wordnet::read_tsv(kDir + "/" + file, "t");
    else wordnet::read(kDir + "/" + file, "t");
  } catch (const ember::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("toy data.noun: words, hypernyms, gloss, chain") {
  const wordnet::Database db = wordnet::read(kDir + "/toy.noun", "t");
  REQUIRE(db.synsets.size() == 3);
  const wordnet::Synset& dog = db.synsets[2];
  CHECK(dog.offset == "00000003");
  CHECK(dog.lex == 5);
  CHECK(wordnet::lex_name(dog.lex) == "noun.animal");
  CHECK(wordnet::lex_name(3) == "noun.Tops");
  CHECK(wordnet::lex_name(28) == "noun.time");
  REQUIRE(dog.words.size() == 2);
  CHECK(dog.words[1] == "domestic dog");
  REQUIRE(dog.hypernyms.size() == 1);  // the verb pointer '+' is not a hypernym
  CHECK(dog.hypernyms[0] == "00000002");
  CHECK(dog.gloss == "a member of the genus Canis; \"the dog barked\"");
  CHECK(dog.line == 4);
  CHECK(wordnet::chain(db, 2) == std::vector<size_t>{0, 1, 2});
}

TEST_CASE("damaged noun files name file, line and problem") {
  CHECK(read_error("bad_pointer.noun").find("bad_pointer.noun:3: pointer part of speech \"x\"") != std::string::npos);
  CHECK(read_error("truncated.noun").find("truncated.noun:4: no \" | \" before the gloss") != std::string::npos);
  CHECK(read_error("missing_hypernym.noun").find("missing_hypernym.noun:3: hypernym 00000009 is not a synset") !=
        std::string::npos);
  CHECK(read_error("no_such_file.noun").find("cannot open") != std::string::npos);
}

TEST_CASE("labelled TSV") {
  const std::vector<wordnet::Labelled> r = wordnet::read_tsv(kDir + "/toy.tsv", "t");
  REQUIRE(r.size() == 2);
  CHECK(r[1].path == std::vector<std::string>{"animal", "mammal", "cat"});
  CHECK(r[1].text == "a small furry carnivore that purrs");
  CHECK(read_error("bad_depth.tsv").find("bad_depth.tsv:3: label path has 2 levels, line 2 has 3") != std::string::npos);
}

TEST_CASE("the real data.noun, when fetched") {
  const std::string real = HIER_TEXT_DATA_NOUN;
  if (!std::filesystem::is_regular_file(real)) return;
  const wordnet::Database db = wordnet::read(real, "t");
  CHECK(db.synsets.size() == 82115);  // WordNet 3.0's noun synsets
  const wordnet::Synset& e = db.synsets.front();
  CHECK(e.words.front() == "entity");
  CHECK(e.hypernyms.empty());
  int64_t roots = 0;
  for (const auto& s : db.synsets) roots += s.hypernyms.empty();
  CHECK(roots == 1);  // every chain ends at entity
}
