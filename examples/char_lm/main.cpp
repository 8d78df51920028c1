// char_lm: a character-level language model trained on the King James Bible, read straight
// from Debian's sword-text-kjv package (a SWORD zText module: sword_ztext.h).
//
//   char_lm [--model transformer|lstm] [--preset small|full] [--device cpu|cuda] ...
//
// The text is the 31,102 verses as plain text, one verse a line, modelled byte by byte (the
// vocabulary is the set of bytes that occur, about 75). The last 1% of the text is held out.
// Each step trains on --batch random windows of --context bytes, predicting every next byte.
//
// Models:
//   transformer  byte embedding + learned positions, pre-norm TransformerEncoder with a causal
//                mask (GELU feed-forward), final LayerNorm, Linear head
//   lstm         byte embedding, nn::LSTM (batch-first), Linear head
// Presets: `small` is sized for 2 CPU cores (it trains to English-like samples in under five
// minutes there, stopping at --minutes if the step count is not reached first); `full` is for
// a GPU. Every flag after --preset overrides the preset's value.
//
// Output: a progress line every --log-every steps (loss, learning rate, tokens/s), a held-out
// loss every --eval-every steps, a checkpoint (model, AdamW moments, schedule, data generator,
// step) to --checkpoint at every evaluation and at the end, and --sample bytes of generated
// text at the end. --resume continues a run from its checkpoint; without a --minutes stop the
// continued run is the one that was never stopped, bit for bit, on the same device and threads
// (--stop-after N stops at step N as if interrupted; a CTest checks the bit-for-bit claim).
//
// --dist: data-parallel under mpirun or srun (docs/distributed.md). Every rank draws the same
// --batch windows and trains on every W-th of them (DDP averages the gradients), so W ranks
// follow the one-process run up to f32 rounding (dropout masks aside); only rank 0 prints, the
// --minutes stop is agreed by all ranks, rank 0 writes the checkpoint.
//   mpirun -np 2 build/release/examples/char_lm/char_lm --dist
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "../common/onnx_export.h"
#include "../common/cli.h"
#include "../common/flags.h"
#include "../common/profile.h"
#include "../common/training.h"
#include "ember/ember.h"
#include "sword_ztext.h"

using namespace ember;

