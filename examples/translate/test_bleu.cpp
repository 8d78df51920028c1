// Tests of the BLEU implementation (bleu.h) on sentences whose scores can be checked by hand
// (the figures agree with sacrebleu 2.6.0's corpus_bleu), of the 13a tokeniser, and of the
// sentence-pair readers (pairs.h) on good and damaged input.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bleu.h"
#include "ember/core/error.h"
#include "pairs.h"

namespace {

using Toks = std::vector<std::string>;

double bleu1(const std::string& hyp, const std::string& ref) { return bleu::corpus_bleu({hyp}, {ref}); }

std::string write_temp(const std::string& name, const std::string& text) {
  const std::string p = (std::filesystem::temp_directory_path() / name).string();
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

std::string error_of(auto f) {
  try {
    f();
  } catch (const ember::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("13a tokeniser") {
  CHECK(bleu::tokenize_13a("Hello, world.") == Toks{"Hello", ",", "world", "."});
  // '.' and ',' stay inside numbers; '$' is split off.
  CHECK(bleu::tokenize_13a("It costs $3.50, or 1,000 yen.") == Toks{"It", "costs", "$", "3.50", ",", "or", "1,000", "yen", "."});
  // '-' after a digit is split, '.' after a letter too (every one of "...").
  CHECK(bleu::tokenize_13a("1990-2000 was e.g. long...") ==
        Toks{"1990", "-", "2000", "was", "e", ".", "g", ".", "long", ".", ".", "."});
  // The apostrophe and non-ASCII quotes are not split off; ';' and '?' are.
  CHECK(bleu::tokenize_13a("He isn't \u201chere\u201d; ok?") == Toks{"He", "isn't", "\u201chere\u201d", ";", "ok", "?"});
  CHECK(bleu::tokenize_13a("a&amp;b <skipped>c") == Toks{"a", "&", "b", "c"});
  CHECK(bleu::tokenize_13a("Das B\u00fcro.") == Toks{"Das", "B\u00fcro", "."});
  CHECK(bleu::tokenize_13a("(x)/[y] {z}") == Toks{"(", "x", ")", "/", "[", "y", "]", "{", "z", "}"});
  CHECK(bleu::tokenize_13a("  ").empty());
}

TEST_CASE("corpus BLEU on hand-checkable sentences") {
  // Identical: every precision 100, BP 1.
  CHECK(bleu1("the cat sat on the mat .", "the cat sat on the mat.") == doctest::Approx(100.0));
  // p = 4/5, 3/4, 2/3, 1/2, BP 1: 100 * (1/5)^(1/4) = 66.874.
  CHECK(bleu1("a b c d e", "a b c d f") == doctest::Approx(100.0 * std::pow(0.2, 0.25)).epsilon(1e-9));
  // All precisions 1, hypothesis 4 tokens vs reference 6: BP = exp(1 - 6/4) = 60.653.
  CHECK(bleu1("a b c d", "a b c d e f") == doctest::Approx(100.0 * std::exp(-0.5)).epsilon(1e-9));
  // p4 has 0 of 1 matches: "exp" smoothing makes it 100 / (2 * 1) = 50 percent;
  // (75 * 66.67 * 50 * 50)^(1/4) = 59.460.
  CHECK(bleu1("a b c x", "a b c d") == doctest::Approx(std::pow(75.0 * 200.0 / 3.0 * 50.0 * 50.0, 0.25)).epsilon(1e-9));
  // Clipping: "the" counts once (1/3); no 4-grams at all: BLEU 0.
  const bleu::Stats s = bleu::corpus_stats({"the the the"}, {"the cat"});
  CHECK(s.matches[0] == 1);
  CHECK(s.totals[0] == 3);
  CHECK(s.score() == 0.0);
  // Corpus level: statistics are summed before the precisions are taken (7/9, 5/7, 3/5, 1/3),
  // so the corpus score (1/9)^(1/4) = 57.735 is not the mean of the sentence scores.
  CHECK(bleu::corpus_bleu({"a b c d e", "a b c x"}, {"a b c d f", "a b c d"}) ==
        doctest::Approx(100.0 * std::pow(1.0 / 9.0, 0.25)).epsilon(1e-9));
  CHECK(bleu1("", "a b c") == 0.0);
}

TEST_CASE("Ding alternatives: cleaning and the sentence test") {
  CHECK(pairs::clean_alternative("Er steht auf der Liste. [ugs.]") == "Er steht auf der Liste.");
  CHECK(pairs::clean_alternative("Der Block hat zwanzig Geschosse/Stockwerke.") == "Der Block hat zwanzig Geschosse.");
  CHECK(pairs::clean_alternative("Haus {n}; Geb\u00e4ude {n}") == "Haus");
  CHECK(pairs::is_sentence("\u00dcber alles gut.", 3));
  CHECK_FALSE(pairs::is_sentence("das ist gut.", 3));
  CHECK_FALSE(pairs::is_sentence("Das ist gut", 3));
  CHECK_FALSE(pairs::is_sentence("Gut so.", 3));
  CHECK(pairs::bad_utf8_at("gr\u00fc\u00df") == std::string::npos);
  CHECK(pairs::bad_utf8_at(std::string("ab\xc3", 3)) == 2);
  CHECK(pairs::bad_utf8_at(std::string("a\xc0\xaf", 3)) == 1);  // overlong '/'
}

TEST_CASE("readers on good and damaged files") {
  const std::string ding = write_temp("translate_test_ding.txt",
                                      "# comment\nHaus {n} | Das Haus ist alt. :: house | The house is old.\n"
                                      "Hallo! :: Hello!\n");
  pairs::DingStats st;
  const auto p = pairs::read_ding(ding, "t", 3, &st);
  REQUIRE(p.size() == 1);
  CHECK(p[0].src == "Das Haus ist alt.");
  CHECK(p[0].tgt == "The house is old.");
  CHECK(p[0].line == 2);
  CHECK(st.entries == 2);
  CHECK(st.alternatives == 3);
  const std::string bad = write_temp("translate_test_bad.txt", "Das ist gut. :: That is good.\nKaputt\n");
  CHECK(error_of([&] { pairs::read_ding(bad, "t", 3, nullptr); }).find("translate_test_bad.txt:2: expected") != std::string::npos);
  const std::string tsv = write_temp("translate_test.tsv", "# c\nGuten Morgen.\tGood  morning.\n");
  const auto q = pairs::read_tsv(tsv, "t");
  REQUIRE(q.size() == 1);
  CHECK(q[0].tgt == "Good morning.");
  const std::string tsv2 = write_temp("translate_test2.tsv", "a\tb\tc\n");
  CHECK(error_of([&] { pairs::read_tsv(tsv2, "t"); }).find("translate_test2.tsv:1: more than one tab") != std::string::npos);
}
