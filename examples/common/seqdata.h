// Sequence data for the bundled examples: readers for FASTA and Stockholm files that reject
// damaged input with the file, the line and the problem; a deterministic split that keeps
// identical sequences on one side; k-mer count features and a logistic-regression baseline
// trained in the same run (what a reader compares the network with). Header-only.
#pragma once
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include <zlib.h>

#include "ember/ember.h"
#include "training.h"

namespace example {

struct Record {
  std::string id;
  std::string seq;  // upper case, gaps and whitespace removed
};

// Reads a text file, gzip or plain (zlib reads both), as lines.
inline std::vector<std::string> read_lines(const std::string& path, const char* prog) {
  gzFile f = gzopen(path.c_str(), "rb");
  EMBER_CHECK(f != nullptr, prog, "cannot open ", path);
  std::vector<std::string> lines;
  std::string cur;
  char buf[1 << 16];
  for (;;) {
    const int got = gzread(f, buf, sizeof buf);
    if (got < 0) {
      int err = 0;
      const std::string msg = gzerror(f, &err);
      gzclose(f);
      EMBER_FAIL(prog, "corrupt file ", path, ": ", msg);
    }
    if (got == 0) break;
    for (int i = 0; i < got; ++i) {
      if (buf[i] == '\n') {
        if (!cur.empty() && cur.back() == '\r') cur.pop_back();
        lines.push_back(std::move(cur));
        cur.clear();
      } else {
        cur.push_back(buf[i]);
      }
    }
  }
  gzclose(f);
  if (!cur.empty()) lines.push_back(std::move(cur));
  return lines;
}

// Letters of a sequence line, upper case; gaps ('-', '.', '~') and spaces dropped, '*' (a stop)
// dropped at the end. Anything else is an error naming file and line.
inline std::string clean_sequence(const std::string& line, const std::string& path, size_t lineno, const char* prog) {
  std::string s;
  s.reserve(line.size());
  for (size_t i = 0; i < line.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(line[i]);
    if (std::isalpha(c)) s.push_back(static_cast<char>(std::toupper(c)));
    else if (c == '-' || c == '.' || c == '~' || std::isspace(c)) continue;
    else if (c == '*' && i + 1 == line.size()) continue;
    else
      EMBER_FAIL(prog, path, ":", lineno, ": unexpected character '", std::string(1, static_cast<char>(c)),
                 "' in a sequence (letters, gaps and a final '*' only)");
  }
  return s;
}

// FASTA: ">id description" lines, then sequence lines. Errors: sequence before the first
// header, a header without an id, a record without sequence, a file without records.
inline std::vector<Record> read_fasta(const std::string& path, const char* prog) {
  const std::vector<std::string> lines = read_lines(path, prog);
  std::vector<Record> out;
  size_t header_line = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    if (l.empty() || l[0] == ';') continue;
    if (l[0] == '>') {
      if (!out.empty()) EMBER_CHECK(!out.back().seq.empty(), prog, path, ":", header_line, ": record \"", out.back().id, "\" has no sequence");
      std::istringstream h(l.substr(1));
      Record r;
      h >> r.id;
      EMBER_CHECK(!r.id.empty(), prog, path, ":", i + 1, ": a '>' header without an id");
      out.push_back(std::move(r));
      header_line = i + 1;
      continue;
    }
    EMBER_CHECK(!out.empty(), prog, path, ":", i + 1, ": sequence before the first '>' header (not a FASTA file?)");
    out.back().seq += clean_sequence(l, path, i + 1, prog);
  }
  EMBER_CHECK(!out.empty(), prog, path, ": no FASTA records");
  EMBER_CHECK(!out.back().seq.empty(), prog, path, ":", header_line, ": record \"", out.back().id, "\" has no sequence");
  return out;
}

// Stockholm alignments ("# STOCKHOLM 1.0", "name aligned-seq" lines, "#=GF/GS/GR/GC" markup,
// "//" between alignments): every sequence with its gaps removed, one record per name (the
// blocks of an interleaved alignment concatenated).
inline std::vector<Record> read_stockholm(const std::string& path, const char* prog) {
  const std::vector<std::string> lines = read_lines(path, prog);
  std::vector<Record> out;
  std::map<std::string, size_t> index;  // name -> record, within the current alignment
  bool header = false;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    if (l.rfind("# STOCKHOLM", 0) == 0) {
      header = true;
      index.clear();
      continue;
    }
    if (l.empty() || l[0] == '#') continue;
    if (l.rfind("//", 0) == 0) {
      index.clear();
      continue;
    }
    EMBER_CHECK(header, prog, path, ":", i + 1, ": no \"# STOCKHOLM 1.0\" header before the alignment");
    std::istringstream ls(l);
    std::string name, aligned, extra;
    ls >> name >> aligned;
    EMBER_CHECK(!aligned.empty() && !(ls >> extra), prog, path, ":", i + 1,
                ": expected \"name aligned-sequence\", got \"", l.substr(0, 60), "\"");
    auto it = index.find(name);
    if (it == index.end()) {
      it = index.emplace(name, out.size()).first;
      out.push_back({name, ""});
    }
    out[it->second].seq += clean_sequence(aligned, path, i + 1, prog);
  }
  EMBER_CHECK(!out.empty(), prog, path, ": no sequences in this Stockholm file");
  for (const Record& r : out) EMBER_CHECK(!r.seq.empty(), prog, path, ": sequence \"", r.id, "\" is all gaps");
  return out;
}

