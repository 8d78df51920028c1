// gpt: a GPT-2-style decoder language model trained on the King James Bible (Debian's
// sword-text-kjv) and the GCIDE dictionary (dict-gcide), byte-level or with a small byte-pair
// encoding learned from the training text.
//
//   gpt [--preset small|g6] [--bpe N] [--device cpu|cuda|fake] [--amp bf16|f16|off] ...
//
// Model (GPT-2's shape): token embedding wte + learned positions wpe, pre-norm blocks
//   x = x + proj(causal_attention(qkv(ln1(x))));  x = x + out(gelu_tanh(fc(ln2(x))))   (fc: 4d)
// then a final LayerNorm and an output layer tied to wte (logits = ln(x) wte^T). The parameter
// names are those of the PyTorch model in bench/g6_gpt_torch.py. GPT-2's init: every weight
// N(0, 0.02^2), biases zero, the two residual projections (proj, out) scaled by 1/sqrt(2 layers).
// Training: AdamW (betas 0.9, 0.95; weight decay 0.1 on matrices and embeddings only), linear
// warm-up then cosine decay, gradient norm clipped at 1.
//
// Data: the 31,102 verses (one a line) and GCIDE's entries (pronunciations and source tags
// removed, as examples/word2vec reads them; the first --gcide-mb MB of it), or --text FILE.
// The text is cut into 64 KiB blocks and every 50th block is held out (2%), the same blocks
// whatever the tokeniser. The baseline is a byte bigram model (interpolated with the byte
// frequencies) counted on the training text and scored on the held-out text, in bits per byte;
// the model's held-out loss is reported in bits per byte too (nats per token times tokens per
// byte), so byte-level and BPE runs compare.
//
// --preset g6 is the G6 workload (12 layers, d 768, 12 heads, T 1024, batch 8): its vocabulary is
// padded to 50304 rows with the byte (or BPE) ids inside; the padding rows are never a target.
//
// The training step is one function of static tensors (the batch is copied into fixed input
// buffers, the loss lands in a fixed output tensor), the shape a captured CUDA graph replays.
// Checkpoints (--checkpoint, --resume, --stop-after) hold the model, AdamW moments, schedule,
// loss scaler, data generator, the BPE merges and the curves: a resumed run ends bit for bit
// where the run that was never stopped does (same device and threads).
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "../char_lm/sword_ztext.h"
#include "../common/cli.h"
#include "../common/flags.h"
#include "../common/profile.h"
#include "../common/report.h"
#include "../common/training.h"
#include "bpe.h"
#include "ember/cuda_graph.h"
#include "ember/ember.h"
#include "model.h"

using namespace ember;
namespace fs = std::filesystem;
using gpt::GPT;

