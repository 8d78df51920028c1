// word2vec: word embeddings by skip-gram (or CBOW) with a Huffman-tree hierarchical softmax,
// trained on the text of GCIDE (Webster's 1913 dictionary and WordNet glosses, Debian's
// dict-gcide) or on any plain UTF-8 text file.
//
//   word2vec [--preset small|full] [--model skipgram|cbow] [--device cpu|cuda|fake] [--text FILE] ...
//
// The model is word2vec's: an input embedding E (V, D) and, as the output layer,
// nn::HierarchicalSoftmax over nn::ClassTree::huffman(word counts) (its weight (V-1, D): one
// sigmoid row per internal node of the Huffman tree). A pair (context word c, centre word w)
// is scored by walking w's Huffman path with E[c] (skip-gram) or with the mean of the window's
// context vectors (CBOW).
//
// Two training paths write the same two parameter tensors:
//   --device cpu    Hogwild (lock-free) SGD over the raw storage of the two parameter tensors:
//                   T std::threads each take a contiguous share of the sentences and update
//                   E and W without locks, one pair at a time (word2vec.c's scheme; updates of
//                   rows shared by threads may be lost, which SGD tolerates). Bit-for-bit
//                   reproducible with --threads 1 only.
//   --device cuda|fake  minibatches of pairs through the library: Embedding gather ->
//                   HierarchicalSoftmax (sum of -log P) -> backward -> optim::SGD, with --amp.
// `--self-check` holds one update of the Hogwild code against one autograd step of the library
// on a toy model (CPU and the stand-in device): they must agree to 1e-5.
//
// Evaluation: 3CosAdd analogies from examples/word2vec/analogies.txt (written for ember), the
// nearest neighbours of a few probe words, and a PPMI co-occurrence baseline on the same
// tokens scored on the same analogies. words/s = in-vocabulary training tokens (before
// subsampling, as word2vec.c, fastText and gensim count them) times epochs, over the wall time
// of the training loop.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <zlib.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../common/onnx_export.h"
#include "../common/cli.h"
#include "../common/flags.h"
#include "../common/profile.h"
#include "../common/report.h"
#include "../common/training.h"
#include "ember/cpu.h"
#include "ember/ember.h"
#include "ember/io/checkpoint.h"
#include "ember/nn/hsoftmax.h"

#ifndef WORD2VEC_DIR
#define WORD2VEC_DIR "examples/word2vec"
#endif

namespace {

using namespace ember;
namespace fs = std::filesystem;

constexpr const char* kProg = "word2vec";
// --profile: the profiler of the run, marked at every library step (device_step); null without it.
ember::Profiler* g_profiler = nullptr;
constexpr const char* kGcide = "dict-gcide/usr/share/dictd/gcide.dict.dz";

// --- command line -----------------------------------------------------------------------------

struct Args {
  std::string data_root = example::default_data_root();
  std::string text, analogies = std::string(WORD2VEC_DIR) + "/analogies.txt";
  std::string preset = "small", model = "skipgram";
  int64_t dim = 100, window = 5, min_count = 5, epochs = 5, limit = 3000000, batch = 1024, stop_after = 0;
  int64_t baseline_contexts = 1000;
  double lr = 0.025, sample = 1e-3;
  bool lr_set = false;
  uint64_t seed = 1;
  int threads = 2;
  std::string device = "cpu";
  std::optional<DType> amp;
  std::string checkpoint = "word2vec.ckpt.safetensors";
  std::string profile;  // --profile: Chrome trace of the training loop
  std::string export_onnx;  // --export-onnx: the embedding as ONNX
  std::string probes = "king,water,horse,red,walk,good";
  bool resume = false, help = false, self_check = false;
  std::string plot, save_vectors, export_corpus;
};

void apply_preset(Args& a, const std::string& name) {
  EMBER_CHECK(name == "small" || name == "full", kProg, "--preset expects small or full, got \"", name, "\"");
  a.preset = name;
  if (name == "full") a.limit = 0, a.epochs = 10;  // the whole dictionary (about 5M tokens)
}

void usage(std::ostream& o) {
  o << "usage: word2vec [options]\n"
       "Word embeddings: skip-gram or CBOW with a Huffman-tree hierarchical softmax.\n"
       "  --data-root DIR       fetched Debian data (default " << example::default_data_root() << ";\n"
       "                        bash scripts/fetch_data.sh dict-gcide)\n"
       "  --text FILE           your own text instead (plain UTF-8 or gzip; paragraphs = sentences)\n"
       "  --preset P            small (default: the first 3M tokens, 5 epochs, 2 CPU cores) or\n"
       "                        full (every token, 10 epochs); later flags override it\n"
       "  --model M             skipgram (default) or cbow\n"
       "  --dim N               vector size (default 100)\n"
       "  --window N            max context distance (default 5; each position draws 1..N)\n"
       "  --min-count N         drop words seen fewer times (default 5)\n"
       "  --sample X            subsampling threshold of frequent words (default 1e-3; 0 = off)\n"
       "  --epochs N            passes over the text (small 5, full 10)\n"
       "  --lr X                start learning rate, linear decay to 0 (skipgram 0.025, cbow 0.05)\n"
       "  --limit N             read the first N tokens only (small 3000000; 0 = all)\n"
       "  --batch N             pairs per step on cuda/fake (default 1024)\n"
       "  --threads N           Hogwild threads on the CPU (default 2)\n"
       "  --device D            cpu (Hogwild loop), cuda, cuda:N or fake (library ops; default cpu)\n"
       "  --amp M               mixed precision on cuda/fake: bf16, f16 or off (default)\n"
       "  --seed N              initialisation, subsampling and windows (default 1)\n"
       "  --analogies FILE      analogy questions (default examples/word2vec/analogies.txt)\n"
       "  --probes W,W,...      words whose nearest neighbours are printed\n"
       "  --baseline-contexts N context words of the PPMI baseline (default 1000)\n"
       "  --checkpoint PATH     saved at every epoch end (default word2vec.ckpt.safetensors; \"\" = none)\n"
       "  --resume              continue from --checkpoint (same data and flags)\n"
       "  --stop-after E        stop after epoch E as if interrupted (then --resume)\n"
       "  --save-vectors FILE   write the vectors in word2vec text format (first line \"V D\")\n"
       "  --export-corpus FILE  write the tokenized text, one sentence a line, and exit (bench peers)\n"
       "  --plot FILE           write the training curves as SVG\n"
       "  --export-onnx FILE    write the trained embedding as ONNX: word ids (N) in, their vectors and unit\n"
       "                        vectors (for cosine similarity) out, N dynamic (docs/deploy.md)\n"
       "  --profile FILE        profile training (the library path's ops): Chrome trace JSON to FILE, table\n"
       "  --self-check          compare one Hogwild update with one autograd step on a toy model\n"
       "  --help                this text\n";
}

Args parse_args(int argc, char** argv) {
  Args a;
  example::Flags f(kProg);
  f.preset([&](const std::string& v) { apply_preset(a, v); });  // later flags override it
  f.boolean("--resume", &a.resume).boolean("--self-check", &a.self_check);
  f.text("--data-root", &a.data_root).text("--text", &a.text);
  f.choice("--model", &a.model, {"skipgram", "cbow"});
  f.integer("--dim", &a.dim, 1).integer("--window", &a.window, 1).integer("--min-count", &a.min_count, 1);
  f.real("--sample", &a.sample, 0.0, false).integer("--epochs", &a.epochs, 1);
  f.custom("--lr", [&](const std::string& v) {  // an explicit --lr also holds for cbow (below)
    a.lr = example::parse_double(kProg, "--lr", v, 0.0, true);
    a.lr_set = true;
  });
  f.integer("--limit", &a.limit, 0).integer("--batch", &a.batch, 1).integer("--threads", &a.threads, 1);
  f.text("--device", &a.device).amp("--amp", &a.amp).integer("--seed", &a.seed, 0);
  f.text("--analogies", &a.analogies).text("--probes", &a.probes);
  f.integer("--baseline-contexts", &a.baseline_contexts, 0);
  f.text("--checkpoint", &a.checkpoint).integer("--stop-after", &a.stop_after, 1);
  f.text("--save-vectors", &a.save_vectors).text("--export-corpus", &a.export_corpus);
  f.text("--plot", &a.plot).text("--profile", &a.profile).text("--export-onnx", &a.export_onnx);
  a.help = f.parse(argc, argv);
  if (!a.lr_set && a.model == "cbow") a.lr = 0.05;
  EMBER_CHECK(!a.resume || !a.checkpoint.empty(), kProg, "--resume needs a --checkpoint path");
  return a;
}

// --- reading text -----------------------------------------------------------------------------

// The whole file, gzip (dictzip is gzip) or plain: zlib reads both.
std::string read_file(const std::string& path) {
  EMBER_CHECK(fs::is_regular_file(path), kProg, "missing file ", path,
              path.find("dict-gcide") != std::string::npos ? " (fetch it: bash scripts/fetch_data.sh dict-gcide; or "
                                                             "pass your own --text FILE)"
                                                           : "");
  gzFile f = gzopen(path.c_str(), "rb");
  EMBER_CHECK(f != nullptr, kProg, "cannot open ", path);
  std::string out;
  std::vector<char> buf(1 << 20);
  for (;;) {
    const int got = gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
    if (got < 0) {
      int err = 0;
      const std::string msg = gzerror(f, &err);
      gzclose(f);
      EMBER_FAIL(kProg, path, ": corrupt gzip data (", msg, ")");
    }
    if (got == 0) break;
    out.append(buf.data(), static_cast<size_t>(got));
  }
  int err = 0;
  const std::string msg = gzerror(f, &err);
  gzclose(f);
  EMBER_CHECK(err == Z_OK || err == Z_STREAM_END, kProg, path, ": corrupt gzip data (", msg, ")");
  return out;
}

// Length of the UTF-8 sequence at s[i], or 0 when it is not valid UTF-8.
size_t utf8_length(const std::string& s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  return n;
}

// GCIDE in dictd form: "Word \Pro*nun"ci*a`tion\, n. [Etym.] definition ... [1913 Webster]".
// Pronunciations (between backslashes) and source tags ([1913 Webster], [WordNet 1.5], [PJC])
// go; inside {cross references} the syllable and accent marks (* " ` ') go, so
// {Di*chot"o*mous} reads as "dichotomous".
std::string clean_gcide_line(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  bool pron = false, brace = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '\\') {
      pron = !pron;
      out.push_back(' ');
      continue;
    }
    if (pron) continue;
    if (c == '[') {
      const size_t e = s.find(']', i);
      if (e != std::string::npos) {
        const std::string in = s.substr(i, e - i);
        if (in.find("Webster") != std::string::npos || in.find("WordNet") != std::string::npos ||
            in.find("PJC") != std::string::npos) {
          i = e;
          out.push_back(' ');
          continue;
        }
      }
    }
    if (c == '{') brace = true;
    if (c == '}') brace = false;
    if (brace && (c == '*' || c == '"' || c == '`' || c == '\'')) continue;
    out.push_back(c);
  }
  return out;
}

