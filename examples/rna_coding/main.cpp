// rna_coding: is a stretch of RNA protein-coding or not? A 1-D convolutional network over
// one-hot nucleotides (DeepLNC-style: the sequence alone, no alignment, no homology search)
// tells coding sequence from structured non-coding RNA, on real data from Debian packages.
//
//   rna_coding [--preset small|full] [--device cpu|cuda|fake] [--fasta-coding F --fasta-noncoding F] ...
//
// Data (default, under --data-root, fetched by scripts/fetch_data.sh infernal r-cran-seqinr transdecoder):
//   non-coding  the Rfam / Infernal seed alignments of Debian's infernal package (tRNA, Vault RNA,
//               snoRNA snR75, plant and eukaryotic SRP RNA, RNase P RNA, SSU rRNA, U1/U2/U3
//               snRNAs, a viral pseudoknot), gaps removed; plus the tRNA, rRNA and misc_RNA
//               features of the Chlamydia trachomatis genome below
//   coding      the 895 CDS of the C. trachomatis genome (r-cran-seqinr's ct.gbk.gz, a GenBank
//               file read by genbank.h: join/complement locations against ORIGIN), and the 296
//               ORFs of TransDecoder's test set (FASTA)
// U and T are one letter; other letters (IUPAC ambiguity codes) become N.
//
// Length must not give the class away: a CDS is a thousand bases, a tRNA 75. Every sample is
// one window of --window bases (fit_window: centre crop, or N padding on both ends). A
// non-coding sequence gives one window; a coding sequence gives several non-overlapping
// windows at random offsets whose lengths are drawn from the non-coding lengths (capped at the
// window), so both classes have the same distribution of real bases and of padding. The
// classes are balanced by taking as many coding windows as there are non-coding ones (round
// robin over the coding sequences). All windows of one coding sequence go to one split (the
// split key is the source sequence); a non-coding window's key is the window itself, and
// identical windows are kept once.
//
// Model: Conv1d(4->C, 9) ReLU, Conv1d(C->C, 9) ReLU, MaxPool(2), Conv1d(C->2C, 9) ReLU, global
// max pool, Dropout, Linear(2C->2); AdamW with a cosine schedule. The epoch with the best
// validation accuracy is the one whose test accuracy is reported. Beside it: logistic regression on
// k-mer frequencies (k = 3 or 4, picked on validation) and the majority share.
//
// Your own data: --fasta-coding FILE and --fasta-noncoding FILE (FASTA, gzip or plain; DNA or
// RNA letters) and/or --genbank FILE (its CDS are coding, its tRNA/rRNA/ncRNA/misc_RNA/tmRNA
// non-coding); any of them replaces the bundled data.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

#include "../common/onnx_export.h"
#include "../common/cli.h"
#include "../common/flags.h"
#include "../common/quantize_report.h"
#include "../common/profile.h"
#include "../common/training.h"
#include "../common/report.h"
#include "../common/seqdata.h"
#include "ember/cpu.h"
#include "ember/ember.h"
#include "ember/io/checkpoint.h"
#include "genbank.h"

