// protein_pairs' data: the bundled proxy set (real proteins of six groups from two Debian
// packages), the user's own FASTA + pairs TSV, the protein-disjoint split and the pair
// sampler, the window encoding and the pair features of the baselines. Header-only.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "../common/seqdata.h"
#include "ember/ember.h"

namespace pp {

inline constexpr const char* kProg = "protein_pairs";
inline const std::string kAlphabet = "ACDEFGHIKLMNPQRSTVWY";

struct Protein {
  std::string id;
  std::string seq;  // the whole sequence, upper case
  int group = -1;   // the bundled set's group; -1 for the user's own proteins
};

struct Pair {
  int64_t a = 0, b = 0;  // protein indices
  int64_t label = 0;     // 1: interact / same group, 0: not
};

struct Dataset {
  std::vector<Protein> proteins;
  std::vector<std::string> group_names;  // bundled set only
  std::vector<std::string> sources;      // one line per input file, for the summary
  int64_t duplicates_dropped = 0;
};

// --- deterministic draws ----------------------------------------------------------------------

// splitmix64: a small generator whose whole output is fixed by its seed on every platform
// (std::uniform_int_distribution is not), so --seed gives the same pairs everywhere.
struct SplitMix {
  uint64_t s;
  explicit SplitMix(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }
};

// --- readers ----------------------------------------------------------------------------------

// The two FASTA files of Rcpi's vignette data carry bare accessions on their header lines and
// are written with two quirks that a strict FASTA reader rejects: in mitochondrion.fasta one
// record's header and first sequence line sit inside the previous record's sequence line
// ("... VVVYDGEHL >Q9P0J0 AASKVK ...") and some records have their whole sequence on the header
// line after the accession. This reader takes those files as written: every '>' starts a
// record, its first word is the id and the rest of that line is sequence. Anything else that
// is not a letter, a gap or a space is still an error naming the file and line.
inline std::vector<example::Record> read_accession_fasta(const std::string& path) {
  const std::vector<std::string> lines = example::read_lines(path, kProg);
  std::vector<example::Record> out;
  std::vector<size_t> header_line;
  auto close_check = [&] {
    if (!out.empty())
      EMBER_CHECK(!out.back().seq.empty(), kProg, path, ":", header_line.back(), ": record \"", out.back().id,
                  "\" has no sequence");
  };
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    if (l.empty() || l[0] == ';') continue;
    size_t start = 0;
    while (start <= l.size()) {
      const size_t gt = l.find('>', start);
      const std::string part = l.substr(start, gt == std::string::npos ? std::string::npos : gt - start);
      if (start == 0) {  // sequence text before any '>' on this line
        if (part.find_first_not_of(" \t") != std::string::npos) {
          EMBER_CHECK(!out.empty(), kProg, path, ":", i + 1, ": sequence before the first '>' header (not a FASTA file?)");
          out.back().seq += example::clean_sequence(part, path, i + 1, kProg);
        }
      } else {  // `part` follows a '>': "id [sequence]"
        close_check();
        std::istringstream h(part);
        example::Record r;
        h >> r.id;
        EMBER_CHECK(!r.id.empty(), kProg, path, ":", i + 1, ": a '>' header without an id");
        std::string rest, word;
        while (h >> word) rest += word;
        r.seq = example::clean_sequence(rest, path, i + 1, kProg);
        out.push_back(std::move(r));
        header_line.push_back(i + 1);
      }
      if (gt == std::string::npos) break;
      start = gt + 1;
    }
  }
  EMBER_CHECK(!out.empty(), kProg, path, ": no FASTA records");
  close_check();
  return out;
}

inline std::string need_file(const std::string& path) {
  EMBER_CHECK(std::filesystem::is_regular_file(path), kProg, "missing data file ", path,
              "; fetch the data with `bash scripts/fetch_data.sh emboss-test r-bioc-rcpi` (or run "
              "`bash scripts/example.sh protein_pairs`), or pass --data-root DIR, or use your own "
              "data with --fasta FILE --pairs FILE.tsv");
  return path;
}

