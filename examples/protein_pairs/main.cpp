// protein_pairs: a siamese pair classifier in the style of DeepInteract-like protein-protein
// interaction models. Both proteins of a pair go through ONE encoder (the same weights):
// amino-acid embedding -> dilated 1D convolutions (-> optionally a bidirectional LSTM) -> max
// and mean pooling -> a vector; the pair is scored by an MLP on [a, b, |a - b|, a * b] -> 2
// classes.
//
// Bundled task, a PROXY: no labelled interaction set ships in Debian, so the bundled pairs are
// "same group" (label 1) vs "different groups" (label 0) over real proteins of six groups:
// globins, protein kinase domains, fibronectin-III domains and RRM domains (EMBOSS test data:
// Pfam seed alignments and a globin set) and extracellular and mitochondrial proteins (Rcpi's
// vignette data). The proteins are split first (example::split_by_key on the sequences), then
// pairs are drawn within each split, so no protein of a test pair is seen in training.
//
// Length: the groups differ in typical length (RRM domains ~70 residues, fibronectin-III ~85,
// globins ~145, kinase domains ~270, whole proteins up to 5000), so a model that sees the length
// can tell many pairs apart without reading a residue; the run prints what lengths alone give
// (a logistic regression on them, about 0.77). Every sequence is cut to one window of 64
// residues (example::fit_window, 'X' padding) that all but a handful of proteins fill, so the
// network cannot see the length. By default the window is the N-terminal 64 residues (--crop
// start), where extracellular proteins carry their signal peptide and many mitochondrial
// proteins their targeting peptide; --crop centre takes fit_window's centred window instead.
//
// Own data: --fasta FILE (proteins) and --pairs FILE.tsv (idA<TAB>idB<TAB>label, label 0 or 1,
// '#' comments). The proteins are split the same way and a pair is kept in the split that
// holds both its proteins (pairs across splits are dropped and counted).
//
// Checkpoints (--checkpoint, every epoch end): the network, the best-so-far copy of it (model
// selection by validation accuracy), AdamW's moments, the schedule, the data order and the
// dropout generator, and the curves for --plot; --resume continues bit for bit.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "../common/cli.h"
#include "../common/flags.h"
#include "../common/quantize_report.h"
#include "../common/onnx_export.h"
#include "../common/profile.h"
#include "../common/training.h"
#include "../common/report.h"
#include "../common/seqdata.h"
#include "ember/cpu.h"
#include "ember/ember.h"
#include "ember/io/checkpoint.h"
#include "pairs_data.h"