namespace {

using namespace ember;
namespace fs = std::filesystem;

constexpr const char* kProg = "rna_coding";
constexpr int64_t kClasses = 2;  // 0 non-coding, 1 coding
constexpr uint64_t kShuffleMix = 0x9E3779B97F4A7C15ULL, kWindowMix = 0xD1B54A32D192ED03ULL,
                   kDropoutMix = 0x94D049BB133111EBULL;

// Bundled data, relative to --data-root.
constexpr const char* kInfernalDir = "infernal/usr/share/doc/infernal/examples/testsuite";
// Real Rfam / Infernal alignments (4.sto is left out: it is tRNA.sto + Vault.sto + snR75.sto +
// Plant_SRP.sto again; bug-*.sto and se*.sto are regression-test fixtures).
const std::vector<std::string> kStockholm = {"tRNA.sto",     "tRNA1415G.sto", "trna-2.sto",        "Vault.sto",
                                             "snR75.sto",    "Plant_SRP.sto", "srp-euk.sto",       "RNaseP.sto",
                                             "rnaseP-eubact.sto", "ssu.sto",  "PK-HAV.sto",        "3.4.12.rf.stk"};
constexpr const char* kGenbank = "r-cran-seqinr/usr/lib/R/site-library/seqinr/sequences/ct.gbk.gz";
constexpr const char* kOrfs = "transdecoder/usr/lib/transdecoder/util/__pwm_tests/longest_orfs.cds.top_longest_5000.nr80.gz";

// --- command line -----------------------------------------------------------------------------

struct Args {
  std::string data_root = example::default_data_root();
  std::string fasta_coding, fasta_noncoding, genbank;
  std::string preset = "small";
  int64_t epochs = 10, batch = 64, window = 128, channels = 64, limit = 0, stop_after = 0;
  double lr = 2e-3, dropout = 0.25, weight_decay = 1e-2;
  uint64_t seed = 7;
  int threads = 0;
  std::string device = "cpu";
  std::optional<DType> amp;
  std::string checkpoint = "rna_coding.ckpt.safetensors";
  std::string profile;  // --profile: Chrome trace of the training loop
  std::string export_onnx;  // --export-onnx: the trained model as ONNX
  bool resume = false, help = false;
  bool eval_only = false;                      // --eval-only: load --checkpoint, no training
  std::optional<example::QuantForm> quantize;  // --quantize: compare f32 with int8/f16/bf16
  std::string plot;
};

void apply_preset(Args& a, const std::string& name) {
  EMBER_CHECK(name == "small" || name == "full", kProg, "--preset expects small or full, got \"", name, "\"");
  a.preset = name;
  if (name == "full") a.channels = 128, a.epochs = 30, a.batch = 128, a.lr = 1e-3;  // a GPU run
}

void usage(std::ostream& o) {
  o << "usage: rna_coding [options]\n"
       "Coding vs non-coding RNA from the sequence alone: a 1-D CNN over one-hot nucleotides.\n"
       "  --data-root DIR       fetched Debian data (default " << example::default_data_root() << ";\n"
       "                        bash scripts/fetch_data.sh infernal r-cran-seqinr transdecoder)\n"
       "  --fasta-coding FILE   your coding sequences (FASTA, gzip or plain, DNA or RNA letters)\n"
       "  --fasta-noncoding FILE  your non-coding sequences (FASTA)\n"
       "  --genbank FILE        a GenBank flat file: CDS features are coding, tRNA/rRNA/ncRNA/\n"
       "                        misc_RNA/tmRNA non-coding. Any of these three replaces the bundled data\n"
       "  --preset P            small (default: 2 CPU cores, about a minute) or full (a GPU); later\n"
       "                        flags override it\n"
       "  --window N            bases per sample, crop or N-pad (default 128)\n"
       "  --channels N          convolution width C (small 64, full 128)\n"
       "  --epochs N            training epochs (small 10, full 30)\n"
       "  --batch N             minibatch size (small 64, full 128)\n"
       "  --lr X                peak AdamW learning rate, cosine to 0 (small 2e-3, full 1e-3)\n"
       "  --dropout X           dropout before the head (default 0.25)\n"
       "  --limit N             at most N windows per class (smoke tests)\n"
       "  --seed N              windows, split, initialisation, data order (default 7)\n"
       "  --threads N           CPU threads (default: OpenMP's)\n"
       "  --device D            cpu, cuda, cuda:N or fake (the stand-in test device); default cpu\n"
       "  --amp M               mixed precision: bf16, f16 (dynamic loss scaling) or off (default)\n"
       "  --checkpoint PATH     saved at every epoch end (default rna_coding.ckpt.safetensors; \"\" = none)\n"
       "  --resume              continue from --checkpoint (same data and flags)\n"
       "  --stop-after E        stop after epoch E as if interrupted (then --resume)\n"
       "  --eval-only           load the model from --checkpoint and evaluate it on the test split, no training\n"
       "  --quantize Q          int8, f16 or bf16: compare the trained f32 model with that form on the test\n"
       "                        split (accuracy, size, latency; a last result: line)\n"
       "  --plot FILE           write the training curves as SVG\n"
       "  --export-onnx FILE    write the trained model as ONNX (batch axis dynamic) with a sample of test\n"
       "                        windows and its outputs (docs/deploy.md)\n"
       "  --profile FILE        profile the training loop: Chrome trace JSON to FILE, top-ops table\n"
       "  --help                this text\n";
}

Args parse_args(int argc, char** argv) {
  Args a;
  example::Flags f(kProg);
  f.preset([&](const std::string& v) { apply_preset(a, v); });  // later flags override it
  f.boolean("--resume", &a.resume).boolean("--eval-only", &a.eval_only);
  f.custom("--quantize", [&](const std::string& v) { a.quantize = example::parse_quantize(kProg, v); });
  f.text("--data-root", &a.data_root).text("--fasta-coding", &a.fasta_coding);
  f.text("--fasta-noncoding", &a.fasta_noncoding).text("--genbank", &a.genbank);
  f.integer("--window", &a.window, 16).integer("--channels", &a.channels, 1);
  f.integer("--epochs", &a.epochs, 1).integer("--batch", &a.batch, 1).real("--lr", &a.lr, 0.0, true);
  f.real("--dropout", &a.dropout, 0.0, false, /*below=*/1.0).integer("--limit", &a.limit, 10);
  f.integer("--seed", &a.seed, 0).integer("--threads", &a.threads, 1);
  f.text("--device", &a.device).amp("--amp", &a.amp);
  f.text("--checkpoint", &a.checkpoint).integer("--stop-after", &a.stop_after, 1);
  f.text("--plot", &a.plot).text("--profile", &a.profile).text("--export-onnx", &a.export_onnx);
  a.help = f.parse(argc, argv);
  EMBER_CHECK(!a.resume || !a.checkpoint.empty(), kProg, "--resume needs a --checkpoint path");
  return a;
}

// --- data -------------------------------------------------------------------------------------

// A deterministic generator for the windowing (splitmix64): the same numbers on every platform.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }  // n << 2^64: bias negligible
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }
};