namespace {

constexpr const char* kProg = "gpt";
constexpr const char* kKjv = "/usr/share/sword/modules/texts/ztext/engKJV2006eb";
constexpr const char* kGcide = "dict-gcide/usr/share/dictd/gcide.dict.dz";

struct Args {
  std::string preset = "small";
  std::string kjv = kKjv;
  std::string data_root = example::default_data_root();
  std::string text;  // own plain text instead of KJV + GCIDE
  std::string device = "cpu";
  std::string checkpoint = "gpt.ckpt.safetensors";
  std::string plot;
  std::string profile;
  std::string prompt = "And God said";
  double gcide_mb = 4;
  int64_t bpe = 0;    // merges; 0 = bytes
  int64_t vocab = 0;  // padded vocabulary rows (0: the tokeniser's)
  int64_t d_model = 96, layers = 3, heads = 3, context = 64, batch = 16, steps = 1500;
  double lr = 4e-3, minutes = 4.0, temperature = 0.7, weight_decay = 0.1;
  int64_t warmup = -1, warmup_default = 60, log_every = 100, eval_every = 250, eval_windows = 64, sample = 300,
          threads = 0;
  int64_t stop_after = 0;
  uint64_t seed = 1234;
  bool resume = false, help = false, dist = false, cuda_graph = false;
  std::optional<DType> amp;
};

void apply_preset(Args& a, const std::string& name) {
  EMBER_CHECK(name == "small" || name == "g6", kProg, "unknown --preset \"", name, "\" (small or g6)");
  a.preset = name;
  if (name == "g6") {  // the G6 workload: GPT-2 small on a GPU
    a.d_model = 768, a.layers = 12, a.heads = 12, a.context = 1024, a.batch = 8, a.vocab = 50304;
    a.steps = 5000, a.lr = 6e-4, a.warmup_default = 200, a.minutes = 0, a.gcide_mb = 0;
    a.log_every = 50, a.eval_every = 500, a.eval_windows = 64;
  }
}

void usage(std::ostream& o) {
  o << "usage: gpt [options]\n"
       "  --preset P         small (default; 2 CPU cores, ~4 min) or g6 (GPT-2 small, a GPU); later flags override it\n"
       "  --kjv DIR          SWORD zText module (default "
    << kKjv
    << ";\n"
       "                     apt-get install sword-text-kjv)\n"
       "  --data-root DIR    fetched Debian data (default "
    << example::default_data_root()
    << "; GCIDE from\n"
       "                     bash scripts/fetch_data.sh dict-gcide)\n"
       "  --gcide-mb X       megabytes of GCIDE text used (small: 4; 0 = all of it, 29.8 MB)\n"
       "  --text FILE        train on this plain UTF-8 text instead of KJV + GCIDE\n"
       "  --bpe N            byte-pair encoding with N merges learned from the training text (default 0: bytes)\n"
       "  --vocab N          pad the embedding/output rows to N (g6: 50304)\n"
       "  --d-model N --layers N --heads N             model size (small: 96, 3, 3)\n"
       "  --context N        tokens per training window (small: 64)\n"
       "  --batch N          windows per step (small: 16)\n"
       "  --steps N          optimizer steps (small: 1500)\n"
       "  --minutes X        also stop after X minutes of training (small: 4; 0 = no limit)\n"
       "  --lr X             peak AdamW learning rate (small: 4e-3); --warmup N steps (small: 60 or a tenth of "
       "--steps), then cosine\n"
       "  --weight-decay X   AdamW weight decay on matrices and embeddings (default 0.1)\n"
       "  --log-every N --eval-every N --eval-windows N  progress, held-out evaluation (small: 100, 250, 64)\n"
       "  --sample N         tokens generated at the end (default 300)\n"
       "  --prompt TEXT      what the generated text continues (default \"And God said\")\n"
       "  --temperature X    sampling temperature (default 0.7)\n"
       "  --seed N           initialisation, data order and sampling seed (default 1234)\n"
       "  --threads N        OpenMP threads (default: OpenMP's)\n"
       "  --device D         cpu, cuda or cuda:N (default cpu); fake = the stand-in test device\n"
       "  --amp M            mixed precision: bf16, f16 (with dynamic loss scaling) or off (default off)\n"
       "  --checkpoint PATH  checkpoint file (default gpt.ckpt.safetensors; \"\" = none)\n"
       "  --resume           continue from --checkpoint (same flags)\n"
       "  --stop-after N     stop after step N with a checkpoint, as if interrupted (then --resume)\n"
       "  --plot FILE        SVG of the training and held-out curves (bits per byte)\n"
       "  --profile FILE     profile the training loop: Chrome trace to FILE, top-ops table at the end\n"
       "  --cuda-graph       capture the training step once and replay it (CUDA; or the stand-in fake)\n"
       "  --dist             data-parallel: run under mpirun/srun; --batch stays the global batch\n";
}

Args parse_args(int argc, char** argv) {
  Args a;
  example::Flags f(kProg);
  f.preset([&](const std::string& v) { apply_preset(a, v); });  // later flags override it
  f.boolean("--resume", &a.resume).boolean("--dist", &a.dist).boolean("--cuda-graph", &a.cuda_graph);
  f.text("--kjv", &a.kjv).text("--data-root", &a.data_root).real("--gcide-mb", &a.gcide_mb, 0.0, false);
  f.text("--text", &a.text).integer("--bpe", &a.bpe, 0).integer("--vocab", &a.vocab, 0);
  f.text("--device", &a.device).text("--checkpoint", &a.checkpoint).text("--plot", &a.plot);
  f.text("--profile", &a.profile).text("--prompt", &a.prompt);
  f.integer("--d-model", &a.d_model, 1).integer("--layers", &a.layers, 1).integer("--heads", &a.heads, 1);
  f.integer("--context", &a.context, 2).integer("--batch", &a.batch, 1).integer("--steps", &a.steps, 1);
  f.real("--minutes", &a.minutes, 0.0, false).real("--lr", &a.lr, 0.0, false).integer("--warmup", &a.warmup, 0);
  f.real("--weight-decay", &a.weight_decay, 0.0, false);
  f.integer("--log-every", &a.log_every, 1).integer("--eval-every", &a.eval_every, 1);
  f.integer("--eval-windows", &a.eval_windows, 1);
  f.integer("--sample", &a.sample, 0).real("--temperature", &a.temperature, 0.0, false);
  f.integer("--seed", &a.seed, 0).integer("--threads", &a.threads, 1).integer("--stop-after", &a.stop_after, 1);
  f.amp("--amp", &a.amp);
  a.help = f.parse(argc, argv);
  EMBER_CHECK(a.d_model % a.heads == 0, kProg, "--d-model ", a.d_model, " must be a multiple of --heads ", a.heads);
  if (a.warmup < 0) a.warmup = std::min(a.warmup_default, a.steps / 10);  // short runs: a tenth of them
  EMBER_CHECK(a.warmup < a.steps, kProg, "--warmup ", a.warmup, " must be below --steps ", a.steps);
  EMBER_CHECK(a.bpe <= 4096, kProg, "--bpe ", a.bpe, " is more merges than this simple trainer is meant for (<= 4096)");
  EMBER_CHECK(a.vocab == 0 || a.vocab >= 256 + a.bpe, kProg, "--vocab ", a.vocab, " is below the tokeniser's ",
              256 + a.bpe, " ids");
  EMBER_CHECK(!a.resume || !a.checkpoint.empty(), kProg, "--resume needs a --checkpoint path");
  return a;
}

// --- data -------------------------------------------------------------------------------------

// A gzip (dictzip) or plain file, whole.
std::string read_gz(const std::string& path) {
  EMBER_CHECK(fs::is_regular_file(path), kProg, "missing file ", path,
              path.find("dict-gcide") != std::string::npos ? " (fetch it: bash scripts/fetch_data.sh dict-gcide)" : "");
  gzFile f = gzopen(path.c_str(), "rb");
  EMBER_CHECK(f != nullptr, kProg, "cannot open ", path);
  std::string out;
  std::vector<char> buf(1 << 20);
  int got = 0;
  while ((got = gzread(f, buf.data(), static_cast<unsigned>(buf.size()))) > 0) out.append(buf.data(), got);
  int err = 0;
  const std::string msg = gzerror(f, &err);
  gzclose(f);
  EMBER_CHECK(got == 0 && (err == Z_OK || err == Z_STREAM_END), kProg, path, ": corrupt gzip data (", msg, ")");
  return out;
}

// GCIDE's dictd text as plain lines: the database notice before the first entry goes,
// pronunciations (\...\) and source tags ([1913 Webster], [WordNet 1.5], [PJC]) go, accent marks
// inside {cross references} go. Stops after `limit` bytes of output (0 = all).
std::string clean_gcide(const std::string& raw, size_t limit) {
  std::string out;
  bool started = false;
  size_t pos = 0;
  while (pos < raw.size() && (limit == 0 || out.size() < limit)) {
    size_t e = raw.find('\n', pos);
    if (e == std::string::npos) e = raw.size();
    const std::string line = raw.substr(pos, e - pos);
    pos = e + 1;
    if (!started) {  // the first "Word \pron\" entry line
      const size_t b = line.find(" \\");
      if (line.empty() || line[0] == ' ' || b == std::string::npos || line.find('\\', b + 2) == std::string::npos)
        continue;
      started = true;
    }
    std::string s;
    bool pron = false, brace = false;
    for (size_t i = 0; i < line.size(); ++i) {
      const char c = line[i];
      if (c == '\\') {
        pron = !pron;
        continue;
      }
      if (pron || c == '\r') continue;
      if (c == '[') {
        const size_t close = line.find(']', i);
        if (close != std::string::npos) {
          const std::string tag = line.substr(i, close - i);
          if (tag.find("Webster") != std::string::npos || tag.find("WordNet") != std::string::npos ||
              tag.find("PJC") != std::string::npos) {
            i = close;
            continue;
          }
        }
      }
      if (c == '{') brace = true;
      if (c == '}') brace = false;
      if (brace && (c == '*' || c == '"' || c == '`' || c == '\'')) continue;
      s.push_back(c);
    }
    // Collapse the dictd indentation and runs of spaces; blank lines separate entries.
    std::string t;
    for (char c : s)
      if (!(c == ' ' || c == '\t') || (!t.empty() && t.back() != ' ')) t.push_back(c == '\t' ? ' ' : c);
    while (!t.empty() && t.back() == ' ') t.pop_back();
    if (t.empty() && (out.empty() || out.back() == '\n')) {
      if (!out.empty() && out.size() >= 2 && out[out.size() - 2] != '\n') out.push_back('\n');
      continue;
    }
    out += t;
    out.push_back('\n');
  }
  return out;
}

// A plain text file: must be text (no NUL byte).
std::string read_text(const std::string& path) {
  EMBER_CHECK(fs::is_regular_file(path), kProg, "missing file ", path);
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  const size_t nul = s.find('\0');
  if (nul != std::string::npos) {
    const auto line = 1 + std::count(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(nul), '\n');
    EMBER_FAIL(kProg, path, ":", line, ": NUL byte (a binary file? --text expects plain UTF-8 text)");
  }
  return s;
}

struct Corpus {
  std::string train, val;  // the text, split by blocks
  std::string source;
};

constexpr size_t kBlock = 64 * 1024;
constexpr size_t kHoldEvery = 50;

Corpus load_corpus(const Args& a) {
  std::vector<std::pair<std::string, std::string>> parts;  // (name, text)
  if (!a.text.empty()) {
    parts.emplace_back(a.text, read_text(a.text));
  } else {
    std::vector<std::string> verses;
    try {
      verses = sword::read_verses(a.kjv);
    } catch (const std::exception& e) {
      EMBER_FAIL(kProg, e.what(), " (install Debian's sword-text-kjv package or pass --kjv DIR)");
    }
    std::string kjv;
    for (const std::string& v : verses) kjv += v + "\n";
    parts.emplace_back("KJV (" + std::to_string(verses.size()) + " verses)", std::move(kjv));
    const std::string gpath = a.data_root + "/" + kGcide;
    const std::string gcide = clean_gcide(read_gz(gpath), static_cast<size_t>(a.gcide_mb * 1e6));
    EMBER_CHECK(gcide.size() > 1000, kProg, gpath, ": no GCIDE entries found (a damaged or different file?)");
    parts.emplace_back("GCIDE", gcide);
  }
  Corpus c;
  for (const auto& [name, text] : parts) {
    for (size_t b = 0, k = 0; b < text.size(); b += kBlock, ++k)
      (k % kHoldEvery == kHoldEvery - 1 ? c.val : c.train) += text.substr(b, kBlock);
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s%s %.2f MB", c.source.empty() ? "" : " + ", name.c_str(),
                  static_cast<double>(text.size()) / 1e6);
    c.source += buf;
  }
  EMBER_CHECK(!c.val.empty(), kProg, "the text (", c.train.size(), " bytes) is too short to hold out a block of ",
              kBlock, " bytes: every ", kHoldEvery, "th block is held out");
  return c;
}

