// translate: German -> English sentence translation with a sequence-to-sequence network: a
// bidirectional LSTM encoder, an LSTM decoder with dot-product attention over the encoder
// states, teacher forcing with a scheduled ratio, greedy and beam-search decoding, scored with
// corpus BLEU (sacrebleu's default: BLEU-4, 13a tokenisation; bleu.h) against a copy-the-source
// baseline, on the example sentences of the Ding dictionary (Debian's trans-de-en).
//
//   translate [--preset small|full] [--device cpu|cuda|fake] [--tsv pairs.tsv] [--beam K] ...
//
// Data: every aligned '|' alternative of a Ding entry whose German and English sides are both
// sentences (capital first letter, final . ! ?, at least 3 words): about 19,700 pairs, 19,600
// distinct German sentences (pairs.h). Or your own "source<TAB>target" file (--tsv).
// Words are the 13a tokens of each side (the same tokeniser BLEU uses); pairs with a side longer
// than --max-len tokens are dropped; each source sentence is kept once; the split is by a key
// that ignores case and punctuation, so no source sentence (nor one that differs only in case
// or punctuation) is in both train and test. Vocabularies from the training split only (words
// seen at least --min-count times; the rest is <unk>).
//
// Model: Embedding(E) -> BiLSTM(H per direction) over the source; the decoder starts from a
// tanh bridge of the encoder's final states, reads Embedding(E) of the previous target word
// with an LSTM(2H), attends to the encoder states (q = W h_t, scaled dot product, padding
// masked: ember's scaled_dot_product_attention), and predicts the word from
// tanh(W_c [h_t; context]) (Luong's "general" attention). Teacher forcing: each decoder input
// is the reference word with probability r and the model's own previous argmax otherwise
// (scheduled sampling), r falling linearly from --tf-start (1.0) to --tf-end (0.5) over
// training; --tf-end 1 trains with full teacher forcing.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "../common/onnx_export.h"
#include "../common/cli.h"
#include "../common/flags.h"
#include "../common/profile.h"
#include "../common/report.h"
#include "../common/seqdata.h"
#include "../common/training.h"
#include "bleu.h"
#include "ember/cpu.h"
#include "ember/ember.h"
#include "ember/io/checkpoint.h"
#include "pairs.h"