namespace {

constexpr const char* kDefaultData = "/usr/share/sword/modules/texts/ztext/engKJV2006eb";

struct Args {
  std::string data = kDefaultData;
  std::string model = "transformer";
  std::string preset = "small";
  std::string device = "cpu";
  std::string checkpoint = "char_lm.ckpt.safetensors";
  std::string prompt = "And God said";
  std::string profile;  // --profile: Chrome trace of the training loop
  std::string export_onnx;  // --export-onnx: the trained model as ONNX
  int64_t d_model = 128, layers = 4, heads = 4, ff = 512;  // transformer
  int64_t hidden = 384, lstm_layers = 1;                   // lstm
  int64_t context = 128, batch = 32, steps = 800;
  double lr = 3e-3, dropout = 0.0, minutes = 4.0, temperature = 0.7;
  int64_t log_every = 50, eval_every = 250, sample = 400, threads = 0, stop_after = 0;
  uint64_t seed = 1234;
  bool resume = false, help = false, dist = false;
  bool cuda_graph = false;  // --cuda-graph: capture the training step once, replay it
  std::optional<DType> amp;  // --amp: autocast's low dtype
};

void apply_preset(Args& a, const std::string& name) {
  EMBER_CHECK(name == "small" || name == "full", "char_lm", "unknown --preset \"", name, "\" (small or full)");
  a.preset = name;
  if (name == "full") {  // a GPU run
    a.d_model = 512, a.layers = 8, a.heads = 8, a.ff = 2048, a.hidden = 1024, a.lstm_layers = 2;
    a.context = 256, a.batch = 64, a.steps = 20000, a.lr = 6e-4, a.dropout = 0.1, a.minutes = 0;
    a.eval_every = 1000, a.log_every = 100;
  }
}

void usage(std::ostream& o) {
  o << "usage: char_lm [options]\n"
       "  --data DIR         SWORD zText module (default " << kDefaultData << ";\n"
       "                     apt-get install sword-text-kjv)\n"
       "  --model M          transformer (default) or lstm\n"
       "  --preset P         small (default; 2 CPU cores, < 5 min) or full (a GPU); later flags override it\n"
       "  --d-model N --layers N --heads N --ff N     transformer size (small: 128, 4, 4, 512)\n"
       "  --hidden N --lstm-layers N                  LSTM size (small: 384, 1)\n"
       "  --context N        bytes per training window (small: 128)\n"
       "  --batch N          windows per step (small: 32)\n"
       "  --steps N          optimizer steps (small: 800)\n"
       "  --minutes X        also stop after X minutes of training (small: 4; 0 = no limit)\n"
       "  --lr X             peak AdamW learning rate, warmup then cosine decay (small: 3e-3)\n"
       "  --dropout X        dropout in the model (small: 0)\n"
       "  --log-every N --eval-every N                progress and held-out evaluation intervals\n"
       "  --sample N         bytes of text generated at the end (default 400)\n"
       "  --prompt TEXT      what the generated text continues (default \"And God said\")\n"
       "  --temperature X    sampling temperature (default 0.7)\n"
       "  --seed N           initialisation, data order and sampling seed (default 1234)\n"
       "  --threads N        OpenMP threads (default: OpenMP's)\n"
       "  --device D         cpu, cuda or cuda:N (default cpu); fake = the stand-in test device\n"
       "  --amp M            mixed precision: bf16, f16 (with dynamic loss scaling) or off (default off)\n"
       "  --checkpoint PATH  checkpoint file (default char_lm.ckpt.safetensors; \"\" = none)\n"
       "  --resume           continue from --checkpoint (same model, preset and flags)\n"
       "  --stop-after N     stop after step N with a checkpoint, as if interrupted (then --resume)\n"
       "  --export-onnx FILE write the trained model as ONNX: byte ids (batch, seq) in, next-byte logits\n"
       "                     out, batch and sequence (up to --context) dynamic (docs/deploy.md)\n"
       "  --profile FILE     profile the training loop: Chrome trace JSON to FILE, top-ops table\n"
       "  --cuda-graph       capture the training step as a CUDA graph after 3 eager steps and replay\n"
       "                     it (cuda or fake; not with --dropout > 0 or --dist)\n"
       "  --dist             data-parallel: run under mpirun/srun; --batch stays the global batch,\n"
       "                     only rank 0 prints\n";
}

Args parse_args(int argc, char** argv) {
  Args a;
  example::Flags f("char_lm");
  f.preset([&](const std::string& v) { apply_preset(a, v); });  // the other flags override it, whatever their order
  f.boolean("--resume", &a.resume).boolean("--dist", &a.dist).boolean("--cuda-graph", &a.cuda_graph);
  f.text("--data", &a.data).text("--model", &a.model).text("--device", &a.device);
  f.text("--checkpoint", &a.checkpoint).text("--prompt", &a.prompt);
  f.text("--profile", &a.profile).text("--export-onnx", &a.export_onnx);
  f.integer("--d-model", &a.d_model, 1).integer("--layers", &a.layers, 1).integer("--heads", &a.heads, 1);
  f.integer("--ff", &a.ff, 1).integer("--hidden", &a.hidden, 1).integer("--lstm-layers", &a.lstm_layers, 1);
  f.integer("--context", &a.context, 2).integer("--batch", &a.batch, 1).integer("--steps", &a.steps, 1);
  f.real("--minutes", &a.minutes, 0.0, false).real("--lr", &a.lr, 0.0, false);
  f.real("--dropout", &a.dropout, 0.0, false);
  f.integer("--log-every", &a.log_every, 1).integer("--eval-every", &a.eval_every, 1);
  f.integer("--sample", &a.sample, 0).real("--temperature", &a.temperature, 0.0, false);
  f.integer("--seed", &a.seed, 0).integer("--threads", &a.threads, 1).integer("--stop-after", &a.stop_after, 1);
  f.amp("--amp", &a.amp);
  a.help = f.parse(argc, argv);
  EMBER_CHECK(a.model == "transformer" || a.model == "lstm", "char_lm", "--model must be transformer or lstm, got \"",
              a.model, "\"");
  EMBER_CHECK(a.model != "transformer" || a.d_model % a.heads == 0, "char_lm", "--d-model ", a.d_model,
              " must be a multiple of --heads ", a.heads);
  EMBER_CHECK(!a.resume || !a.checkpoint.empty(), "char_lm", "--resume needs a --checkpoint path");
  return a;
}

// --- data -------------------------------------------------------------------------------------

struct Corpus {
  std::vector<unsigned char> vocab;  // id -> byte
  std::vector<int64_t> to_id;        // byte -> id (-1: not in the text)
  Tensor train, val;                 // i64 ids (n)
};

Corpus load_corpus(const std::string& dir) {
  std::vector<std::string> verses;
  try {
    verses = sword::read_verses(dir);
  } catch (const std::exception& e) {
    EMBER_FAIL("char_lm", e.what(), " (install Debian's sword-text-kjv package or pass --data DIR)");
  }
  std::string text;
  for (const std::string& v : verses) text += v + "\n";
  Corpus c;
  c.to_id.assign(256, -1);
  std::vector<bool> seen(256, false);
  for (unsigned char ch : text) seen[ch] = true;
  for (int b = 0; b < 256; ++b)
    if (seen[b]) {
      c.to_id[b] = static_cast<int64_t>(c.vocab.size());
      c.vocab.push_back(static_cast<unsigned char>(b));
    }
  std::vector<int64_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = c.to_id[static_cast<unsigned char>(text[i])];
  const int64_t n = static_cast<int64_t>(ids.size()), n_val = n / 100;
  Tensor all = from_vector(ids, {n});
  c.train = all.narrow(0, 0, n - n_val).contiguous();
  c.val = all.narrow(0, n - n_val, n_val).contiguous();
  example::say("data: %zu verses, %lld bytes (%lld train, %lld held out), vocabulary %zu bytes, from %s\n",
              verses.size(), static_cast<long long>(n), static_cast<long long>(n - n_val),
              static_cast<long long>(n_val), c.vocab.size(), dir.c_str());
  return c;
}

// (B, T + 1) windows of `ids` starting at `starts` (B): inputs are [:, :T], targets [:, 1:].
Tensor windows(const Tensor& ids, const Tensor& starts, int64_t T) {
  Tensor idx = starts.unsqueeze(1) + arange(0, static_cast<double>(T + 1)).unsqueeze(0);  // (B, T + 1)
  return index_select(ids, 0, idx.reshape({-1})).reshape({starts.size(0), T + 1});
}

// --- models -----------------------------------------------------------------------------------

class CharLM : public nn::Module {
 public:
  CharLM(const Args& a, int64_t vocab, Generator* gen) : transformer_(a.model == "transformer") {
    if (transformer_) {
      embed = register_module("embed", std::make_shared<nn::Embedding>(vocab, a.d_model, std::nullopt, gen));
      pos = register_module("pos", std::make_shared<nn::LearnedPositionalEmbedding>(a.context, a.d_model, true, gen));
      nn::TransformerLayerOptions o;
      o.d_model = a.d_model;
      o.nhead = a.heads;
      o.dim_feedforward = a.ff;
      o.dropout = a.dropout;
      o.activation = nn::Activation::gelu;
      o.norm_first = true;
      o.batch_first = true;
      o.generator = gen;
      encoder = register_module("encoder", std::make_shared<nn::TransformerEncoder>(o, a.layers, /*final_norm=*/true));
      head = register_module("head", std::make_shared<nn::Linear>(a.d_model, vocab, true, gen));
    } else {
      embed = register_module("embed", std::make_shared<nn::Embedding>(vocab, a.hidden, std::nullopt, gen));
      nn::RNNOptions o;
      o.input_size = a.hidden;
      o.hidden_size = a.hidden;
      o.num_layers = a.lstm_layers;
      o.batch_first = true;
      o.dropout = a.dropout;
      lstm = register_module("lstm", std::make_shared<nn::LSTM>(o, gen));
      head = register_module("head", std::make_shared<nn::Linear>(a.hidden, vocab, true, gen));
    }
  }

