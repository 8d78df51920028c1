// hier_text: hierarchical text classification. Each WordNet noun synset's gloss is labelled with
// its place in the hypernym hierarchy, three levels deep:
//   level 1  the lexicographer file of the synset's direct hypernym (noun.animal, ... 26 of them)
//   level 2  that hypernym's ancestor at depth k below `entity` (first-hypernym chain; k = 4)
//   level 3  the direct (first) hypernym itself: the leaf class (>= 1,000 of them)
// A text encoder (word embeddings -> Conv1d -> ReLU -> global max pool) feeds two output layers
// trained side by side in the same run, each on its own copy of the encoder (same architecture,
// same initial weights, same batches): nn::HierarchicalSoftmax over the real class tree
// (ClassTree::from_paths) and a flat Linear + cross-entropy over the leaves. The run reports leaf,
// level-1 and level-2 accuracy of both, their training samples/s and inference latency, the
// output layer alone (forward + backward) timed at the same batch and hidden size, and two
// trivial baselines (majority leaf, bag-of-words nearest centroid).
//
//   hier_text [--preset small|full] [--device cpu|cuda|fake] [--tsv FILE] ...
//
// Data (default, under --data-root, fetched by scripts/fetch_data.sh wordnet-base):
//   wordnet-base/usr/share/wordnet/data.noun, read by wordnet.h (wndb(5)).
// Your own data: --tsv FILE, lines "LABEL > LABEL > ... <TAB> text" (wordnet.h).
//
// Split: identical texts are kept once (a text with two labels is dropped), then every leaf's
// examples are split 80/10/10 (at least one in validation and one in test), so every leaf is
// seen in training. Leaves with fewer than --min-count examples are dropped (imbalance printed).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "../common/onnx_export.h"
#include "../common/cli.h"
#include "../common/flags.h"
#include "../common/quantize_report.h"
#include "../common/profile.h"
#include "../common/report.h"
#include "../common/training.h"
#include "ember/cpu.h"
#include "ember/ember.h"
#include "ember/io/checkpoint.h"
#include "ember/nn/hsoftmax.h"
#include "wordnet.h"

namespace {

using namespace ember;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kProg = "hier_text";
constexpr const char* kNounFile = "wordnet-base/usr/share/wordnet/data.noun";
constexpr uint64_t kShuffleMix = 0x9E3779B97F4A7C15ULL, kDropoutMix = 0x94D049BB133111EBULL,
                   kSplitMix = 0xD1B54A32D192ED03ULL;
constexpr int64_t kPad = 0, kUnk = 1;

// --- command line -----------------------------------------------------------------------------

struct Args {
  std::string data_root = example::default_data_root();
  std::string tsv, noun_file;
  std::string preset = "small";
  std::string encoder = "cnn";
  int64_t epochs = 8, batch = 64, window = 32, embed = 64, hidden = 256, kernel = 3, min_count = 10, depth_k = 4;
  int64_t max_leaves = 0, beam = 10, stop_after = 0, min_word = 2;
  double lr = 2e-3, dropout = 0.2, weight_decay = 1e-2;
  bool with_words = false;
  uint64_t seed = 7;
  int threads = 0;
  std::string device = "cpu";
  std::optional<DType> amp;
  std::string checkpoint = "hier_text.ckpt.safetensors";
  std::string profile;  // --profile: Chrome trace of the training loop
  std::string export_onnx;  // --export-onnx: the hierarchical model as ONNX
  bool resume = false, help = false;
  bool eval_only = false;                      // --eval-only: load --checkpoint, no training
  std::optional<example::QuantForm> quantize;  // --quantize: compare f32 with int8/f16/bf16
  std::string plot, export_split;
};

void apply_preset(Args& a, const std::string& name) {
  EMBER_CHECK(name == "small" || name == "full", kProg, "--preset expects small or full, got \"", name, "\"");
  a.preset = name;
  if (name == "full") a.embed = 128, a.hidden = 512, a.epochs = 20, a.batch = 128, a.min_count = 5, a.lr = 1e-3;
}

void usage(std::ostream& o) {
  o << "usage: hier_text [options]\n"
       "WordNet noun glosses classified into their hypernym hierarchy (3 levels, >= 1,000 leaves):\n"
       "hierarchical softmax vs flat softmax on the same text encoder, in the same run.\n"
       "  --data-root DIR       fetched Debian data (default " << example::default_data_root() << ";\n"
       "                        bash scripts/fetch_data.sh wordnet-base)\n"
       "  --wordnet FILE        a WordNet data.noun to read instead of the fetched one\n"
       "  --tsv FILE            your own data instead: \"LABEL > LABEL > LABEL<TAB>text\" lines\n"
       "  --preset P            small (default: 2 CPU cores, a few minutes) or full (a GPU)\n"
       "  --min-count N         keep leaf classes with at least N examples (small 10, full 5)\n"
       "  --max-leaves N        keep only the N most frequent leaves (smoke tests; 0 = all)\n"
       "  --depth-k K           level 2 = the hypernym's ancestor at depth K below entity (default 4)\n"
       "  --with-words          prepend the synset's own words to the gloss (default: gloss only)\n"
       "  --encoder E           cnn (default: embeddings -> Conv1d -> ReLU -> max pool) or bag\n"
       "                        (fastText-like: mean of the word embeddings)\n"
       "  --window N            tokens per text, cropped or padded (default 32)\n"
       "  --embed N             word embedding size (small 64, full 128)\n"
       "  --hidden N            pooled vector size H fed to both heads (small 256, full 512)\n"
       "  --kernel N            convolution width in words (default 3)\n"
       "  --epochs N            training epochs (small 8, full 20)\n"
       "  --batch N             minibatch size (small 64, full 128)\n"
       "  --lr X                peak AdamW learning rate, cosine to 0 (small 2e-3, full 1e-3)\n"
       "  --dropout X           dropout on the pooled vector (default 0.2)\n"
       "  --beam N              beam of the hierarchical top-1 search (default 10)\n"
       "  --seed N              split, initialisation, data order (default 7)\n"
       "  --threads N           CPU threads (default: OpenMP's)\n"
       "  --device D            cpu, cuda, cuda:N or fake (the stand-in test device); default cpu\n"
       "  --amp M               mixed precision for the encoder: bf16, f16 (loss scaling) or off\n"
       "  --checkpoint PATH     saved at every epoch end (default hier_text.ckpt.safetensors, the flat\n"
       "                        model beside it as *.flat.safetensors; \"\" = none)\n"
       "  --resume              continue from --checkpoint (same data and flags)\n"
       "  --stop-after E        stop after epoch E as if interrupted (then --resume)\n"
       "  --eval-only           load the models from --checkpoint and test them, no training\n"
       "  --quantize Q          int8, f16 or bf16: compare the trained f32 flat model with that form on\n"
       "                        the test split (accuracy, size, latency; a last result: line)\n"
       "  --export-split DIR    write the split as fastText text (train.txt valid.txt test.txt) and go on\n"
       "  --plot FILE           write the training curves as SVG\n"
       "  --export-onnx FILE    write the hierarchical-softmax model as ONNX: token windows in, every leaf's\n"
       "                        log-probability and the exact top 5 out, batch axis dynamic (docs/deploy.md)\n"
       "  --profile FILE        profile the training loop: Chrome trace JSON to FILE, top-ops table\n"
       "  --help                this text\n";
}

Args parse_args(int argc, char** argv) {
  Args a;
  example::Flags f(kProg);
  f.preset([&](const std::string& v) { apply_preset(a, v); });  // later flags override it
  f.boolean("--resume", &a.resume).boolean("--with-words", &a.with_words).boolean("--eval-only", &a.eval_only);
  f.custom("--quantize", [&](const std::string& v) { a.quantize = example::parse_quantize(kProg, v); });
  f.text("--data-root", &a.data_root).text("--tsv", &a.tsv).text("--wordnet", &a.noun_file);
  f.choice("--encoder", &a.encoder, {"cnn", "bag"});
  f.integer("--min-count", &a.min_count, 5).integer("--max-leaves", &a.max_leaves, 0);
  f.integer("--depth-k", &a.depth_k, 1).integer("--window", &a.window, 4).integer("--embed", &a.embed, 1);
  f.integer("--hidden", &a.hidden, 1).integer("--kernel", &a.kernel, 1);
  f.integer("--epochs", &a.epochs, 1).integer("--batch", &a.batch, 1).real("--lr", &a.lr, 0.0, true);
  f.real("--dropout", &a.dropout, 0.0, false, /*below=*/1.0).integer("--beam", &a.beam, 1);
  f.integer("--seed", &a.seed, 0).integer("--threads", &a.threads, 1);
  f.text("--device", &a.device).amp("--amp", &a.amp);
  f.text("--checkpoint", &a.checkpoint).integer("--stop-after", &a.stop_after, 1);
  f.text("--plot", &a.plot).text("--export-split", &a.export_split);
  f.text("--profile", &a.profile).text("--export-onnx", &a.export_onnx);
  a.help = f.parse(argc, argv);
  EMBER_CHECK(!a.resume || !a.checkpoint.empty(), kProg, "--resume needs a --checkpoint path");
  return a;
}

// --- data -------------------------------------------------------------------------------------

struct Rng {  // splitmix64: the split is the same on every platform
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[static_cast<size_t>(next() % i)]);
  }
};