namespace {

using namespace ember;
using pp::kProg;
using pp::Pair;

constexpr double kValFrac = 0.15, kTestFrac = 0.20;  // of the proteins
constexpr uint64_t kShuffleSeedMix = 0x9E3779B97F4A7C15ULL;

// --- command line -----------------------------------------------------------------------------

struct Args {
  std::string data_root = example::default_data_root();
  std::string fasta, pairs;  // own data
  std::string preset = "small";
  int64_t epochs = 0, batch = 0, window = 0, train_pairs = 0;  // 0: the preset's
  double lr = 0;                                               // 0: the preset's
  std::string lstm;                                            // "": the preset's; on|off
  std::string crop = "start";                                  // start | centre
  uint64_t seed = 42;
  int threads = 0;
  std::string device = "cpu";
  std::optional<DType> amp;
  std::string checkpoint = "protein_pairs.ckpt.safetensors";
  std::string profile;  // --profile: Chrome trace of the training loop
  std::string export_onnx;  // --export-onnx: the best network as ONNX
  bool resume = false;
  bool eval_only = false;                      // --eval-only: load --checkpoint, no training
  std::optional<example::QuantForm> quantize;  // --quantize: compare f32 with int8/f16/bf16
  int64_t stop_after = 0;
  std::string plot;
  bool help = false;
};

// What each preset sets (flags override the ones they name).
struct Config {
  int64_t epochs, batch, window, train_pairs, val_pairs, test_pairs;
  double lr;
  int64_t embed, channels, kernel, conv_layers, lstm_hidden, dim, hidden;
  double dropout;
};

Config preset_config(const std::string& p) {
  // Both keep the 64-residue window: nearly every protein is longer, so the window shows no
  // length (a longer one pads the short domain families and gives their length away).
  if (p == "full")  // a GPU run: a wider, deeper encoder with a BiLSTM, more pairs and epochs
    return {.epochs = 20, .batch = 128, .window = 64, .train_pairs = 20000, .val_pairs = 2000, .test_pairs = 4000,
            .lr = 1e-3, .embed = 64, .channels = 256, .kernel = 9, .conv_layers = 3, .lstm_hidden = 128, .dim = 128,
            .hidden = 128, .dropout = 0.3};
  EMBER_CHECK(p == "small", kProg, "--preset expects small or full, got \"", p, "\"");
  return {.epochs = 8, .batch = 64, .window = 64, .train_pairs = 6000, .val_pairs = 1000, .test_pairs = 2000,
          .lr = 2e-3, .embed = 32, .channels = 128, .kernel = 9, .conv_layers = 2, .lstm_hidden = 0, .dim = 64,
          .hidden = 64, .dropout = 0.3};
}

void usage(std::ostream& os) {
  os << "usage: protein_pairs [options]\n"
        "A siamese protein-pair classifier (one shared CNN encoder, an MLP on [a, b, |a-b|, a*b]).\n"
        "Bundled task (a proxy, no labelled interaction set ships in Debian): pairs of real proteins,\n"
        "label 1 = same group (globin, kinase, fn3, RRM, extracellular, mitochondrial), 0 = different.\n"
        "  --data-root DIR    fetched Debian data (default " << example::default_data_root() << ";\n"
        "                     bash scripts/fetch_data.sh emboss-test r-bioc-rcpi)\n"
        "  --fasta FILE       your own proteins (FASTA, unique ids) ...\n"
        "  --pairs FILE.tsv   ... and pairs: idA<TAB>idB<TAB>label (0/1) per line, '#' comments\n"
        "  --preset P         small (default: about a minute on 2 CPU cores) or full (bigger model + BiLSTM, GPU)\n"
        "  --epochs N         training epochs (small 8, full 20)\n"
        "  --batch N          pairs per step (small 64, full 128)\n"
        "  --lr X             peak AdamW learning rate, warmup then cosine decay (small 2e-3, full 1e-3)\n"
        "  --window N         residues per protein, 'X'-padded when shorter (default 64)\n"
        "  --crop start|centre  which residues a longer protein keeps: the first N (default: the\n"
        "                     N-terminus, where signal and targeting peptides sit) or the centred N\n"
        "  --lstm on|off      a bidirectional LSTM after the convolutions (small off, full on)\n"
        "  --train-pairs N    training pairs drawn from the training proteins (bundled set; small 6000)\n"
        "  --seed N           split, pairs, initialisation and data order (default 42)\n"
        "  --threads N        CPU threads (default: all)\n"
        "  --device D         cpu, cuda, cuda:N, or fake (the stand-in test device)\n"
        "  --amp M            mixed precision: bf16, f16 (with loss scaling) or off (default)\n"
        "  --checkpoint PATH  saved at every epoch end (default protein_pairs.ckpt.safetensors; \"\" disables)\n"
        "  --resume           continue from --checkpoint (same data and settings)\n"
        "  --stop-after E     stop after epoch E, as if interrupted (continue with --resume)\n"
        "  --eval-only        load the model from --checkpoint and test its best network, no training\n"
        "  --quantize Q       int8, f16 or bf16: compare the best f32 network with that form on the test\n"
        "                     pairs (accuracy, size, latency; a last result: line)\n"
        "  --plot FILE        write the training curves (train loss, validation accuracy) as SVG\n"
        "  --export-onnx FILE write the best network as ONNX (two token windows in, logits out, batch axis\n"
        "                     dynamic) with a sample of test pairs and its outputs (docs/deploy.md)\n"
        "  --profile FILE     profile the training loop: Chrome trace JSON to FILE, top-ops table\n"
        "  --help             this text\n"
        "The last line is `result: test_accuracy=... baseline_accuracy=... test_auc=... test_pairs=...`.\n";
}

Args parse_args(int argc, char** argv) {
  Args a;
  example::Flags f(kProg);
  f.boolean("--resume", &a.resume).boolean("--eval-only", &a.eval_only);
  f.custom("--quantize", [&](const std::string& v) { a.quantize = example::parse_quantize(kProg, v); });
  f.text("--data-root", &a.data_root).text("--fasta", &a.fasta).text("--pairs", &a.pairs);
  f.text("--preset", &a.preset);  // checked and applied by preset_config, where only unset flags take its values
  f.integer("--epochs", &a.epochs, 1).integer("--batch", &a.batch, 2).real("--lr", &a.lr, 0.0, true);
  f.integer("--window", &a.window, 8);
  f.choice("--crop", &a.crop, {"start", "centre"}).choice("--lstm", &a.lstm, {"on", "off"});
  f.integer("--train-pairs", &a.train_pairs, 2).integer("--seed", &a.seed, 0).integer("--threads", &a.threads, 1);
  f.text("--device", &a.device).amp("--amp", &a.amp);
  f.text("--checkpoint", &a.checkpoint).integer("--stop-after", &a.stop_after, 1);
  f.text("--plot", &a.plot).text("--profile", &a.profile).text("--export-onnx", &a.export_onnx);
  a.help = f.parse(argc, argv);
  EMBER_CHECK(a.fasta.empty() == a.pairs.empty(), kProg, "own data needs both --fasta FILE and --pairs FILE.tsv");
  EMBER_CHECK(!a.resume || !a.checkpoint.empty(), kProg, "--resume needs a --checkpoint path");
  return a;
}

// --- the model --------------------------------------------------------------------------------

// The shared encoder and the pair head.
class SiamesePairNet : public nn::Module {
 public:
  SiamesePairNet(const Config& c, Generator* gen) {
    // 0 = padding / unknown residue: a zero vector that is never trained.
    embed_ = register_module("embed", std::make_shared<nn::Embedding>(21, c.embed, 0, gen));
    int64_t width = c.embed;
    for (int64_t l = 0; l < c.conv_layers; ++l) {
      const int64_t dil = int64_t{1} << l;  // 1, 2, 4: the receptive field grows to ~60 residues
      convs_.push_back(register_module(
          "conv" + std::to_string(l),
          std::make_shared<nn::Conv1d>(width, c.channels, c.kernel,
                                       nn::Conv1dOptions{.padding = dil * (c.kernel - 1) / 2, .dilation = dil}, gen)));
      width = c.channels;
    }
    if (c.lstm_hidden > 0) {
      nn::RNNOptions o;
      o.input_size = width;
      o.hidden_size = c.lstm_hidden;
      o.batch_first = true;
      o.bidirectional = true;
      lstm_ = register_module("lstm", std::make_shared<nn::LSTM>(o, gen));
      width = 2 * c.lstm_hidden;
    }
    proj_ = register_module("proj", std::make_shared<nn::Linear>(2 * width, c.dim, true, gen));
    fc1_ = register_module("fc1", std::make_shared<nn::Linear>(4 * c.dim, c.hidden, true, gen));
    drop_ = register_module("drop", std::make_shared<nn::Dropout>(c.dropout, gen));
    fc2_ = register_module("fc2", std::make_shared<nn::Linear>(c.hidden, 2, true, gen));
  }