// A deterministic split of `keys` (one per sample; equal keys = the same or a duplicate
// sequence) into train / validation / test with the given fractions: whole groups of equal
// keys go to one side, so no sequence is in both train and test. Returns the three index lists.
struct SplitIdx {
  std::vector<int64_t> train, val, test;
};
inline SplitIdx split_by_key(const std::vector<std::string>& keys, double val_frac, double test_frac, uint64_t seed) {
  std::map<std::string, std::vector<int64_t>> groups;
  for (size_t i = 0; i < keys.size(); ++i) groups[keys[i]].push_back(static_cast<int64_t>(i));
  std::vector<const std::vector<int64_t>*> order;
  for (const auto& [k, v] : groups) order.push_back(&v);
  ember::Generator g(seed);
  const std::vector<int64_t> perm = shuffled_order(static_cast<int64_t>(order.size()), g);
  SplitIdx s;
  const double n = static_cast<double>(keys.size());
  for (int64_t p : perm) {
    auto& dst = static_cast<double>(s.test.size()) < test_frac * n ? s.test
                : static_cast<double>(s.val.size()) < val_frac * n ? s.val
                                                                    : s.train;
    dst.insert(dst.end(), order[static_cast<size_t>(p)]->begin(), order[static_cast<size_t>(p)]->end());
  }
  return s;
}

// k-mer counts over `alphabet` (k-mers with other letters are skipped), each row normalised to
// frequencies: (N, |alphabet|^k) f32.
inline ember::Tensor kmer_features(const std::vector<std::string>& seqs, const std::string& alphabet, int k) {
  int64_t width = 1;
  for (int i = 0; i < k; ++i) width *= static_cast<int64_t>(alphabet.size());
  int code[256];
  std::fill(std::begin(code), std::end(code), -1);
  for (size_t i = 0; i < alphabet.size(); ++i) code[static_cast<unsigned char>(alphabet[i])] = static_cast<int>(i);
  std::vector<float> f(seqs.size() * static_cast<size_t>(width), 0.0f);
  for (size_t r = 0; r < seqs.size(); ++r) {
    const std::string& s = seqs[r];
    int64_t total = 0;
    for (size_t i = 0; i + static_cast<size_t>(k) <= s.size(); ++i) {
      int64_t c = 0;
      bool ok = true;
      for (int j = 0; j < k && ok; ++j) {
        const int x = code[static_cast<unsigned char>(s[i + static_cast<size_t>(j)])];
        ok = x >= 0;
        c = c * static_cast<int64_t>(alphabet.size()) + x;
      }
      if (!ok) continue;
      f[r * static_cast<size_t>(width) + static_cast<size_t>(c)] += 1.0f;
      ++total;
    }
    if (total > 0)
      for (int64_t j = 0; j < width; ++j) f[r * static_cast<size_t>(width) + static_cast<size_t>(j)] /= static_cast<float>(total);
  }
  return ember::from_vector(f, {static_cast<int64_t>(seqs.size()), width});
}

// Multinomial logistic regression on standardised features (full-batch Adam, L2 1e-4), trained
// on (x_train, y_train) and scored on (x_test, y_test): the accuracy in [0, 1].
inline double logistic_baseline(const ember::Tensor& x_train, const ember::Tensor& y_train, const ember::Tensor& x_test,
                                const ember::Tensor& y_test, int64_t classes, int iterations = 300) {
  using namespace ember;
  Tensor mu, sd;
  {
    NoGradGuard ng;
    mu = mean(x_train, {0}, true);
    const Tensor d = x_train - mu;
    sd = sqrt(mean(d * d, {0}, true)) + 1e-6;
  }
  const Tensor xs = (x_train - mu) / sd, xt = (x_test - mu) / sd;
  Generator g(7);
  nn::Linear lin(x_train.size(1), classes, true, &g);
  optim::Adam opt(lin.parameters(), {.lr = 0.05, .weight_decay = 1e-4});
  for (int i = 0; i < iterations; ++i) {
    opt.zero_grad();
    nn::cross_entropy(lin.forward(xs), y_train).backward();
    opt.step();
  }
  NoGradGuard ng;
  return sum(eq(argmax(lin.forward(xt), 1), y_test)).item<double>() / static_cast<double>(y_test.size(0));
}

// The majority class's share of `y` (the trivial baseline), and each class's count.
inline double majority_share(const std::vector<int64_t>& y, int64_t classes, std::vector<int64_t>* counts = nullptr) {
  std::vector<int64_t> c(static_cast<size_t>(classes), 0);
  for (int64_t v : y) ++c[static_cast<size_t>(v)];
  if (counts != nullptr) *counts = c;
  return y.empty() ? 0.0 : static_cast<double>(*std::max_element(c.begin(), c.end())) / static_cast<double>(y.size());
}

// A sequence cropped (centre) or padded (with `pad`, both ends) to exactly `window` letters,
// so that a model cannot read the class from the length.
inline std::string fit_window(const std::string& s, size_t window, char pad = 'N') {
  if (s.size() >= window) return s.substr((s.size() - window) / 2, window);
  const size_t left = (window - s.size()) / 2;
  return std::string(left, pad) + s + std::string(window - s.size() - left, pad);
}

}  // namespace example