// The bundled proxy set: six groups of real proteins, one protein per distinct sequence.
//   globin          EMBOSS test data, hmm/globins630.fa (630 globins, FASTA)
//   protein kinase  hmm/pkinase.sto (Pfam PF00069 seed alignment, Stockholm)
//   fibronectin III hmm/fn3.sto (Pfam fn3 seed)
//   RRM             hmm/rrm.sto (Pfam RNA-recognition-motif seed)
//   extracellular   Rcpi vignette data, extracell.fasta (325 secreted proteins)
//   mitochondrial   Rcpi vignette data, mitochondrion.fasta (307 mitochondrial proteins)
// A sequence found twice within a group is kept once; one found in two groups (none in these
// files) is dropped, as its label would be ambiguous.
inline Dataset load_bundled(const std::string& root) {
  const std::string hmm = root + "/emboss-test/usr/share/EMBOSS/test/data/hmm/";
  const std::string rcpi = root + "/r-bioc-rcpi/usr/lib/R/site-library/Rcpi/vignettedata/";
  struct Source {
    const char* group;
    std::string path;
    int kind;  // 0 FASTA, 1 Stockholm, 2 Rcpi FASTA
  };
  const std::vector<Source> sources = {
      {"globin", hmm + "globins630.fa", 0},         {"pkinase", hmm + "pkinase.sto", 1},
      {"fn3", hmm + "fn3.sto", 1},                  {"rrm", hmm + "rrm.sto", 1},
      {"extracellular", rcpi + "extracell.fasta", 2}, {"mitochondrial", rcpi + "mitochondrion.fasta", 2}};
  Dataset d;
  std::map<std::string, int> seen;  // sequence -> group (-2: in two groups)
  std::vector<std::vector<example::Record>> recs;
  for (const Source& s : sources) {
    need_file(s.path);
    recs.push_back(s.kind == 0   ? example::read_fasta(s.path, kProg)
                   : s.kind == 1 ? example::read_stockholm(s.path, kProg)
                                 : read_accession_fasta(s.path));
    d.group_names.push_back(s.group);
    d.sources.push_back(std::string(s.group) + ": " + std::to_string(recs.back().size()) + " sequences from " + s.path);
  }
  for (size_t g = 0; g < recs.size(); ++g)
    for (const example::Record& r : recs[g]) {
      auto [it, fresh] = seen.emplace(r.seq, static_cast<int>(g));
      if (!fresh && it->second != static_cast<int>(g)) it->second = -2;
    }
  std::set<std::string> taken;
  for (size_t g = 0; g < recs.size(); ++g)
    for (example::Record& r : recs[g]) {
      if (seen[r.seq] != static_cast<int>(g) || !taken.insert(r.seq).second) {
        ++d.duplicates_dropped;
        continue;
      }
      d.proteins.push_back({std::move(r.id), std::move(r.seq), static_cast<int>(g)});
    }
  return d;
}

// The user's proteins: a FASTA file (shared reader) whose record ids must be unique.
inline Dataset load_user_fasta(const std::string& path) {
  Dataset d;
  std::vector<example::Record> recs = example::read_fasta(path, kProg);
  // Ids must be unique: name the line of the second header (read_fasta keeps no line numbers).
  std::map<std::string, size_t> first;
  const std::vector<std::string> lines = example::read_lines(path, kProg);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].empty() || lines[i][0] != '>') continue;
    std::istringstream h(lines[i].substr(1));
    std::string id;
    h >> id;
    auto [it, fresh] = first.emplace(id, i + 1);
    EMBER_CHECK(fresh, kProg, path, ":", i + 1, ": duplicate id \"", id, "\" (first at line ", it->second, ")");
  }
  for (example::Record& r : recs) d.proteins.push_back({std::move(r.id), std::move(r.seq), -1});
  d.sources.push_back(std::to_string(d.proteins.size()) + " proteins from " + path);
  return d;
}