// The tokenized text: word ids (first-seen order, before the vocabulary is cut) and sentence
// ends. A sentence is a paragraph (blank lines separate them), cut at 1000 tokens as word2vec.c does.
struct RawText {
  std::vector<std::string> words;  // id -> word
  std::vector<int64_t> counts;     // id -> occurrences
  std::vector<int32_t> tokens;
  std::vector<int64_t> sentence_end;  // exclusive ends into tokens
  int64_t lines = 0;
  int64_t bad_bytes = 0, first_bad_line = 0;  // bytes that are not UTF-8, read as spaces
};

RawText tokenize(const std::string& path, bool gcide, int64_t limit) {
  const std::string text = read_file(path);
  RawText r;
  std::unordered_map<std::string, int32_t> ids;
  bool started = !gcide;
  size_t pos = 0;
  int64_t lineno = 0;
  auto end_sentence = [&] {
    const int64_t n = static_cast<int64_t>(r.tokens.size());
    if (n > (r.sentence_end.empty() ? 0 : r.sentence_end.back())) r.sentence_end.push_back(n);
  };
  std::string word;
  while (pos < text.size() && (limit == 0 || static_cast<int64_t>(r.tokens.size()) < limit)) {
    size_t e = text.find('\n', pos);
    if (e == std::string::npos) e = text.size();
    std::string line = text.substr(pos, e - pos);
    pos = e + 1;
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    // Damaged or binary input: a NUL byte or bytes that are not UTF-8.
    for (size_t i = 0; i < line.size();) {
      EMBER_CHECK(line[i] != '\0', kProg, path, ":", lineno, ": NUL byte at column ", i + 1,
                  " (a binary file? --text expects plain UTF-8 text)");
      const size_t n = utf8_length(line, i);
      if (n > 0) {
        i += n;
        continue;
      }
      // A stray byte of another encoding (GCIDE has three cp1252 quotes) reads as a space;
      // many of them mean the file is not text.
      if (r.bad_bytes == 0) r.first_bad_line = lineno;
      ++r.bad_bytes;
      line[i++] = ' ';
    }
    EMBER_CHECK(r.bad_bytes <= 1000 + static_cast<int64_t>(pos / 100), kProg, path, ":", lineno, ": ", r.bad_bytes,
                " bytes so far are not UTF-8 (first on line ", r.first_bad_line, "): not a UTF-8 text file");
    if (!started) {  // GCIDE: skip the database's header notice, up to the first "Word \pron\" entry
      const size_t b = line.find(" \\");
      if (line.empty() || std::isspace(static_cast<unsigned char>(line[0])) || b == std::string::npos ||
          line.find('\\', b + 2) == std::string::npos)
        continue;
      started = true;
    }
    if (line.find_first_not_of(" \t") == std::string::npos) {
      end_sentence();
      continue;
    }
    if (gcide) line = clean_gcide_line(line);
    // Words: runs of letters (ASCII, lower-cased, and any non-ASCII UTF-8 character); digits,
    // punctuation and markup separate them.
    line.push_back(' ');
    for (char ch : line) {
      const auto c = static_cast<unsigned char>(ch);
      if (std::isalpha(c) || c >= 0x80) {
        word.push_back(static_cast<char>(std::tolower(c)));
        continue;
      }
      if (word.empty()) continue;
      auto [it, fresh] = ids.try_emplace(word, static_cast<int32_t>(r.words.size()));
      if (fresh) r.words.push_back(word), r.counts.push_back(0);
      ++r.counts[static_cast<size_t>(it->second)];
      r.tokens.push_back(it->second);
      word.clear();
      const int64_t since = static_cast<int64_t>(r.tokens.size()) - (r.sentence_end.empty() ? 0 : r.sentence_end.back());
      if (since >= 1000) end_sentence();
    }
  }
  end_sentence();
  r.lines = lineno;
  EMBER_CHECK(!r.tokens.empty(), kProg, path, ": no words found");
  return r;
}

// The training text: vocabulary (count >= min_count, most frequent first, ties by spelling) and
// the token stream with out-of-vocabulary words dropped, as word2vec.c does.
struct Corpus {
  std::vector<std::string> vocab;
  std::vector<int64_t> counts;
  std::unordered_map<std::string, int32_t> index;
  std::vector<int32_t> tokens;
  std::vector<int64_t> sentence_end;
  int64_t raw_tokens = 0;
};