  // Token windows (N, W) i64 -> protein vectors (N, dim).
  Tensor encode(const Tensor& ids) {
    Tensor h = embed_->forward(ids).transpose(1, 2);  // (N, E, W)
    for (const auto& conv : convs_) h = relu(conv->forward(h));
    int64_t t = 2;  // the positions' dim
    if (qlstm_) {
      h = qlstm_->forward(h.transpose(1, 2).to(DType::f32)).output;  // (N, W, 2H)
      t = 1;
    } else if (lstm_) {
      // Under autocast the convolutions hand over bf16/f16; nn::LSTM takes its parameters'
      // dtype and runs the recurrence in the low dtype itself.
      h = lstm_->forward(h.transpose(1, 2).to(lstm_->weights(0, 0).w_ih.dtype())).output;  // (N, W, 2H)
      t = 1;
    }
    return relu(proj_->forward(cat({amax(h, {t}), mean(h, {t})}, 1)));
  }

  // After nn::quantize_dynamic (--quantize int8): the layers as the module tree now holds them.
  void relink() {
    embed_ = nn::child<nn::Layer>(*this, "embed");
    for (size_t l = 0; l < convs_.size(); ++l) convs_[l] = nn::child<nn::Layer>(*this, "conv" + std::to_string(l));
    if (lstm_) qlstm_ = std::dynamic_pointer_cast<nn::QuantizedRNN>(nn::child_module(*this, "lstm"));
    proj_ = nn::child<nn::Layer>(*this, "proj");
    fc1_ = nn::child<nn::Layer>(*this, "fc1");
    fc2_ = nn::child<nn::Layer>(*this, "fc2");
  }

  // Two proteins' vectors (N, dim) each -> logits (N, 2).
  Tensor score(const Tensor& a, const Tensor& b) {
    const Tensor f = cat({a, b, abs(a - b), a * b}, 1);
    return fc2_->forward(drop_->forward(relu(fc1_->forward(f))));
  }

 private:
  std::shared_ptr<nn::Layer> embed_;
  std::vector<std::shared_ptr<nn::Layer>> convs_;
  std::shared_ptr<nn::LSTM> lstm_;
  std::shared_ptr<nn::QuantizedRNN> qlstm_;  // in place of lstm_ after quantize_dynamic
  std::shared_ptr<nn::Layer> proj_, fc1_, fc2_;
  std::shared_ptr<nn::Dropout> drop_;
};

// What a checkpoint holds as "the model": the network being trained and the copy of it that
// scored best on validation so far (the one tested at the end), so a resumed run keeps both.
class Checkpointed : public nn::Module {
 public:
  Checkpointed(const Config& c, Generator* gen) : best_gen_(0) {
    net = register_module("net", std::make_shared<SiamesePairNet>(c, gen));
    best = register_module("best", std::make_shared<SiamesePairNet>(c, &best_gen_));
    best->load_state_dict(net->state_dict());
  }
  std::shared_ptr<SiamesePairNet> net, best;