// Lower-case words: runs of letters and digits (anything else separates).
std::vector<std::string> tokenize(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (std::isalnum(c)) cur.push_back(static_cast<char>(std::tolower(c)));
    else if (!cur.empty()) out.push_back(std::move(cur)), cur.clear();
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

struct Example {
  std::vector<std::string> path;  // labels from the root, the leaf last
  std::vector<std::string> tokens;
};

// A synset's display name: its first word and its offset ("dog.02084071"), unique.
std::string synset_name(const wordnet::Synset& s) {
  std::string w = s.words.front();
  std::replace(w.begin(), w.end(), ' ', '_');
  return w + "." + s.offset;
}

std::vector<Example> load_wordnet(const Args& a, std::string* note) {
  const std::string path = a.noun_file.empty() ? a.data_root + "/" + kNounFile : a.noun_file;
  EMBER_CHECK(fs::is_regular_file(path), kProg, "missing data file ", path,
              " (fetch it: bash scripts/fetch_data.sh wordnet-base; or pass your own --tsv FILE)");
  const wordnet::Database db = wordnet::read(path, kProg);
  std::vector<Example> out;
  int64_t no_hyper = 0;
  for (size_t i = 0; i < db.synsets.size(); ++i) {
    const wordnet::Synset& s = db.synsets[i];
    if (s.hypernyms.empty()) {
      ++no_hyper;
      continue;
    }
    const size_t h = db.by_offset.at(s.hypernyms[0]);
    const std::vector<size_t> ch = wordnet::chain(db, h);  // entity ... h
    const size_t k = std::min<size_t>(static_cast<size_t>(a.depth_k), ch.size() - 1);
    Example e;
    e.path = {wordnet::lex_name(db.synsets[h].lex), synset_name(db.synsets[ch[k]]), synset_name(db.synsets[h])};
    std::string text = s.gloss;
    if (a.with_words) {
      std::string words;
      for (const std::string& w : s.words) words += w + ", ";
      text = words + text;
    }
    e.tokens = tokenize(text);
    if (e.tokens.empty()) continue;
    out.push_back(std::move(e));
  }
  *note = path + ": " + std::to_string(db.synsets.size()) + " noun synsets, " + std::to_string(no_hyper) +
          " without a hypernym (entity) skipped";
  return out;
}

std::vector<Example> load_tsv(const Args& a, std::string* note) {
  std::vector<Example> out;
  for (wordnet::Labelled& r : wordnet::read_tsv(a.tsv, kProg)) {
    Example e;
    e.path = std::move(r.path);
    e.tokens = tokenize(r.text);
    if (!e.tokens.empty()) out.push_back(std::move(e));
  }
  *note = a.tsv + ": " + std::to_string(out.size()) + " labelled texts";
  return out;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

struct Split {
  std::vector<std::vector<std::string>> tokens;
  std::vector<int64_t> labels;
  int64_t n = 0;
  Tensor x, y;  // (n, window) i64, (n) i64
};

struct Data {
  std::vector<std::vector<std::string>> leaf_paths;  // per class
  int64_t levels = 0;
  std::vector<std::vector<int64_t>> level_id;  // [level][class] -> id of its ancestor prefix at that level
  std::vector<int64_t> level_count;            // distinct ancestors per level
  Split train, val, test;
  std::unordered_map<std::string, int64_t> vocab;
  int64_t vocab_size = 2;
};

// Dedup, leaf filter, stratified split, vocabulary, tensors.
Data prepare(std::vector<Example> all, const Args& a) {
  Data d;
  // Identical texts once; a text under two labels is dropped (it cannot be learned either way).
  std::map<std::string, std::pair<size_t, bool>> seen;  // text -> (first index, conflict)
  for (size_t i = 0; i < all.size(); ++i) {
    auto [it, fresh] = seen.emplace(join(all[i].tokens, " "), std::make_pair(i, false));
    if (!fresh && all[it->second.first].path != all[i].path) it->second.second = true;
  }
  std::vector<Example> kept;
  int64_t dups = 0, conflicts = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    const auto& [first, conflict] = seen.at(join(all[i].tokens, " "));
    if (conflict) ++conflicts;
    else if (first != i) ++dups;
    else kept.push_back(std::move(all[i]));
  }
  example::say("texts: %zu (%lld repeated texts dropped, %lld texts with two labels dropped)\n", kept.size() + 0,
               static_cast<long long>(dups), static_cast<long long>(conflicts));
  // Leaves with enough examples (most frequent first when capped; ties by name).
  std::map<std::vector<std::string>, std::vector<size_t>> by_leaf;
  for (size_t i = 0; i < kept.size(); ++i) by_leaf[kept[i].path].push_back(i);
  std::vector<const std::pair<const std::vector<std::string>, std::vector<size_t>>*> leaves;
  for (const auto& kv : by_leaf)
    if (static_cast<int64_t>(kv.second.size()) >= a.min_count) leaves.push_back(&kv);
  std::stable_sort(leaves.begin(), leaves.end(), [](auto* p, auto* q) { return p->second.size() > q->second.size(); });
  if (a.max_leaves > 0 && static_cast<int64_t>(leaves.size()) > a.max_leaves) leaves.resize(static_cast<size_t>(a.max_leaves));
  std::sort(leaves.begin(), leaves.end(), [](auto* p, auto* q) { return p->first < q->first; });
  example::say("leaf classes: %zu of %zu with >= %lld examples\n", leaves.size(), by_leaf.size(),
               static_cast<long long>(a.min_count));
  EMBER_CHECK(leaves.size() >= 2, kProg, "fewer than 2 leaf classes with >= ", a.min_count,
              " examples: lower --min-count or give more data");
  d.levels = static_cast<int64_t>(leaves.front()->first.size());
  // Per leaf: shuffle, 10% test and 10% validation (at least one each), the rest train.
  Rng rng{a.seed ^ kSplitMix};
  std::vector<std::pair<size_t, int64_t>> tr, va, te;  // (example, class)
  for (size_t c = 0; c < leaves.size(); ++c) {
    d.leaf_paths.push_back(leaves[c]->first);
    std::vector<size_t> idx = leaves[c]->second;
    rng.shuffle(idx);
    const size_t n = idx.size();
    const size_t nt = std::max<size_t>(1, static_cast<size_t>(std::lround(0.1 * static_cast<double>(n))));
    for (size_t k = 0; k < n; ++k) (k < nt ? te : k < 2 * nt ? va : tr).emplace_back(idx[k], static_cast<int64_t>(c));
  }
  // Levels: the id of each class's ancestor prefix at every level (level L-1 is the class).
  d.level_id.assign(static_cast<size_t>(d.levels), {});
  for (int64_t l = 0; l < d.levels; ++l) {
    std::map<std::vector<std::string>, int64_t> ids;
    for (const auto& p : d.leaf_paths) {
      std::vector<std::string> pre(p.begin(), p.begin() + l + 1);
      auto it = ids.emplace(pre, static_cast<int64_t>(ids.size())).first;
      d.level_id[static_cast<size_t>(l)].push_back(it->second);
    }
    d.level_count.push_back(static_cast<int64_t>(ids.size()));
  }
  // Vocabulary from the training texts: words seen >= min_word times, by count then spelling.
  std::unordered_map<std::string, int64_t> counts;
  for (const auto& [i, c] : tr)
    for (const std::string& w : kept[i].tokens) ++counts[w];
  std::vector<std::pair<std::string, int64_t>> words;
  for (const auto& kv : counts)
    if (kv.second >= a.min_word) words.push_back(kv);
  std::sort(words.begin(), words.end(), [](const auto& p, const auto& q) {
    return p.second != q.second ? p.second > q.second : p.first < q.first;
  });
  for (const auto& [w, n] : words) d.vocab.emplace(w, d.vocab_size++);
  const int64_t W = a.window;
  auto fill = [&](Split& s, const std::vector<std::pair<size_t, int64_t>>& src) {
    s.n = static_cast<int64_t>(src.size());
    std::vector<int64_t> ids(static_cast<size_t>(s.n * W), kPad);
    for (int64_t r = 0; r < s.n; ++r) {
      std::vector<std::string> t = kept[src[static_cast<size_t>(r)].first].tokens;
      if (static_cast<int64_t>(t.size()) > W) t.resize(static_cast<size_t>(W));  // crop the tail
      for (size_t k = 0; k < t.size(); ++k) {
        auto it = d.vocab.find(t[k]);
        ids[static_cast<size_t>(r * W) + k] = it == d.vocab.end() ? kUnk : it->second;
      }
      s.tokens.push_back(std::move(t));
      s.labels.push_back(src[static_cast<size_t>(r)].second);
    }
    s.x = from_vector(ids, {s.n, W});
    s.y = from_vector(s.labels, {s.n});
  };
  fill(d.train, tr);
  fill(d.val, va);
  fill(d.test, te);
  return d;
}

// --- baselines ------------------------------------------------------------------------------

// Nearest centroid on tf-idf bags of words (cosine): each class's centroid is the normalised sum
// of its training texts' normalised tf-idf vectors. Returns test predictions.
std::vector<int64_t> centroid_predict(const Data& d) {
  const int64_t C = static_cast<int64_t>(d.leaf_paths.size());
  std::unordered_map<std::string, double> df;
  for (const auto& t : d.train.tokens) {
    std::set<std::string> u(t.begin(), t.end());
    for (const auto& w : u) df[w] += 1;
  }
  const double N = static_cast<double>(d.train.n);
  auto vec = [&](const std::vector<std::string>& t) {
    std::map<std::string, double> v;
    for (const auto& w : t)
      if (auto it = df.find(w); it != df.end()) v[w] += std::log((1 + N) / (1 + it->second)) + 1;
    double n2 = 0;
    for (auto& [w, x] : v) n2 += x * x;
    for (auto& [w, x] : v) x /= std::sqrt(std::max(n2, 1e-12));
    return v;
  };
  std::vector<std::map<std::string, double>> cen(static_cast<size_t>(C));
  for (int64_t i = 0; i < d.train.n; ++i)
    for (const auto& [w, x] : vec(d.train.tokens[static_cast<size_t>(i)])) cen[static_cast<size_t>(d.train.labels[static_cast<size_t>(i)])][w] += x;
  std::unordered_map<std::string, std::vector<std::pair<int64_t, double>>> inv;  // word -> (class, weight)
  for (int64_t c = 0; c < C; ++c) {
    double n2 = 0;
    for (auto& [w, x] : cen[static_cast<size_t>(c)]) n2 += x * x;
    for (auto& [w, x] : cen[static_cast<size_t>(c)]) inv[w].emplace_back(c, x / std::sqrt(std::max(n2, 1e-12)));
  }
  std::vector<int64_t> pred;
  std::vector<double> score(static_cast<size_t>(C));
  for (const auto& t : d.test.tokens) {
    std::fill(score.begin(), score.end(), 0.0);
    for (const auto& [w, x] : vec(t))
      if (auto it = inv.find(w); it != inv.end())
        for (const auto& [c, y] : it->second) score[static_cast<size_t>(c)] += x * y;
    pred.push_back(static_cast<int64_t>(std::max_element(score.begin(), score.end()) - score.begin()));
  }
  return pred;
}

// --- model ------------------------------------------------------------------------------------

// Word ids (N, W) -> pooled vector (N, H). cnn: Embedding -> Conv1d(E->H, k) -> ReLU -> global
// max pool -> Dropout; bag: the mean of the words' embeddings (E = H; fastText's encoder).
class Encoder : public nn::Module {
 public:
  Encoder(const Args& a, int64_t vocab, Generator* init, Generator* drop) : bag_(a.encoder == "bag") {
    embed_ = register_module("embed", std::make_shared<nn::Embedding>(vocab, bag_ ? a.hidden : a.embed, kPad, init));
    if (!bag_)
      conv_ = register_module("conv", std::make_shared<nn::Conv1d>(a.embed, a.hidden, a.kernel,
                                                                   nn::Conv1dOptions{.padding = (a.kernel - 1) / 2}, init));
    drop_ = register_module("drop", std::make_shared<nn::Dropout>(a.dropout, drop));
  }
  Tensor forward(const Tensor& ids) {
    Tensor e = embed_->forward(ids);  // (N, W, E)
    Tensor h;
    if (bag_) {
      // Padding rows are zero: the sum over positions divided by the number of real words.
      const Tensor n = clamp(sum(ne(ids, zeros_like(ids)).to(e.dtype()), {1}, true), 1.0, std::nullopt);
      h = sum(e, {1}) / n;
    } else {
      h = amax(relu(conv_->forward(e.transpose(1, 2))), {2});
    }
    return drop_->forward(h);
  }
  // After nn::quantize_dynamic (--quantize int8): the layers as the module tree now holds them.
  void relink() {
    embed_ = nn::child<nn::Layer>(*this, "embed");
    if (conv_) conv_ = nn::child<nn::Layer>(*this, "conv");
  }

 private:
  bool bag_;
  std::shared_ptr<nn::Layer> embed_;
  std::shared_ptr<nn::Layer> conv_;
  std::shared_ptr<nn::Dropout> drop_;
};

class HsNet : public nn::Module {
 public:
  HsNet(const Args& a, int64_t vocab, const nn::ClassTree& tree, Generator* init, Generator* drop) {
    enc = register_module("enc", std::make_shared<Encoder>(a, vocab, init, drop));
    head = register_module("head", std::make_shared<nn::HierarchicalSoftmax>(a.hidden, tree, true, init));
  }
  std::shared_ptr<Encoder> enc;
  std::shared_ptr<nn::HierarchicalSoftmax> head;
};

class FlatNet : public nn::Module {
 public:
  FlatNet(const Args& a, int64_t vocab, int64_t classes, Generator* init, Generator* drop) {
    enc = register_module("enc", std::make_shared<Encoder>(a, vocab, init, drop));
    head = register_module("head", std::make_shared<nn::Linear>(a.hidden, classes, true, init));
  }
  std::shared_ptr<Encoder> enc;
  std::shared_ptr<nn::Layer> head;  // a QuantizedLinear after --quantize int8
};

// The encoder under autocast (when --amp), its output back in f32 for the output layers, so
// both heads compute in the same precision.
Tensor encode(Encoder& enc, const Tensor& x, Device device, const Args& a) {
  amp::AutocastGuard autocast(device, a.amp.value_or(DType::bf16), a.amp.has_value());
  return enc.forward(x).to(DType::f32);
}

// Predicted leaves of a split. Hierarchical: `mode` 0 = argmax of full_log_prob (exact), 1 =
// beam search (predict_topk). Flat: argmax of the logits. `seconds` gets the wall time.
std::vector<int64_t> predict(HsNet* hs, FlatNet* flat, const Split& s, Device device, const Args& a, int mode,
                             int64_t chunk = 512, double* seconds = nullptr) {
  std::vector<int64_t> out;
  if (s.n == 0) return out;
  nn::Module& m = hs ? static_cast<nn::Module&>(*hs) : static_cast<nn::Module&>(*flat);
  m.eval();
  NoGradGuard ng;
  const auto t0 = Clock::now();
  for (int64_t b = 0; b < s.n; b += chunk) {
    const int64_t len = std::min(chunk, s.n - b);
    const Tensor x = s.x.narrow(0, b, len).to(device);
    Tensor pred;
    if (hs) {
      const Tensor h = encode(*hs->enc, x, device, a);
      pred = mode == 1 ? hs->head->predict_topk(h, 1, a.beam).classes.reshape({len})
                       : argmax(hs->head->full_log_prob(h), 1);
    } else {
      pred = argmax(flat->head->forward(encode(*flat->enc, x, device, a)), 1);
    }
    for (int64_t v : pred.to(Device("cpu")).to(DType::i64).to_vector<int64_t>()) out.push_back(v);
  }
  if (seconds) *seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  m.train();
  return out;
}

// Accuracy at every level: a prediction is right at level l when its ancestor there is the truth's.
std::vector<double> level_accuracy(const Data& d, const std::vector<int64_t>& pred, const std::vector<int64_t>& truth) {
  std::vector<double> acc(static_cast<size_t>(d.levels), 0.0);
  if (truth.empty()) return acc;
  for (size_t i = 0; i < truth.size(); ++i)
    for (int64_t l = 0; l < d.levels; ++l)
      acc[static_cast<size_t>(l)] += d.level_id[static_cast<size_t>(l)][static_cast<size_t>(pred[i])] ==
                                     d.level_id[static_cast<size_t>(l)][static_cast<size_t>(truth[i])];
  for (double& x : acc) x /= static_cast<double>(truth.size());
  return acc;
}

std::string fmt(double x) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

std::string data_digest(const Data& d) {  // FNV-1a over the training ids and labels
  uint64_t h = 1469598103934665603ULL;
  for (int64_t v : d.train.x.to_vector<int64_t>()) h = (h ^ static_cast<uint64_t>(v)) * 1099511628211ULL;
  for (int64_t v : d.train.labels) h = (h ^ static_cast<uint64_t>(v + 7)) * 1099511628211ULL;
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string flat_path(const std::string& p) {
  const fs::path f(p);
  return (f.parent_path() / (f.stem().string() + ".flat" + f.extension().string())).string();
}

// Forward + backward of the output layer alone on a fixed h (batch x hidden): the two steps
// alternate (so a busy machine slows both alike), 3 warm-up pairs, then the fastest of `reps`
// timed pairs for each (the least disturbed run); seconds per step.
template <class F, class G>
std::pair<double, double> time_pair(F a, G b, int reps) {
  for (int r = 0; r < 3; ++r) a(), b();
  double ta = 1e30, tb = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    a();
    auto t1 = Clock::now();
    b();
    auto t2 = Clock::now();
    ta = std::min(ta, std::chrono::duration<double>(t1 - t0).count());
    tb = std::min(tb, std::chrono::duration<double>(t2 - t1).count());
  }
  return {ta, tb};
}

void export_split(const Data& d, const std::string& dir) {
  fs::create_directories(dir);
  auto label = [&](int64_t c) {
    std::string s;
    for (std::string l : d.leaf_paths[static_cast<size_t>(c)]) {  // levels joined by '/', no spaces
      std::replace(l.begin(), l.end(), ' ', '_');
      std::replace(l.begin(), l.end(), '/', '_');
      s += (s.empty() ? "" : "/") + l;
    }
    return "__label__" + s;
  };
  for (const auto& [name, s] : {std::pair<const char*, const Split*>{"train.txt", &d.train}, {"valid.txt", &d.val},
                                {"test.txt", &d.test}}) {
    std::ofstream f(dir + "/" + name);
    EMBER_CHECK(static_cast<bool>(f), kProg, "cannot write ", dir, "/", name);
    for (int64_t i = 0; i < s->n; ++i)
      f << label(s->labels[static_cast<size_t>(i)]) << ' ' << join(s->tokens[static_cast<size_t>(i)], " ") << '\n';
  }
  example::say("split exported as fastText text to %s (train.txt valid.txt test.txt; texts as the models see them)\n",
               dir.c_str());
}

int run(const Args& a, Device device) {
  if (a.threads > 0) cpu::set_num_threads(a.threads);
  const auto t0 = Clock::now();

  std::string note;
  std::vector<Example> all = a.tsv.empty() ? load_wordnet(a, &note) : load_tsv(a, &note);
  example::say("data: %s\n", note.c_str());
  example::say("input text: %s, lower-cased words, cropped/padded to %lld tokens\n",
               a.tsv.empty() ? (a.with_words ? "the synset's words + gloss" : "the gloss") : "your text",
               static_cast<long long>(a.window));
  const Data d = prepare(std::move(all), a);
  const int64_t C = static_cast<int64_t>(d.leaf_paths.size());
  {
    std::string lv;
    for (int64_t l = 0; l < d.levels; ++l) lv += (l ? ", " : "") + std::to_string(d.level_count[static_cast<size_t>(l)]);
    std::vector<int64_t> per(static_cast<size_t>(C), 0);
    for (int64_t y : d.train.labels) ++per[static_cast<size_t>(y)];
    const auto [mn, mx] = std::minmax_element(per.begin(), per.end());
    std::vector<int64_t> sorted = per;
    std::sort(sorted.begin(), sorted.end());
    example::say("classes per level (level 1 .. leaf): %s; training examples per leaf: min %lld, median %lld, max %lld "
                 "(imbalance max/min %.1f)\n",
                 lv.c_str(), static_cast<long long>(*mn), static_cast<long long>(sorted[sorted.size() / 2]),
                 static_cast<long long>(*mx), static_cast<double>(*mx) / static_cast<double>(std::max<int64_t>(*mn, 1)));
    example::say("split: train %lld, validation %lld, test %lld texts; vocabulary %lld words (train count >= %lld)\n",
                 static_cast<long long>(d.train.n), static_cast<long long>(d.val.n), static_cast<long long>(d.test.n),
                 static_cast<long long>(d.vocab_size), static_cast<long long>(a.min_word));
    example::say("example: \"%s\" -> %s\n", join(d.test.tokens[0], " ").c_str(),
                 join(d.leaf_paths[static_cast<size_t>(d.test.labels[0])], " > ").c_str());
  }
  if (!a.export_split.empty()) export_split(d, a.export_split);

  // Baselines.
  std::vector<int64_t> trc(static_cast<size_t>(C), 0);
  for (int64_t y : d.train.labels) ++trc[static_cast<size_t>(y)];
  const int64_t maj = static_cast<int64_t>(std::max_element(trc.begin(), trc.end()) - trc.begin());
  const std::vector<double> maj_acc = level_accuracy(d, std::vector<int64_t>(d.test.labels.size(), maj), d.test.labels);
  const std::vector<double> cen_acc = level_accuracy(d, centroid_predict(d), d.test.labels);
  example::say("baselines on test: majority leaf %.2f%% (level 1 %.2f%%); tf-idf nearest centroid leaf %.2f%% "
               "(level 1 %.2f%%); chance 1/%lld = %.3f%%\n",
               100 * maj_acc.back(), 100 * maj_acc[0], 100 * cen_acc.back(), 100 * cen_acc[0],
               static_cast<long long>(C), 100.0 / static_cast<double>(C));

  // Models: same encoder architecture and initial weights (same init seed), own dropout streams.
  const nn::ClassTree tree = nn::ClassTree::from_paths(d.leaf_paths);
  Generator init_hs(a.seed), init_flat(a.seed), drop_hs(a.seed ^ kDropoutMix), drop_flat(a.seed ^ kDropoutMix),
      shuffle_gen(a.seed ^ kShuffleMix);
  auto hs = std::make_shared<HsNet>(a, d.vocab_size, tree, &init_hs, &drop_hs);
  auto flat = std::make_shared<FlatNet>(a, d.vocab_size, C, &init_flat, &drop_flat);
  example::say("tree: %lld leaves, %lld internal nodes, depth <= %lld, widest node %lld children; hierarchical head "
               "%lld rows x %lld vs flat %lld x %lld\n",
               static_cast<long long>(C), static_cast<long long>(tree.num_nodes()), static_cast<long long>(tree.max_depth()),
               static_cast<long long>(tree.max_arity()), static_cast<long long>(tree.num_rows()),
               static_cast<long long>(a.hidden), static_cast<long long>(C), static_cast<long long>(a.hidden));
  example::say("model: %s; AdamW lr %g (cosine), batch %lld, %lld epochs; device %s, threads %d, amp %s; parameters "
               "hs %lld, flat %lld\n",
               a.encoder == "bag" ? ("words -> Embedding(" + std::to_string(a.hidden) + ") -> mean -> Dropout").c_str()
                                  : ("words -> Embedding(" + std::to_string(a.embed) + ") -> Conv1d(" +
                                     std::to_string(a.hidden) + ", k=" + std::to_string(a.kernel) +
                                     ") ReLU -> max pool -> Dropout")
                                        .c_str(),
               a.lr, static_cast<long long>(a.batch), static_cast<long long>(a.epochs), device.str().c_str(),
               cpu::num_threads(), example::amp_name(a.amp), static_cast<long long>(hs->parameter_count()),
               static_cast<long long>(flat->parameter_count()));
  hs->to(device);
  flat->to(device);
  // --quantize: the f32 flat model against its int8 / f16 / bf16 form on the test split.
  auto quantize_report = [&] {
    example::QuantizeHooks h = example::classifier_hooks(
        [&](const Tensor& x) { return flat->head->forward(flat->enc->forward(x)); }, d.test.x, d.test.y, device);
    h.converted = [&] {
      flat->enc->relink();
      flat->head = nn::child<nn::Layer>(*flat, "head");
    };
    example::quantize_report(kProg, *flat, *a.quantize, h);
  };
  if (a.eval_only) {
    example::load_model_weights(kProg, a.checkpoint, *hs);
    example::load_model_weights(kProg, flat_path(a.checkpoint), *flat);
    example::say("loaded %s and %s; test leaf accuracy: hs %.4f, flat %.4f\n", a.checkpoint.c_str(),
                 flat_path(a.checkpoint).c_str(),
                 level_accuracy(d, predict(hs.get(), nullptr, d.test, device, a, 0), d.test.labels).back(),
                 level_accuracy(d, predict(nullptr, flat.get(), d.test, device, a, 0), d.test.labels).back());
    if (a.quantize) quantize_report();
    return 0;
  }
  const optim::AdamWOptions ao{.lr = a.lr, .weight_decay = a.weight_decay};
  optim::AdamW opt_hs(hs->parameters(), ao), opt_flat(flat->parameters(), ao);
  const int64_t steps = (d.train.n + a.batch - 1) / a.batch;
  const optim::WarmupCosineOptions so{.warmup_steps = std::min<int64_t>(steps, 100), .total_steps = a.epochs * steps,
                                      .min_lr = 0.0, .start_factor = 0.1};
  optim::WarmupCosineLR sched_hs(opt_hs, so), sched_flat(opt_flat, so);
  amp::GradScaler scaler_hs(example::scaler_options(a.amp)), scaler_flat(example::scaler_options(a.amp));

  const std::map<std::string, std::string> identity = {
      {"preset", a.preset}, {"epochs", std::to_string(a.epochs)}, {"batch", std::to_string(a.batch)},
      {"lr", fmt(a.lr)}, {"seed", std::to_string(a.seed)}, {"window", std::to_string(a.window)},
      {"embed", std::to_string(a.embed)}, {"hidden", std::to_string(a.hidden)}, {"encoder", a.encoder},
      {"kernel", std::to_string(a.kernel)}, {"dropout", fmt(a.dropout)}, {"amp", example::amp_name(a.amp)},
      {"data", data_digest(d)}};
  std::vector<double> hist_hs_loss, hist_flat_loss, hist_hs_val, hist_flat_val;
  double best_hs = -1, best_flat = -1, hs_time = 0, flat_time = 0;
  int64_t best_hs_epoch = 0, best_flat_epoch = 0, first_epoch = 1, timed_samples = 0;
  std::vector<double> hs_test(static_cast<size_t>(d.levels)), flat_test(static_cast<size_t>(d.levels));
  double hs_beam_test = 0;
  if (a.resume) {
    io::TrainingState st, sf;
    io::load_checkpoint(a.checkpoint, *hs, opt_hs, &sched_hs, st, &scaler_hs);
    io::load_checkpoint(flat_path(a.checkpoint), *flat, opt_flat, &sched_flat, sf, &scaler_flat);
    example::check_run_identity(kProg, a.checkpoint, st.extra, identity, "resume with the same data and flags");
    example::check_run_identity(kProg, flat_path(a.checkpoint), sf.extra, identity, "resume with the same data and flags");
    EMBER_CHECK(st.epoch == sf.epoch, kProg, a.checkpoint, " and ", flat_path(a.checkpoint), " are from different epochs (",
                st.epoch, ", ", sf.epoch, ")");
    st.apply_to(shuffle_gen);
    drop_hs.set_offset(std::stoull(st.extra.at("dropout_offset")));
    drop_flat.set_offset(std::stoull(sf.extra.at("dropout_offset")));
    auto nums = [&](const std::string& k) { return example::parse_numbers(kProg, st.extra.at(k), a.checkpoint + " " + k); };
    hist_hs_loss = nums("hist_hs_loss");
    hist_flat_loss = nums("hist_flat_loss");
    hist_hs_val = nums("hist_hs_val");
    hist_flat_val = nums("hist_flat_val");
    hs_test = nums("hs_test");
    flat_test = nums("flat_test");
    const std::vector<double> misc = nums("misc");
    EMBER_CHECK(misc.size() == 8 && hs_test.size() == static_cast<size_t>(d.levels), kProg, a.checkpoint,
                ": damaged run state");
    best_hs = misc[0], best_flat = misc[1], best_hs_epoch = static_cast<int64_t>(misc[2]),
    best_flat_epoch = static_cast<int64_t>(misc[3]), hs_beam_test = misc[4], hs_time = misc[5], flat_time = misc[6],
    timed_samples = static_cast<int64_t>(misc[7]);
    first_epoch = st.epoch + 1;
    example::say("resumed from %s: %lld of %lld epochs done\n", a.checkpoint.c_str(), static_cast<long long>(st.epoch),
                 static_cast<long long>(a.epochs));
  }
  const int64_t last_epoch = a.stop_after > 0 ? std::min(a.stop_after, a.epochs) : a.epochs;

  example::Progress progress(a.epochs, std::max<int64_t>(1, (last_epoch - first_epoch + 1) * steps),
                             std::max<int64_t>(1, steps / 3));
  std::unique_ptr<ember::Profiler> profiler = example::start_profile(a.profile);
  for (int64_t epoch = first_epoch; epoch <= last_epoch; ++epoch) {
    const Tensor perm = from_vector(example::shuffled_order(d.train.n, shuffle_gen), {d.train.n});
    double hs_sum = 0, flat_sum = 0;
    for (int64_t step = 0; step < steps; ++step) {
      const int64_t start = step * a.batch, len = std::min(a.batch, d.train.n - start);
      const Tensor rows = perm.narrow(0, start, len);
      const Tensor x = index_select(d.train.x, 0, rows).to(device);
      const Tensor y = index_select(d.train.y, 0, rows).to(device);
      // The two steps, each timed on its own (the loss read back ends the step on a device).
      auto t1 = Clock::now();
      const Tensor hh = encode(*hs->enc, x, device, a);
      const Tensor loss_hs = hs->head->forward(hh, y);
      opt_hs.zero_grad();
      scaler_hs.scale(loss_hs).backward();
      scaler_hs.step(opt_hs);
      scaler_hs.update();
      sched_hs.step();
      const double lh = loss_hs.item<double>();
      auto t2 = Clock::now();
      const Tensor logits = flat->head->forward(encode(*flat->enc, x, device, a));
      const Tensor loss_flat = nn::cross_entropy(logits, y);
      opt_flat.zero_grad();
      scaler_flat.scale(loss_flat).backward();
      scaler_flat.step(opt_flat);
      scaler_flat.update();
      sched_flat.step();
      const double lf = loss_flat.item<double>();
      auto t3 = Clock::now();
      if (profiler) profiler->step();  // both models' steps
      hs_time += std::chrono::duration<double>(t2 - t1).count();
      flat_time += std::chrono::duration<double>(t3 - t2).count();
      timed_samples += len;
      hs_sum += lh * static_cast<double>(len);
      flat_sum += lf * static_cast<double>(len);
      NoGradGuard ng;
      // The progress line shows the hierarchical model (its accuracy by beam search, untimed).
      const Tensor p = hs->head->predict_topk(hh.detach(), 1, a.beam).classes.reshape({len});
      progress.step(epoch, lh, sum(eq(p, y)).item<int64_t>(), len);
    }
    hist_hs_loss.push_back(hs_sum / static_cast<double>(d.train.n));
    hist_flat_loss.push_back(flat_sum / static_cast<double>(d.train.n));
    const double vh = level_accuracy(d, predict(hs.get(), nullptr, d.val, device, a, 0), d.val.labels).back();
    const double vf = level_accuracy(d, predict(nullptr, flat.get(), d.val, device, a, 0), d.val.labels).back();
    hist_hs_val.push_back(vh);
    hist_flat_val.push_back(vf);
    // Test figures are kept for each model's epoch chosen on validation; not printed per epoch.
    if (vh > best_hs) {
      best_hs = vh, best_hs_epoch = epoch;
      hs_test = level_accuracy(d, predict(hs.get(), nullptr, d.test, device, a, 0), d.test.labels);
      hs_beam_test = level_accuracy(d, predict(hs.get(), nullptr, d.test, device, a, 1), d.test.labels).back();
    }
    if (vf > best_flat) {
      best_flat = vf, best_flat_epoch = epoch;
      flat_test = level_accuracy(d, predict(nullptr, flat.get(), d.test, device, a, 0), d.test.labels);
    }
    char scale[64] = "";
    if (scaler_hs.is_enabled())
      std::snprintf(scale, sizeof scale, " scale %g/%g", scaler_hs.get_scale(), scaler_flat.get_scale());
    example::say("epoch %lld/%lld train hs loss %.4f val_leaf %.2f%% | flat loss %.4f val_leaf %.2f%%%s\n",
                 static_cast<long long>(epoch), static_cast<long long>(a.epochs), hist_hs_loss.back(), 100 * vh,
                 hist_flat_loss.back(), 100 * vf, scale);
    if (!a.checkpoint.empty()) {
      io::TrainingState st = io::TrainingState::from(shuffle_gen);
      st.epoch = epoch;
      st.step = epoch * steps;
      st.extra = identity;
      io::TrainingState sf = st;
      st.extra["dropout_offset"] = std::to_string(drop_hs.offset());
      sf.extra["dropout_offset"] = std::to_string(drop_flat.offset());
      st.extra["hist_hs_loss"] = example::format_numbers(hist_hs_loss);
      st.extra["hist_flat_loss"] = example::format_numbers(hist_flat_loss);
      st.extra["hist_hs_val"] = example::format_numbers(hist_hs_val);
      st.extra["hist_flat_val"] = example::format_numbers(hist_flat_val);
      st.extra["hs_test"] = example::format_numbers(hs_test);
      st.extra["flat_test"] = example::format_numbers(flat_test);
      st.extra["misc"] = example::format_numbers({best_hs, best_flat, static_cast<double>(best_hs_epoch),
                                                  static_cast<double>(best_flat_epoch), hs_beam_test, hs_time, flat_time,
                                                  static_cast<double>(timed_samples)});
      io::save_checkpoint(flat_path(a.checkpoint), *flat, opt_flat, &sched_flat, sf, &scaler_flat);
      io::save_checkpoint(a.checkpoint, *hs, opt_hs, &sched_hs, st, &scaler_hs);
    }
  }
  if (profiler) profiler->stop();
  if (!a.plot.empty() && !hist_hs_val.empty()) {
    example::write_svg_plot(a.plot, "hier_text: WordNet glosses, " + std::to_string(C) + " leaf classes", "epoch",
                            "loss / 10, accuracy",
                            {{"hs train loss / 10", [&] { auto v = hist_hs_loss; for (double& x : v) x /= 10; return v; }()},
                             {"flat train loss / 10", [&] { auto v = hist_flat_loss; for (double& x : v) x /= 10; return v; }()},
                             {"hs val leaf acc", hist_hs_val},
                             {"flat val leaf acc", hist_flat_val},
                             {"centroid baseline (test)", std::vector<double>(hist_hs_val.size(), cen_acc.back())}});
    example::say("plot: %s\n", a.plot.c_str());
  }
  if (last_epoch < a.epochs) {
    example::say("stopped after epoch %lld of %lld (--stop-after); continue with --resume\n",
                 static_cast<long long>(last_epoch), static_cast<long long>(a.epochs));
    return 0;
  }

  // Speed. Training: samples/s of each model's whole step (encoder + head + optimizer).
  const double hs_sps = static_cast<double>(timed_samples) / std::max(hs_time, 1e-9);
  const double flat_sps = static_cast<double>(timed_samples) / std::max(flat_time, 1e-9);
  // Inference over the test split, batches of 512 and single texts (encoder included).
  double t_hs_exact = 0, t_hs_beam = 0, t_flat = 0, l_hs = 0, l_flat = 0;
  predict(hs.get(), nullptr, d.test, device, a, 0, 512, &t_hs_exact);
  predict(hs.get(), nullptr, d.test, device, a, 1, 512, &t_hs_beam);
  predict(nullptr, flat.get(), d.test, device, a, 0, 512, &t_flat);
  Split one;  // the first 200 test texts, one at a time
  one.n = std::min<int64_t>(200, d.test.n);
  one.x = d.test.x.narrow(0, 0, one.n);
  predict(hs.get(), nullptr, one, device, a, 1, 1, &l_hs);
  predict(nullptr, flat.get(), one, device, a, 0, 1, &l_flat);
  const double per_test = 1e3 / static_cast<double>(d.test.n), per_one = 1e3 / static_cast<double>(one.n);
  // The output layer alone: forward + backward on a fixed h (batch x hidden), no optimizer.
  Generator hg(a.seed + 1);
  const Tensor hfix = randn({a.batch, a.hidden}, {}, &hg).to(device).requires_grad_(true);
  const Tensor yfix = d.train.y.narrow(0, 0, std::min(a.batch, d.train.n)).to(device);
  const Tensor hcut = hfix.narrow(0, 0, yfix.size(0)).detach().requires_grad_(true);
  const auto [head_hs, head_flat] = time_pair(
      [&] {
        hs->zero_grad();
        const Tensor l = hs->head->forward(hcut, yfix);
        l.backward();
        (void)l.item<double>();
      },
      [&] {
        flat->zero_grad();
        const Tensor l = nn::cross_entropy(flat->head->forward(hcut), yfix);
        l.backward();
        (void)l.item<double>();
      },
      50);

  const double total = std::chrono::duration<double>(Clock::now() - t0).count();
  example::say("test (each model at its best validation epoch: hs %lld, flat %lld), %lld texts, %lld leaves:\n",
               static_cast<long long>(best_hs_epoch), static_cast<long long>(best_flat_epoch),
               static_cast<long long>(d.test.n), static_cast<long long>(C));
  example::say("  hierarchical softmax  leaf %.2f%% (beam %lld: %.2f%%)  level 1 %.2f%%  level 2 %.2f%%\n",
               100 * hs_test.back(), static_cast<long long>(a.beam), 100 * hs_beam_test, 100 * hs_test[0],
               100 * hs_test[std::min<size_t>(1, hs_test.size() - 1)]);
  example::say("  flat softmax          leaf %.2f%%  level 1 %.2f%%  level 2 %.2f%%\n", 100 * flat_test.back(),
               100 * flat_test[0], 100 * flat_test[std::min<size_t>(1, flat_test.size() - 1)]);
  example::say("  baselines             majority leaf %.2f%%; tf-idf nearest centroid leaf %.2f%% (level 1 %.2f%%)\n",
               100 * maj_acc.back(), 100 * cen_acc.back(), 100 * cen_acc[0]);
  example::say("training speed (whole step: encoder + head + AdamW, batch %lld): hs %.0f samples/s, flat %.0f samples/s, "
               "end-to-end speedup %.2fx\n",
               static_cast<long long>(a.batch), hs_sps, flat_sps, hs_sps / flat_sps);
  example::say("output layer alone, forward + backward (batch %lld, hidden %lld, %lld leaves): hs %.3f ms, flat %.3f ms, "
               "head-only speedup %.2fx (fastest of 50 alternating pairs)\n",
               static_cast<long long>(yfix.size(0)), static_cast<long long>(a.hidden), static_cast<long long>(C),
               1e3 * head_hs, 1e3 * head_flat, head_flat / head_hs);
  example::say("inference (encoder included): batches of 512: hs exact %.4f ms/text, hs beam %.4f ms/text, flat %.4f "
               "ms/text; one text at a time: hs beam %.3f ms, flat %.3f ms\n",
               t_hs_exact * per_test, t_hs_beam * per_test, t_flat * per_test, l_hs * per_one, l_flat * per_one);
  if (!a.export_onnx.empty()) {
    io::ExportOptions o;
    o.input_names = {"tokens"};
    o.output_names = {"log_prob", "top_log_prob", "top_class"};
    o.dynamic_axes = {{"tokens", {{0, "batch"}}}, {"log_prob", {{0, "batch"}}}};
    const int64_t k = std::min<int64_t>(5, C);
    HsNet& net = *hs;
    example::export_onnx(kProg, a.export_onnx, net, {d.test.x.narrow(0, 0, std::min<int64_t>(8, d.test.n))}, o,
                         [&net, k, C](const std::vector<Tensor>& in) {
                           const Tensor h = net.enc->forward(in[0]);
                           // A beam of C is exhaustive: the exact top k, as the ONNX graph computes it.
                           const HSoftmaxTopK top = net.head->predict_topk(h, k, C);
                           return std::vector<Tensor>{net.head->full_log_prob(h), top.values, top.classes};
                         });
  }
  example::say("total time %.1f s\n", total);
  example::print_result({{"leaf_accuracy", hs_test.back()},
                         {"flat_leaf_accuracy", flat_test.back()},
                         {"level1_accuracy", hs_test[0]},
                         {"hs_train_speedup", hs_sps / flat_sps},
                         {"flat_level1_accuracy", flat_test[0]},
                         {"level2_accuracy", hs_test[std::min<size_t>(1, hs_test.size() - 1)]},
                         {"flat_level2_accuracy", flat_test[std::min<size_t>(1, flat_test.size() - 1)]},
                         {"hs_beam_leaf_accuracy", hs_beam_test},
                         {"baseline_accuracy", cen_acc.back()},
                         {"majority_accuracy", maj_acc.back()},
                         {"head_speedup", head_flat / head_hs},
                         {"leaves", static_cast<double>(C)}});
  if (a.quantize) quantize_report();
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return example::run_main(kProg, argc, argv, parse_args, usage, run); }