namespace {

using namespace ember;
namespace fs = std::filesystem;

constexpr const char* kProg = "translate";
constexpr const char* kDing = "trans-de-en/usr/share/trans/de-en";
constexpr int64_t kPad = 0, kUnk = 1, kBos = 2, kEos = 3;
constexpr uint64_t kShuffleMix = 0x9E3779B97F4A7C15ULL, kDropoutMix = 0x94D049BB133111EBULL,
                   kForcingMix = 0xD1B54A32D192ED03ULL;

// --- command line -----------------------------------------------------------------------------

struct Args {
  std::string data_root = example::default_data_root();
  std::string tsv, ding;  // ding: the dictionary file (default: under --data-root)
  std::string preset = "small";
  int64_t epochs = 3, batch = 64, emb = 128, hidden = 128, max_len = 12, min_count = 2, limit = 0,
          beam = 5, show = 5, stop_after = 0, val_limit = 600;
  double lr = 2e-3, dropout = 0.2, tf_start = 1.0, tf_end = 0.5, length_alpha = 1.0, clip = 1.0;
  uint64_t seed = 7;
  int threads = 1;  // the model is small: a second thread costs more in synchronisation than it saves
  std::string device = "cpu";
  std::optional<DType> amp;
  std::string checkpoint = "translate.ckpt.safetensors";
  std::string profile;  // --profile: Chrome trace of the training loop
  std::string export_onnx;  // --export-onnx: encoder and decoder step as ONNX
  bool resume = false, help = false;
  std::string plot, write_hyp;
};

void apply_preset(Args& a, const std::string& name) {
  EMBER_CHECK(name == "small" || name == "full", kProg, "--preset expects small or full, got \"", name, "\"");
  a.preset = name;
  if (name == "full") a.emb = 256, a.hidden = 256, a.epochs = 20, a.max_len = 30, a.batch = 64, a.lr = 1e-3;
}

void usage(std::ostream& o) {
  o << "usage: translate [options]\n"
       "German -> English translation: BiLSTM encoder, LSTM decoder with attention, scheduled teacher\n"
       "forcing, greedy and beam-search decoding, corpus BLEU (sacrebleu's 13a) vs copying the source.\n"
       "  --data-root DIR       fetched Debian data (default " << example::default_data_root() << ";\n"
       "                        bash scripts/fetch_data.sh trans-de-en)\n"
       "  --ding FILE           the Ding dictionary file (default DIR/trans-de-en/usr/share/trans/de-en)\n"
       "  --tsv FILE            your own pairs, \"source<TAB>target\" per line (replaces the Ding data)\n"
       "  --preset P            small (default: 2 CPU cores, under 5 minutes) or full (a GPU); later\n"
       "                        flags override it\n"
       "  --max-len N           drop pairs with a side longer than N tokens (small 12, full 30)\n"
       "  --min-count N         words seen fewer times in training become <unk> (default 2)\n"
       "  --emb N               word embedding size (small 128, full 256)\n"
       "  --hidden N            encoder LSTM size per direction; the decoder has 2N (small 128, full 256)\n"
       "  --epochs N            training epochs (small 3, full 20)\n"
       "  --batch N             sentence pairs per step (default 64)\n"
       "  --lr X                peak AdamW learning rate, warmup then cosine to 0 (small 2e-3, full 1e-3)\n"
       "  --dropout X           dropout on embeddings and before the output layer (default 0.2)\n"
       "  --tf-start X --tf-end X  teacher-forcing ratio at the start and end of training, linear in\n"
       "                        between (default 1.0 -> 0.5); --tf-end 1 = always teacher forcing\n"
       "  --beam K              beam width for beam search (default 5; 1 = greedy only)\n"
       "  --length-alpha X      beam hypotheses ranked by log-prob / length^X (default 1)\n"
       "  --show N              translations printed at the end (default 5)\n"
       "  --limit N             at most N training pairs (and N/8 validation and test; smoke tests)\n"
       "  --val-limit N         validation pairs decoded after each epoch (default 600)\n"
       "  --write-hyp DIR       write src/ref/greedy/beam/baseline .txt (one sentence a line) for sacrebleu\n"
       "  --seed N              split, initialisation, data order, sampling (default 7)\n"
       "  --threads N           CPU threads (default 1)\n"
       "  --device D            cpu, cuda, cuda:N or fake (the stand-in test device); default cpu\n"
       "  --amp M               mixed precision: bf16, f16 (dynamic loss scaling) or off (default)\n"
       "  --checkpoint PATH     saved at every epoch end (default translate.ckpt.safetensors; \"\" = none)\n"
       "  --resume              continue from --checkpoint (same data and flags)\n"
       "  --stop-after E        stop after epoch E as if interrupted (then --resume)\n"
       "  --plot FILE           write the training curves as SVG\n"
       "  --export-onnx FILE    write the encoder to FILE and one decoder step (tokens, state, encoder\n"
       "                        output -> logits, new state) to FILE's stem + .decoder.onnx, batch and\n"
       "                        source length dynamic; greedy or beam search loops over the step (docs/deploy.md)\n"
       "  --profile FILE        profile the training loop: Chrome trace JSON to FILE, top-ops table\n"
       "  --help                this text\n";
}

Args parse_args(int argc, char** argv) {
  Args a;
  // A ratio in [0, 1]: the teacher-forcing ratios and the dropout.
  const auto ratio = [](const std::string& flag, const std::string& v) {
    const double x = example::parse_double(kProg, flag, v, 0.0, false);
    EMBER_CHECK(x <= 1.0, kProg, flag, " must be in [0, 1], got ", x);
    return x;
  };
  example::Flags f(kProg);
  f.preset([&](const std::string& v) { apply_preset(a, v); });  // later flags override it
  f.boolean("--resume", &a.resume);
  f.text("--data-root", &a.data_root).text("--tsv", &a.tsv).text("--ding", &a.ding);
  f.integer("--max-len", &a.max_len, 2).integer("--min-count", &a.min_count, 1);
  f.integer("--emb", &a.emb, 1).integer("--hidden", &a.hidden, 1);
  f.integer("--epochs", &a.epochs, 1).integer("--batch", &a.batch, 1).real("--lr", &a.lr, 0.0, true);
  f.custom("--dropout", [&](const std::string& v) {
    a.dropout = ratio("--dropout", v);
    EMBER_CHECK(a.dropout < 1.0, kProg, "--dropout must be < 1, got ", a.dropout);
  });
  f.custom("--tf-start", [&](const std::string& v) { a.tf_start = ratio("--tf-start", v); });
  f.custom("--tf-end", [&](const std::string& v) { a.tf_end = ratio("--tf-end", v); });
  f.integer("--beam", &a.beam, 1).real("--length-alpha", &a.length_alpha, 0.0, false);
  f.integer("--show", &a.show, 0).integer("--limit", &a.limit, 16).integer("--val-limit", &a.val_limit, 1);
  f.text("--write-hyp", &a.write_hyp).integer("--seed", &a.seed, 0).integer("--threads", &a.threads, 1);
  f.text("--device", &a.device).amp("--amp", &a.amp);
  f.text("--checkpoint", &a.checkpoint).integer("--stop-after", &a.stop_after, 1);
  f.text("--plot", &a.plot).text("--profile", &a.profile).text("--export-onnx", &a.export_onnx);
  a.help = f.parse(argc, argv);
  EMBER_CHECK(!a.resume || !a.checkpoint.empty(), kProg, "--resume needs a --checkpoint path");
  return a;
}

// --- data -------------------------------------------------------------------------------------

struct Example {
  std::string src, tgt;                  // the sentences as read
  std::vector<std::string> src_tok, tgt_tok;  // their 13a tokens
};

// The split key: lower-case letters and digits only, so "Das ist gut." and "das ist gut!" are
// one source sentence.
std::string source_key(const std::string& s) {
  std::string k;
  for (unsigned char c : s) {
    if (c >= 0x80 || std::isalnum(c)) k += static_cast<char>(std::tolower(c));
  }
  return k;
}

struct Vocab {
  std::vector<std::string> words{"<pad>", "<unk>", "<s>", "</s>"};
  std::unordered_map<std::string, int64_t> ids;
  int64_t id(const std::string& w) const {
    const auto it = ids.find(w);
    return it == ids.end() ? kUnk : it->second;
  }
  int64_t size() const { return static_cast<int64_t>(words.size()); }
};

// Words seen at least min_count times in the training sentences, most frequent first (ties by
// spelling, so the ids do not depend on hash order).
Vocab build_vocab(const std::vector<const std::vector<std::string>*>& sentences, int64_t min_count) {
  std::unordered_map<std::string, int64_t> counts;
  for (const auto* s : sentences)
    for (const std::string& w : *s) ++counts[w];
  std::vector<std::pair<std::string, int64_t>> kept;
  for (const auto& [w, c] : counts)
    if (c >= min_count) kept.emplace_back(w, c);
  std::sort(kept.begin(), kept.end(), [](const auto& x, const auto& y) { return x.second != y.second ? x.second > y.second : x.first < y.first; });
  Vocab v;
  for (const auto& [w, c] : kept) v.words.push_back(w);
  for (size_t i = 0; i < v.words.size(); ++i) v.ids[v.words[i]] = static_cast<int64_t>(i);
  return v;
}

// One minibatch: padded id matrices (pad = 0) and the source lengths.
struct Batch {
  Tensor src, tgt_in, tgt_out;  // (N, S) and (N, T) i64, on the CPU
  Tensor lengths;               // (N) i64 CPU
  int64_t n = 0, tokens = 0;    // target tokens (with </s>) the loss counts
};

Batch make_batch(const std::vector<Example>& data, const std::vector<int64_t>& rows, const Vocab& sv,
                 const Vocab& tv) {
  Batch b;
  b.n = static_cast<int64_t>(rows.size());
  size_t S = 1, T = 1;
  for (int64_t r : rows) {
    S = std::max(S, data[static_cast<size_t>(r)].src_tok.size());
    T = std::max(T, data[static_cast<size_t>(r)].tgt_tok.size() + 1);
  }
  std::vector<int64_t> src(rows.size() * S, kPad), tin(rows.size() * T, kPad), tout(rows.size() * T, kPad), len;
  for (size_t i = 0; i < rows.size(); ++i) {
    const Example& e = data[static_cast<size_t>(rows[i])];
    for (size_t j = 0; j < e.src_tok.size(); ++j) src[i * S + j] = sv.id(e.src_tok[j]);
    len.push_back(static_cast<int64_t>(std::max<size_t>(1, e.src_tok.size())));
    tin[i * T] = kBos;
    for (size_t j = 0; j < e.tgt_tok.size(); ++j) {
      const int64_t w = tv.id(e.tgt_tok[j]);
      tin[i * T + j + 1] = w;
      tout[i * T + j] = w;
    }
    tout[i * T + e.tgt_tok.size()] = kEos;
    b.tokens += static_cast<int64_t>(e.tgt_tok.size()) + 1;
  }
  const auto N = static_cast<int64_t>(rows.size());
  b.src = from_vector(src, {N, static_cast<int64_t>(S)});
  b.tgt_in = from_vector(tin, {N, static_cast<int64_t>(T)});
  b.tgt_out = from_vector(tout, {N, static_cast<int64_t>(T)});
  b.lengths = from_vector(len, {N});
  return b;
}

// --- model ------------------------------------------------------------------------------------

struct Encoded {
  Tensor states;   // (N, S, 2H)
  Tensor padding;  // (N, S) bool, true = padding
  Tensor h, c;     // (1, N, 2H): the decoder's initial state
};

class Seq2Seq : public nn::Module {
 public:
  Seq2Seq(int64_t src_vocab, int64_t tgt_vocab, int64_t E, int64_t H, double dropout, Generator* init, Generator* drop)
      : H_(H), p_(dropout), drop_(drop) {
    src_emb = register_module("src_emb", std::make_shared<nn::Embedding>(src_vocab, E, kPad, init));
    encoder = register_module("encoder", std::make_shared<nn::LSTM>(
                                             nn::RNNOptions{.input_size = E, .hidden_size = H, .batch_first = true, .bidirectional = true}, init));
    bridge_h = register_module("bridge_h", std::make_shared<nn::Linear>(2 * H, 2 * H, true, init));
    bridge_c = register_module("bridge_c", std::make_shared<nn::Linear>(2 * H, 2 * H, true, init));
    tgt_emb = register_module("tgt_emb", std::make_shared<nn::Embedding>(tgt_vocab, E, kPad, init));
    decoder = register_module("decoder", std::make_shared<nn::LSTM>(
                                             nn::RNNOptions{.input_size = E, .hidden_size = 2 * H, .batch_first = true}, init));
    attn = register_module("attn", std::make_shared<nn::Linear>(2 * H, 2 * H, false, init));
    combine = register_module("combine", std::make_shared<nn::Linear>(4 * H, 2 * H, true, init));
    out = register_module("out", std::make_shared<nn::Linear>(2 * H, tgt_vocab, true, init));
  }