// ACGT, with U as T and every other letter N.
std::string normalise(const std::string& s) {
  std::string r(s.size(), 'N');
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = static_cast<char>(std::toupper(static_cast<unsigned char>(s[i])));
    r[i] = c == 'U' ? 'T' : (c == 'A' || c == 'C' || c == 'G' || c == 'T') ? c : 'N';
  }
  return r;
}

struct Source {
  std::string seq;     // normalised
  std::string origin;  // the file it came from (for the summary)
};

struct Corpus {
  std::vector<Source> noncoding, coding;
  std::vector<std::string> notes;  // per-file lines for the data summary
};

std::string base_name(const std::string& p) { return fs::path(p).filename().string(); }

void need_file(const std::string& path) {
  EMBER_CHECK(fs::is_regular_file(path), kProg, "missing data file ", path,
              " (fetch it: bash scripts/fetch_data.sh infernal r-cran-seqinr transdecoder; or pass your own "
              "--fasta-coding/--fasta-noncoding FILE)");
}

void add_fasta(Corpus& c, const std::string& path, bool coding) {
  const std::vector<example::Record> recs = example::read_fasta(path, kProg);
  for (const example::Record& r : recs) (coding ? c.coding : c.noncoding).push_back({normalise(r.seq), base_name(path)});
  c.notes.push_back(base_name(path) + ": " + std::to_string(recs.size()) + (coding ? " coding" : " non-coding") +
                    " sequences (FASTA)");
}

void add_stockholm(Corpus& c, const std::string& path) {
  const std::vector<example::Record> recs = example::read_stockholm(path, kProg);
  for (const example::Record& r : recs) c.noncoding.push_back({normalise(r.seq), base_name(path)});
  c.notes.push_back(base_name(path) + ": " + std::to_string(recs.size()) + " non-coding sequences (Stockholm)");
}

void add_genbank(Corpus& c, const std::string& path) {
  const std::vector<genbank::Record> recs = genbank::read(path, kProg);
  static const std::set<std::string> kRna = {"tRNA", "rRNA", "ncRNA", "misc_RNA", "tmRNA"};
  int64_t cds = 0, rna = 0, pseudo = 0, remote = 0, checked = 0, agree = 0;
  for (const genbank::Record& rec : recs) {
    for (const genbank::Feature& f : rec.features) {
      const bool is_cds = f.key == "CDS";
      if (!is_cds && kRna.count(f.key) == 0) continue;
      if (f.has("pseudo")) {
        ++pseudo;
        continue;
      }
      const std::optional<std::string> s = genbank::extract(f, rec, path, kProg);
      if (!s) {
        ++remote;
        continue;
      }
      if (s->empty()) continue;
      if (is_cds) {
        ++cds;
        c.coding.push_back({normalise(*s), base_name(path) + " CDS"});
        // A check of the reader: the CDS translated with the standard code against the record's
        // own /translation (the first residue is M whatever the start codon).
        if (auto t = f.qualifiers.find("translation"); t != f.qualifiers.end() && !t->second.empty()) {
          ++checked;
          std::string p = genbank::translate(*s);
          if (!p.empty() && p.back() == '*') p.pop_back();
          if (p.size() == t->second.size() && p.substr(1) == t->second.substr(1)) ++agree;
        }
      } else {
        ++rna;
        c.noncoding.push_back({normalise(*s), base_name(path) + " RNA"});
      }
    }
  }
  std::string note = base_name(path) + ": " + std::to_string(recs.size()) + " GenBank record(s), " +
                     std::to_string(cds) + " CDS (coding), " + std::to_string(rna) + " RNA features (non-coding)";
  if (pseudo > 0) note += ", " + std::to_string(pseudo) + " pseudo skipped";
  if (remote > 0) note += ", " + std::to_string(remote) + " on other records skipped";
  if (checked > 0)
    note += "; " + std::to_string(agree) + " of " + std::to_string(checked) + " CDS translate to their /translation";
  c.notes.push_back(note);
}

