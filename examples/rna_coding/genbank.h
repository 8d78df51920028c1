// A reader for GenBank flat files (the NCBI nucleotide format: LOCUS, FEATURES, ORIGIN, //),
// enough of it to pull the sequences of annotated features out of a genome: the feature table
// (key, location, qualifiers) and the ORIGIN sequence of every record.
//
// Locations follow the INSDC feature-table grammar:
//   467              one base
//   340..565         a span; "<340..>565" marks partial ends (kept as 340..565)
//   102^103          a site between two bases (no sequence)
//   complement(L)    the reverse complement of L
//   join(L,L,...)    the parts, concatenated in the order given (order(...) alike)
//   J00194.1:100..202  a span on another record (reported as remote, not resolved)
//
// Damaged input throws ember::Error whose message names the file and the line:
//   "[rna_coding] ct.gbk:10835: ORIGIN line numbered 241, expected 181"
// (text before LOCUS, a feature line with the wrong indentation, an unclosed quote, a location
// that does not parse or falls outside the sequence, ORIGIN lines out of step or with other
// than letters, a LOCUS length the ORIGIN does not match, a record without "//").
#pragma once
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace genbank {

struct Feature {
  std::string key;       // CDS, gene, tRNA, rRNA, misc_RNA, ...
  std::string location;  // as written, continuation lines joined, whitespace removed
  size_t line = 0;       // the line the feature starts on (1-based)
  std::map<std::string, std::string> qualifiers;  // /name=value (quotes removed; "" for a flag)
  bool has(const std::string& q) const { return qualifiers.count(q) != 0; }
};

struct Record {
  std::string name;  // the LOCUS name
  size_t line = 0;   // the LOCUS line
  std::vector<Feature> features;
  std::string sequence;  // ORIGIN letters, upper case
};

// Parses lines already read (e.g. by example::read_lines); `path` and `prog` go into errors.
std::vector<Record> parse(const std::vector<std::string>& lines, const std::string& path, const char* prog);
// Reads a GenBank file, gzip or plain.
std::vector<Record> read(const std::string& path, const char* prog);

// The feature's sequence on its record: nullopt for a location on another record (remote);
// a bad or out-of-range location throws, naming path and the feature's line.
std::optional<std::string> extract(const Feature& f, const Record& rec, const std::string& path, const char* prog);

// The reverse complement (IUPAC codes mapped to theirs; U read as T).
std::string reverse_complement(const std::string& s);

// Translation with the standard genetic code ('X' for a codon with other letters than ACGT/U;
// an incomplete last codon is dropped).
std::string translate(const std::string& dna);

}  // namespace genbank