  Tensor drop(const Tensor& x) { return p_ > 0 && is_training() ? dropout(x, p_, true, drop_) : x; }

  // src (N, S) i64 and lengths (N) i64 CPU.
  Encoded encode(const Tensor& src, const Tensor& lengths) {
    Encoded e;
    const nn::RNNResult r = encoder->forward(drop(src_emb->forward(src)), Tensor(), Tensor(), lengths);
    e.states = r.output;
    e.padding = eq(src, zeros_like(src));
    // h_n, c_n (2, N, H): forward and reverse final states side by side.
    const Tensor hn = cat({r.h_n.select(0, 0), r.h_n.select(0, 1)}, 1), cn = cat({r.c_n.select(0, 0), r.c_n.select(0, 1)}, 1);
    e.h = tanh(bridge_h->forward(hn)).unsqueeze(0);
    e.c = tanh(bridge_c->forward(cn)).unsqueeze(0);
    return e;
  }

  // Runs the decoder over `tokens` (N, T) from state (h, c), updating it; returns logits (N, T, V).
  Tensor decode(const Tensor& tokens, Tensor& h, Tensor& c, const Encoded& e) {
    const Tensor x = drop(tgt_emb->forward(tokens));
    // Under autocast the bridge (a Linear) and the recurrence may hand back low-precision
    // states while the embedding stays f32; nn::LSTM wants x, h0 and c0 in one dtype.
    if (h.dtype() != x.dtype()) h = h.to(x.dtype()), c = c.to(x.dtype());
    const nn::RNNResult r = decoder->forward(x, h, c);
    h = r.h_n;
    c = r.c_n;
    const int64_t N = tokens.size(0), T = tokens.size(1), D = 2 * H_;
    const Tensor q = attn->forward(r.output).reshape({N, 1, T, D});
    const Tensor kv = e.states.unsqueeze(1);  // (N, 1, S, D)
    AttentionOptions ao;
    ao.key_padding_mask = e.padding;
    const Tensor ctx = scaled_dot_product_attention(q, kv, kv, ao).reshape({N, T, D});
    const Tensor mixed = tanh(combine->forward(cat({r.output, ctx}, 2)));
    return out->forward(drop(mixed));
  }

  std::shared_ptr<nn::Embedding> src_emb, tgt_emb;
  std::shared_ptr<nn::LSTM> encoder, decoder;
  std::shared_ptr<nn::Linear> bridge_h, bridge_c, attn, combine, out;