Corpus load_corpus(const Args& a) {
  Corpus c;
  if (!a.fasta_coding.empty() || !a.fasta_noncoding.empty() || !a.genbank.empty()) {
    if (!a.genbank.empty()) add_genbank(c, a.genbank);
    if (!a.fasta_coding.empty()) add_fasta(c, a.fasta_coding, true);
    if (!a.fasta_noncoding.empty()) add_fasta(c, a.fasta_noncoding, false);
  } else {
    const std::string inf = a.data_root + "/" + kInfernalDir + "/";
    for (const std::string& f : kStockholm) need_file(inf + f);
    need_file(a.data_root + "/" + kGenbank);
    need_file(a.data_root + "/" + kOrfs);
    for (const std::string& f : kStockholm) add_stockholm(c, inf + f);
    add_genbank(c, a.data_root + "/" + kGenbank);
    add_fasta(c, a.data_root + "/" + kOrfs, true);
  }
  EMBER_CHECK(!c.noncoding.empty(), kProg, "no non-coding sequences (pass --fasta-noncoding FILE)");
  EMBER_CHECK(!c.coding.empty(), kProg, "no coding sequences (pass --fasta-coding FILE)");
  return c;
}

// Drops repeats of a sequence within a class, and sequences found in both classes (the label
// would be a coin toss). Returns how many went.
std::pair<int64_t, int64_t> deduplicate(Corpus& c) {
  std::set<std::string> nc, cd, both;
  for (const Source& s : c.noncoding) nc.insert(s.seq);
  for (const Source& s : c.coding)
    if (nc.count(s.seq)) both.insert(s.seq);
  auto keep_unique = [&](std::vector<Source>& v, std::set<std::string>& seen) {
    seen.clear();
    std::vector<Source> out;
    for (Source& s : v)
      if (!both.count(s.seq) && seen.insert(s.seq).second && s.seq.find_first_not_of('N') != std::string::npos)
        out.push_back(std::move(s));
    const int64_t dropped = static_cast<int64_t>(v.size() - out.size());
    v = std::move(out);
    return dropped;
  };
  const int64_t d = keep_unique(c.noncoding, nc) + keep_unique(c.coding, cd);
  return {d, static_cast<int64_t>(both.size())};
}

struct Sample {
  std::string window;
  int64_t label = 0;
  std::string key;     // split key: whole groups go to one split
  std::string origin;  // the file it came from
};

// Real (not padding) bases of a window: its length without the N runs at both ends.
int64_t content(const std::string& w) {
  const size_t a = w.find_first_not_of('N');
  if (a == std::string::npos) return 0;
  return static_cast<int64_t>(w.find_last_not_of('N') - a + 1);
}

// One window per non-coding sequence; as many coding windows, from random offsets with lengths
// drawn from the non-coding lengths (see the file comment). Identical windows are kept once.
std::vector<Sample> make_windows(const Corpus& c, size_t window, uint64_t seed, int64_t limit, int64_t* coding_sources) {
  Rng rng{seed ^ kWindowMix};
  std::unordered_set<std::string> seen;
  std::vector<Sample> nc;
  std::vector<size_t> lengths;
  for (const Source& s : c.noncoding) {
    lengths.push_back(std::min(s.seq.size(), window));
    std::string w = example::fit_window(s.seq, window);
    if (seen.insert(w).second) nc.push_back({w, 0, "nc:" + w, s.origin});
  }
  // Non-overlapping segments of every coding sequence, gaps of 0..kGap bases between them.
  constexpr size_t kGap = 24;
  std::vector<std::vector<std::pair<size_t, size_t>>> segs(c.coding.size());
  size_t total = 0;
  for (size_t i = 0; i < c.coding.size(); ++i) {
    const size_t len = c.coding[i].seq.size();
    size_t pos = rng.below(kGap + 1);
    for (;;) {
      const size_t l = lengths[rng.below(lengths.size())];
      if (pos + l > len) break;
      segs[i].push_back({pos, l});
      pos += l + rng.below(kGap + 1);
    }
    total += segs[i].size();
  }
  size_t target = std::min(nc.size(), total);
  if (limit > 0) target = std::min(target, static_cast<size_t>(limit));
  std::vector<size_t> order(c.coding.size());
  std::iota(order.begin(), order.end(), size_t{0});
  rng.shuffle(order);
  std::vector<Sample> cd;
  std::set<size_t> used;
  for (size_t round = 0; cd.size() < target; ++round) {
    bool any = false;
    for (size_t i : order) {
      if (cd.size() == target) break;
      if (round >= segs[i].size()) continue;
      any = true;
      const auto [pos, l] = segs[i][round];
      std::string w = example::fit_window(c.coding[i].seq.substr(pos, l), window);
      if (!seen.insert(w).second) continue;
      cd.push_back({w, 1, "cds:" + std::to_string(i), c.coding[i].origin});
      used.insert(i);
    }
    if (!any) break;
  }
  *coding_sources = static_cast<int64_t>(used.size());
  // Balance: as many non-coding windows as coding ones (a seeded subsample when fewer).
  if (nc.size() > cd.size()) {
    rng.shuffle(nc);
    nc.resize(cd.size());
  }
  std::vector<Sample> all = std::move(nc);
  all.insert(all.end(), std::make_move_iterator(cd.begin()), std::make_move_iterator(cd.end()));
  return all;
}