// The user's pairs: one pair per line, `idA<TAB>idB<TAB>label` with label 0 or 1; blank lines
// and lines starting with '#' are skipped. Errors name the file and line: a wrong number of
// columns, an id not in the FASTA file, a label other than 0 or 1, no pairs at all.
inline std::vector<Pair> read_pairs_tsv(const std::string& path, const Dataset& d) {
  std::map<std::string, int64_t> index;
  for (size_t i = 0; i < d.proteins.size(); ++i) index.emplace(d.proteins[i].id, static_cast<int64_t>(i));
  const std::vector<std::string> lines = example::read_lines(path, kProg);
  auto trim = [](const std::string& s) {
    const size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
    return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
  };
  std::vector<Pair> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string line = trim(lines[i]);
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> cols;
    size_t start = 0;
    for (;;) {
      const size_t tab = line.find('\t', start);
      cols.push_back(trim(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start)));
      if (tab == std::string::npos) break;
      start = tab + 1;
    }
    EMBER_CHECK(cols.size() == 3, kProg, path, ":", i + 1, ": expected 3 tab-separated columns (idA, idB, label), got ",
                cols.size());
    Pair p;
    for (int c = 0; c < 2; ++c) {
      auto it = index.find(cols[static_cast<size_t>(c)]);
      EMBER_CHECK(it != index.end(), kProg, path, ":", i + 1, ": unknown protein id \"", cols[static_cast<size_t>(c)],
                  "\" (not in the --fasta file)");
      (c == 0 ? p.a : p.b) = it->second;
    }
    EMBER_CHECK(cols[2] == "0" || cols[2] == "1", kProg, path, ":", i + 1, ": label must be 0 or 1, got \"", cols[2], "\"");
    p.label = cols[2] == "1" ? 1 : 0;
    out.push_back(p);
  }
  EMBER_CHECK(!out.empty(), kProg, path, ": no pairs (expected lines idA<TAB>idB<TAB>label)");
  return out;
}

// --- split and pairs --------------------------------------------------------------------------

// Which split (0 train, 1 validation, 2 test) each protein is in: example::split_by_key on the
// sequences, so identical sequences share a side and no protein of a test pair is trained on.
inline std::vector<int> split_proteins(const Dataset& d, double val_frac, double test_frac, uint64_t seed) {
  std::vector<std::string> keys;
  keys.reserve(d.proteins.size());
  for (const Protein& p : d.proteins) keys.push_back(p.seq);
  const example::SplitIdx s = example::split_by_key(keys, val_frac, test_frac, seed);
  std::vector<int> side(d.proteins.size(), 0);
  for (int64_t i : s.val) side[static_cast<size_t>(i)] = 1;
  for (int64_t i : s.test) side[static_cast<size_t>(i)] = 2;
  return side;
}

// A balanced set of up to n distinct pairs among `members` (proteins of one split): half
// positive (both proteins of one group, the group drawn uniformly so that a large group does
// not dominate), half negative (two different groups, drawn uniformly). A group whose pairs
// run out stops giving positives; the negatives are cut to the positives' count. Pairs are
// unordered (a, b and b, a are the same pair); their order in the list and the side each
// protein is on are drawn too.
inline std::vector<Pair> sample_pairs(const Dataset& d, const std::vector<int64_t>& members, int64_t n, uint64_t seed) {
  SplitMix rng(seed);
  std::vector<std::vector<int64_t>> by_group(d.group_names.size());
  for (int64_t m : members) by_group[static_cast<size_t>(d.proteins[static_cast<size_t>(m)].group)].push_back(m);
  std::vector<int> pos_groups, any_groups;
  for (size_t g = 0; g < by_group.size(); ++g) {
    if (by_group[g].size() >= 2) pos_groups.push_back(static_cast<int>(g));
    if (!by_group[g].empty()) any_groups.push_back(static_cast<int>(g));
  }
  EMBER_CHECK(!pos_groups.empty() && any_groups.size() >= 2, kProg,
              "too few proteins in a split to make positive and negative pairs");
  std::set<std::pair<int64_t, int64_t>> used;
  auto take = [&](int64_t a, int64_t b, int64_t label, std::vector<Pair>& out) {
    if (!used.insert({std::min(a, b), std::max(a, b)}).second) return false;
    out.push_back({a, b, label});
    return true;
  };
  std::vector<Pair> pos, neg;
  constexpr int kTries = 64;
  while (static_cast<int64_t>(pos.size()) < n / 2 && !pos_groups.empty()) {
    const size_t gi = static_cast<size_t>(rng.below(static_cast<int64_t>(pos_groups.size())));
    const std::vector<int64_t>& m = by_group[static_cast<size_t>(pos_groups[gi])];
    bool ok = false;
    for (int t = 0; t < kTries && !ok; ++t) {
      const int64_t i = rng.below(static_cast<int64_t>(m.size()));
      int64_t j = rng.below(static_cast<int64_t>(m.size()) - 1);
      if (j >= i) ++j;
      ok = take(m[static_cast<size_t>(i)], m[static_cast<size_t>(j)], 1, pos);
    }
    if (!ok) pos_groups.erase(pos_groups.begin() + static_cast<std::ptrdiff_t>(gi));  // its pairs ran out
  }
  while (neg.size() < pos.size()) {
    bool ok = false;
    for (int t = 0; t < kTries && !ok; ++t) {
      const int64_t gi = rng.below(static_cast<int64_t>(any_groups.size()));
      int64_t gj = rng.below(static_cast<int64_t>(any_groups.size()) - 1);
      if (gj >= gi) ++gj;
      const std::vector<int64_t>& ma = by_group[static_cast<size_t>(any_groups[static_cast<size_t>(gi)])];
      const std::vector<int64_t>& mb = by_group[static_cast<size_t>(any_groups[static_cast<size_t>(gj)])];
      ok = take(ma[static_cast<size_t>(rng.below(static_cast<int64_t>(ma.size())))],
                mb[static_cast<size_t>(rng.below(static_cast<int64_t>(mb.size())))], 0, neg);
    }
    if (!ok) break;
  }
  if (pos.size() > neg.size()) pos.resize(neg.size());
  std::vector<Pair> out = pos;
  out.insert(out.end(), neg.begin(), neg.end());
  for (size_t i = out.size(); i > 1; --i) std::swap(out[i - 1], out[static_cast<size_t>(rng.below(static_cast<int64_t>(i)))]);
  for (Pair& p : out)
    if (rng.next() & 1) std::swap(p.a, p.b);
  return out;
}