Corpus build_corpus(const RawText& r, int64_t min_count) {
  std::vector<int32_t> order;
  for (size_t i = 0; i < r.words.size(); ++i)
    if (r.counts[i] >= min_count) order.push_back(static_cast<int32_t>(i));
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return r.counts[a] != r.counts[b] ? r.counts[a] > r.counts[b] : r.words[a] < r.words[b];
  });
  EMBER_CHECK(order.size() >= 2, kProg, "fewer than 2 words occur at least ", min_count,
              " times: give more text or a lower --min-count");
  Corpus c;
  std::vector<int32_t> remap(r.words.size(), -1);
  for (size_t k = 0; k < order.size(); ++k) {
    remap[static_cast<size_t>(order[k])] = static_cast<int32_t>(k);
    c.vocab.push_back(r.words[static_cast<size_t>(order[k])]);
    c.counts.push_back(r.counts[static_cast<size_t>(order[k])]);
    c.index.emplace(c.vocab.back(), static_cast<int32_t>(k));
  }
  int64_t start = 0;
  for (int64_t end : r.sentence_end) {
    for (int64_t i = start; i < end; ++i)
      if (const int32_t w = remap[static_cast<size_t>(r.tokens[static_cast<size_t>(i)])]; w >= 0) c.tokens.push_back(w);
    const auto n = static_cast<int64_t>(c.tokens.size());
    if (n > (c.sentence_end.empty() ? 0 : c.sentence_end.back())) c.sentence_end.push_back(n);
    start = end;
  }
  c.raw_tokens = static_cast<int64_t>(r.tokens.size());
  return c;
}

// --- the model ----------------------------------------------------------------------------------

// word2vec's two matrices as ember modules: "input.weight" (V, D) and "output.weight" (V-1, D).
class Word2Vec : public nn::Module {
 public:
  Word2Vec(int64_t vocab, int64_t dim, const nn::ClassTree& tree) {
    input = register_module("input", std::make_shared<nn::Embedding>(vocab, dim));
    output = register_module("output", std::make_shared<nn::HierarchicalSoftmax>(dim, tree, false));
  }
  std::shared_ptr<nn::Embedding> input;
  std::shared_ptr<nn::HierarchicalSoftmax> output;
};

// Every word's Huffman path as (weight row, label) pairs, root first: label 1 when the path
// takes the node's first child (P = sigmoid(w.h)), 0 for the second (P = sigmoid(-w.h)).
struct Paths {
  std::vector<int32_t> offset, row;
  std::vector<float> label;
  explicit Paths(const nn::ClassTree& t) {
    offset.push_back(0);
    for (int64_t c = 0; c < t.num_classes(); ++c) {
      for (const nn::ClassTree::Step& s : t.path(c)) {
        EMBER_CHECK(t.arity(s.node) == 2, kProg, "the Huffman tree has a node with ", t.arity(s.node), " children");
        row.push_back(static_cast<int32_t>(t.row_offset(s.node)));
        label.push_back(s.child == 0 ? 1.0f : 0.0f);
      }
      offset.push_back(static_cast<int32_t>(row.size()));
    }
  }
};

// word2vec.c's generator (a 48-bit-style LCG on 64 bits): cheap, per thread, reproducible.
struct Lcg {
  uint64_t s;
  uint64_t next() { return s = s * 25214903917ULL + 11ULL; }
  double uniform() { return static_cast<double>((next() >> 16) & 0xFFFFFF) / 16777216.0; }
};

uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t z = a * 0x9E3779B97F4A7C15ULL + b + 0x632BE59BD9B4E019ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// word2vec's initialisation: input U(-0.5/D, 0.5/D), output zeros.
void init_parameters(Word2Vec& m, uint64_t seed) {
  NoGradGuard ng;
  float* E = m.input->weight.data<float>();
  const int64_t n = m.input->weight.numel(), D = m.input->embedding_dim();
  Lcg g{mix(seed, 11)};
  for (int64_t i = 0; i < n; ++i) E[i] = static_cast<float>((g.uniform() - 0.5) / static_cast<double>(D));
  std::memset(m.output->weight.data<float>(), 0, sizeof(float) * static_cast<size_t>(m.output->weight.numel()));
}

// sigmoid by a table with linear interpolation on [-8, 8] (error < 1e-6), saturating outside.
struct Sigmoid {
  static constexpr int kN = 4096;
  static constexpr float kMax = 8.0f;
  float t[kN + 1];
  Sigmoid() {
    for (int i = 0; i <= kN; ++i) t[i] = 1.0f / (1.0f + std::exp(-(2.0f * kMax * i / kN - kMax)));
  }
  float operator()(float x) const {
    if (x <= -kMax) return t[0];
    if (x >= kMax) return t[kN];
    const float p = (x + kMax) * (kN / (2.0f * kMax));
    const int i = std::min(static_cast<int>(p), kN - 1);
    const float f = p - static_cast<float>(i);
    return t[i] + f * (t[i + 1] - t[i]);
  }
};
const Sigmoid kSigmoid;

// The two kernels of the loop: z = a . b, and the fused node update (grad_h += g w with the old
// w, w += g h) in one pass. With AVX-512 a masked last vector handles D % 16 (GCC's own
// vectorisation of an `omp simd reduction` spilled the lanes to the stack and ran a scalar
// tail, about a fifth of the loop's time).
#if defined(__AVX512F__)
inline __mmask16 tail_mask(int64_t left) { return static_cast<__mmask16>((1u << left) - 1u); }
inline float dot(const float* a, const float* b, int64_t n) {
  __m512 s = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) s = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s);
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s);
  }
  // Horizontal sum by folding lanes (GCC 12's _mm512_reduce_add_ps and _mm512_extractf64x4_pd
  // trip -Wmaybe-uninitialized).
  s = _mm512_add_ps(s, _mm512_shuffle_f32x4(s, s, 0x4E));
  s = _mm512_add_ps(s, _mm512_shuffle_f32x4(s, s, 0xB1));
  __m128 s4 = _mm512_castps512_ps128(s);
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  s4 = _mm_add_ss(s4, _mm_shuffle_ps(s4, s4, 1));
  return _mm_cvtss_f32(s4);
}
inline void node_update(const float* h, float* grad_h, float* w, float g, int64_t n) {
  const __m512 G = _mm512_set1_ps(g);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 wv = _mm512_loadu_ps(w + i);
    _mm512_storeu_ps(grad_h + i, _mm512_fmadd_ps(G, wv, _mm512_loadu_ps(grad_h + i)));
    _mm512_storeu_ps(w + i, _mm512_fmadd_ps(G, _mm512_loadu_ps(h + i), wv));
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 wv = _mm512_maskz_loadu_ps(m, w + i);
    _mm512_mask_storeu_ps(grad_h + i, m, _mm512_fmadd_ps(G, wv, _mm512_maskz_loadu_ps(m, grad_h + i)));
    _mm512_mask_storeu_ps(w + i, m, _mm512_fmadd_ps(G, _mm512_maskz_loadu_ps(m, h + i), wv));
  }
}
#else
inline float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
  float s = 0;
  for (; i < n; ++i) s += a[i] * b[i];
  return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}
inline void node_update(const float* __restrict h, float* __restrict grad_h, float* __restrict w, float g, int64_t n) {
#pragma omp simd
  for (int64_t d = 0; d < n; ++d) {
    const float wd = w[d];
    grad_h[d] += g * wd;
    w[d] = wd + g * h[d];
  }
}
#endif