// "min 53 median 73 mean 96.1 max 128" over the windows' real bases.
std::string length_stats(std::vector<int64_t> v) {
  if (v.empty()) return "none";
  std::sort(v.begin(), v.end());
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  char buf[128];
  std::snprintf(buf, sizeof buf, "min %lld median %lld mean %.1f max %lld", static_cast<long long>(v.front()),
                static_cast<long long>(v[v.size() / 2]), mean, static_cast<long long>(v.back()));
  return buf;
}

// One-hot (N, 4, W) f32: A C G T channels, N all zeros.
Tensor one_hot_windows(const std::vector<Sample>& all, const std::vector<int64_t>& idx, int64_t W) {
  std::vector<float> x(idx.size() * 4 * static_cast<size_t>(W), 0.0f);
  for (size_t r = 0; r < idx.size(); ++r) {
    const std::string& w = all[static_cast<size_t>(idx[r])].window;
    for (int64_t p = 0; p < W; ++p) {
      int ch = -1;
      switch (w[static_cast<size_t>(p)]) {
        case 'A': ch = 0; break;
        case 'C': ch = 1; break;
        case 'G': ch = 2; break;
        case 'T': ch = 3; break;
        default: break;
      }
      if (ch >= 0) x[(r * 4 + static_cast<size_t>(ch)) * static_cast<size_t>(W) + static_cast<size_t>(p)] = 1.0f;
    }
  }
  return from_vector(x, {static_cast<int64_t>(idx.size()), 4, W});
}

struct SplitData {
  Tensor x, y;  // (n, 4, W) f32, (n) i64, on the host
  std::vector<std::string> windows, origins;
  std::vector<int64_t> labels;
  int64_t n = 0;
};

SplitData gather(const std::vector<Sample>& all, const std::vector<int64_t>& idx, int64_t W) {
  SplitData s;
  s.n = static_cast<int64_t>(idx.size());
  for (int64_t i : idx) {
    s.windows.push_back(all[static_cast<size_t>(i)].window);
    s.labels.push_back(all[static_cast<size_t>(i)].label);
    s.origins.push_back(all[static_cast<size_t>(i)].origin);
  }
  s.x = one_hot_windows(all, idx, W);
  s.y = from_vector(s.labels, {s.n});
  return s;
}

// --- model and training -----------------------------------------------------------------------

std::shared_ptr<nn::Sequential> build_model(int64_t C, double dropout, Generator* init, Generator* drop) {
  auto m = std::make_shared<nn::Sequential>();
  const nn::Conv1dOptions same{.stride = 1, .padding = 4};
  m->add(std::make_shared<nn::Conv1d>(4, C, 9, same, init))
      .add(std::make_shared<nn::ReLU>())
      .add(std::make_shared<nn::Conv1d>(C, C, 9, same, init))
      .add(std::make_shared<nn::ReLU>())
      .add(std::make_shared<nn::MaxPool1d>(2))
      .add(std::make_shared<nn::Conv1d>(C, 2 * C, 9, same, init))
      .add(std::make_shared<nn::ReLU>())
      .add(std::make_shared<nn::GlobalMaxPool1d>())
      .add(std::make_shared<nn::Dropout>(dropout, drop))
      .add(std::make_shared<nn::Linear>(2 * C, kClasses, true, init));
  return m;
}

// Accuracy in [0, 1] of the model on a split, in chunks; `hits` gets '1' (right) or '0' per sample.
double accuracy(nn::Sequential& model, const SplitData& s, Device device, std::string* hits = nullptr) {
  if (s.n == 0) return 0.0;
  model.eval();
  NoGradGuard ng;
  std::string h;
  constexpr int64_t kChunk = 512;
  for (int64_t a = 0; a < s.n; a += kChunk) {
    const int64_t len = std::min(kChunk, s.n - a);
    const Tensor logits = model(s.x.narrow(0, a, len).to(device));
    const Tensor ok = eq(argmax(logits, 1), s.y.narrow(0, a, len).to(device)).to(Device("cpu")).to(DType::i64);
    for (int64_t v : ok.to_vector<int64_t>()) h.push_back(v != 0 ? '1' : '0');
  }
  model.train();
  const double acc = static_cast<double>(std::count(h.begin(), h.end(), '1')) / static_cast<double>(s.n);
  if (hits != nullptr) *hits = std::move(h);
  return acc;
}

// "tRNA.sto 2/160 wrong, ..." from the per-sample hits of the test split.
std::string errors_by_origin(const SplitData& s, const std::string& hits) {
  std::map<std::string, std::pair<int64_t, int64_t>> by;  // origin -> (wrong, total)
  for (size_t i = 0; i < hits.size() && i < s.origins.size(); ++i) {
    auto& [wrong, total] = by[s.origins[i]];
    wrong += hits[i] == '0';
    ++total;
  }
  std::string out;
  for (const auto& [origin, c] : by)
    out += (out.empty() ? "" : ", ") + origin + " " + std::to_string(c.first) + "/" + std::to_string(c.second);
  return out;
}