 private:
  Generator best_gen_;  // best's layers draw from it only when built (it only evaluates)
};

// --- evaluation -------------------------------------------------------------------------------

struct Scores {
  double accuracy = 0, auc = 0;
  std::vector<char> correct;  // per pair
};

// Area under the ROC curve of `score` for labels 1 vs 0 (ties count one half).
double roc_auc(const std::vector<double>& score, const std::vector<int64_t>& label) {
  std::vector<size_t> o(score.size());
  std::iota(o.begin(), o.end(), size_t{0});
  std::sort(o.begin(), o.end(), [&](size_t x, size_t y) { return score[x] < score[y]; });
  double rank_sum = 0, pos = 0;
  for (size_t i = 0; i < o.size();) {
    size_t j = i;
    while (j < o.size() && score[o[j]] == score[o[i]]) ++j;
    const double mid = 0.5 * static_cast<double>(i + 1 + j);  // mean rank of the tie block (1-based)
    for (size_t k = i; k < j; ++k)
      if (label[o[k]] == 1) rank_sum += mid, pos += 1;
    i = j;
  }
  const double neg = static_cast<double>(score.size()) - pos;
  if (pos == 0 || neg == 0) return NAN;
  return (rank_sum - pos * (pos + 1) / 2) / (pos * neg);
}

// Encodes each protein of `pairs` once, then scores every pair.
Scores evaluate(SiamesePairNet& net, const Tensor& tokens, const std::vector<Pair>& pairs, Device device,
                std::optional<DType> amp) {
  net.eval();
  NoGradGuard no_grad;
  std::vector<int64_t> uniq;
  std::unordered_map<int64_t, int64_t> where;
  for (const Pair& p : pairs)
    for (int64_t id : {p.a, p.b})
      if (where.emplace(id, static_cast<int64_t>(uniq.size())).second) uniq.push_back(id);
  const int64_t U = static_cast<int64_t>(uniq.size()), N = static_cast<int64_t>(pairs.size());
  constexpr int64_t kChunk = 256;
  amp::AutocastGuard autocast(device, amp.value_or(DType::bf16), amp.has_value());
  std::vector<Tensor> parts;
  const Tensor uidx = from_vector(uniq, {U});
  for (int64_t s = 0; s < U; s += kChunk)
    parts.push_back(net.encode(index_select(tokens, 0, uidx.narrow(0, s, std::min(kChunk, U - s))).to(device)));
  const Tensor enc = cat(parts, 0);
  std::vector<int64_t> ia, ib, y;
  for (const Pair& p : pairs) ia.push_back(where[p.a]), ib.push_back(where[p.b]), y.push_back(p.label);
  const Tensor ta = from_vector(ia, {N}).to(device), tb = from_vector(ib, {N}).to(device);
  const Tensor logits = net.score(index_select(enc, 0, ta), index_select(enc, 0, tb)).to(Device::cpu()).to(DType::f32);
  const std::vector<float> l = logits.to_vector<float>();
  std::vector<double> margin(static_cast<size_t>(N));
  Scores out;
  int64_t correct = 0;
  for (int64_t i = 0; i < N; ++i) {
    const size_t k = static_cast<size_t>(i);
    margin[k] = static_cast<double>(l[2 * k + 1]) - static_cast<double>(l[2 * k]);
    out.correct.push_back((margin[k] > 0 ? 1 : 0) == y[k]);
    correct += out.correct.back();
  }
  net.train();
  out.accuracy = static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(N, 1));
  out.auc = roc_auc(margin, y);
  return out;
}

// --- the run ----------------------------------------------------------------------------------



std::string count_line(const std::vector<Pair>& p) {
  int64_t pos = 0;
  for (const Pair& x : p) pos += x.label;
  return std::to_string(p.size()) + " (" + std::to_string(pos) + " positive, " +
         std::to_string(static_cast<int64_t>(p.size()) - pos) + " negative)";
}