 private:
  int64_t H_;
  double p_;
  Generator* drop_;
};

// The training forward pass: logits (N, T, V). With ratio >= 1 every decoder input is the
// reference word and the decoder runs over the whole target at once; otherwise step by step,
// each input the reference word where coins (N, T) is true and the model's previous argmax
// elsewhere.
Tensor forward_train(Seq2Seq& m, const Batch& b, Device dev, double ratio, Generator& coin_gen) {
  const Tensor src = b.src.to(dev), tin = b.tgt_in.to(dev);
  const Encoded e = m.encode(src, b.lengths);
  Tensor h = e.h, c = e.c;
  if (ratio >= 1.0) return m.decode(tin, h, c, e);
  const int64_t T = tin.size(1);
  const Tensor coins = lt(rand({b.n, T}, {}, &coin_gen), full({b.n, T}, ratio)).to(dev);
  std::vector<Tensor> steps;
  Tensor prev;
  for (int64_t t = 0; t < T; ++t) {
    Tensor tok = tin.select(1, t);
    if (t > 0) tok = where(coins.select(1, t), tok, prev);
    const Tensor logits = m.decode(tok.unsqueeze(1), h, c, e);  // (N, 1, V)
    steps.push_back(logits);
    NoGradGuard ng;
    prev = argmax(logits.select(1, 0), 1).detach();
  }
  return cat(steps, 1);
}

std::string detok(const std::vector<int64_t>& ids, const Vocab& tv) {
  std::string s;
  for (int64_t id : ids) {
    if (id < 4) continue;  // <unk> and the markers are left out of the output
    if (!s.empty()) s += ' ';
    s += tv.words[static_cast<size_t>(id)];
  }
  return s;
}

// Greedy decoding of rows [start, start+len) of `data`: token ids up to </s>.
// --export-onnx: the encoder (src, lengths -> states, padding, h, c) and one decoder step
// (tokens (N, 1), h, c, states, padding -> logits, h, c) as two files, on the first test sentences.
void export_model(const std::string& path, Seq2Seq& m, const std::vector<Example>& te, const Vocab& sv, const Vocab& tv) {
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < std::min<int64_t>(4, static_cast<int64_t>(te.size())); ++i) rows.push_back(i);
  const Batch b = make_batch(te, rows, sv, tv);
  io::ExportOptions eo;
  eo.input_names = {"src", "lengths"};
  eo.output_names = {"states", "padding", "h", "c"};
  eo.dynamic_axes = {{"src", {{0, "batch"}, {1, "src_len"}}}, {"lengths", {{0, "batch"}}}};
  auto encode = [&m](const std::vector<Tensor>& in) {
    const Encoded e = m.encode(in[0], in[1]);
    return std::vector<Tensor>{e.states, e.padding, e.h, e.c};
  };
  example::export_onnx(kProg, path, m, {b.src, b.lengths}, eo, encode);
  Encoded e;
  {
    NoGradGuard ng;
    m.eval();
    e = m.encode(b.src, b.lengths);
    m.train();
  }
  const std::string stem = path.size() > 5 && path.compare(path.size() - 5, 5, ".onnx") == 0 ? path.substr(0, path.size() - 5) : path;
  io::ExportOptions d;
  d.input_names = {"tokens", "h", "c", "states", "padding"};
  d.output_names = {"logits", "h_next", "c_next"};
  d.dynamic_axes = {{"tokens", {{0, "batch"}}},
                    {"h", {{1, "batch"}}},
                    {"c", {{1, "batch"}}},
                    {"states", {{0, "batch"}, {1, "src_len"}}},
                    {"padding", {{0, "batch"}, {1, "src_len"}}}};
  auto step = [&m](const std::vector<Tensor>& in) {
    Encoded enc;
    enc.states = in[3];
    enc.padding = in[4];
    Tensor h = in[1], c = in[2];
    const Tensor logits = m.decode(in[0], h, c, enc);
    return std::vector<Tensor>{logits, h, c};
  };
  const Tensor bos = full({b.n, 1}, static_cast<double>(kBos), DType::i64);
  example::export_onnx(kProg, stem + ".decoder.onnx", m, {bos, e.h, e.c, e.states, e.padding}, d, step);
}

std::vector<std::vector<int64_t>> greedy(Seq2Seq& m, const std::vector<Example>& data, const std::vector<int64_t>& rows,
                                         const Vocab& sv, const Vocab& tv, Device dev, int64_t max_steps) {
  const Batch b = make_batch(data, rows, sv, tv);
  const Encoded e = m.encode(b.src.to(dev), b.lengths);
  Tensor h = e.h, c = e.c;
  std::vector<std::vector<int64_t>> outs(rows.size());
  std::vector<bool> done(rows.size(), false);
  Tensor tok = full({b.n, 1}, static_cast<double>(kBos), DType::i64).to(dev);
  for (int64_t t = 0; t < max_steps; ++t) {
    const Tensor next = argmax(m.decode(tok, h, c, e).select(1, 0), 1);  // (N)
    const std::vector<int64_t> ids = next.to(Device("cpu")).to_vector<int64_t>();
    bool all = true;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (done[i]) continue;
      if (ids[i] == kEos) done[i] = true;
      else outs[i].push_back(ids[i]);
      all = all && done[i];
    }
    if (all) break;
    tok = next.unsqueeze(1);
  }
  return outs;
}