// Byte bigram model, interpolated with the byte frequencies (add-one): bits per byte on `val`.
// Also returns the unigram figure.
std::pair<double, double> bigram_baseline(const std::string& train, const std::string& val) {
  std::vector<double> uni(256, 1.0), bi(256 * 256, 0.0), ctx(256, 0.0);
  for (size_t i = 0; i < train.size(); ++i) {
    const auto b = static_cast<unsigned char>(train[i]);
    uni[b] += 1;
    if (i > 0) {
      const auto p = static_cast<unsigned char>(train[i - 1]);
      bi[p * 256 + b] += 1;
      ctx[p] += 1;
    }
  }
  const double total = static_cast<double>(train.size()) + 256.0;
  constexpr double kAlpha = 8.0;  // weight of the unigram prior in each context
  double bits_bi = 0, bits_uni = 0;
  for (size_t i = 1; i < val.size(); ++i) {
    const auto p = static_cast<unsigned char>(val[i - 1]), b = static_cast<unsigned char>(val[i]);
    const double pu = uni[b] / total;
    bits_uni -= std::log2(pu);
    bits_bi -= std::log2((bi[p * 256 + b] + kAlpha * pu) / (ctx[p] + kAlpha));
  }
  const auto n = static_cast<double>(val.size() - 1);
  return {bits_bi / n, bits_uni / n};
}