// FNV-1a over the training windows and labels: a resumed run must train on the same data.
std::string data_digest(const SplitData& tr) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < tr.windows.size(); ++i) {
    for (char c : tr.windows[i]) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
    h = (h ^ static_cast<uint64_t>(tr.labels[i] + 1)) * 1099511628211ULL;
  }
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string fmt(double x) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

// The k-mer baseline: logistic regression on k-mer frequencies, k in {3, 4} picked on the
// validation split; returns {k, validation accuracy, test accuracy}.
struct Baseline {
  int k = 3;
  double val = 0, test = 0;
};
Baseline kmer_baseline(const SplitData& tr, const SplitData& va, const SplitData& te) {
  Baseline best;
  best.val = -1;
  for (int k : {3, 4}) {
    const Tensor ftr = example::kmer_features(tr.windows, "ACGT", k);
    const double v = va.n > 0 ? example::logistic_baseline(ftr, tr.y, example::kmer_features(va.windows, "ACGT", k), va.y, kClasses) : 0;
    if (v > best.val) {
      best.k = k;
      best.val = v;
      best.test = example::logistic_baseline(ftr, tr.y, example::kmer_features(te.windows, "ACGT", k), te.y, kClasses);
    }
  }
  return best;
}

int run(const Args& a, Device device) {
  if (a.threads > 0) cpu::set_num_threads(a.threads);
  const auto t0 = std::chrono::steady_clock::now();
  const auto W = static_cast<size_t>(a.window);

  // Data.
  Corpus corpus = load_corpus(a);
  example::say("data (%s):\n", a.fasta_coding.empty() && a.fasta_noncoding.empty() && a.genbank.empty()
                                   ? a.data_root.c_str()
                                   : "your files");
  for (const std::string& n : corpus.notes) example::say("  %s\n", n.c_str());
  const auto [dropped, conflicts] = deduplicate(corpus);
  example::say("unique sequences: %zu non-coding, %zu coding (%lld repeats dropped, %lld found in both classes dropped)\n",
               corpus.noncoding.size(), corpus.coding.size(), static_cast<long long>(dropped),
               static_cast<long long>(conflicts));
  {
    std::vector<int64_t> ln, lc;
    for (const Source& s : corpus.noncoding) ln.push_back(static_cast<int64_t>(s.seq.size()));
    for (const Source& s : corpus.coding) lc.push_back(static_cast<int64_t>(s.seq.size()));
    example::say("raw lengths: non-coding %s; coding %s\n", length_stats(ln).c_str(), length_stats(lc).c_str());
  }
  int64_t coding_sources = 0;
  const std::vector<Sample> all = make_windows(corpus, W, a.seed, a.limit, &coding_sources);
  int64_t n_nc = 0, n_cd = 0;
  {
    std::vector<int64_t> ln, lc;
    for (const Sample& s : all) (s.label == 0 ? ln : lc).push_back(content(s.window));
    n_nc = static_cast<int64_t>(ln.size());
    n_cd = static_cast<int64_t>(lc.size());
    example::say("windows of %zu bases (centre crop / N padding): %lld non-coding (one per sequence), %lld coding "
                 "(from %lld sequences, random offsets, lengths drawn from the non-coding ones)\n",
                 W, static_cast<long long>(n_nc), static_cast<long long>(n_cd), static_cast<long long>(coding_sources));
    example::say("real bases per window: non-coding %s; coding %s\n", length_stats(ln).c_str(), length_stats(lc).c_str());
  }
  EMBER_CHECK(n_nc >= 10 && n_cd >= 10, kProg, "too few windows to train on (", n_nc, " non-coding, ", n_cd,
              " coding): give more or longer sequences");

  std::vector<std::string> keys;
  for (const Sample& s : all) keys.push_back(s.key);
  const example::SplitIdx idx = example::split_by_key(keys, 0.1, 0.1, a.seed);
  const int64_t Wl = a.window;
  const SplitData tr = gather(all, idx.train, Wl), va = gather(all, idx.val, Wl), te = gather(all, idx.test, Wl);
  for (const auto& [name, s] : {std::pair<const char*, const SplitData*>{"train", &tr}, {"validation", &va}, {"test", &te}}) {
    std::vector<int64_t> counts;
    example::majority_share(s->labels, kClasses, &counts);
    example::say("split %-10s %5lld windows: %lld non-coding, %lld coding\n", name, static_cast<long long>(s->n),
                 static_cast<long long>(counts[0]), static_cast<long long>(counts[1]));
  }
  EMBER_CHECK(tr.n > 0 && va.n > 0 && te.n > 0, kProg, "a split is empty: give more sequences");

  // Baselines (host, same run).
  const Baseline base = kmer_baseline(tr, va, te);
  const double majority = example::majority_share(te.labels, kClasses);
  example::say("baseline: logistic regression on %d-mer frequencies (k picked on validation): validation %.2f%%, test %.2f%%; "
               "majority class on test %.2f%%\n",
               base.k, 100 * base.val, 100 * base.test, 100 * majority);

  // Model.
  Generator init_gen(a.seed), drop_gen(a.seed ^ kDropoutMix), shuffle_gen(a.seed ^ kShuffleMix);
  std::shared_ptr<nn::Sequential> model = build_model(a.channels, a.dropout, &init_gen, &drop_gen);
  example::say("model: one-hot(4) -> Conv1d(%lld,9) ReLU -> Conv1d(%lld,9) ReLU -> MaxPool(2) -> Conv1d(%lld,9) ReLU -> "
               "global max pool -> Dropout(%.2f) -> Linear(2); %lld parameters; AdamW lr %g (cosine), batch %lld, "
               "%lld epochs, device %s, threads %d, amp %s\n",
               static_cast<long long>(a.channels), static_cast<long long>(a.channels),
               static_cast<long long>(2 * a.channels), a.dropout, static_cast<long long>(model->parameter_count()), a.lr,
               static_cast<long long>(a.batch), static_cast<long long>(a.epochs), device.str().c_str(),
               cpu::num_threads(), example::amp_name(a.amp));
  model->to(device);
  // --quantize: the f32 model against its int8 / f16 / bf16 form on the test split.
  auto quantize_report = [&] {
    model->eval();
    example::quantize_report(kProg, *model, *a.quantize,
                             example::classifier_hooks([&](const Tensor& x) { return (*model)(x); }, te.x, te.y, device));
  };
  if (a.eval_only) {
    example::load_model_weights(kProg, a.checkpoint, *model);
    example::say("loaded %s; test accuracy %.2f%%\n", a.checkpoint.c_str(), 100 * accuracy(*model, te, device));
    if (a.quantize) quantize_report();
    return 0;
  }
  optim::AdamW opt(model->parameters(), {.lr = a.lr, .weight_decay = a.weight_decay});
  const int64_t steps = (tr.n + a.batch - 1) / a.batch;
  optim::WarmupCosineLR sched(opt, {.warmup_steps = std::min<int64_t>(steps, 50), .total_steps = a.epochs * steps,
                                    .min_lr = 0.0, .start_factor = 0.1});
  amp::GradScaler scaler(example::scaler_options(a.amp));

  const std::map<std::string, std::string> identity = {
      {"preset", a.preset},           {"epochs", std::to_string(a.epochs)}, {"batch", std::to_string(a.batch)},
      {"lr", fmt(a.lr)},              {"seed", std::to_string(a.seed)},     {"window", std::to_string(a.window)},
      {"channels", std::to_string(a.channels)}, {"dropout", fmt(a.dropout)}, {"amp", example::amp_name(a.amp)},
      {"data", data_digest(tr)}};
  std::vector<double> hist_loss, hist_val;
  double best_val = -1, test_at_best = 0;
  std::string hits_at_best;  // per test sample, at the epoch chosen on validation
  int64_t best_epoch = 0, first_epoch = 1;
  if (a.resume) {
    io::TrainingState st;
    io::load_checkpoint(a.checkpoint, *model, opt, &sched, st, &scaler);
    example::check_run_identity(kProg, a.checkpoint, st.extra, identity, "resume with the same data and flags");
    st.apply_to(shuffle_gen);
    drop_gen.set_offset(std::stoull(st.extra.at("dropout_offset")));
    hist_loss = example::parse_numbers(kProg, st.extra.at("hist_loss"), a.checkpoint + " train.extra.hist_loss");
    hist_val = example::parse_numbers(kProg, st.extra.at("hist_val"), a.checkpoint + " train.extra.hist_val");
    best_val = std::stod(st.extra.at("best_val"));
    test_at_best = std::stod(st.extra.at("test_at_best"));
    best_epoch = std::stoll(st.extra.at("best_epoch"));
    hits_at_best = st.extra.at("test_hits");
    first_epoch = st.epoch + 1;
    example::say("resumed from %s: %lld of %lld epochs done (best validation %.2f%% at epoch %lld)\n",
                 a.checkpoint.c_str(), static_cast<long long>(st.epoch), static_cast<long long>(a.epochs),
                 100 * best_val, static_cast<long long>(best_epoch));
  }
  const int64_t last_epoch = a.stop_after > 0 ? std::min(a.stop_after, a.epochs) : a.epochs;

  example::Progress progress(a.epochs, std::max<int64_t>(1, (last_epoch - first_epoch + 1) * steps),
                             std::max<int64_t>(1, steps / 3));
  std::unique_ptr<ember::Profiler> profiler = example::start_profile(a.profile);
  for (int64_t epoch = first_epoch; epoch <= last_epoch; ++epoch) {
    const Tensor perm = from_vector(example::shuffled_order(tr.n, shuffle_gen), {tr.n});
    double loss_sum = 0;
    for (int64_t step = 0; step < steps; ++step) {
      const int64_t start = step * a.batch, len = std::min(a.batch, tr.n - start);
      const Tensor rows = perm.narrow(0, start, len);
      const Tensor x = index_select(tr.x, 0, rows).to(device);
      const Tensor y = index_select(tr.y, 0, rows).to(device);
      Tensor logits, loss;
      {
        amp::AutocastGuard autocast(device, a.amp.value_or(DType::bf16), a.amp.has_value());
        logits = (*model)(x);
        loss = nn::cross_entropy(logits, y);
      }
      opt.zero_grad();
      scaler.scale(loss).backward();
      scaler.step(opt);
      scaler.update();
      sched.step();
      if (profiler) profiler->step();
      NoGradGuard ng;
      const double l = loss.item<double>();
      loss_sum += l * static_cast<double>(len);
      progress.step(epoch, l, sum(eq(argmax(logits, 1), y)).item<int64_t>(), len);
    }
    const double val = accuracy(*model, va, device);
    std::string hits;
    const double test = accuracy(*model, te, device, &hits);  // kept for the epoch chosen on validation; not printed
    hist_loss.push_back(loss_sum / static_cast<double>(tr.n));
    hist_val.push_back(val);
    if (val > best_val) best_val = val, best_epoch = epoch, test_at_best = test, hits_at_best = hits;
    char scale[48] = "";
    if (scaler.is_enabled()) std::snprintf(scale, sizeof scale, " scale %g", scaler.get_scale());
    example::say("epoch %lld/%lld train_loss %.4f val_acc %.2f%% (best %.2f%% at epoch %lld)%s\n",
                 static_cast<long long>(epoch), static_cast<long long>(a.epochs), hist_loss.back(), 100 * val,
                 100 * best_val, static_cast<long long>(best_epoch), scale);
    if (!a.checkpoint.empty()) {
      io::TrainingState st = io::TrainingState::from(shuffle_gen);
      st.epoch = epoch;
      st.step = epoch * steps;
      st.extra = identity;
      st.extra["dropout_offset"] = std::to_string(drop_gen.offset());
      st.extra["hist_loss"] = example::format_numbers(hist_loss);
      st.extra["hist_val"] = example::format_numbers(hist_val);
      st.extra["best_val"] = fmt(best_val);
      st.extra["best_epoch"] = std::to_string(best_epoch);
      st.extra["test_at_best"] = fmt(test_at_best);
      st.extra["test_hits"] = hits_at_best;
      io::save_checkpoint(a.checkpoint, *model, opt, &sched, st, &scaler);
    }
  }
  if (profiler) profiler->stop();
  if (!a.plot.empty() && !hist_val.empty()) {
    example::write_svg_plot(a.plot, "rna_coding: coding vs non-coding RNA (1-D CNN)", "epoch", "loss / accuracy",
                            {{"train loss", hist_loss},
                             {"validation accuracy", hist_val},
                             {"k-mer baseline (val)", std::vector<double>(hist_val.size(), base.val)}});
    example::say("plot: %s\n", a.plot.c_str());
  }
  if (last_epoch < a.epochs) {
    example::say("stopped after epoch %lld of %lld (--stop-after); continue with --resume\n",
                 static_cast<long long>(last_epoch), static_cast<long long>(a.epochs));
    return 0;
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  example::say("test accuracy %.2f%% (epoch %lld, chosen on validation %.2f%%); k-mer baseline %.2f%%; majority %.2f%%\n",
               100 * test_at_best, static_cast<long long>(best_epoch), 100 * best_val, 100 * base.test, 100 * majority);
  example::say("test windows wrong, by source: %s\n", errors_by_origin(te, hits_at_best).c_str());
  if (!a.export_onnx.empty()) {
    io::ExportOptions o;
    o.input_names = {"windows"};
    o.output_names = {"logits"};
    o.dynamic_axes = {{"windows", {{0, "batch"}}}, {"logits", {{0, "batch"}}}};
    example::export_onnx(kProg, a.export_onnx, *model, {te.x.narrow(0, 0, std::min<int64_t>(8, te.n))}, o,
                         [&model](const std::vector<Tensor>& in) { return std::vector<Tensor>{model->forward(in[0])}; });
  }
  example::say("total time %.1f s\n", total);
  example::print_result({{"test_accuracy", test_at_best}, {"baseline_accuracy", base.test}});
  if (a.quantize) quantize_report();
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return example::run_main(kProg, argc, argv, parse_args, usage, run); }