// Beam search over a batch of sentences at once: N sentences x K beams as N*K decoder rows.
// A hypothesis ends at </s>; a sentence is done when K have ended (or at max_steps, when the
// live beams end there). The best by log-prob / length^alpha wins.
std::vector<std::vector<int64_t>> beam_search(Seq2Seq& m, const std::vector<Example>& data, const std::vector<int64_t>& rows,
                                              const Vocab& sv, const Vocab& tv, Device dev, int64_t K, double alpha,
                                              int64_t max_steps) {
  const Batch b = make_batch(data, rows, sv, tv);
  const int64_t N = b.n, V = tv.size();
  const Encoded e0 = m.encode(b.src.to(dev), b.lengths);
  std::vector<int64_t> expand_rows;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) expand_rows.push_back(n);
  const Tensor er = from_vector(expand_rows, {N * K}).to(dev);
  Encoded e;
  e.states = index_select(e0.states, 0, er);
  e.padding = index_select(e0.padding, 0, er);
  Tensor h = index_select(e0.h, 1, er), c = index_select(e0.c, 1, er);
  const double kNeg = -std::numeric_limits<double>::infinity();
  std::vector<double> score(static_cast<size_t>(N * K), kNeg);
  for (int64_t n = 0; n < N; ++n) score[static_cast<size_t>(n * K)] = 0;  // one live beam at the start
  std::vector<std::vector<int64_t>> hist(static_cast<size_t>(N * K));
  struct Final {
    double norm;
    std::vector<int64_t> ids;
  };
  std::vector<std::vector<Final>> finals(static_cast<size_t>(N));
  std::vector<int64_t> tokens(static_cast<size_t>(N * K), kBos);
  auto norm = [&](double s, size_t len) { return s / std::pow(static_cast<double>(len + 1), alpha); };
  for (int64_t t = 0; t < max_steps; ++t) {
    const Tensor tok = from_vector(tokens, {N * K, 1}).to(dev);
    const Tensor lp = log_softmax(m.decode(tok, h, c, e).select(1, 0).to(DType::f32), 1).to(Device("cpu"));
    const std::vector<float> logp = lp.to_vector<float>();
    std::vector<int64_t> origin(static_cast<size_t>(N * K), 0);
    std::vector<double> new_score(static_cast<size_t>(N * K), kNeg);
    std::vector<std::vector<int64_t>> new_hist(static_cast<size_t>(N * K));
    bool any_live = false;
    for (int64_t n = 0; n < N; ++n) {
      auto& fin = finals[static_cast<size_t>(n)];
      if (static_cast<int64_t>(fin.size()) >= K) {
        for (int64_t k = 0; k < K; ++k) origin[static_cast<size_t>(n * K + k)] = n * K;
        continue;
      }
      // The best 2K continuations of this sentence's live beams.
      std::vector<std::pair<double, int64_t>> cand;  // (score, beam * V + word)
      for (int64_t k = 0; k < K; ++k) {
        const size_t row = static_cast<size_t>(n * K + k);
        if (score[row] == kNeg) continue;
        const float* p = logp.data() + row * static_cast<size_t>(V);
        std::vector<std::pair<double, int64_t>> local;
        local.reserve(static_cast<size_t>(V));
        for (int64_t v = 0; v < V; ++v)
          if (v != kPad && v != kBos && v != kUnk) local.emplace_back(score[row] + p[v], k * V + v);
        const size_t take = std::min<size_t>(static_cast<size_t>(2 * K), local.size());
        std::partial_sort(local.begin(), local.begin() + static_cast<std::ptrdiff_t>(take), local.end(),
                          [](const auto& x, const auto& y) { return x.first > y.first; });
        cand.insert(cand.end(), local.begin(), local.begin() + static_cast<std::ptrdiff_t>(take));
      }
      std::sort(cand.begin(), cand.end(), [](const auto& x, const auto& y) { return x.first > y.first || (x.first == y.first && x.second < y.second); });
      int64_t live = 0;
      for (const auto& [s, code] : cand) {
        const int64_t k = code / V, w = code % V;
        const std::vector<int64_t>& prefix = hist[static_cast<size_t>(n * K + k)];
        if (w == kEos) {
          if (static_cast<int64_t>(fin.size()) < K) fin.push_back({norm(s, prefix.size()), prefix});
          continue;
        }
        if (live == K) continue;
        const size_t row = static_cast<size_t>(n * K + live);
        origin[row] = n * K + k;
        new_score[row] = s;
        new_hist[row] = prefix;
        new_hist[row].push_back(w);
        tokens[row] = w;
        ++live;
      }
      for (int64_t k = live; k < K; ++k) origin[static_cast<size_t>(n * K + k)] = n * K;
      if (static_cast<int64_t>(fin.size()) < K && live > 0) any_live = true;
    }
    score = std::move(new_score);
    hist = std::move(new_hist);
    if (!any_live) break;
    const Tensor o = from_vector(origin, {N * K}).to(dev);
    h = index_select(h, 1, o);
    c = index_select(c, 1, o);
  }
  std::vector<std::vector<int64_t>> outs(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) {
    auto& fin = finals[static_cast<size_t>(n)];
    for (int64_t k = 0; k < K; ++k) {  // beams still live at the step limit
      const size_t row = static_cast<size_t>(n * K + k);
      if (score[row] != kNeg && static_cast<int64_t>(fin.size()) < K) fin.push_back({norm(score[row], hist[row].size()), hist[row]});
    }
    if (fin.empty()) continue;
    const auto best = std::max_element(fin.begin(), fin.end(), [](const Final& x, const Final& y) { return x.norm < y.norm; });
    outs[static_cast<size_t>(n)] = best->ids;
  }
  return outs;
}

// Translations of every example in `data` (chunks of `chunk` sentences), as output strings.
std::vector<std::string> translate_all(Seq2Seq& m, const std::vector<Example>& data, const Vocab& sv, const Vocab& tv,
                                       Device dev, int64_t beam, double alpha, int64_t max_len, int64_t limit = -1) {
  m.eval();
  NoGradGuard ng;
  std::vector<std::string> out;
  const int64_t n = limit >= 0 ? std::min<int64_t>(limit, static_cast<int64_t>(data.size())) : static_cast<int64_t>(data.size());
  const int64_t chunk = beam > 1 ? 32 : 128;
  for (int64_t s = 0; s < n; s += chunk) {
    std::vector<int64_t> rows;
    int64_t longest = 1;
    for (int64_t i = s; i < std::min(n, s + chunk); ++i) {
      rows.push_back(i);
      longest = std::max<int64_t>(longest, static_cast<int64_t>(data[static_cast<size_t>(i)].src_tok.size()));
    }
    const int64_t steps = std::min<int64_t>(2 * longest + 5, 2 * max_len + 5);
    const auto ids = beam > 1 ? beam_search(m, data, rows, sv, tv, dev, beam, alpha, steps) : greedy(m, data, rows, sv, tv, dev, steps);
    for (const auto& x : ids) out.push_back(detok(x, tv));
  }
  m.train();
  return out;
}

double bleu_of(const std::vector<std::string>& hyps, const std::vector<Example>& data) {
  std::vector<std::string> refs;
  for (size_t i = 0; i < hyps.size(); ++i) refs.push_back(data[i].tgt);
  return bleu::corpus_bleu(hyps, refs);
}

std::string fmt(double x) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