// --- encoding and features --------------------------------------------------------------------

// Every protein's window as token ids: the 20 amino acids are 1..20; 'X' (the padding), and
// every other letter (B, Z, U, O, X in the data), is 0. (P, window) i64.
inline ember::Tensor encode_windows(const std::vector<std::string>& windows, int64_t window) {
  int code[256] = {};
  for (size_t i = 0; i < kAlphabet.size(); ++i) code[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int>(i) + 1;
  std::vector<int64_t> ids;
  ids.reserve(windows.size() * static_cast<size_t>(window));
  for (const std::string& w : windows)
    for (char c : w) ids.push_back(code[static_cast<unsigned char>(c)]);
  return ember::from_vector(ids, {static_cast<int64_t>(windows.size()), window});
}

// Pair features of the k-mer baseline: |fa - fb| and fa * fb of the proteins' 1-mer and
// 2-mer frequencies over their windows (the padding is not counted). (N, 840) f32.
inline ember::Tensor pair_kmer_features(const ember::Tensor& per_protein, const std::vector<Pair>& pairs) {
  std::vector<int64_t> a, b;
  for (const Pair& p : pairs) a.push_back(p.a), b.push_back(p.b);
  const int64_t n = static_cast<int64_t>(pairs.size());
  const ember::Tensor fa = ember::index_select(per_protein, 0, ember::from_vector(a, {n}));
  const ember::Tensor fb = ember::index_select(per_protein, 0, ember::from_vector(b, {n}));
  return ember::cat({ember::abs(fa - fb), fa * fb}, 1);
}

// Pair features of the length-only check: s = log la + log lb and d = |log la - log lb| of the
// whole sequences, with s^2 and d^2. (N, 4) f32.
inline ember::Tensor pair_length_features(const Dataset& d, const std::vector<Pair>& pairs) {
  std::vector<float> f;
  for (const Pair& p : pairs) {
    const double la = std::log(static_cast<double>(d.proteins[static_cast<size_t>(p.a)].seq.size()));
    const double lb = std::log(static_cast<double>(d.proteins[static_cast<size_t>(p.b)].seq.size()));
    const double s = la + lb, df = std::abs(la - lb);
    for (double v : {s, df, s * s, df * df}) f.push_back(static_cast<float>(v));
  }
  return ember::from_vector(f, {static_cast<int64_t>(pairs.size()), 4});
}

inline ember::Tensor pair_labels(const std::vector<Pair>& pairs) {
  std::vector<int64_t> y;
  for (const Pair& p : pairs) y.push_back(p.label);
  return ember::from_vector(y, {static_cast<int64_t>(pairs.size())});
}

}  // namespace pp