// One (input vector h, target word) update of the hierarchical softmax, SGD with step alpha:
// for every node on the path, z = w.h, g = alpha (label - sigmoid(z)); grad_h accumulates
// g w and w += g h (h itself is updated by the caller from grad_h, after the walk, as the
// gradient of the whole path). Returns -log P(target | h) when want_loss.
inline float hs_update(const float* __restrict h, float* __restrict grad_h, const Paths& p, int32_t target,
                       float* __restrict W, int64_t D, float alpha, bool want_loss) {
  float loss = 0;
  for (int32_t k = p.offset[static_cast<size_t>(target)]; k < p.offset[static_cast<size_t>(target) + 1]; ++k) {
    float* __restrict w = W + static_cast<int64_t>(p.row[static_cast<size_t>(k)]) * D;
    const float z = dot(h, w, D);
    const float s = kSigmoid(z), label = p.label[static_cast<size_t>(k)];
    if (want_loss) loss -= std::log(std::max(label > 0 ? s : 1.0f - s, 1e-7f));
    // A node the vector already decides right to within 1/400 (|z| > 6) would move by less than
    // 0.25% of a full step: skipping its two updates saves most of the time late in training
    // (word2vec.c and gensim skip every |z| >= 6, right or wrong; a wrong one is kept here).
    if (std::fabs(label - s) < 2.5e-3f) continue;
    node_update(h, grad_h, w, alpha * (label - s), D);
  }
  return loss;
}

// Skip-gram pair (context c predicts centre word w): E[c] += the accumulated step.
inline float sg_pair(float* E, float* W, float* work, const Paths& p, int32_t c, int32_t w, int64_t D, float alpha,
                     bool want_loss) {
  float* h = E + static_cast<int64_t>(c) * D;
  std::fill(work, work + D, 0.0f);
  const float l = hs_update(h, work, p, w, W, D, alpha, want_loss);
#pragma omp simd
  for (int64_t d = 0; d < D; ++d) h[d] += work[d];
  return l;
}

// CBOW (mean of the context vectors predicts w): each context vector gets the step / count,
// the exact gradient of the mean.
inline float cbow_sample(float* E, float* W, float* work, const Paths& p, const int32_t* ctx, int n, int32_t w,
                         int64_t D, float alpha, bool want_loss) {
  float* h = work;
  float* gh = work + D;
  std::fill(h, h + 2 * D, 0.0f);
  for (int j = 0; j < n; ++j) {
    const float* e = E + static_cast<int64_t>(ctx[j]) * D;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) h[d] += e[d];
  }
  const float inv = 1.0f / static_cast<float>(n);
  for (int64_t d = 0; d < D; ++d) h[d] *= inv;
  const float l = hs_update(h, gh, p, w, W, D, alpha, want_loss);
  for (int j = 0; j < n; ++j) {
    float* e = E + static_cast<int64_t>(ctx[j]) * D;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) e[d] += gh[d] * inv;
  }
  return l;
}

// What a pass over a share of the sentences needs; the subsampled sentence and window draws
// come from one Lcg per (seed, epoch, thread), so the device path (one stream) sees exactly what
// the 1-thread CPU path sees.
struct Setup {
  const Corpus* corpus;
  const Paths* paths;
  std::vector<float> keep;  // per word: probability of keeping an occurrence (subsampling)
  int64_t window, D;
  bool cbow;
};

std::vector<float> keep_probabilities(const Corpus& c, double sample) {
  std::vector<float> keep(c.counts.size(), 1.0f);
  if (sample <= 0) return keep;
  double total = 0;
  for (int64_t n : c.counts) total += static_cast<double>(n);
  const double t = sample * total;
  for (size_t i = 0; i < keep.size(); ++i) {
    const double f = static_cast<double>(c.counts[i]);
    keep[i] = static_cast<float>(std::min(1.0, (std::sqrt(f / t) + 1.0) * t / f));  // word2vec.c's formula
  }
  return keep;
}

// Walks sentences [s0, s1): per kept position, the window radius b in 1..window, then
// emit(centre, contexts, n) once per position (CBOW) or emit(centre, &context, 1) per context
// (skip-gram). Returns the in-vocabulary tokens read (the words/s count).
template <class Emit, class Tick>
int64_t walk(const Setup& s, int64_t s0, int64_t s1, Lcg& rng, Emit&& emit, Tick&& tick) {
  const Corpus& c = *s.corpus;
  std::vector<int32_t> sen, ctx;
  int64_t words = 0;
  for (int64_t si = s0; si < s1; ++si) {
    const int64_t a = si == 0 ? 0 : c.sentence_end[static_cast<size_t>(si) - 1], b = c.sentence_end[static_cast<size_t>(si)];
    sen.clear();
    for (int64_t i = a; i < b; ++i) {
      const int32_t w = c.tokens[static_cast<size_t>(i)];
      if (s.keep[static_cast<size_t>(w)] < 1.0f && rng.uniform() >= s.keep[static_cast<size_t>(w)]) continue;
      sen.push_back(w);
    }
    words += b - a;
    const auto n = static_cast<int64_t>(sen.size());
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = 1 + static_cast<int64_t>(rng.next() % static_cast<uint64_t>(s.window));
      ctx.clear();
      for (int64_t j = std::max<int64_t>(0, i - r); j <= std::min(n - 1, i + r); ++j)
        if (j != i) ctx.push_back(sen[static_cast<size_t>(j)]);
      if (ctx.empty()) continue;
      if (s.cbow) emit(sen[static_cast<size_t>(i)], ctx.data(), static_cast<int>(ctx.size()));
      else
        for (int32_t x : ctx) emit(sen[static_cast<size_t>(i)], &x, 1);
    }
    tick(b - a);
  }
  return words;
}

// The learning rate after `done` of `total` tokens: linear decay, floored at 1e-4 of the start.
double lr_at(double lr0, int64_t done, int64_t total) {
  return lr0 * std::max(1e-4, 1.0 - static_cast<double>(done) / static_cast<double>(std::max<int64_t>(total, 1)));
}

struct EpochStats {
  double loss = 0;  // mean -log P per pair (the CPU path estimates it on 1 pair in 16)
  int64_t words = 0;
  double seconds = 0, cpu_seconds = 0;  // wall time, process CPU time (all threads)
};

// Progress line, printed by the coordinating thread about twice a second.
void progress_line(int64_t epoch, int64_t epochs, int64_t done, int64_t total, double loss, double alpha, double wps,
                   double eta) {
  example::say("epoch %lld/%lld words %.2fM/%.2fM loss %.4f lr %.5f %.0f words/s ETA %s\n",
               static_cast<long long>(epoch), static_cast<long long>(epochs), static_cast<double>(done) / 1e6,
               static_cast<double>(total) / 1e6, loss, alpha, wps, example::clock_text(eta).c_str());
}

