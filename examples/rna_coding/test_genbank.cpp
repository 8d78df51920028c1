// Tests of the GenBank reader (genbank.h): a toy record with every location form, damaged
// records (each error names the file and the line), and the real C. trachomatis genome when
// its Debian package has been fetched.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "ember/core/error.h"
#include "genbank.h"

namespace {

// A 120-base record; `features` replaces the feature table.
std::vector<std::string> toy(const std::vector<std::string>& features, bool with_end = true) {
  std::vector<std::string> l = {
      "LOCUS       TOYSEQ       120 bp    DNA     linear   BCT 01-JAN-2000",
      "DEFINITION  A toy record.",
      "FEATURES             Location/Qualifiers",
  };
  l.insert(l.end(), features.begin(), features.end());
  l.push_back("ORIGIN");
  l.push_back("        1 atggctaaag gtgaacgtct ggcagaactg atcaaagcgg ctggtattac cgaagcttaa");
  l.push_back("       61 atgagcacca aagttatcgc tgaactgcgt aaacaggctg gcgaacgtct ggcagaataa");
  if (with_end) l.push_back("//");
  return l;
}

const std::string kSeq =
    "ATGGCTAAAGGTGAACGTCTGGCAGAACTGATCAAAGCGGCTGGTATTACCGAAGCTTAA"
    "ATGAGCACCAAAGTTATCGCTGAACTGCGTAAACAGGCTGGCGAACGTCTGGCAGAATAA";

// The error message of parsing (and extracting every feature of) `lines`, or "" when none.
std::string error_of(const std::vector<std::string>& lines) {
  try {
    for (const genbank::Record& r : genbank::parse(lines, "toy.gbk", "test"))
      for (const genbank::Feature& f : r.features) genbank::extract(f, r, "toy.gbk", "test");
  } catch (const ember::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("a toy record: qualifiers, locations, translation") {
  const auto recs = genbank::parse(toy({"     CDS             1..60",
                                        "                     /gene=\"toyA\"",
                                        "                     /translation=\"MAKGERLAELIKAAGITEA",
                                        "                     \"",
                                        "                     /note=\"two \"\"quoted\"\"",
                                        "                     words\"",
                                        "     CDS             complement(join(<61..90,",
                                        "                     100..>120))",
                                        "                     /pseudo",
                                        "     misc_feature    order(5,10^11,J00194.1:1..4)"}),
                                   "toy.gbk", "test");
  REQUIRE(recs.size() == 1);
  const genbank::Record& r = recs[0];
  CHECK(r.name == "TOYSEQ");
  CHECK(r.sequence == kSeq);
  REQUIRE(r.features.size() == 3);
  const genbank::Feature& a = r.features[0];
  CHECK(a.key == "CDS");
  CHECK(a.line == 4);
  CHECK(a.qualifiers.at("gene") == "toyA");
  CHECK(a.qualifiers.at("translation") == "MAKGERLAELIKAAGITEA");
  CHECK(a.qualifiers.at("note") == "two \"quoted\" words");
  CHECK(*genbank::extract(a, r, "toy.gbk", "test") == kSeq.substr(0, 60));
  CHECK(genbank::translate(kSeq.substr(0, 60)) == "MAKGERLAELIKAAGITEA*");
  const genbank::Feature& b = r.features[1];
  CHECK(b.location == "complement(join(<61..90,100..>120))");
  CHECK(b.has("pseudo"));
  CHECK(*genbank::extract(b, r, "toy.gbk", "test") ==
        genbank::reverse_complement(kSeq.substr(60, 30) + kSeq.substr(99, 21)));
  CHECK_FALSE(genbank::extract(r.features[2], r, "toy.gbk", "test").has_value());  // remote part
  CHECK(genbank::reverse_complement("ACGTUN") == "NAACGT");
}

TEST_CASE("damaged records name the file and the line") {
  CHECK(error_of({"ID   not genbank"}).find("toy.gbk:1: expected a LOCUS line") != std::string::npos);
  CHECK(error_of(toy({"     CDS             1..130"})).find("toy.gbk:4: location \"1..130\": span 1..130 is outside") !=
        std::string::npos);
  CHECK(error_of(toy({"     CDS             complement(1..20"})).find("toy.gbk:4: location") != std::string::npos);
  CHECK(error_of(toy({"     CDS             join(1..20,x)"})).find("toy.gbk:4: location") != std::string::npos);
  CHECK(error_of(toy({"     CDS             30..20"})).find("starts after it ends") != std::string::npos);
  CHECK(error_of(toy({"     CDS             1..20", "                 /gene=\"x\""})).find("toy.gbk:5: feature table line indented by 17") !=
        std::string::npos);
  CHECK(error_of(toy({"     CDS             1..20", "                     /note=\"never closed"})).find(
            "toy.gbk:5: qualifier /note has an unclosed quote") != std::string::npos);
  CHECK(error_of(toy({"     CDS"})).find("toy.gbk:4: feature CDS has no location") != std::string::npos);
  CHECK(error_of(toy({}, false)).find("toy.gbk:6: file ends inside record TOYSEQ") != std::string::npos);
  auto skipped = toy({});
  skipped[5] = "      121 atgagcacca";  // the second ORIGIN line numbered wrong
  CHECK(error_of(skipped).find("toy.gbk:6: ORIGIN line numbered 121, expected 61") != std::string::npos);
  auto digit = toy({});
  digit[4] = "        1 atggct1aag";
  CHECK(error_of(digit).find("toy.gbk:5: unexpected character '1' in the ORIGIN sequence") != std::string::npos);
  auto shorter = toy({});
  shorter.erase(shorter.begin() + 5);  // 60 bases where LOCUS says 120
  CHECK(error_of(shorter).find("toy.gbk:6: record TOYSEQ: LOCUS line says 120 bp but ORIGIN holds 60") !=
        std::string::npos);
  auto two = toy({});
  two.pop_back();
  const auto again = toy({});
  two.insert(two.end(), again.begin(), again.end());  // a second LOCUS before the first "//"
  CHECK(error_of(two).find("toy.gbk:7: LOCUS line inside record TOYSEQ") != std::string::npos);
}

#ifdef RNA_CODING_CT_GBK
TEST_CASE("the C. trachomatis genome (r-cran-seqinr's ct.gbk.gz)") {
  if (!std::filesystem::exists(RNA_CODING_CT_GBK)) {
    MESSAGE("skipped: " RNA_CODING_CT_GBK " not fetched");
    return;
  }
  const auto recs = genbank::read(RNA_CODING_CT_GBK, "test");
  REQUIRE(recs.size() == 1);
  CHECK(recs[0].sequence.size() == 1042519);
  int cds = 0, agree = 0, trna = 0;
  for (const genbank::Feature& f : recs[0].features) {
    if (f.key == "tRNA") ++trna;
    if (f.key != "CDS") continue;
    ++cds;
    const std::string s = *genbank::extract(f, recs[0], RNA_CODING_CT_GBK, "test");
    std::string p = genbank::translate(s);
    if (!p.empty() && p.back() == '*') p.pop_back();
    const std::string& t = f.qualifiers.at("translation");
    if (p.size() == t.size() && p.substr(1) == t.substr(1)) ++agree;
  }
  CHECK(cds == 895);
  CHECK(trna == 37);
  MESSAGE(agree << " of " << cds << " CDS translate to their /translation");
  CHECK(agree >= 880);
}
#endif