int run(const Args& a, Device device) {
  if (a.threads > 0) cpu::set_num_threads(a.threads);
  const auto t0 = std::chrono::steady_clock::now();
  Config c = preset_config(a.preset);
  if (a.epochs > 0) c.epochs = a.epochs;
  if (a.batch > 0) c.batch = a.batch;
  if (a.lr > 0) c.lr = a.lr;
  if (a.window > 0) c.window = a.window;
  if (a.train_pairs > 0) c.train_pairs = a.train_pairs;
  if (!a.lstm.empty()) c.lstm_hidden = a.lstm == "on" ? std::max<int64_t>(c.lstm_hidden, 64) : 0;
  EMBER_CHECK(c.train_pairs >= c.batch || !a.fasta.empty(), kProg, "--train-pairs ", c.train_pairs, " is below --batch ", c.batch);

  // Data: proteins, their split, the pairs of each split.
  const bool own = !a.fasta.empty();
  pp::Dataset d = own ? pp::load_user_fasta(a.fasta) : pp::load_bundled(a.data_root);
  const std::vector<int> side = pp::split_proteins(d, kValFrac, kTestFrac, a.seed);
  std::vector<Pair> split_pairs[3];
  int64_t dropped_across = 0;
  if (own) {
    for (const Pair& p : pp::read_pairs_tsv(a.pairs, d)) {
      const int sa = side[static_cast<size_t>(p.a)], sb = side[static_cast<size_t>(p.b)];
      if (sa == sb) split_pairs[sa].push_back(p);
      else ++dropped_across;
    }
    static const char* names[] = {"training", "validation", "test"};
    for (int s = 0; s < 3; ++s)
      EMBER_CHECK(!split_pairs[s].empty(), kProg, a.pairs, ": no ", names[s], " pairs are left after the split by protein (",
                  dropped_across, " pairs join proteins of two splits and are dropped); give more pairs per protein");
  } else {
    const int64_t want[3] = {c.train_pairs, c.val_pairs, c.test_pairs};
    for (int s = 0; s < 3; ++s) {
      std::vector<int64_t> members;
      for (size_t i = 0; i < side.size(); ++i)
        if (side[i] == s) members.push_back(static_cast<int64_t>(i));
      split_pairs[s] = pp::sample_pairs(d, members, want[s], a.seed * 1000003ULL + static_cast<uint64_t>(s) + 1);
    }
  }
  const std::vector<Pair>&train = split_pairs[0], &val = split_pairs[1], &test = split_pairs[2];

  // Windows: one length for every protein.
  std::vector<std::string> windows;
  int64_t padded = 0;
  for (const pp::Protein& p : d.proteins) {
    // --crop start: the first `window` residues (fit_window then only pads the shorter ones);
    // --crop centre: fit_window's centred crop.
    windows.push_back(example::fit_window(a.crop == "start" ? p.seq.substr(0, static_cast<size_t>(c.window)) : p.seq,
                                          static_cast<size_t>(c.window), 'X'));
    padded += static_cast<int64_t>(p.seq.size()) < c.window;
  }
  const Tensor tokens = pp::encode_windows(windows, c.window);

  // Summary.
  if (own) {
    example::say("data: your own pairs, %s; pairs from %s\n", d.sources[0].c_str(), a.pairs.c_str());
  } else {
    example::say("data: bundled PROXY task: label 1 = both proteins from the same group, 0 = different groups\n"
                 "      (no labelled protein-interaction set ships in Debian; this checks the siamese machinery\n"
                 "      on real proteins, it does not measure interaction prediction)\n");
    for (const std::string& s : d.sources) example::say("  %s\n", s.c_str());
    if (d.duplicates_dropped > 0)
      example::say("  %lld duplicate sequences dropped\n", static_cast<long long>(d.duplicates_dropped));
    example::say("  %-14s %8s %6s %5s %5s  %s\n", "group", "proteins", "train", "val", "test", "length median [min-max]");
    for (size_t g = 0; g < d.group_names.size(); ++g) {
      int64_t n[3] = {0, 0, 0};
      std::vector<size_t> len;
      for (size_t i = 0; i < d.proteins.size(); ++i)
        if (d.proteins[i].group == static_cast<int>(g)) ++n[side[i]], len.push_back(d.proteins[i].seq.size());
      std::sort(len.begin(), len.end());
      example::say("  %-14s %8zu %6lld %5lld %5lld  %zu [%zu-%zu]\n", d.group_names[g].c_str(), len.size(),
                   static_cast<long long>(n[0]), static_cast<long long>(n[1]), static_cast<long long>(n[2]),
                   len[len.size() / 2], len.front(), len.back());
    }
  }
  int64_t n_side[3] = {0, 0, 0};
  for (int s : side) ++n_side[s];
  example::say("split by protein (split_by_key on the sequences, seed %llu): %lld train, %lld validation, %lld test proteins\n",
               static_cast<unsigned long long>(a.seed), static_cast<long long>(n_side[0]),
               static_cast<long long>(n_side[1]), static_cast<long long>(n_side[2]));
  example::say("pairs: train %s, validation %s, test %s%s\n", count_line(train).c_str(), count_line(val).c_str(),
               count_line(test).c_str(),
               own ? (", " + std::to_string(dropped_across) + " pairs across splits dropped").c_str() : "");
  std::vector<int64_t> test_y;
  for (const Pair& p : test) test_y.push_back(p.label);
  const double majority = example::majority_share(test_y, 2);
  example::say("window: %lld residues (the %s ones of a longer protein, 'X' padding for a shorter one); %lld of %zu\n"
               "      proteins are shorter and padded (only for them does the padding show the length)\n",
               static_cast<long long>(c.window), a.crop == "start" ? "first" : "centred", static_cast<long long>(padded),
               d.proteins.size());

  // Baselines, in this run: k-mer pair features; and lengths alone (what the window hides, or not).
  const Tensor kmers = cat({example::kmer_features(windows, pp::kAlphabet, 1), example::kmer_features(windows, pp::kAlphabet, 2)}, 1);
  const double baseline = example::logistic_baseline(pp::pair_kmer_features(kmers, train), pp::pair_labels(train),
                                                     pp::pair_kmer_features(kmers, test), pp::pair_labels(test), 2);
  const double length_only = example::logistic_baseline(pp::pair_length_features(d, train), pp::pair_labels(train),
                                                        pp::pair_length_features(d, test), pp::pair_labels(test), 2);
  example::say("baselines on the test pairs: majority class %.4f; logistic regression on |fa-fb|, fa*fb of 1-/2-mer\n"
               "      frequencies %.4f; lengths only (logistic regression on whole-sequence lengths) %.4f\n",
               majority, baseline, length_only);

  // Model, optimizer, schedule.
  Generator init_gen(a.seed), shuffle_gen(a.seed ^ kShuffleSeedMix);  // init_gen also draws dropout masks
  Checkpointed model(c, &init_gen);
  SiamesePairNet& net = *model.net;
  model.to(device);
  // --quantize: the best f32 network against its int8 / f16 / bf16 form on the test pairs.
  auto quantize_report = [&] {
    SiamesePairNet& best = *model.best;
    example::QuantizeHooks h;
    h.accuracy = [&](DType) { return 100.0 * evaluate(best, tokens, test, device, std::nullopt).accuracy; };
    h.forward = [&](int64_t b, DType) {
      std::vector<int64_t> ia, ib;
      for (int64_t i = 0; i < b; ++i) {
        const Pair& p = test[static_cast<size_t>(i) % test.size()];
        ia.push_back(p.a), ib.push_back(p.b);
      }
      best.eval();
      const Tensor ta = index_select(tokens, 0, from_vector(ia, {b})).to(device);
      const Tensor tb = index_select(tokens, 0, from_vector(ib, {b})).to(device);
      (void)best.score(best.encode(ta), best.encode(tb));
    };
    h.converted = [&] { best.relink(); };
    h.large_batch = 64;
    example::quantize_report(kProg, best, *a.quantize, h);
  };
  if (a.eval_only) {
    example::load_model_weights(kProg, a.checkpoint, model);
    example::say("loaded %s; test accuracy %.4f\n", a.checkpoint.c_str(),
                 evaluate(*model.best, tokens, test, device, std::nullopt).accuracy);
    if (a.quantize) quantize_report();
    return 0;
  }
  optim::AdamW opt(net.parameters(), {.lr = c.lr, .weight_decay = 1e-4});
  const int64_t n_train = static_cast<int64_t>(train.size());
  const int64_t steps = (n_train + c.batch - 1) / c.batch;
  optim::WarmupCosineLR sched(opt, {.warmup_steps = std::min<int64_t>(50, c.epochs * steps / 10), .total_steps = c.epochs * steps,
                                    .min_lr = c.lr / 20});
  amp::GradScaler scaler(example::scaler_options(a.amp));
  example::say("model: siamese encoder (embedding %lld, %lld dilated conv layers of %lld channels, kernel %lld%s, "
               "max+mean pool -> %lld), head MLP on [a, b, |a-b|, a*b] -> %lld -> 2; %lld parameters\n"
               "train: AdamW lr %g (warmup, cosine), batch %lld, %lld epochs of %lld steps; device %s, %d threads, amp %s\n",
               static_cast<long long>(c.embed), static_cast<long long>(c.conv_layers), static_cast<long long>(c.channels),
               static_cast<long long>(c.kernel),
               c.lstm_hidden > 0 ? (", BiLSTM " + std::to_string(c.lstm_hidden)).c_str() : "",
               static_cast<long long>(c.dim), static_cast<long long>(c.hidden),
               static_cast<long long>(net.parameter_count()), c.lr, static_cast<long long>(c.batch),
               static_cast<long long>(c.epochs), static_cast<long long>(steps), device.str().c_str(), cpu::num_threads(),
               example::amp_name(a.amp));

  // Checkpoint identity and resume.
  char lr_text[40];
  std::snprintf(lr_text, sizeof lr_text, "%.17g", c.lr);
  const std::map<std::string, std::string> identity = {
      {"preset", a.preset}, {"epochs", std::to_string(c.epochs)}, {"batch", std::to_string(c.batch)},
      {"lr", lr_text}, {"window", std::to_string(c.window)}, {"crop", a.crop}, {"lstm", std::to_string(c.lstm_hidden)},
      {"seed", std::to_string(a.seed)}, {"train_pairs", std::to_string(n_train)},
      {"data", own ? a.fasta + " " + a.pairs : "bundled"}, {"amp", example::amp_name(a.amp)}};
  int64_t first_epoch = 1, best_epoch = 0;
  double best_val = -1;
  std::vector<double> loss_hist, val_hist;
  if (a.resume) {
    io::TrainingState st;
    io::load_checkpoint(a.checkpoint, model, opt, &sched, st, &scaler);
    example::check_run_identity(
        kProg, a.checkpoint, st.extra, identity,
        "resume with the same data, --preset, --epochs, --batch, --lr, --window, --crop, --lstm, --seed and --amp");
    st.apply_to(shuffle_gen);
    init_gen.manual_seed(std::stoull(st.extra.at("model_rng_seed")));
    init_gen.set_offset(std::stoull(st.extra.at("model_rng_offset")));
    best_val = std::stod(st.extra.at("best_val"));
    best_epoch = std::stoll(st.extra.at("best_epoch"));
    loss_hist = example::parse_numbers(kProg, st.extra.at("loss_hist"), a.checkpoint + " train.extra.loss_hist");
    val_hist = example::parse_numbers(kProg, st.extra.at("val_hist"), a.checkpoint + " train.extra.val_hist");
    first_epoch = st.epoch + 1;
    example::say("resumed from %s: %lld/%lld epochs done, best validation accuracy %.4f (epoch %lld)\n",
                 a.checkpoint.c_str(), static_cast<long long>(st.epoch), static_cast<long long>(c.epochs), best_val,
                 static_cast<long long>(best_epoch));
  }
  const int64_t last_epoch = a.stop_after > 0 ? std::min(a.stop_after, c.epochs) : c.epochs;

  // Training.
  example::Progress progress(c.epochs, std::max<int64_t>(1, (last_epoch - first_epoch + 1) * steps), 20);
  std::unique_ptr<ember::Profiler> profiler = example::start_profile(a.profile);
  for (int64_t epoch = first_epoch; epoch <= last_epoch; ++epoch) {
    const std::vector<int64_t> order = example::shuffled_order(n_train, shuffle_gen);
    double loss_sum = 0;
    for (int64_t step = 0; step < steps; ++step) {
      const int64_t start = step * c.batch, len = std::min(c.batch, n_train - start);
      // The batch's proteins, each encoded once (a protein may be in several of its pairs).
      std::vector<int64_t> uniq, ia, ib, y;
      std::unordered_map<int64_t, int64_t> where;
      for (int64_t k = start; k < start + len; ++k) {
        const Pair& p = train[static_cast<size_t>(order[static_cast<size_t>(k)])];
        for (int64_t id : {p.a, p.b})
          if (where.emplace(id, static_cast<int64_t>(uniq.size())).second) uniq.push_back(id);
        ia.push_back(where[p.a]);
        ib.push_back(where[p.b]);
        y.push_back(p.label);
      }
      const Tensor x = index_select(tokens, 0, from_vector(uniq, {static_cast<int64_t>(uniq.size())})).to(device);
      const Tensor ta = from_vector(ia, {len}).to(device), tb = from_vector(ib, {len}).to(device);
      const Tensor ty = from_vector(y, {len}).to(device);
      Tensor logits, loss;
      {
        amp::AutocastGuard autocast(device, a.amp.value_or(DType::bf16), a.amp.has_value());
        const Tensor enc = net.encode(x);
        logits = net.score(index_select(enc, 0, ta), index_select(enc, 0, tb));
        loss = nn::cross_entropy(logits, ty);
      }
      opt.zero_grad();
      scaler.scale(loss).backward();
      scaler.step(opt);
      scaler.update();
      sched.step();
      if (profiler) profiler->step();
      NoGradGuard no_grad;
      const double l = loss.item<double>();
      loss_sum += l * static_cast<double>(len);
      progress.step(epoch, l, sum(eq(argmax(logits, 1), ty)).item<int64_t>(), len);
    }
    const Scores v = evaluate(net, tokens, val, device, a.amp);
    loss_hist.push_back(loss_sum / static_cast<double>(n_train));
    val_hist.push_back(v.accuracy);
    const bool better = v.accuracy > best_val;
    if (better) {
      best_val = v.accuracy;
      best_epoch = epoch;
      model.best->load_state_dict(net.state_dict());
    }
    char scale[48] = "";
    if (scaler.is_enabled()) std::snprintf(scale, sizeof scale, " scale %g", scaler.get_scale());
    example::say("epoch %lld validation accuracy %.4f auc %.4f%s%s\n", static_cast<long long>(epoch), v.accuracy, v.auc,
                 better ? " (best so far)" : "", scale);
    if (!a.checkpoint.empty()) {
      io::TrainingState st = io::TrainingState::from(shuffle_gen);
      st.epoch = epoch;
      st.step = epoch * steps;
      st.extra = identity;
      st.extra["model_rng_seed"] = std::to_string(init_gen.seed());
      st.extra["model_rng_offset"] = std::to_string(init_gen.offset());
      char bv[40];
      std::snprintf(bv, sizeof bv, "%.17g", best_val);
      st.extra["best_val"] = bv;
      st.extra["best_epoch"] = std::to_string(best_epoch);
      st.extra["loss_hist"] = example::format_numbers(loss_hist);
      st.extra["val_hist"] = example::format_numbers(val_hist);
      io::save_checkpoint(a.checkpoint, model, opt, &sched, st, &scaler);
    }
  }
  if (profiler) profiler->stop();
  if (!a.plot.empty()) {
    example::write_svg_plot(a.plot, "protein_pairs: siamese pair classifier (proxy task)", "epoch", "value",
                            {{"train loss", loss_hist}, {"validation accuracy", val_hist}});
    example::say("plot: %s\n", a.plot.c_str());
  }
  if (last_epoch < c.epochs) {
    example::say("stopped after epoch %lld of %lld (--stop-after); continue with --resume\n",
                 static_cast<long long>(last_epoch), static_cast<long long>(c.epochs));
    return 0;
  }

  // Test: the network that scored best on validation.
  const Scores t = evaluate(*model.best, tokens, test, device, a.amp);
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  example::say("test (model of epoch %lld, best validation accuracy %.4f): accuracy %.4f, AUC %.4f on %zu pairs; "
               "k-mer baseline %.4f, lengths only %.4f, majority %.4f%s\n",
               static_cast<long long>(best_epoch), best_val, t.accuracy, t.auc, test.size(), baseline, length_only,
               majority, own ? "" : " (proxy task: same group vs different group)");
  if (!own) {
    // Where the errors are: each test pair by the groups of its two proteins.
    std::map<std::pair<int, int>, std::pair<int64_t, int64_t>> by;  // (g1 <= g2) -> (correct, count)
    for (size_t i = 0; i < test.size(); ++i) {
      int g1 = d.proteins[static_cast<size_t>(test[i].a)].group, g2 = d.proteins[static_cast<size_t>(test[i].b)].group;
      auto& e = by[{std::min(g1, g2), std::max(g1, g2)}];
      e.first += t.correct[i];
      ++e.second;
    }
    std::string line;
    for (const auto& [g, e] : by) {
      char buf[96];
      std::snprintf(buf, sizeof buf, " %s/%s %lld/%lld", d.group_names[static_cast<size_t>(g.first)].c_str(),
                    d.group_names[static_cast<size_t>(g.second)].c_str(), static_cast<long long>(e.first),
                    static_cast<long long>(e.second));
      line += buf;
    }
    example::say("test pairs right by group pair:%s\n", line.c_str());
  }
  if (!a.export_onnx.empty()) {
    // The pair classifier on two token windows (N, W) each, batch axis dynamic.
    std::vector<int64_t> ia, ib;
    for (size_t i = 0; i < std::min<size_t>(4, test.size()); ++i) ia.push_back(test[i].a), ib.push_back(test[i].b);
    const int64_t n = static_cast<int64_t>(ia.size());
    io::ExportOptions o;
    o.input_names = {"tokens_a", "tokens_b"};
    o.output_names = {"logits"};
    o.dynamic_axes = {{"tokens_a", {{0, "batch"}}}, {"tokens_b", {{0, "batch"}}}, {"logits", {{0, "batch"}}}};
    SiamesePairNet& best = *model.best;
    example::export_onnx(kProg, a.export_onnx, best,
                         {index_select(tokens, 0, from_vector(ia, {n})), index_select(tokens, 0, from_vector(ib, {n}))},
                         o, [&best](const std::vector<Tensor>& in) {
                           return std::vector<Tensor>{best.score(best.encode(in[0]), best.encode(in[1]))};
                         });
  }
  example::say("total time: %.1f s\n", total);
  example::print_result({{"test_accuracy", t.accuracy},
                         {"baseline_accuracy", baseline},
                         {"test_auc", t.auc},
                         {"test_pairs", static_cast<double>(test.size())}});
  if (a.quantize) quantize_report();
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return example::run_main(kProg, argc, argv, parse_args, usage, run); }