// --- batches and evaluation ---------------------------------------------------------------------

// (B, T) inputs and targets of the windows starting at `starts` in `ids`.
std::pair<Tensor, Tensor> make_batch(const std::vector<int32_t>& ids, const std::vector<int64_t>& starts, int64_t T) {
  const auto B = static_cast<int64_t>(starts.size());
  std::vector<int64_t> x(static_cast<size_t>(B * T)), y(static_cast<size_t>(B * T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      x[static_cast<size_t>(b * T + t)] = ids[static_cast<size_t>(starts[static_cast<size_t>(b)] + t)];
      y[static_cast<size_t>(b * T + t)] = ids[static_cast<size_t>(starts[static_cast<size_t>(b)] + t + 1)];
    }
  return {from_vector(x, {B, T}), from_vector(y, {B, T})};
}

// Bytes the targets of these windows stand for (tokens/byte for the bits-per-byte figures).
double target_bytes(const gpt::Tokenizer& tok, const std::vector<int32_t>& ids, const std::vector<int64_t>& starts,
                    int64_t T) {
  double n = 0;
  for (int64_t s : starts)
    for (int64_t t = 1; t <= T; ++t) n += static_cast<double>(tok.bytes_of(ids[static_cast<size_t>(s + t)]).size());
  return n;
}

struct Eval {
  double loss = 0;           // nats per token
  double bits_per_byte = 0;  // the same text, per byte
};

// Mean loss over fixed, evenly spaced windows of the held-out tokens.
Eval evaluate(GPT& model, const gpt::Tokenizer& tok, const std::vector<int32_t>& val, const Args& a, Device device) {
  model.eval();
  NoGradGuard no_grad;
  const int64_t T = a.context, n = static_cast<int64_t>(val.size());
  EMBER_CHECK(n > T + 1, kProg, "held-out text (", n, " tokens) is shorter than --context ", T);
  const int64_t windows_n = std::min<int64_t>(a.eval_windows, (n - 1) / T);
  const int64_t stride = (n - T - 1) / std::max<int64_t>(1, windows_n - 1);
  double nats = 0, bytes = 0;
  for (int64_t s = 0; s < windows_n; s += a.batch) {
    std::vector<int64_t> starts;
    for (int64_t w = s; w < std::min(windows_n, s + a.batch); ++w) starts.push_back(std::min(w * stride, n - T - 1));
    auto [x, y] = make_batch(val, starts, T);
    amp::AutocastGuard autocast(device, a.amp.value_or(DType::bf16), a.amp.has_value());
    Tensor logits = model.forward(x.to(device));
    Tensor loss = nn::cross_entropy(logits.reshape({-1, logits.size(2)}), y.to(device).reshape({-1}));
    nats += loss.item<double>() * static_cast<double>(starts.size() * T);
    bytes += target_bytes(tok, val, starts, T);
  }
  model.train();
  const auto tokens = static_cast<double>(windows_n * T);
  return {nats / tokens, nats / bytes / std::log(2.0)};
}

// Continues `prompt` by `n` tokens, each drawn from softmax(logits / temperature) over the
// tokeniser's ids (padding rows left out).
std::string generate(GPT& model, const gpt::Tokenizer& tok, const Args& a, Device device) {
  model.eval();
  NoGradGuard no_grad;
  std::vector<int32_t> ids = tok.encode(a.prompt);
  if (ids.empty()) ids.push_back('\n');
  const int64_t V = tok.vocab_size();
  std::mt19937_64 rng(a.seed);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  std::vector<int32_t> out;
  for (int64_t i = 0; i < a.sample; ++i) {
    const int64_t L = std::min<int64_t>(static_cast<int64_t>(ids.size()), a.context);
    std::vector<int64_t> window(ids.end() - L, ids.end());
    Tensor logits = model.forward(from_vector(window, {1, L}).to(device));  // (1, L, Vpad)
    Tensor last = logits.select(1, L - 1).reshape({-1}).narrow(0, 0, V).to(Device::cpu()).to(DType::f64);
    const std::vector<double> p = softmax(last / std::max(a.temperature, 1e-3), 0).to_vector<double>();
    const double r = uni(rng);
    double acc = 0;
    int32_t pick = static_cast<int32_t>(V - 1);
    for (size_t k = 0; k < p.size(); ++k) {
      acc += p[k];
      if (r < acc) {
        pick = static_cast<int32_t>(k);
        break;
      }
    }
    ids.push_back(pick);
    out.push_back(pick);
  }
  model.train();
  return a.prompt + tok.decode(out);
}

// What --resume must agree on.
std::map<std::string, std::string> run_identity(const Args& a) {
  char lr[32], wd[32], gm[32];
  std::snprintf(lr, sizeof lr, "%.17g", a.lr);
  std::snprintf(wd, sizeof wd, "%.17g", a.weight_decay);
  std::snprintf(gm, sizeof gm, "%.17g", a.gcide_mb);
  return {{"preset", a.preset},
          {"text", a.text.empty() ? "kjv+gcide:" + std::string(gm) : a.text},
          {"bpe", std::to_string(a.bpe)},
          {"vocab", std::to_string(a.vocab)},
          {"model", std::to_string(a.d_model) + "x" + std::to_string(a.layers) + "x" + std::to_string(a.heads)},
          {"context", std::to_string(a.context)},
          {"batch", std::to_string(a.batch)},
          {"steps", std::to_string(a.steps)},
          {"warmup", std::to_string(a.warmup)},
          {"lr", lr},
          {"weight_decay", wd},
          {"seed", std::to_string(a.seed)},
          {"amp", example::amp_name(a.amp)}};
}

std::string extra_or(const std::map<std::string, std::string>& m, const std::string& k) {
  const auto it = m.find(k);
  return it == m.end() ? "" : it->second;
}

int run(const Args& a, Device device) {
  if (a.threads > 0) cpu::set_num_threads(static_cast<int>(a.threads));
  cpu::set_flush_denormal(true);  // tiny late-training gradients: denormals are a slow path on x86
  const auto t0 = std::chrono::steady_clock::now();
  const Corpus corpus = load_corpus(a);
  const auto [baseline_bpb, unigram_bpb] = bigram_baseline(corpus.train, corpus.val);
  example::say("data: %s; %zu bytes train, %zu held out (every %zuth 64 KiB block)\n", corpus.source.c_str(),
               corpus.train.size(), corpus.val.size(), kHoldEvery);
  example::say("baseline: byte bigram %.3f bits/byte on the held-out text (byte frequencies alone %.3f)\n",
               baseline_bpb, unigram_bpb);

  const int64_t V = std::max<int64_t>(256 + a.bpe, a.vocab);
  Generator init_gen(a.seed), data_gen(a.seed ^ 0x5eed5eedULL);
  GPT model(V, a.context, a.layers, a.d_model, a.heads, &init_gen);
  model.to(device);
  std::optional<nn::DistributedDataParallel> ddp;
  if (a.dist) {
    ddp.emplace(model);
    example::say("dist: %d ranks (rank 0 prints), %d gradient buckets, global batch %lld\n", dist::world_size(),
                 static_cast<int>(ddp->num_buckets()), static_cast<long long>(a.batch));
  }
  optim::AdamW opt(gpt::param_groups(model, a.weight_decay),
                   {.lr = a.lr, .beta1 = 0.9, .beta2 = 0.95, .weight_decay = 0.0});
  optim::WarmupCosineLR sched(opt, {.warmup_steps = a.warmup, .total_steps = a.steps, .min_lr = a.lr / 10});
  amp::GradScaler scaler(example::scaler_options(a.amp));
  const auto identity = run_identity(a);
  int64_t step = 0;
  std::vector<double> curve_train, curve_val;  // bits per byte at each evaluation
  std::optional<gpt::Tokenizer> tok;
  if (a.resume) {
    io::TrainingState st;
    io::load_checkpoint(a.checkpoint, model, opt, &sched, st, &scaler);
    example::check_run_identity(kProg, a.checkpoint, st.extra, identity, "resume with the same flags");
    st.apply_to(data_gen);
    step = st.step;
    try {
      tok = gpt::Tokenizer::from_merges_text(extra_or(st.extra, "bpe_merges"));
    } catch (const std::exception& e) {
      EMBER_FAIL(kProg, a.checkpoint, ": train.extra.bpe_merges: ", e.what());
    }
    curve_train = example::parse_numbers(kProg, extra_or(st.extra, "curve_train"), "curve_train");
    curve_val = example::parse_numbers(kProg, extra_or(st.extra, "curve_val"), "curve_val");
    example::say("resumed from %s at step %lld\n", a.checkpoint.c_str(), static_cast<long long>(step));
  } else if (a.bpe > 0) {
    const auto tb = std::chrono::steady_clock::now();
    // The merges are learned on about 4 MB of the training text, evenly spread 64 KiB blocks (so
    // both sources have their say): enough for the frequent pairs, and seconds, not minutes.
    const size_t stride = (corpus.train.size() + 3'999'999) / 4'000'000;
    std::string sample;
    for (size_t b = 0, k = 0; b < corpus.train.size(); b += kBlock, ++k)
      if (k % stride == 0) sample += corpus.train.substr(b, kBlock);
    tok = gpt::Tokenizer::train(sample, a.bpe);
    example::say("bpe: %zu merges learned in %.1f s\n", tok->merges().size(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - tb).count());
  } else {
    tok.emplace();
  }
  const std::vector<int32_t> train_ids = tok->encode(corpus.train), val_ids = tok->encode(corpus.val);
  example::say("tokens: %s, %lld ids (%lld in the model), %zu train tokens (%.2f bytes/token), %zu held out\n",
               a.bpe > 0 ? "bpe" : "bytes", static_cast<long long>(tok->vocab_size()), static_cast<long long>(V),
               train_ids.size(), static_cast<double>(corpus.train.size()) / static_cast<double>(train_ids.size()),
               val_ids.size());
  example::say("model: GPT, d_model %lld, %lld layers, %lld heads, context %lld, %lld parameters\n",
               static_cast<long long>(a.d_model), static_cast<long long>(a.layers), static_cast<long long>(a.heads),
               static_cast<long long>(a.context), static_cast<long long>(model.parameter_count()));
  example::say("AdamW lr %g (warm-up %lld, cosine), batch %lld, %lld steps%s; device %s%s, %d threads\n", a.lr,
               static_cast<long long>(a.warmup), static_cast<long long>(a.batch), static_cast<long long>(a.steps),
               a.minutes > 0 ? " or the --minutes limit" : "", device.str().c_str(),
               a.amp ? (std::string(", amp ") + example::amp_name(a.amp)).c_str() : "", cpu::num_threads());

  auto save = [&] {
    if (a.checkpoint.empty() || dist::rank() != 0) return;
    io::TrainingState st = io::TrainingState::from(data_gen);
    st.step = step;
    st.extra = identity;
    st.extra["bpe_merges"] = tok->merges_text();
    st.extra["curve_train"] = example::format_numbers(curve_train);
    st.extra["curve_val"] = example::format_numbers(curve_val);
    io::save_checkpoint(a.checkpoint, model, opt, &sched, st, &scaler);
  };

  // The step reads its batch from static buffers and leaves the loss in a static tensor.
  const int64_t T = a.context, n_train = static_cast<int64_t>(train_ids.size());
  EMBER_CHECK(n_train > T + 1, kProg, "training text (", n_train, " tokens) is shorter than --context ", T);
  Tensor in_x, in_y, loss_out = zeros({}, TensorOptions(DType::f32).with_device(device));
  double in_weight = 1.0;
  auto train_step = [&] {
    Tensor loss;
    {
      // --amp: GEMMs and attention in the low dtype; softmax, norms and the loss in f32.
      amp::AutocastGuard autocast(device, a.amp.value_or(DType::bf16), a.amp.has_value());
      Tensor logits = model.forward(in_x);
      loss = nn::cross_entropy(logits.reshape({-1, V}), in_y.reshape({-1}));
    }
    opt.zero_grad();
    scaler.scale(in_weight == 1.0 ? loss : loss * in_weight).backward();
    scaler.unscale_(opt);  // clip the true gradients
    optim::clip_grad_norm_(model.parameters(), 1.0);
    scaler.step(opt);
    scaler.update();
    loss_out.copy_(loss.detach());
  };
  std::optional<cuda::StepGraph> graph;  // --cuda-graph
  if (a.cuda_graph) example::say("cuda graph: the training step is captured after 3 eager steps, then replayed\n");
  std::unique_ptr<Profiler> prof = example::start_profile(a.profile);

  const auto train_start = std::chrono::steady_clock::now();
  auto window_start = train_start;
  double loss_sum = 0, bytes_sum = 0, tokens_sum = 0, curve_nats = 0, curve_bytes = 0;
  double train_seconds = 0, train_tokens = 0;  // throughput over the whole run, evaluation left out
  int64_t window_steps = 0;
  Eval val{NAN, NAN};
  while (step < a.steps) {
    const std::vector<int64_t> all = randint(0, n_train - T - 1, {a.batch}, DType::i64, &data_gen).to_vector<int64_t>();
    const example::Shard mine = example::shard_of(from_vector(all, {a.batch}));
    const std::vector<int64_t> starts = mine.rows.to_vector<int64_t>();
    auto [x, y] = make_batch(train_ids, starts, T);
    if (!in_x.defined()) {  // a rank's share of the batch has one size all run long
      in_x = zeros(x.shape(), TensorOptions(DType::i64).with_device(device));
      in_y = zeros(y.shape(), TensorOptions(DType::i64).with_device(device));
      in_weight = mine.weight;
      if (a.cuda_graph) graph.emplace(device, train_step, cuda::StepGraphOptions{.static_inputs = {&in_x, &in_y}});
    }
    in_x.copy_(x.to(device));
    in_y.copy_(y.to(device));
    if (graph)
      graph->run();  // eager warm-up steps, then one capture, then replays
    else
      train_step();
    if (prof) prof->step();
    sched.step();
    ++step;
    const double l = loss_out.item<double>();
    const double nb = mine.count > 0 ? target_bytes(*tok, train_ids, starts, T) : 0.0;
    const auto nt = static_cast<double>(mine.count * T);
    {
      const std::vector<double> tot = example::sum_over_ranks({l * nt, nb, nt});
      loss_sum += tot[0], bytes_sum += tot[1], tokens_sum += tot[2];
      curve_nats += tot[0], curve_bytes += tot[1];
    }
    ++window_steps;

    const auto now = std::chrono::steady_clock::now();
    const double minutes = std::chrono::duration<double>(now - train_start).count() / 60.0;
    bool out_of_time = a.minutes > 0 && minutes >= a.minutes;
    if (a.minutes > 0 && dist::world_size() > 1)
      out_of_time = example::sum_over_ranks({out_of_time ? 1.0 : 0.0})[0] > 0;
    if (step % a.log_every == 0 || step == a.steps || out_of_time) {
      const double secs = std::chrono::duration<double>(now - window_start).count();
      train_seconds += secs;
      train_tokens += static_cast<double>(window_steps * a.batch * T);
      char scale[48] = "";
      if (scaler.is_enabled()) std::snprintf(scale, sizeof scale, " scale %g", scaler.get_scale());
      example::say("step %lld/%lld loss %.4f (%.3f bits/byte) lr %.2e %.0f tokens/s (%.1f min)%s\n",
                   static_cast<long long>(step), static_cast<long long>(a.steps), loss_sum / tokens_sum,
                   loss_sum / bytes_sum / std::log(2.0), opt.lr(0),
                   static_cast<double>(window_steps * a.batch * T) / std::max(secs, 1e-9), minutes, scale);
      loss_sum = bytes_sum = tokens_sum = 0;
      window_steps = 0;
      window_start = std::chrono::steady_clock::now();
    }
    if (step % a.eval_every == 0 || step == a.steps || out_of_time) {
      if (window_steps > 0) {  // steps since the last progress line count towards throughput
        train_seconds += std::chrono::duration<double>(now - window_start).count();
        train_tokens += static_cast<double>(window_steps * a.batch * T);
      }
      val = evaluate(model, *tok, val_ids, a, device);
      curve_train.push_back(curve_nats / curve_bytes / std::log(2.0));
      curve_val.push_back(val.bits_per_byte);
      curve_nats = curve_bytes = 0;
      example::say("step %lld held-out loss %.4f (%.3f bits/byte; baseline %.3f)\n", static_cast<long long>(step),
                   val.loss, val.bits_per_byte, baseline_bpb);
      save();
      window_steps = 0;  // evaluation and saving are left out of tokens/s
      window_start = std::chrono::steady_clock::now();
    }
    if (out_of_time) {
      example::say("stopped at the --minutes limit (%.1f min) after %lld of %lld steps\n", a.minutes,
                   static_cast<long long>(step), static_cast<long long>(a.steps));
      break;
    }
    if (step == a.stop_after && step < a.steps) {
      save();
      example::say("stopped after step %lld (--stop-after); continue with --resume\n", static_cast<long long>(step));
      return 0;
    }
  }
  if (prof) prof->stop();  // writes the trace, prints the top ops
  if (std::isnan(val.loss)) val = evaluate(model, *tok, val_ids, a, device);
  example::say("final held-out loss %.4f (%.3f bits/byte; byte bigram baseline %.3f)\n", val.loss, val.bits_per_byte,
               baseline_bpb);
  if (!a.plot.empty() && dist::rank() == 0) {
    example::write_svg_plot(a.plot,
                            std::string("gpt on ") + (a.text.empty() ? "KJV + GCIDE" : "--text") + ": bits per byte",
                            "evaluation", "bits per byte",
                            {{"train", curve_train},
                             {"held-out", curve_val},
                             {"bigram baseline", std::vector<double>(curve_val.size(), baseline_bpb)}});
    example::say("plot: %s\n", a.plot.c_str());
  }
  if (a.sample > 0 && dist::rank() == 0) example::say("sample:\n%s\n", generate(model, *tok, a, device).c_str());
  example::say("total time: %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  example::print_result({{"val_loss", val.loss},
                         {"val_bits_per_byte", val.bits_per_byte},
                         {"baseline_bits_per_byte", baseline_bpb},
                         {"tokens_per_s", train_seconds > 0 ? train_tokens / train_seconds : 0.0}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse_args(argc, argv);
    if (args.help) {
      usage(std::cout);
      return 0;
    }
    if (args.dist) dist::init();
    const Device device = example::usable_device(kProg, args.device);
    EMBER_CHECK(!args.cuda_graph || device.is_cuda() || device.is_fake(), kProg, "--cuda-graph needs a CUDA device (",
                "--device cuda, or the stand-in fake), got ", device.str());
    const int rc = run(args, device);
    dist::finalize();
    return rc;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