// One epoch of Hogwild SGD on the CPU: `threads` workers over contiguous shares of the sentences,
// all writing E and W without locks.
EpochStats cpu_epoch(const Setup& s, Word2Vec& m, int64_t epoch, int64_t epochs, double lr0, uint64_t seed,
                     int threads) {
  float* E = m.input->weight.data<float>();
  float* W = m.output->weight.data<float>();
  const Corpus& c = *s.corpus;
  const auto ntok = static_cast<int64_t>(c.tokens.size()), nsent = static_cast<int64_t>(c.sentence_end.size());
  const int64_t total = ntok * epochs, before = ntok * (epoch - 1);
  std::atomic<int64_t> done{0};
  struct alignas(64) Acc {
    std::atomic<double> loss{0};
    std::atomic<int64_t> pairs{0};
  };
  std::vector<Acc> acc(static_cast<size_t>(threads));
  std::atomic<double> alpha_now{lr_at(lr0, before, total)};
  auto worker = [&](int t) {
    const int64_t s0 = nsent * t / threads, s1 = nsent * (t + 1) / threads;
    Lcg rng{mix(mix(seed, static_cast<uint64_t>(epoch)), static_cast<uint64_t>(t))};
    std::vector<float> work(static_cast<size_t>(2 * s.D));
    float alpha = static_cast<float>(alpha_now.load());
    int64_t pending = 0, counter = 0;
    double loss = 0;
    int64_t sampled = 0;
    auto emit = [&](int32_t w, const int32_t* ctx, int n) {
      const bool want = (++counter & 15) == 0;
      const float l = s.cbow ? cbow_sample(E, W, work.data(), *s.paths, ctx, n, w, s.D, alpha, want)
                             : sg_pair(E, W, work.data(), *s.paths, ctx[0], w, s.D, alpha, want);
      if (want) loss += l, ++sampled;
    };
    auto tick = [&](int64_t words) {
      pending += words;
      if (pending < 10000) return;
      const int64_t d = done.fetch_add(pending) + pending;
      pending = 0;
      alpha = static_cast<float>(lr_at(lr0, before + d, total));
      alpha_now.store(alpha, std::memory_order_relaxed);
      acc[static_cast<size_t>(t)].loss.store(loss, std::memory_order_relaxed);
      acc[static_cast<size_t>(t)].pairs.store(sampled, std::memory_order_relaxed);
    };
    walk(s, s0, s1, rng, emit, tick);
    done.fetch_add(pending);
    acc[static_cast<size_t>(t)].loss.store(loss);
    acc[static_cast<size_t>(t)].pairs.store(sampled);
  };
  const auto t0 = std::chrono::steady_clock::now();
  const std::clock_t c0 = std::clock();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker, t);
  auto mean_loss = [&] {
    double l = 0;
    int64_t n = 0;
    for (const Acc& a : acc) l += a.loss.load(), n += a.pairs.load();
    return n > 0 ? l / static_cast<double>(n) : 0.0;
  };
  double last = 0;
  while (done.load() < ntok) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (el - last < 2.0 || done.load() >= ntok) continue;
    last = el;
    const int64_t d = done.load();
    const double wps = static_cast<double>(d) / el;
    progress_line(epoch, epochs, d, ntok, mean_loss(), alpha_now.load(), wps, static_cast<double>(ntok - d) / std::max(wps, 1.0));
  }
  for (std::thread& th : pool) th.join();
  EpochStats st;
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  st.cpu_seconds = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
  st.words = ntok;
  st.loss = mean_loss();
  return st;
}

// One step of the library's path on pairs: gather the input rows (skip-gram) or the masked mean
// of the context rows (CBOW), HierarchicalSoftmax's summed -log P, backward, SGD with `alpha`.
struct Batch {
  std::vector<int64_t> target, input;  // skip-gram: input (B); CBOW: input (B, K) with weights
  std::vector<float> weight;           // CBOW: 1/n for real contexts, 0 for padding
  int64_t size = 0;
};

double device_step(Word2Vec& m, optim::SGD& opt, amp::GradScaler& scaler, const Batch& b, int64_t K, double alpha,
                   Device device, const std::optional<DType>& amp_dtype) {
  const int64_t B = b.size;
  const Tensor target = from_vector(b.target, {B}).to(device);
  Tensor loss;
  {
    amp::AutocastGuard autocast(device, amp_dtype.value_or(DType::bf16), amp_dtype.has_value());
    Tensor h;
    if (K == 0) {
      h = (*m.input)(from_vector(b.input, {B}).to(device));
    } else {
      const Tensor e = (*m.input)(from_vector(b.input, {B, K}).to(device));                 // (B, K, D)
      const Tensor w = from_vector(b.weight, {B, K, 1}).to(device);
      h = sum(e * w, {1});                                                                   // (B, D)
    }
    loss = (*m.output)(h, target, nn::Reduction::sum);
  }
  opt.set_lr(0, alpha);
  opt.zero_grad();
  scaler.scale(loss).backward();
  scaler.step(opt);
  scaler.update();
  if (g_profiler) g_profiler->step();
  return loss.item<double>();
}

EpochStats device_epoch(const Setup& s, Word2Vec& m, optim::SGD& opt, amp::GradScaler& scaler, int64_t epoch,
                        int64_t epochs, double lr0, uint64_t seed, int64_t batch, Device device,
                        const std::optional<DType>& amp_dtype) {
  const Corpus& c = *s.corpus;
  const auto ntok = static_cast<int64_t>(c.tokens.size());
  const int64_t total = ntok * epochs, before = ntok * (epoch - 1);
  const int64_t K = s.cbow ? 2 * s.window : 0;
  Lcg rng{mix(mix(seed, static_cast<uint64_t>(epoch)), 0)};
  Batch b;
  int64_t done = 0, pairs = 0;
  double loss = 0, alpha = lr_at(lr0, before, total), last = 0;
  const auto t0 = std::chrono::steady_clock::now();
  const std::clock_t c0 = std::clock();
  auto flush = [&] {
    if (b.size == 0) return;
    loss += device_step(m, opt, scaler, b, K, alpha, device, amp_dtype);
    pairs += b.size;
    b = Batch{};
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (el - last >= 2.0) {
      last = el;
      const double wps = static_cast<double>(done) / el;
      progress_line(epoch, epochs, done, ntok, loss / static_cast<double>(pairs), alpha, wps,
                    static_cast<double>(ntok - done) / std::max(wps, 1.0));
    }
  };
  auto emit = [&](int32_t w, const int32_t* ctx, int n) {
    b.target.push_back(w);
    if (K == 0) {
      b.input.push_back(ctx[0]);
    } else {
      for (int64_t j = 0; j < K; ++j) {
        b.input.push_back(j < n ? ctx[j] : 0);
        b.weight.push_back(j < n ? 1.0f / static_cast<float>(n) : 0.0f);
      }
    }
    if (++b.size == batch) flush();
  };
  auto tick = [&](int64_t words) {
    done += words;
    alpha = lr_at(lr0, before + done, total);
  };
  walk(s, 0, static_cast<int64_t>(c.sentence_end.size()), rng, emit, tick);
  flush();
  EpochStats st;
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  st.cpu_seconds = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
  st.words = ntok;
  st.loss = pairs > 0 ? loss / static_cast<double>(pairs) : 0.0;
  return st;
}

// --- evaluation ----------------------------------------------------------------------------------

// Rows scaled to unit length (zero rows stay zero).
std::vector<float> normalised(const float* x, int64_t V, int64_t D) {
  std::vector<float> n(x, x + V * D);
  for (int64_t v = 0; v < V; ++v) {
    float* r = n.data() + v * D;
    double s = 0;
    for (int64_t d = 0; d < D; ++d) s += static_cast<double>(r[d]) * r[d];
    const float inv = s > 0 ? static_cast<float>(1.0 / std::sqrt(s)) : 0.0f;
    for (int64_t d = 0; d < D; ++d) r[d] *= inv;
  }
  return n;
}

struct Question {
  std::string a, b, c, d, section;
};

// questions-words format: ": section" lines, then "a b c d" (a is to b as c is to d); '#' comments.
std::vector<Question> read_analogies(const std::string& path) {
  std::ifstream f(path);
  EMBER_CHECK(static_cast<bool>(f), kProg, "cannot open analogy file ", path);
  std::vector<Question> qs;
  std::string line, section = "all";
  int64_t lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    if (line[first] == ':') {
      section = line.substr(first + 1);
      section.erase(0, section.find_first_not_of(" \t"));
      continue;
    }
    std::istringstream in(line);
    Question q;
    std::string extra;
    in >> q.a >> q.b >> q.c >> q.d;
    EMBER_CHECK(!q.d.empty() && !(in >> extra), kProg, path, ":", lineno, ": expected four words \"a b c d\", got \"",
                line, "\"");
    for (std::string* s : {&q.a, &q.b, &q.c, &q.d})
      for (char& ch : *s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    q.section = section;
    qs.push_back(q);
  }
  EMBER_CHECK(!qs.empty(), kProg, path, ": no analogy questions");
  return qs;
}

struct AnalogyScore {
  int64_t correct = 0, answered = 0, total = 0;
  std::map<std::string, std::pair<int64_t, int64_t>> by_section;  // correct, answered
  double accuracy() const { return answered > 0 ? static_cast<double>(correct) / static_cast<double>(answered) : 0.0; }
};