std::string data_digest(const std::vector<Example>& tr) {
  uint64_t h = 1469598103934665603ULL;
  for (const Example& e : tr)
    for (const std::string* s : {&e.src, &e.tgt}) {
      for (char c : *s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
      h = (h ^ 0x1F) * 1099511628211ULL;
    }
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

void write_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream f(path);
  EMBER_CHECK(static_cast<bool>(f), kProg, "cannot write ", path);
  for (const std::string& l : lines) f << l << '\n';
  EMBER_CHECK(static_cast<bool>(f), kProg, "error writing ", path);
}

int run(const Args& a, Device device) {
  if (a.threads > 0) cpu::set_num_threads(a.threads);
  const auto t0 = std::chrono::steady_clock::now();

  // Data.
  std::vector<pairs::Pair> raw;
  if (!a.tsv.empty()) {
    raw = pairs::read_tsv(a.tsv, kProg);
    example::say("data: %s: %zu pairs (your TSV)\n", a.tsv.c_str(), raw.size());
  } else {
    const std::string path = a.ding.empty() ? a.data_root + "/" + kDing : a.ding;
    EMBER_CHECK(fs::is_regular_file(path), kProg, "missing data file ", path,
                " (fetch it: bash scripts/fetch_data.sh trans-de-en; or pass your own --tsv FILE)");
    pairs::DingStats st;
    raw = pairs::read_ding(path, kProg, 3, &st);
    example::say("data: %s: %lld entries, %lld aligned alternatives, %lld sentence pairs (both sides a sentence of >= 3 words)\n",
                 path.c_str(), static_cast<long long>(st.entries), static_cast<long long>(st.alternatives),
                 static_cast<long long>(st.sentence_pairs));
  }
  std::vector<Example> all;
  int64_t too_long = 0, repeats = 0, empty_tok = 0;
  {
    std::unordered_set<std::string> seen;
    for (const pairs::Pair& p : raw) {
      if (!seen.insert(p.src).second) {
        ++repeats;
        continue;
      }
      Example e{p.src, p.tgt, bleu::tokenize_13a(p.src), bleu::tokenize_13a(p.tgt)};
      if (e.src_tok.empty() || e.tgt_tok.empty()) {
        ++empty_tok;
        continue;
      }
      if (static_cast<int64_t>(e.src_tok.size()) > a.max_len || static_cast<int64_t>(e.tgt_tok.size()) > a.max_len) {
        ++too_long;
        continue;
      }
      all.push_back(std::move(e));
    }
  }
  example::say("kept %zu pairs: %lld repeated source sentences dropped (first kept), %lld with a side over %lld tokens dropped%s\n",
               all.size(), static_cast<long long>(repeats), static_cast<long long>(too_long), static_cast<long long>(a.max_len),
               empty_tok > 0 ? (", " + std::to_string(empty_tok) + " without tokens dropped").c_str() : "");
  EMBER_CHECK(all.size() >= 30, kProg, "too few sentence pairs to train on (", all.size(), "): give more data");

  std::vector<std::string> keys;
  for (const Example& e : all) keys.push_back(source_key(e.src));
  example::SplitIdx idx = example::split_by_key(keys, 0.05, 0.1, a.seed);
  if (a.limit > 0) {
    idx.train.resize(std::min<size_t>(idx.train.size(), static_cast<size_t>(a.limit)));
    const size_t small = std::max<size_t>(8, static_cast<size_t>(a.limit / 8));
    idx.val.resize(std::min(idx.val.size(), small));
    idx.test.resize(std::min(idx.test.size(), small));
  }
  auto take = [&](const std::vector<int64_t>& ix) {
    std::vector<Example> v;
    for (int64_t i : ix) v.push_back(all[static_cast<size_t>(i)]);
    return v;
  };
  const std::vector<Example> tr = take(idx.train), va = take(idx.val), te = take(idx.test);
  EMBER_CHECK(!tr.empty() && !va.empty() && !te.empty(), kProg, "a split is empty: give more sentence pairs");
  {
    std::unordered_set<std::string> train_keys;
    for (int64_t i : idx.train) train_keys.insert(keys[static_cast<size_t>(i)]);
    int64_t shared = 0;
    for (int64_t i : idx.test) shared += train_keys.count(keys[static_cast<size_t>(i)]) > 0;
    example::say("split: train %zu, validation %zu, test %zu pairs (by source sentence, case and punctuation ignored; "
                 "test sources also in train: %lld)\n",
                 tr.size(), va.size(), te.size(), static_cast<long long>(shared));
  }
  std::vector<const std::vector<std::string>*> src_s, tgt_s;
  for (const Example& e : tr) src_s.push_back(&e.src_tok), tgt_s.push_back(&e.tgt_tok);
  const Vocab sv = build_vocab(src_s, a.min_count), tv = build_vocab(tgt_s, a.min_count);
  {
    auto unk_rate = [](const std::vector<Example>& d, const Vocab& v, bool src) {
      int64_t u = 0, n = 0;
      for (const Example& e : d)
        for (const std::string& w : src ? e.src_tok : e.tgt_tok) u += v.id(w) == kUnk, ++n;
      return 100.0 * static_cast<double>(u) / static_cast<double>(std::max<int64_t>(n, 1));
    };
    example::say("vocabulary (train, words seen >= %lld times): German %lld, English %lld; <unk> share on test: "
                 "German %.1f%%, English %.1f%%\n",
                 static_cast<long long>(a.min_count), static_cast<long long>(sv.size()), static_cast<long long>(tv.size()),
                 unk_rate(te, sv, true), unk_rate(te, tv, false));
  }

  // The baseline, same run: the German source copied as the "translation".
  std::vector<std::string> src_copy, refs;
  for (const Example& e : te) src_copy.push_back(e.src), refs.push_back(e.tgt);
  const double baseline = bleu::corpus_bleu(src_copy, refs);
  example::say("baseline: copy the source sentence: test BLEU %.2f\n", baseline);

  // Model.
  Generator init_gen(a.seed), drop_gen(a.seed ^ kDropoutMix), shuffle_gen(a.seed ^ kShuffleMix),
      coin_gen(a.seed ^ kForcingMix);
  auto model = std::make_shared<Seq2Seq>(sv.size(), tv.size(), a.emb, a.hidden, a.dropout, &init_gen, &drop_gen);
  example::say("model: Embedding(%lld) -> BiLSTM(%lld x 2) encoder; LSTM(%lld) decoder with dot-product attention, "
               "Linear(%lld); %lld parameters; AdamW lr %g (warmup, cosine), batch %lld, %lld epochs, teacher forcing "
               "%.2f -> %.2f, device %s, threads %d, amp %s\n",
               static_cast<long long>(a.emb), static_cast<long long>(a.hidden), static_cast<long long>(2 * a.hidden),
               static_cast<long long>(tv.size()), static_cast<long long>(model->parameter_count()), a.lr,
               static_cast<long long>(a.batch), static_cast<long long>(a.epochs), a.tf_start, a.tf_end,
               device.str().c_str(), cpu::num_threads(), example::amp_name(a.amp));
  model->to(device);
  optim::AdamW opt(model->parameters(), {.lr = a.lr, .weight_decay = 1e-4});
  const auto ntr = static_cast<int64_t>(tr.size());
  const int64_t steps = (ntr + a.batch - 1) / a.batch, total_steps = a.epochs * steps;
  optim::WarmupCosineLR sched(opt, {.warmup_steps = std::min<int64_t>(100, total_steps / 5), .total_steps = total_steps,
                                    .min_lr = 0.0, .start_factor = 0.1});
  amp::GradScaler scaler(example::scaler_options(a.amp));

  const std::map<std::string, std::string> identity = {
      {"preset", a.preset},        {"epochs", std::to_string(a.epochs)}, {"batch", std::to_string(a.batch)},
      {"lr", fmt(a.lr)},           {"seed", std::to_string(a.seed)},     {"emb", std::to_string(a.emb)},
      {"hidden", std::to_string(a.hidden)}, {"max_len", std::to_string(a.max_len)},
      {"min_count", std::to_string(a.min_count)}, {"dropout", fmt(a.dropout)}, {"tf_start", fmt(a.tf_start)},
      {"tf_end", fmt(a.tf_end)}, {"amp", example::amp_name(a.amp)}, {"data", data_digest(tr)}};
  std::vector<double> hist_loss, hist_val, hist_tf;
  int64_t first_epoch = 1;
  if (a.resume) {
    io::TrainingState st;
    io::load_checkpoint(a.checkpoint, *model, opt, &sched, st, &scaler);
    example::check_run_identity(kProg, a.checkpoint, st.extra, identity, "resume with the same data and flags");
    st.apply_to(shuffle_gen);
    drop_gen.set_offset(std::stoull(st.extra.at("dropout_offset")));
    coin_gen.set_offset(std::stoull(st.extra.at("coin_offset")));
    hist_loss = example::parse_numbers(kProg, st.extra.at("hist_loss"), a.checkpoint + " train.extra.hist_loss");
    hist_val = example::parse_numbers(kProg, st.extra.at("hist_val"), a.checkpoint + " train.extra.hist_val");
    hist_tf = example::parse_numbers(kProg, st.extra.at("hist_tf"), a.checkpoint + " train.extra.hist_tf");
    first_epoch = st.epoch + 1;
    example::say("resumed from %s: %lld of %lld epochs done\n", a.checkpoint.c_str(), static_cast<long long>(st.epoch),
                 static_cast<long long>(a.epochs));
  }
  const int64_t last_epoch = a.stop_after > 0 ? std::min(a.stop_after, a.epochs) : a.epochs;
  const std::vector<Example> va_dec(va.begin(), va.begin() + std::min<int64_t>(a.val_limit, static_cast<int64_t>(va.size())));

  example::Progress progress(a.epochs, std::max<int64_t>(1, (last_epoch - first_epoch + 1) * steps),
                             std::max<int64_t>(1, steps / 3));
  std::unique_ptr<ember::Profiler> profiler = example::start_profile(a.profile);
  for (int64_t epoch = first_epoch; epoch <= last_epoch; ++epoch) {
    const std::vector<int64_t> perm = example::shuffled_order(ntr, shuffle_gen);
    double loss_sum = 0, tf_sum = 0;
    int64_t tok_sum = 0;
    for (int64_t step = 0; step < steps; ++step) {
      const int64_t start = step * a.batch, len = std::min(a.batch, ntr - start);
      const std::vector<int64_t> rows(perm.begin() + start, perm.begin() + start + len);
      const Batch b = make_batch(tr, rows, sv, tv);
      const int64_t global = (epoch - 1) * steps + step;
      const double ratio = a.tf_start + (a.tf_end - a.tf_start) * static_cast<double>(global) / static_cast<double>(std::max<int64_t>(1, total_steps - 1));
      const Tensor y = b.tgt_out.to(device).reshape({-1});
      Tensor logits, loss;
      {
        amp::AutocastGuard autocast(device, a.amp.value_or(DType::bf16), a.amp.has_value());
        logits = forward_train(*model, b, device, ratio, coin_gen);
        logits = logits.reshape({-1, logits.size(2)});
        loss = nn::cross_entropy(logits, y, nn::CrossEntropyOptions{.ignore_index = kPad});
      }
      opt.zero_grad();
      scaler.scale(loss).backward();
      scaler.unscale_(opt);
      optim::clip_grad_norm_(model->parameters(), a.clip);
      scaler.step(opt);
      scaler.update();
      sched.step();
      if (profiler) profiler->step();
      NoGradGuard ng;
      const double l = loss.item<double>();
      loss_sum += l * static_cast<double>(b.tokens);
      tok_sum += b.tokens;
      tf_sum += ratio;
      const int64_t correct = sum(logical_and(eq(argmax(logits, 1), y), ne(y, zeros_like(y)))).item<int64_t>();
      progress.step(epoch, l, correct, b.tokens);
    }
    const std::vector<std::string> vh = translate_all(*model, va_dec, sv, tv, device, 1, a.length_alpha, a.max_len);
    const double vb = bleu_of(vh, va_dec);
    hist_loss.push_back(loss_sum / static_cast<double>(std::max<int64_t>(tok_sum, 1)));
    hist_val.push_back(vb);
    hist_tf.push_back(tf_sum / static_cast<double>(steps));
    char scale[48] = "";
    if (scaler.is_enabled()) std::snprintf(scale, sizeof scale, " scale %g", scaler.get_scale());
    example::say("epoch %lld/%lld train_loss %.4f teacher_forcing %.3f val_bleu %.2f (greedy, %zu sentences)%s\n",
                 static_cast<long long>(epoch), static_cast<long long>(a.epochs), hist_loss.back(), hist_tf.back(), vb,
                 va_dec.size(), scale);
    if (!a.checkpoint.empty()) {
      io::TrainingState st = io::TrainingState::from(shuffle_gen);
      st.epoch = epoch;
      st.step = epoch * steps;
      st.extra = identity;
      st.extra["dropout_offset"] = std::to_string(drop_gen.offset());
      st.extra["coin_offset"] = std::to_string(coin_gen.offset());
      st.extra["hist_loss"] = example::format_numbers(hist_loss);
      st.extra["hist_val"] = example::format_numbers(hist_val);
      st.extra["hist_tf"] = example::format_numbers(hist_tf);
      io::save_checkpoint(a.checkpoint, *model, opt, &sched, st, &scaler);
    }
  }
  if (profiler) profiler->stop();
  if (!a.plot.empty() && !hist_val.empty()) {
    std::vector<double> val_frac, base_line(hist_val.size(), baseline / 100.0);
    for (double v : hist_val) val_frac.push_back(v / 100.0);
    example::write_svg_plot(a.plot, "translate: German -> English, BiLSTM + attention", "epoch", "loss / (BLEU / 100)",
                            {{"train loss (per token)", hist_loss},
                             {"validation BLEU / 100 (greedy)", val_frac},
                             {"teacher forcing ratio", hist_tf},
                             {"copy-source BLEU / 100 (test)", base_line}});
    example::say("plot: %s\n", a.plot.c_str());
  }
  if (last_epoch < a.epochs) {
    example::say("stopped after epoch %lld of %lld (--stop-after); continue with --resume\n",
                 static_cast<long long>(last_epoch), static_cast<long long>(a.epochs));
    return 0;
  }

  // Test: the model after the last epoch (nothing is chosen on the test set).
  const auto td = std::chrono::steady_clock::now();
  const std::vector<std::string> g = translate_all(*model, te, sv, tv, device, 1, a.length_alpha, a.max_len);
  const double tg = std::chrono::duration<double>(std::chrono::steady_clock::now() - td).count();
  const bleu::Stats gs = bleu::corpus_stats(g, refs);
  std::vector<std::string> bm;
  double tb = 0;
  bleu::Stats bs;
  if (a.beam > 1) {
    const auto tbs = std::chrono::steady_clock::now();
    bm = translate_all(*model, te, sv, tv, device, a.beam, a.length_alpha, a.max_len);
    tb = std::chrono::duration<double>(std::chrono::steady_clock::now() - tbs).count();
    bs = bleu::corpus_stats(bm, refs);
  }
  const auto describe = [](const bleu::Stats& s) {
    const auto p = s.precisions();
    char buf[160];
    std::snprintf(buf, sizeof buf, "%.2f (%.1f/%.1f/%.1f/%.1f BP %.3f ratio %.3f hyp_len %lld ref_len %lld)", s.score(), p[0], p[1],
                  p[2], p[3], s.brevity_penalty(), static_cast<double>(s.hyp_len) / static_cast<double>(std::max<int64_t>(1, s.ref_len)),
                  static_cast<long long>(s.hyp_len), static_cast<long long>(s.ref_len));
    return std::string(buf);
  };
  for (int64_t i = 0; i < std::min<int64_t>(a.show, static_cast<int64_t>(te.size())); ++i) {
    const auto k = static_cast<size_t>(i);
    example::say("example %lld\n  source:    %s\n  reference: %s\n  greedy:    %s\n", static_cast<long long>(i + 1),
                 te[k].src.c_str(), te[k].tgt.c_str(), g[k].c_str());
    if (a.beam > 1) example::say("  beam %lld:    %s\n", static_cast<long long>(a.beam), bm[k].c_str());
  }
  example::say("test BLEU (%zu sentences, sacrebleu-style 13a corpus BLEU): greedy %s [%.1f s]\n", te.size(),
               describe(gs).c_str(), tg);
  if (a.beam > 1)
    example::say("test BLEU: beam %lld %s [%.1f s]\n", static_cast<long long>(a.beam), describe(bs).c_str(), tb);
  example::say("test BLEU: copy-the-source baseline %s\n", describe(bleu::corpus_stats(src_copy, refs)).c_str());
  if (!a.write_hyp.empty()) {
    fs::create_directories(a.write_hyp);
    std::vector<std::string> src;
    for (const Example& e : te) src.push_back(e.src);
    write_lines(a.write_hyp + "/src.txt", src);
    write_lines(a.write_hyp + "/ref.txt", refs);
    write_lines(a.write_hyp + "/greedy.txt", g);
    write_lines(a.write_hyp + "/baseline.txt", src_copy);
    if (a.beam > 1) write_lines(a.write_hyp + "/beam.txt", bm);
    std::ofstream f(a.write_hyp + "/ember_bleu.txt");
    f << "greedy " << fmt(gs.score()) << "\nbaseline " << fmt(baseline) << "\n";
    if (a.beam > 1) f << "beam " << fmt(bs.score()) << "\n";
    example::say("hypotheses and references written to %s\n", a.write_hyp.c_str());
  }
  if (!a.export_onnx.empty()) export_model(a.export_onnx, *model, te, sv, tv);
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  example::say("total time %.1f s\n", total);
  const double model_bleu = a.beam > 1 ? bs.score() : gs.score();
  std::vector<std::pair<std::string, double>> result = {{"bleu", model_bleu}, {"baseline_bleu", baseline}, {"greedy_bleu", gs.score()}};
  if (a.beam > 1) result.emplace_back("beam_bleu", bs.score());
  example::print_result(result);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return example::run_main(kProg, argc, argv, parse_args, usage, run); }