  // ids (N, T) i64 -> logits (N, T, vocab)
  Tensor forward(const Tensor& ids) {
    Tensor h = embed->forward(ids);  // (N, T, d)
    if (transformer_) {
      h = encoder->forward(pos->forward(h), Tensor(), Tensor(), /*is_causal=*/true);
    } else {
      h = lstm->forward(h).output;  // (N, T, hidden)
    }
    return head->forward(h);
  }

  std::shared_ptr<nn::Embedding> embed;
  std::shared_ptr<nn::LearnedPositionalEmbedding> pos;
  std::shared_ptr<nn::TransformerEncoder> encoder;
  std::shared_ptr<nn::LSTM> lstm;
  std::shared_ptr<nn::Linear> head;

 private:
  bool transformer_;
};

// Mean next-byte loss over fixed, evenly spaced windows of the held-out text.
double evaluate(CharLM& model, const Tensor& val, int64_t T, int64_t batch, Device device) {
  model.eval();
  NoGradGuard no_grad;
  const int64_t windows_n = std::min<int64_t>(4 * batch, (val.size(0) - 1) / T);
  EMBER_CHECK(windows_n > 0, "char_lm", "held-out text (", val.size(0), " bytes) is shorter than --context ", T);
  double total = 0;
  for (int64_t s = 0; s < windows_n; s += batch) {
    const int64_t b = std::min(batch, windows_n - s);
    Tensor starts = arange(static_cast<double>(s * T), static_cast<double>((s + b) * T), static_cast<double>(T));
    Tensor w = windows(val, starts, T).to(device);
    Tensor logits = model.forward(w.narrow(1, 0, T));
    Tensor loss = nn::cross_entropy(logits.reshape({-1, logits.size(2)}), w.narrow(1, 1, T).reshape({-1}));
    total += loss.item<double>() * static_cast<double>(b);
  }
  model.train();
  return total / static_cast<double>(windows_n);
}

// Continues `prompt` by `n` bytes, sampling each from softmax(logits / temperature).
std::string generate(CharLM& model, const Corpus& c, const Args& a, Device device) {
  model.eval();
  NoGradGuard no_grad;
  std::vector<int64_t> ids;
  for (unsigned char ch : a.prompt)
    if (c.to_id[ch] >= 0) ids.push_back(c.to_id[ch]);
  if (ids.empty()) ids.push_back(0);
  std::mt19937_64 rng(a.seed);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  std::string out(a.prompt);
  for (int64_t i = 0; i < a.sample; ++i) {
    const int64_t L = std::min<int64_t>(static_cast<int64_t>(ids.size()), a.context);
    std::vector<int64_t> window(ids.end() - L, ids.end());
    Tensor logits = model.forward(from_vector(window, {1, L}).to(device));  // (1, L, V)
    Tensor last = logits.select(1, L - 1).reshape({-1}).to(Device::cpu()).to(DType::f64);
    const double t = std::max(a.temperature, 1e-3);
    std::vector<double> p = softmax(last / t, 0).to_vector<double>();
    double r = uni(rng), acc = 0;
    int64_t pick = static_cast<int64_t>(p.size()) - 1;
    for (size_t k = 0; k < p.size(); ++k) {
      acc += p[k];
      if (r < acc) {
        pick = static_cast<int64_t>(k);
        break;
      }
    }
    ids.push_back(pick);
    out += static_cast<char>(c.vocab[static_cast<size_t>(pick)]);
  }
  model.train();
  return out;
}

// What a checkpoint must agree on to be continued by this run.
std::map<std::string, std::string> run_identity(const Args& a) {
  char lr[40];
  std::snprintf(lr, sizeof lr, "%.17g", a.lr);
  return {{"model", a.model}, {"preset", a.preset}, {"context", std::to_string(a.context)},
          {"batch", std::to_string(a.batch)}, {"steps", std::to_string(a.steps)}, {"lr", lr},
          {"seed", std::to_string(a.seed)}, {"amp", example::amp_name(a.amp)}};
}

int run(const Args& a, Device device) {
  if (a.threads > 0) cpu::set_num_threads(static_cast<int>(a.threads));
  // Late in training, tiny gradients and sharp attention rows produce denormal floats, each a
  // slow path on x86: flushing them to zero was worth ~6% tokens/s here (docs/perf/cpu.md).
  cpu::set_flush_denormal(true);
  const auto t0 = std::chrono::steady_clock::now();
  const Corpus corpus = load_corpus(a.data);
  const int64_t V = static_cast<int64_t>(corpus.vocab.size());

  Generator init_gen(a.seed), data_gen(a.seed ^ 0x5eed5eedULL);  // init_gen also draws dropout masks
  CharLM model(a, V, &init_gen);
  if (a.model == "transformer")
    example::say("model: transformer, d_model %lld, %lld layers, %lld heads, feed-forward %lld, context %lld\n",
                static_cast<long long>(a.d_model), static_cast<long long>(a.layers), static_cast<long long>(a.heads),
                static_cast<long long>(a.ff), static_cast<long long>(a.context));
  else
    example::say("model: LSTM, hidden %lld, %lld layer(s), context %lld\n", static_cast<long long>(a.hidden),
                static_cast<long long>(a.lstm_layers), static_cast<long long>(a.context));
  model.to(device);
  std::optional<nn::DistributedDataParallel> ddp;  // --dist: rank 0's parameters, averaged gradients
  if (a.dist) {
    ddp.emplace(model);
    example::say("dist: %d ranks (rank 0 prints), %d gradient buckets, global batch %lld\n", dist::world_size(),
                 ddp->num_buckets(), static_cast<long long>(a.batch));
  }
  example::say("%lld parameters; AdamW lr %g (warmup, cosine decay), batch %lld, %lld steps%s; device %s, %d threads\n",
              static_cast<long long>(model.parameter_count()), a.lr, static_cast<long long>(a.batch),
              static_cast<long long>(a.steps), a.minutes > 0 ? " or the --minutes limit" : "", device.str().c_str(),
              cpu::num_threads());
  std::fflush(stdout);

  optim::AdamW opt(model.parameters(), {.lr = a.lr, .beta1 = 0.9, .beta2 = 0.99, .weight_decay = 0.01});
  optim::WarmupCosineLR sched(opt, {.warmup_steps = std::min<int64_t>(100, a.steps / 10), .total_steps = a.steps,
                                    .min_lr = a.lr / 10});
  const auto identity = run_identity(a);
  amp::GradScaler scaler(example::scaler_options(a.amp));
  int64_t step = 0;
  if (a.resume) {
    io::TrainingState st;
    io::load_checkpoint(a.checkpoint, model, opt, &sched, st, &scaler);
    example::check_run_identity("char_lm", a.checkpoint, st.extra, identity,
                                "resume with the same model, preset and flags");
    st.apply_to(data_gen);
    // The model's generator draws the dropout masks: restore it too.
    auto seed = st.extra.find("model_rng_seed"), offset = st.extra.find("model_rng_offset");
    EMBER_CHECK(seed != st.extra.end() && offset != st.extra.end(), "char_lm", a.checkpoint,
                " has no model generator state (train.extra.model_rng_seed/offset)");
    init_gen.manual_seed(std::stoull(seed->second));
    init_gen.set_offset(std::stoull(offset->second));
    step = st.step;
    example::say("resumed from %s at step %lld\n", a.checkpoint.c_str(), static_cast<long long>(step));
  }
  auto save = [&] {
    if (a.checkpoint.empty()) return;
    io::TrainingState st = io::TrainingState::from(data_gen);
    st.step = step;
    st.extra = identity;
    st.extra["model_rng_seed"] = std::to_string(init_gen.seed());
    st.extra["model_rng_offset"] = std::to_string(init_gen.offset());
    io::save_checkpoint(a.checkpoint, model, opt, &sched, st, &scaler);
  };

  const int64_t T = a.context, n_train = corpus.train.size(0);
  EMBER_CHECK(n_train > T + 1, "char_lm", "training text is shorter than --context ", T);
  const auto train_start = std::chrono::steady_clock::now();
  auto window_start = train_start;
  double loss_sum = 0, val_loss = NAN;
  int64_t loss_n = 0, window_steps = 0;  // steps since the last progress line / since window_start
  std::unique_ptr<ember::Profiler> profiler = example::start_profile(a.profile);
  // The step reads its windows from `w` and leaves the loss in `loss`; with --cuda-graph it is
  // captured once (after warm-up) and replayed, so `w` is filled in place, never reassigned.
  Tensor w, loss;
  double weight = 1.0;
  auto train_step = [&] {
    {
      // --amp: GEMMs, attention and the recurrence in the low dtype; softmax, norms, the loss in f32.
      amp::AutocastGuard autocast(device, a.amp.value_or(DType::bf16), a.amp.has_value());
      Tensor logits = model.forward(w.narrow(1, 0, T));  // (B, T, V)
      loss = nn::cross_entropy(logits.reshape({-1, V}), w.narrow(1, 1, T).reshape({-1}));
    }
    opt.zero_grad();
    scaler.scale(weight == 1.0 ? loss : loss * weight).backward();
    scaler.unscale_(opt);  // clip the true gradients
    optim::clip_grad_norm_(model.parameters(), 1.0);
    scaler.step(opt);  // skipped (f16) when a gradient overflowed
    scaler.update();
  };
  std::unique_ptr<cuda::StepGraph> graph;
  if (a.cuda_graph) {
    EMBER_CHECK(device.is_cuda() || device.is_fake(), "char_lm", "--cuda-graph needs --device cuda (or fake), got ",
                device);
    EMBER_CHECK(a.dropout == 0.0, "char_lm", "--cuda-graph with --dropout ", a.dropout,
                ": a replayed step would reuse one dropout mask; use --dropout 0");
    EMBER_CHECK(dist::world_size() == 1, "char_lm", "--cuda-graph with --dist is not supported yet");
    graph = std::make_unique<cuda::StepGraph>(device, train_step, cuda::StepGraphOptions{3, {&w}});
  }
  while (step < a.steps) {
    Tensor starts = randint(0, n_train - T - 1, {a.batch}, DType::i64, &data_gen);
    const example::Shard mine = example::shard_of(starts);  // this rank's windows (all in one process)
    const Tensor batch = windows(corpus.train, mine.rows, T);  // (B, T + 1) on the host
    if (!w.defined() || w.shape() != batch.shape()) w = empty(batch.shape(), TensorOptions(DType::i64).with_device(device));
    w.copy_(batch);
    weight = mine.weight;
    if (graph) graph->run();
    else train_step();
    sched.step();
    ++step;
    if (profiler) profiler->step();
    if (mine.count > 0) {
      loss_sum += loss.item<double>() * static_cast<double>(mine.count);
      loss_n += mine.count;
    }
    ++window_steps;

    const auto now = std::chrono::steady_clock::now();
    const double minutes = std::chrono::duration<double>(now - train_start).count() / 60.0;
    bool out_of_time = a.minutes > 0 && minutes >= a.minutes;
    if (a.minutes > 0 && dist::world_size() > 1)  // every rank stops at the same step
      out_of_time = example::sum_over_ranks({out_of_time ? 1.0 : 0.0})[0] > 0;
    if (step % a.log_every == 0 || step == a.steps || out_of_time) {
      const double secs = std::chrono::duration<double>(now - window_start).count();
      const std::vector<double> tot = example::sum_over_ranks({loss_sum, static_cast<double>(loss_n)});
      char scale[48] = "";
      if (scaler.is_enabled()) std::snprintf(scale, sizeof scale, " scale %g", scaler.get_scale());
      example::say("step %lld/%lld loss %.4f lr %.2e %.0f tokens/s (%.1f min)%s\n", static_cast<long long>(step),
                  static_cast<long long>(a.steps), tot[0] / tot[1], opt.lr(0),
                  static_cast<double>(window_steps * a.batch * T) / std::max(secs, 1e-9), minutes, scale);
      std::fflush(stdout);
      loss_sum = 0;
      loss_n = 0;
      window_steps = 0;
      window_start = std::chrono::steady_clock::now();
    }
    if (step % a.eval_every == 0 || step == a.steps || out_of_time) {
      val_loss = evaluate(model, corpus.val, T, a.batch, device);
      example::say("step %lld held-out loss %.4f (%.3f bits/byte)\n", static_cast<long long>(step), val_loss,
                  val_loss / std::log(2.0));
      std::fflush(stdout);
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
  if (profiler) profiler->stop();
  if (std::isnan(val_loss)) val_loss = evaluate(model, corpus.val, T, a.batch, device);
  example::say("final held-out loss %.4f (%.3f bits/byte)\n", val_loss, val_loss / std::log(2.0));
  if (!a.export_onnx.empty()) {
    // Two held-out windows, two bytes short of --context so that a longer sequence still fits
    // the learned positions when the exporter checks the sequence axis.
    const int64_t L = std::max<int64_t>(1, T - 2);
    io::ExportOptions o;
    o.input_names = {"bytes"};
    o.output_names = {"logits"};
    o.dynamic_axes = {{"bytes", {{0, "batch"}}}, {"logits", {{0, "batch"}}}};
    if (L + 2 <= T) o.dynamic_axes["bytes"][1] = o.dynamic_axes["logits"][1] = "seq";
    example::export_onnx("char_lm", a.export_onnx, model, {corpus.val.narrow(0, 0, 2 * L).reshape({2, L})}, o,
                         [&model](const std::vector<Tensor>& in) { return std::vector<Tensor>{model.forward(in[0])}; });
    model.to(device);  // back for the sample below
  }
  if (a.sample > 0 && dist::rank() == 0) example::say("sample:\n%s\n", generate(model, corpus, a, device).c_str());
  example::say("total time: %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
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
    const Device device = example::usable_device("char_lm", args.device);
    const int rc = run(args, device);
    dist::finalize();
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