// 3CosAdd over the whole vocabulary: d' = argmax cos(x, b - a + c), x not in {a, b, c}. A
// question with a word outside the vocabulary is skipped (counted in total, not in answered).
AnalogyScore analogies(const std::vector<float>& N, int64_t D, const Corpus& c, const std::vector<Question>& qs) {
  AnalogyScore s;
  const auto V = static_cast<int64_t>(c.vocab.size());
  std::vector<float> t(static_cast<size_t>(D));
  for (const Question& q : qs) {
    ++s.total;
    auto id = [&](const std::string& w) {
      auto it = c.index.find(w);
      return it == c.index.end() ? -1 : it->second;
    };
    const int32_t a = id(q.a), b = id(q.b), cc = id(q.c), d = id(q.d);
    if (a < 0 || b < 0 || cc < 0 || d < 0) continue;
    for (int64_t k = 0; k < D; ++k)
      t[static_cast<size_t>(k)] = N[static_cast<size_t>(b * D + k)] - N[static_cast<size_t>(a * D + k)] +
                                  N[static_cast<size_t>(cc * D + k)];
    int64_t best = -1;
    float best_s = -INFINITY;
    for (int64_t v = 0; v < V; ++v) {
      if (v == a || v == b || v == cc) continue;
      const float* r = N.data() + v * D;
      float z = 0;
#pragma omp simd reduction(+ : z)
      for (int64_t k = 0; k < D; ++k) z += r[k] * t[static_cast<size_t>(k)];
      if (z > best_s) best_s = z, best = v;
    }
    ++s.answered;
    auto& sec = s.by_section[q.section];
    ++sec.second;
    if (best == d) ++s.correct, ++sec.first;
  }
  return s;
}

std::string neighbours(const std::vector<float>& N, int64_t D, const Corpus& c, const std::string& w, int k) {
  auto it = c.index.find(w);
  if (it == c.index.end()) return "(not in the vocabulary)";
  const int64_t q = it->second, V = static_cast<int64_t>(c.vocab.size());
  std::vector<std::pair<float, int64_t>> sc;
  for (int64_t v = 0; v < V; ++v) {
    if (v == q) continue;
    float z = 0;
    for (int64_t d = 0; d < D; ++d) z += N[static_cast<size_t>(v * D + d)] * N[static_cast<size_t>(q * D + d)];
    sc.emplace_back(z, v);
  }
  const int kk = std::min<int>(k, static_cast<int>(sc.size()));
  std::partial_sort(sc.begin(), sc.begin() + kk, sc.end(), [](auto& x, auto& y) { return x.first > y.first; });
  std::string out;
  char buf[64];
  for (int i = 0; i < kk; ++i) {
    std::snprintf(buf, sizeof buf, "%s%s %.2f", i ? ", " : "", c.vocab[static_cast<size_t>(sc[static_cast<size_t>(i)].second)].c_str(),
                  sc[static_cast<size_t>(i)].first);
    out += buf;
  }
  return out;
}

// The baseline: PPMI vectors of co-occurrence counts (same window, no subsampling) over the K
// most frequent words as contexts, context counts smoothed to the power 0.75 (Levy et al. 2015).
std::vector<float> ppmi_vectors(const Corpus& c, int64_t window, int64_t K) {
  const auto V = static_cast<int64_t>(c.vocab.size());
  K = std::min(K, V);
  std::vector<float> M(static_cast<size_t>(V * K), 0.0f);
  int64_t start = 0;
  for (int64_t end : c.sentence_end) {
    for (int64_t i = start; i < end; ++i) {
      const int32_t w = c.tokens[static_cast<size_t>(i)];
      for (int64_t j = std::max(start, i - window); j <= std::min(end - 1, i + window); ++j) {
        const int32_t x = c.tokens[static_cast<size_t>(j)];
        if (j != i && x < K) M[static_cast<size_t>(w * K + x)] += 1.0f;
      }
    }
    start = end;
  }
  std::vector<double> row(static_cast<size_t>(V), 0.0), col(static_cast<size_t>(K), 0.0);
  double total = 0;
  for (int64_t v = 0; v < V; ++v)
    for (int64_t k = 0; k < K; ++k) row[static_cast<size_t>(v)] += M[static_cast<size_t>(v * K + k)];
  for (int64_t v = 0; v < V; ++v)
    for (int64_t k = 0; k < K; ++k) col[static_cast<size_t>(k)] += M[static_cast<size_t>(v * K + k)];
  double colsum = 0;
  for (double& x : col) x = std::pow(x, 0.75), colsum += x;
  for (double x : row) total += x;
  for (int64_t v = 0; v < V; ++v)
    for (int64_t k = 0; k < K; ++k) {
      float& m = M[static_cast<size_t>(v * K + k)];
      if (m <= 0) continue;
      const double pmi = std::log(static_cast<double>(m) * colsum /
                                  (row[static_cast<size_t>(v)] * col[static_cast<size_t>(k)])) ;
      m = pmi > 0 ? static_cast<float>(pmi) : 0.0f;
    }
  (void)total;
  return normalised(M.data(), V, K);
}

void save_vectors(const std::string& path, const Corpus& c, const float* E, int64_t D) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  EMBER_CHECK(f != nullptr, kProg, "cannot write ", path);
  std::fprintf(f, "%zu %lld\n", c.vocab.size(), static_cast<long long>(D));
  for (size_t v = 0; v < c.vocab.size(); ++v) {
    std::fputs(c.vocab[v].c_str(), f);
    for (int64_t d = 0; d < D; ++d) std::fprintf(f, " %.6g", E[static_cast<int64_t>(v) * D + d]);
    std::fputc('\n', f);
  }
  const bool ok = std::ferror(f) == 0;
  EMBER_CHECK(std::fclose(f) == 0 && ok, kProg, "error writing ", path);
}

std::string fmt(double x) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

// FNV-1a over the vocabulary, token stream and a parameter tensor's bytes.
uint64_t fnv(const void* p, size_t n, uint64_t h = 1469598103934665603ULL) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ULL;
  return h;
}
std::string hex(uint64_t h) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// --- --self-check ----------------------------------------------------------------------------------

// One Hogwild update (the code the CPU loop runs) against one autograd step of the library
// (Embedding -> HierarchicalSoftmax(sum) -> backward -> SGD) on the same toy model, for
// skip-gram pairs and CBOW windows, on the CPU and the stand-in device.
int self_check() {
  const std::vector<double> freq = {40, 25, 17, 12, 9, 7, 5, 4, 3, 2, 2, 1};
  const nn::ClassTree tree = nn::ClassTree::huffman(freq);
  const Paths paths(tree);
  const int64_t V = static_cast<int64_t>(freq.size()), D = 8;
  const float alpha = 0.3f;
  double worst = 0;
  int cases = 0;
  for (const char* dev : {"cpu", "fake"}) {
    for (int trial = 0; trial < 6; ++trial) {
      const bool cbow = trial % 2 == 1;
      Lcg g{mix(99, static_cast<uint64_t>(trial))};
      Word2Vec a(V, D, tree);
      {
        NoGradGuard ng;
        for (Tensor t : a.parameters()) {
          float* p = t.data<float>();
          for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(g.uniform() - 0.5);
        }
      }
      const int32_t target = static_cast<int32_t>(g.next() % V);
      std::vector<int32_t> ctx;
      const int n = cbow ? 3 : 1;
      for (int j = 0; j < n; ++j) ctx.push_back(static_cast<int32_t>(g.next() % V));
      // Hogwild code on copies of the raw parameters.
      std::vector<float> E = a.input->weight.to_vector<float>(), W = a.output->weight.to_vector<float>();
      const std::vector<float> E0 = E, W0 = W;
      std::vector<float> work(static_cast<size_t>(2 * D));
      if (cbow) cbow_sample(E.data(), W.data(), work.data(), paths, ctx.data(), n, target, D, alpha, false);
      else sg_pair(E.data(), W.data(), work.data(), paths, ctx[0], target, D, alpha, false);
      // The library's step.
      const Device device(dev);
      a.to(device);
      optim::SGD opt(a.parameters(), {.lr = alpha});
      amp::GradScaler scaler(example::scaler_options(std::nullopt));
      Batch b;
      b.size = 1;
      b.target = {target};
      if (cbow) {
        for (int j = 0; j < 4; ++j) {
          b.input.push_back(j < n ? ctx[static_cast<size_t>(j)] : 0);
          b.weight.push_back(j < n ? 1.0f / static_cast<float>(n) : 0.0f);
        }
      } else {
        b.input = {ctx[0]};
      }
      device_step(a, opt, scaler, b, cbow ? 4 : 0, alpha, device, std::nullopt);
      const std::vector<float> E2 = a.input->weight.to(Device::cpu()).to_vector<float>();
      const std::vector<float> W2 = a.output->weight.to(Device::cpu()).to_vector<float>();
      double diff = 0, moved = 0;
      for (size_t i = 0; i < E.size(); ++i) diff = std::max(diff, std::fabs(static_cast<double>(E[i]) - E2[i]));
      for (size_t i = 0; i < W.size(); ++i) diff = std::max(diff, std::fabs(static_cast<double>(W[i]) - W2[i]));
      for (size_t i = 0; i < E.size(); ++i) moved = std::max(moved, std::fabs(static_cast<double>(E[i]) - E0[i]));
      for (size_t i = 0; i < W.size(); ++i) moved = std::max(moved, std::fabs(static_cast<double>(W[i]) - W0[i]));
      worst = std::max(worst, diff);
      ++cases;
      std::printf("self-check %-4s %-8s target %d (depth %lld) contexts %d: largest change of a parameter %.3g, "
                  "max |hogwild - autograd| = %.3g\n",
                  dev, cbow ? "cbow" : "skipgram", target, static_cast<long long>(tree.depth(target)), n, moved, diff);
      EMBER_CHECK(moved > 1e-2, kProg, "self-check: the update did not move the parameters");
    }
  }
  const bool ok = worst < 1e-5;
  std::printf("self-check: %d cases, worst difference %.3g (tolerance 1e-5): %s\n", cases, worst, ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}

// --- the run -----------------------------------------------------------------------------------------

int run(const Args& a, Device device) {
  const auto t_start = std::chrono::steady_clock::now();
  const bool own = !a.text.empty();
  const std::string path = own ? a.text : a.data_root + "/" + kGcide;
  const RawText raw = tokenize(path, !own, a.limit);
  example::say("data: %s: %lld lines read, %lld tokens, %zu distinct words%s\n", path.c_str(),
               static_cast<long long>(raw.lines), static_cast<long long>(raw.tokens.size()), raw.words.size(),
               a.limit > 0 && static_cast<int64_t>(raw.tokens.size()) >= a.limit ? " (--limit reached)" : "");
  if (raw.bad_bytes > 0)
    example::say("note: %lld bytes that are not UTF-8 were read as spaces (the first on line %lld)\n",
                 static_cast<long long>(raw.bad_bytes), static_cast<long long>(raw.first_bad_line));
  if (!a.export_corpus.empty()) {
    std::FILE* f = std::fopen(a.export_corpus.c_str(), "w");
    EMBER_CHECK(f != nullptr, kProg, "cannot write ", a.export_corpus);
    int64_t start = 0;
    for (int64_t end : raw.sentence_end) {
      for (int64_t i = start; i < end; ++i) {
        if (i > start) std::fputc(' ', f);
        std::fputs(raw.words[static_cast<size_t>(raw.tokens[static_cast<size_t>(i)])].c_str(), f);
      }
      std::fputc('\n', f);
      start = end;
    }
    EMBER_CHECK(std::fclose(f) == 0, kProg, "error writing ", a.export_corpus);
    example::say("corpus: %zu sentences written to %s\n", raw.sentence_end.size(), a.export_corpus.c_str());
    return 0;
  }
  const Corpus corpus = build_corpus(raw, a.min_count);
  const auto V = static_cast<int64_t>(corpus.vocab.size()), D = a.dim;
  const auto ntok = static_cast<int64_t>(corpus.tokens.size());
  example::say("vocabulary: %lld words with count >= %lld; %lld training tokens in %zu sentences (paragraphs)\n",
               static_cast<long long>(V), static_cast<long long>(a.min_count), static_cast<long long>(ntok),
               corpus.sentence_end.size());

  const nn::ClassTree tree = nn::ClassTree::huffman(std::vector<double>(corpus.counts.begin(), corpus.counts.end()));
  const Paths paths(tree);
  double mean_depth = 0;
  for (int64_t v = 0; v < V; ++v)
    mean_depth += static_cast<double>(corpus.counts[static_cast<size_t>(v)]) * static_cast<double>(tree.depth(v));
  mean_depth /= static_cast<double>(raw.tokens.size() > 0 ? std::max<int64_t>(ntok, 1) : 1);
  example::say("Huffman tree: %lld internal nodes, depth %lld to %lld, %.1f per token on average\n",
               static_cast<long long>(tree.num_nodes()), static_cast<long long>(tree.depth(0)),
               static_cast<long long>(tree.max_depth()), mean_depth);

  // Baseline (same tokens, same questions).
  const std::vector<Question> qs = read_analogies(a.analogies);
  const auto tb = std::chrono::steady_clock::now();
  const AnalogyScore base =
      a.baseline_contexts > 0 ? analogies(ppmi_vectors(corpus, a.window, a.baseline_contexts),
                                          std::min<int64_t>(a.baseline_contexts, V), corpus, qs)
                              : AnalogyScore{};
  example::say("baseline: PPMI co-occurrence vectors (window %lld, %lld most frequent words as contexts): analogy "
               "accuracy %.4f (%lld/%lld answered of %lld questions; %.1f s)\n",
               static_cast<long long>(a.window), static_cast<long long>(std::min<int64_t>(a.baseline_contexts, V)),
               base.accuracy(), static_cast<long long>(base.correct), static_cast<long long>(base.answered),
               static_cast<long long>(base.total),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - tb).count());

  // Model, on the CPU first (word2vec's initialisation), then the device.
  Word2Vec model(V, D, tree);
  init_parameters(model, a.seed);
  const bool hogwild = device.is_cpu();
  EMBER_CHECK(!a.amp || !hogwild, kProg, "--amp applies to the library path (--device cuda or fake); the CPU "
                                         "Hogwild loop trains in f32");
  model.to(device);
  optim::SGD opt(model.parameters(), {.lr = a.lr});
  amp::GradScaler scaler(example::scaler_options(a.amp));
  Setup setup{&corpus, &paths, keep_probabilities(corpus, a.sample), a.window, D, a.model == "cbow"};
  example::say("model: %s, D %lld, window %lld, min-count %lld, sample %g, lr %g linear to 0, %lld epochs; "
               "hierarchical softmax over the Huffman tree (output weight (%lld, %lld)); %s\n",
               a.model.c_str(), static_cast<long long>(D), static_cast<long long>(a.window),
               static_cast<long long>(a.min_count), a.sample, a.lr, static_cast<long long>(a.epochs),
               static_cast<long long>(tree.num_rows()), static_cast<long long>(D),
               hogwild ? ("CPU Hogwild, " + std::to_string(a.threads) + " thread(s)").c_str()
                       : ("library ops on " + device.str() + ", batch " + std::to_string(a.batch) + " pairs, amp " +
                          example::amp_name(a.amp)).c_str());

  uint64_t dh = fnv(corpus.tokens.data(), corpus.tokens.size() * sizeof(int32_t));
  for (const std::string& w : corpus.vocab) dh = fnv(w.data(), w.size() + 1, dh);
  const std::map<std::string, std::string> identity = {
      {"model", a.model}, {"dim", std::to_string(D)}, {"window", std::to_string(a.window)},
      {"min_count", std::to_string(a.min_count)}, {"sample", fmt(a.sample)}, {"epochs", std::to_string(a.epochs)},
      {"lr", fmt(a.lr)}, {"seed", std::to_string(a.seed)}, {"batch", std::to_string(a.batch)},
      {"amp", example::amp_name(a.amp)}, {"data", hex(dh)}};
  std::vector<double> hist_loss, hist_acc;
  double train_seconds = 0, train_cpu_seconds = 0;
  int64_t trained_words = 0, first_epoch = 1;
  Generator unused(a.seed);
  if (a.resume) {
    io::TrainingState st;
    io::load_checkpoint(a.checkpoint, model, opt, nullptr, st, &scaler);
    example::check_run_identity(kProg, a.checkpoint, st.extra, identity, "resume with the same data and flags");
    hist_loss = example::parse_numbers(kProg, st.extra.at("hist_loss"), a.checkpoint + " train.extra.hist_loss");
    hist_acc = example::parse_numbers(kProg, st.extra.at("hist_acc"), a.checkpoint + " train.extra.hist_acc");
    first_epoch = st.epoch + 1;
    example::say("resumed from %s: %lld of %lld epochs done\n", a.checkpoint.c_str(), static_cast<long long>(st.epoch),
                 static_cast<long long>(a.epochs));
  }
  const int64_t last_epoch = a.stop_after > 0 ? std::min(a.stop_after, a.epochs) : a.epochs;
  auto host_vectors = [&] { return model.input->weight.to(Device::cpu()).contiguous(); };
  std::unique_ptr<ember::Profiler> profiler = example::start_profile(a.profile);
  g_profiler = profiler.get();
  for (int64_t epoch = first_epoch; epoch <= last_epoch; ++epoch) {
    const EpochStats st = hogwild ? cpu_epoch(setup, model, epoch, a.epochs, a.lr, a.seed, a.threads)
                                  : device_epoch(setup, model, opt, scaler, epoch, a.epochs, a.lr, a.seed, a.batch,
                                                 device, a.amp);
    train_seconds += st.seconds;
    train_cpu_seconds += st.cpu_seconds;
    trained_words += st.words;
    const Tensor E = host_vectors();
    const AnalogyScore sc = analogies(normalised(E.data<float>(), V, D), D, corpus, qs);
    hist_loss.push_back(st.loss);
    hist_acc.push_back(sc.accuracy());
    char scale[48] = "";
    if (scaler.is_enabled()) std::snprintf(scale, sizeof scale, " scale %g", scaler.get_scale());
    example::say("epoch %lld/%lld train_loss %.4f analogy %.4f (%lld/%lld)%s\n", static_cast<long long>(epoch),
                 static_cast<long long>(a.epochs), st.loss, sc.accuracy(), static_cast<long long>(sc.correct),
                 static_cast<long long>(sc.answered), scale);
    example::say("  %.1f s, %.0f words/s (%.1f CPU s: %.0f words per CPU second)\n", st.seconds,
                 static_cast<double>(st.words) / std::max(st.seconds, 1e-9), st.cpu_seconds,
                 static_cast<double>(st.words) / std::max(st.cpu_seconds, 1e-9));
    if (!a.checkpoint.empty()) {
      io::TrainingState ts = io::TrainingState::from(unused);
      ts.epoch = epoch;
      ts.step = epoch * ntok;
      ts.extra = identity;
      ts.extra["hist_loss"] = example::format_numbers(hist_loss);
      ts.extra["hist_acc"] = example::format_numbers(hist_acc);
      io::save_checkpoint(a.checkpoint, model, opt, nullptr, ts, &scaler);
    }
  }
  g_profiler = nullptr;
  if (profiler) profiler->stop();
  if (!a.plot.empty() && !hist_loss.empty()) {
    // Accuracy only: the loss (about 7.5 nats per pair) would flatten it on a shared axis; the
    // epoch lines print the loss.
    example::write_svg_plot(a.plot, "word2vec on GCIDE: " + a.model + ", hierarchical softmax", "epoch",
                            "analogy accuracy (3CosAdd)",
                            {{"word2vec vectors", hist_acc},
                             {"PPMI baseline accuracy", std::vector<double>(hist_loss.size(), base.accuracy())}});
    example::say("plot: %s\n", a.plot.c_str());
  }
  if (last_epoch < a.epochs) {
    example::say("stopped after epoch %lld of %lld (--stop-after); continue with --resume\n",
                 static_cast<long long>(last_epoch), static_cast<long long>(a.epochs));
    return 0;
  }
  const Tensor E = host_vectors();
  const std::vector<float> N = normalised(E.data<float>(), V, D);
  example::say("vectors: digest %s\n", hex(fnv(E.data<float>(), static_cast<size_t>(V * D) * sizeof(float))).c_str());
  std::stringstream probes(a.probes);
  for (std::string w; std::getline(probes, w, ',');)
    if (!w.empty()) example::say("nearest to %-8s %s\n", w.c_str(), neighbours(N, D, corpus, w, 8).c_str());
  const AnalogyScore sc = analogies(N, D, corpus, qs);
  for (const auto& [sec, cnt] : sc.by_section)
    example::say("  analogies %-22s %lld/%lld\n", sec.c_str(), static_cast<long long>(cnt.first),
                 static_cast<long long>(cnt.second));
  if (!a.save_vectors.empty()) {
    save_vectors(a.save_vectors, corpus, E.data<float>(), D);
    example::say("vectors written to %s (word2vec text format)\n", a.save_vectors.c_str());
  }
  const double wps = static_cast<double>(trained_words) / std::max(train_seconds, 1e-9);
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  example::say("analogy accuracy %.4f (%lld/%lld answered, %lld of %lld questions skipped for words outside the "
               "vocabulary); PPMI baseline %.4f\n",
               sc.accuracy(), static_cast<long long>(sc.correct), static_cast<long long>(sc.answered),
               static_cast<long long>(sc.total - sc.answered), static_cast<long long>(sc.total), base.accuracy());
  example::say("training: %lld tokens in %.1f s = %.0f words/s (%s; %.0f words per CPU second); total time %.1f s\n",
               static_cast<long long>(trained_words), train_seconds, wps,
               hogwild ? (std::to_string(a.threads) + " Hogwild thread(s)").c_str() : device.str().c_str(),
               static_cast<double>(trained_words) / std::max(train_cpu_seconds, 1e-9), total);
  if (!a.export_onnx.empty()) {
    io::ExportOptions o;
    o.input_names = {"word_ids"};
    o.output_names = {"vectors", "unit_vectors"};
    o.dynamic_axes = {{"word_ids", {{0, "words"}}}, {"vectors", {{0, "words"}}}, {"unit_vectors", {{0, "words"}}}};
    std::vector<int64_t> ids;
    for (int64_t i = 0; i < std::min<int64_t>(8, V); ++i) ids.push_back(i);
    example::export_onnx(kProg, a.export_onnx, model, {from_vector(ids, {static_cast<int64_t>(ids.size())})}, o,
                         [&model](const std::vector<Tensor>& in) {
                           const Tensor v = model.input->forward(in[0]);
                           const Tensor norm = clamp(sqrt(sum(v * v, {1}, true)), 1e-12, std::nullopt);
                           return std::vector<Tensor>{v, v / norm};
                         });
  }
  example::print_result({{"words_per_s", wps}, {"analogy_accuracy", sc.accuracy()},
                         {"baseline_analogy_accuracy", base.accuracy()}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return example::run_main(kProg, argc, argv, parse_args, usage, [](const Args& a, Device device) {
    return a.self_check ? self_check() : run(a, device);
  });
}
