// fashion_mnist: trains a 784-256-128-10 MLP with SGD + momentum on the real Fashion-MNIST.
//
// Data: the four IDX files of the original distribution (gzip or plain; zlib reads both) in
// --data DIR. Debian's dataset-fashion-mnist package installs them in the default folder.
//   train-images-idx3-ubyte[.gz]  magic 0x00000803, then n, rows, cols (big-endian u32), u8 pixels
//   train-labels-idx1-ubyte[.gz]  magic 0x00000801, then n, u8 labels in [0, 10)
//   t10k-*                        the same for the 10k test set
// Pixels go to [0, 1], then (x - 0.2860) / 0.3530 (the training set's mean and std).
//
// --device cpu|cuda|cuda:N picks where the model trains. The data set stays on the CPU; each
// minibatch is gathered there and copied to the device, and the model's parameters are moved
// once with Module::to before the optimizer is built.
//
// Checkpoints: at the end of every epoch the model, the optimizer (momentum buffers), the
// learning-rate schedule and the loop position (epochs done, steps, the shuffling generator's
// seed and offset) go into one .safetensors file (--checkpoint PATH, default
// fashion_mnist.ckpt.safetensors; "" turns it off). --resume continues from it: the continued
// run is bit for bit the run that was never stopped (same device and --threads). --epochs is
// the length of the whole run (the cosine schedule spans it), so an interrupted
// `--epochs 2` run resumes with `--epochs 2 --resume`; --stop-after E stops after epoch E as
// if interrupted. See docs/checkpoints.md.
//
// --dist: data-parallel training under mpirun or srun (docs/distributed.md). --batch stays the
// global batch: each rank takes every W-th row of it and DDP averages the gradients, so W ranks
// follow the one-process run (up to f32 rounding); only rank 0 prints; rank 0 writes the
// checkpoint, and a run may resume with another number of ranks.
//   mpirun -np 2 build/release/examples/fashion_mnist/fashion_mnist --dist
#include <zlib.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "../common/cli.h"
#include "../common/flags.h"
#include "../common/onnx_export.h"
#include "../common/profile.h"
#include "../common/quantize_report.h"
#include "../common/training.h"
#include "ember/ember.h"
#include "ember/io/checkpoint.h"

namespace {

using namespace ember;
namespace fs = std::filesystem;

constexpr int64_t kClasses = 10;
constexpr double kMean = 0.2860, kStd = 0.3530;
// The data order has its own generator (the initialisation draws from one seeded with --seed).
constexpr uint64_t kShuffleSeedMix = 0x9E3779B97F4A7C15ULL;

// --- IDX reading ------------------------------------------------------------------------------

// A gzFile that closes itself.
struct GzFile {
  gzFile f = nullptr;
  ~GzFile() {
    if (f) gzclose(f);
  }
};

// Finds DIR/name.gz or DIR/name.
std::string find_file(const std::string& dir, const std::string& name) {
  for (const std::string& cand : {dir + "/" + name + ".gz", dir + "/" + name}) {
    if (fs::is_regular_file(cand)) return cand;
  }
  EMBER_FAIL("fashion_mnist", "missing data file ", dir, "/", name, ".gz (or without .gz); "
             "install Debian's dataset-fashion-mnist package or pass --data DIR holding the "
             "Fashion-MNIST IDX files");
}

void read_exact(gzFile f, void* buf, size_t n, const std::string& path, const char* what) {
  auto* p = static_cast<unsigned char*>(buf);
  size_t done = 0;
  while (done < n) {
    // gzread takes an unsigned count; read in chunks well under 2^31.
    const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - done, 1u << 30));
    const int got = gzread(f, p + done, chunk);
    if (got < 0) {
      int errnum = 0;
      const char* msg = gzerror(f, &errnum);
      EMBER_FAIL("fashion_mnist", "corrupt file ", path, " while reading ", what, ": ", msg);
    }
    if (got == 0) {
      EMBER_FAIL("fashion_mnist", "corrupt file ", path, ": truncated while reading ", what,
                 " (got ", done, " of ", n, " bytes)");
    }
    done += static_cast<size_t>(got);
  }
}

uint32_t read_be32(gzFile f, const std::string& path, const char* what) {
  unsigned char b[4];
  read_exact(f, b, 4, path, what);
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

struct Split {
  Tensor images;  // (N, rows*cols) f32, normalised
  Tensor labels;  // (N) i64
  int64_t n = 0;
  int64_t features = 0;
};

// Reads an images/labels pair; keeps at most `limit` samples when limit > 0.
Split load_split(const std::string& dir, const std::string& prefix, int64_t limit) {
  const std::string ipath = find_file(dir, prefix + "-images-idx3-ubyte");
  const std::string lpath = find_file(dir, prefix + "-labels-idx1-ubyte");

  GzFile img;
  img.f = gzopen(ipath.c_str(), "rb");
  EMBER_CHECK(img.f != nullptr, "fashion_mnist", "cannot open ", ipath);
  const uint32_t imagic = read_be32(img.f, ipath, "the magic number");
  EMBER_CHECK(imagic == 0x00000803, "fashion_mnist", "corrupt file ", ipath,
              ": IDX magic is 0x", std::hex, std::setfill('0'), std::setw(8), imagic, std::dec, ", expected 0x00000803 (u8, 3 dims)");
  const uint32_t n = read_be32(img.f, ipath, "the image count");
  const uint32_t rows = read_be32(img.f, ipath, "the row count");
  const uint32_t cols = read_be32(img.f, ipath, "the column count");
  EMBER_CHECK(n > 0 && rows > 0 && cols > 0 && rows <= 4096 && cols <= 4096, "fashion_mnist",
              "corrupt file ", ipath, ": implausible sizes n=", n, " rows=", rows, " cols=", cols);

  GzFile lab;
  lab.f = gzopen(lpath.c_str(), "rb");
  EMBER_CHECK(lab.f != nullptr, "fashion_mnist", "cannot open ", lpath);
  const uint32_t lmagic = read_be32(lab.f, lpath, "the magic number");
  EMBER_CHECK(lmagic == 0x00000801, "fashion_mnist", "corrupt file ", lpath,
              ": IDX magic is 0x", std::hex, std::setfill('0'), std::setw(8), lmagic, std::dec, ", expected 0x00000801 (u8, 1 dim)");
  const uint32_t ln = read_be32(lab.f, lpath, "the label count");
  EMBER_CHECK(ln == n, "fashion_mnist", ipath, " holds ", n, " images but ", lpath, " holds ", ln,
              " labels");

  const int64_t keep = limit > 0 ? std::min<int64_t>(limit, n) : n;
  const int64_t features = int64_t{rows} * cols;
  std::vector<unsigned char> pix(static_cast<size_t>(keep * features));
  read_exact(img.f, pix.data(), pix.size(), ipath, "pixels");
  std::vector<unsigned char> lab8(static_cast<size_t>(keep));
  read_exact(lab.f, lab8.data(), lab8.size(), lpath, "labels");

  std::vector<int64_t> labels(lab8.size());
  for (size_t i = 0; i < lab8.size(); ++i) {
    EMBER_CHECK(lab8[i] < kClasses, "fashion_mnist", "corrupt file ", lpath, ": label ", int{lab8[i]},
                " at index ", i, " is not in [0, ", kClasses, ")");
    labels[i] = lab8[i];
  }
  Split s;
  s.n = keep;
  s.features = features;
  {
    std::vector<float> raw(pix.begin(), pix.end());  // the one conversion from bytes
    s.images = from_vector(raw, {keep, features});   // (N, rows*cols) in [0, 255]
  }
  // [0, 255] -> [0, 1] -> (x - mean) / std, in place so the 60k images exist once.
  s.images.mul_(1.0 / 255.0);
  s.images.add_(scalar_tensor(-kMean));
  s.images.mul_(1.0 / kStd);
  s.labels = from_vector(labels, {keep});
  return s;
}

// --- command line -----------------------------------------------------------------------------

struct Args {
  std::string data = "/usr/share/datasets/fashion-mnist";
  int64_t epochs = 3;
  int64_t batch = 128;
  double lr = 0.05;
  uint64_t seed = 42;
  int threads = 0;  // 0: OpenMP's default
  int64_t limit = 0;
  std::string device = "cpu";
  std::string checkpoint = "fashion_mnist.ckpt.safetensors";  // "" disables checkpoints
  std::string profile;  // --profile: Chrome trace of the training loop
  std::string export_onnx;  // --export-onnx: the trained model as ONNX
  bool resume = false;
  bool eval_only = false;                    // --eval-only: load --checkpoint, no training
  std::optional<example::QuantForm> quantize;  // --quantize: compare f32 with int8/f16/bf16
  int64_t stop_after = 0;  // 0: run all epochs
  bool help = false;
  std::optional<DType> amp;  // --amp: autocast's low dtype
  bool dist = false;          // --dist: one rank of an mpirun/srun job
};

void usage(std::ostream& os) {
  os << "usage: fashion_mnist [options]\n"
        "  --data DIR     folder with the Fashion-MNIST IDX files (.gz or plain)\n"
        "                 (default /usr/share/datasets/fashion-mnist: apt-get install dataset-fashion-mnist)\n"
        "  --epochs N     training epochs (default 3)\n"
        "  --batch N      minibatch size (default 128)\n"
        "  --lr X         peak SGD learning rate, cosine-decayed to 0; momentum 0.9 (default 0.05)\n"
        "  --seed N       seed for initialisation and shuffling (default 42)\n"
        "  --threads N    OpenMP threads (default: OpenMP's own default)\n"
        "  --limit N      train on the first N training images only (smoke tests)\n"
        "  --device D     cpu, cuda or cuda:N (default cpu); fake = the stand-in test device\n"
        "  --amp M        mixed precision: bf16, f16 (with dynamic loss scaling) or off (default off)\n"
        "  --checkpoint PATH  write model, optimizer, schedule and loop state there at the end of\n"
        "                 every epoch (default fashion_mnist.ckpt.safetensors; \"\" disables)\n"
        "  --resume       continue from --checkpoint (same --epochs, --batch, --lr, --seed, --limit)\n"
        "  --stop-after E stop after epoch E, as if interrupted (continue with --resume)\n"
        "  --eval-only    load the model from --checkpoint and evaluate it, no training\n"
        "  --quantize Q   int8, f16 or bf16: compare the trained f32 model with that form (accuracy,\n"
        "                 size, latency; ends with a result: line)\n"
        "  --export-onnx FILE  write the trained (or --eval-only loaded) model as ONNX, batch axis\n"
        "                 dynamic, with a sample of inputs and outputs (docs/deploy.md)\n"
        "  --profile FILE profile the training loop: Chrome trace JSON to FILE, top-ops table\n"
        "  --dist         data-parallel: run under mpirun/srun, one process per GPU or CPU share;\n"
        "                 --batch stays the global batch, only rank 0 prints\n"
        "  --help         this text\n";
}

Args parse_args(int argc, char** argv) {
  Args a;
  example::Flags f("fashion_mnist");
  f.boolean("--resume", &a.resume).boolean("--dist", &a.dist).boolean("--eval-only", &a.eval_only);
  f.custom("--quantize", [&](const std::string& v) { a.quantize = example::parse_quantize("fashion_mnist", v); });
  f.text("--data", &a.data);
  f.integer("--epochs", &a.epochs, 1).integer("--batch", &a.batch, 1).real("--lr", &a.lr, 0.0, true);
  f.integer("--seed", &a.seed, 0).integer("--threads", &a.threads, 1).integer("--limit", &a.limit, 1);
  f.text("--device", &a.device).text("--checkpoint", &a.checkpoint).integer("--stop-after", &a.stop_after, 1);
  f.amp("--amp", &a.amp).text("--profile", &a.profile).text("--export-onnx", &a.export_onnx);
  a.help = f.parse(argc, argv);
  EMBER_CHECK(!a.resume || !a.checkpoint.empty(), "fashion_mnist", "--resume needs a --checkpoint path");
  return a;
}

// --- training ---------------------------------------------------------------------------------


// What a checkpoint must agree on to be continued by this run.
std::map<std::string, std::string> run_identity(const Args& args, int64_t train_n) {
  char lr[40];
  std::snprintf(lr, sizeof lr, "%.17g", args.lr);
  return {{"epochs", std::to_string(args.epochs)}, {"batch", std::to_string(args.batch)}, {"lr", lr},
          {"seed", std::to_string(args.seed)}, {"train_n", std::to_string(train_n)},
          {"amp", example::amp_name(args.amp)}};
}

// Number of rows whose argmax matches the label.
int64_t count_correct(const Tensor& logits, const Tensor& labels) {
  return sum(eq(argmax(logits, 1), labels)).item<int64_t>();
}

// Test accuracy in percent; in a job each rank scores its share of the test set.
double evaluate(nn::Sequential& model, const Split& test, Device device) {
  model.eval();
  NoGradGuard no_grad;
  const std::vector<int64_t> share = dist::split_rows(test.n, dist::world_size());
  const int64_t first = std::accumulate(share.begin(), share.begin() + dist::rank(), int64_t{0});
  const int64_t end = first + share[static_cast<size_t>(dist::rank())];
  int64_t correct = 0;
  constexpr int64_t kEvalBatch = 1000;
  for (int64_t start = first; start < end; start += kEvalBatch) {
    const int64_t len = std::min(kEvalBatch, end - start);
    correct += count_correct(model(test.images.narrow(0, start, len).to(device)),
                             test.labels.narrow(0, start, len).to(device));
  }
  model.train();
  const double all = example::sum_over_ranks({static_cast<double>(correct)})[0];
  return 100.0 * all / static_cast<double>(test.n);
}

// --export-onnx: the model with a dynamic batch axis, sampled on the first 8 test images.
void export_model(const std::string& path, nn::Sequential& model, const Split& test) {
  io::ExportOptions o;
  o.input_names = {"images"};
  o.output_names = {"logits"};
  o.dynamic_axes = {{"images", {{0, "batch"}}}, {"logits", {{0, "batch"}}}};
  example::export_onnx("fashion_mnist", path, model, {test.images.narrow(0, 0, std::min<int64_t>(8, test.n))}, o,
                       [&model](const std::vector<Tensor>& in) { return std::vector<Tensor>{model(in[0])}; });
}

// --quantize: the trained f32 model against its int8 / f16 / bf16 form on the test set.
void quantize_report(example::QuantForm form, nn::Sequential& model, const Split& test, Device device) {
  example::QuantizeHooks h;
  h.accuracy = [&](DType dt) {
    NoGradGuard no_grad;
    int64_t correct = 0;
    for (int64_t start = 0; start < test.n; start += 1000) {
      const int64_t len = std::min<int64_t>(1000, test.n - start);
      correct += count_correct(model(to_dtype(test.images.narrow(0, start, len), dt).to(device)),
                               test.labels.narrow(0, start, len).to(device));
    }
    return 100.0 * static_cast<double>(correct) / static_cast<double>(test.n);
  };
  h.forward = [&](int64_t batch, DType dt) { (void)model(to_dtype(test.images.narrow(0, 0, batch), dt).to(device)); };
  h.large_batch = 1000;
  example::quantize_report("fashion_mnist", model, form, h);
}

int run(const Args& args, Device device) {
  if (args.threads > 0) omp_set_num_threads(args.threads);
  const auto t0 = std::chrono::steady_clock::now();

  const Split train = load_split(args.data, "train", args.limit);
  const Split test = load_split(args.data, "t10k", 0);
  EMBER_CHECK(train.features == test.features, "fashion_mnist", "train images have ", train.features,
              " pixels but test images have ", test.features);
  example::say("data: %lld train, %lld test images of %lld pixels from %s (threads %d, device %s)\n",
              static_cast<long long>(train.n), static_cast<long long>(test.n),
              static_cast<long long>(train.features), args.data.c_str(), omp_get_max_threads(),
              device.str().c_str());

  Generator gen(args.seed);
  nn::Sequential model;
  model.add(std::make_shared<nn::Linear>(train.features, 256, true, &gen))
      .add(std::make_shared<nn::ReLU>())
      .add(std::make_shared<nn::Linear>(256, 128, true, &gen))
      .add(std::make_shared<nn::ReLU>())
      .add(std::make_shared<nn::Linear>(128, kClasses, true, &gen));
  example::say("model: %lld -> 256 -> ReLU -> 128 -> ReLU -> %lld, %lld parameters; "
              "SGD lr %g (cosine to 0) momentum 0.9, batch %lld\n",
              static_cast<long long>(train.features), static_cast<long long>(kClasses),
              static_cast<long long>(model.parameter_count()), args.lr,
              static_cast<long long>(args.batch));

  model.to(device);  // before the optimizer: its momentum buffers follow the parameters
  if (args.eval_only) {
    example::load_model_weights("fashion_mnist", args.checkpoint, model);
    example::say("loaded %s; test accuracy %.2f%%\n", args.checkpoint.c_str(), evaluate(model, test, device));
    if (!args.export_onnx.empty()) export_model(args.export_onnx, model, test);
    if (args.quantize) quantize_report(*args.quantize, model, test, device);  // converts the model: last
    return 0;
  }
  // --dist: every rank starts from rank 0's parameters; gradients are averaged over the ranks in
  // buckets during backward.
  std::optional<nn::DistributedDataParallel> ddp;
  if (args.dist) {
    ddp.emplace(model);
    example::say("dist: %d ranks (rank 0 prints), %d gradient buckets, global batch %lld (%lld per rank)\n",
                 dist::world_size(), ddp->num_buckets(), static_cast<long long>(args.batch),
                 static_cast<long long>(args.batch / dist::world_size()));
  }
  optim::SGD opt(model.parameters(), {.lr = args.lr, .momentum = 0.9, .weight_decay = 0.0});
  const int64_t steps = (train.n + args.batch - 1) / args.batch;
  // Cosine decay from lr to 0 over the whole run, one schedule step per optimizer step: the
  // late small steps settle the noise that momentum SGD leaves at a constant rate (worth about
  // a point of test accuracy).
  optim::WarmupCosineLR sched(opt, {.warmup_steps = 0, .total_steps = args.epochs * steps, .min_lr = 0.0});

  amp::GradScaler scaler(example::scaler_options(args.amp));
  Generator shuffle_gen(args.seed ^ kShuffleSeedMix);
  constexpr int64_t kLogEvery = 100;
  double test_acc = 0.0;
  int64_t first_epoch = 1, global_step = 0;
  const auto identity = run_identity(args, train.n);

  if (args.resume) {
    io::TrainingState st;
    io::load_checkpoint(args.checkpoint, model, opt, &sched, st, &scaler);
    example::check_run_identity("fashion_mnist", args.checkpoint, st.extra, identity,
                                "resume with the same --epochs, --batch, --lr, --seed and --limit");
    EMBER_CHECK(st.data_position == 0, "fashion_mnist", args.checkpoint,
                " was saved inside an epoch (data_position ", st.data_position, "); this program resumes at epoch ends");
    st.apply_to(shuffle_gen);
    first_epoch = st.epoch + 1;
    global_step = st.step;
    if (auto it = st.extra.find("test_acc"); it != st.extra.end()) test_acc = std::stod(it->second);
    example::say("resumed from %s: %lld/%lld epochs done, step %lld, lr %.6g\n", args.checkpoint.c_str(),
                static_cast<long long>(st.epoch), static_cast<long long>(args.epochs),
                static_cast<long long>(global_step), opt.lr(0));
    std::fflush(stdout);
  }
  const int64_t last_epoch = args.stop_after > 0 ? std::min(args.stop_after, args.epochs) : args.epochs;

  std::unique_ptr<ember::Profiler> profiler = example::start_profile(args.profile);
  for (int64_t epoch = first_epoch; epoch <= last_epoch; ++epoch) {
    const Tensor perm = from_vector(example::shuffled_order(train.n, shuffle_gen), {train.n});

    double loss_sum = 0.0;
    int64_t correct = 0, seen = 0;
    auto window_start = std::chrono::steady_clock::now();
    for (int64_t step = 1; step <= steps; ++step) {
      const int64_t start = (step - 1) * args.batch;
      const int64_t len = std::min(args.batch, train.n - start);
      const example::Shard mine = example::shard_of(perm.narrow(0, start, len));  // all of it in one process
      const Tensor x = index_select(train.images, 0, mine.rows).to(device);  // (B, 784)
      const Tensor y = index_select(train.labels, 0, mine.rows).to(device);  // (B)

      Tensor logits, loss;
      {
        // --amp: the Linear layers run in the low dtype, the loss in f32 (docs/amp.md).
        amp::AutocastGuard autocast(device, args.amp.value_or(DType::bf16), args.amp.has_value());
        logits = model(x);  // (B, 10)
        loss = nn::cross_entropy(logits, y);
      }
      opt.zero_grad();
      scaler.scale(mine.weight == 1.0 ? loss : loss * mine.weight).backward();
      scaler.step(opt);  // skipped (f16) when a gradient overflowed
      scaler.update();
      sched.step();
      ++global_step;
      if (profiler) profiler->step();

      if (mine.count > 0) {
        NoGradGuard no_grad;
        loss_sum += loss.item<double>() * static_cast<double>(mine.count);
        correct += count_correct(logits, y);
      }
      seen += mine.count;
      if (step % kLogEvery == 0 || step == steps) {
        const auto now = std::chrono::steady_clock::now();
        const double secs = std::chrono::duration<double>(now - window_start).count();
        const std::vector<double> tot =
            example::sum_over_ranks({loss_sum, static_cast<double>(correct), static_cast<double>(seen)});
        char scale[48] = "";
        if (scaler.is_enabled()) std::snprintf(scale, sizeof scale, " scale %g", scaler.get_scale());
        example::say("epoch %lld/%lld step %lld/%lld loss %.4f acc %.1f%% %.0f samples/s%s\n",
                    static_cast<long long>(epoch), static_cast<long long>(args.epochs),
                    static_cast<long long>(step), static_cast<long long>(steps),
                    tot[0] / tot[2], 100.0 * tot[1] / tot[2], tot[2] / std::max(secs, 1e-9), scale);
        std::fflush(stdout);
        loss_sum = 0.0;
        correct = seen = 0;
        window_start = now;
      }
    }
    test_acc = evaluate(model, test, device);
    example::say("epoch %lld test_acc %.2f%%\n", static_cast<long long>(epoch), test_acc);
    std::fflush(stdout);
    if (!args.checkpoint.empty()) {
      io::TrainingState st = io::TrainingState::from(shuffle_gen);  // where the next epoch draws
      st.epoch = epoch;
      st.step = global_step;
      st.extra = identity;
      char acc[40];
      std::snprintf(acc, sizeof acc, "%.17g", test_acc);
      st.extra["test_acc"] = acc;
      io::save_checkpoint(args.checkpoint, model, opt, &sched, st, &scaler);
    }
  }
  if (profiler) profiler->stop();
  if (last_epoch < args.epochs)
    example::say("stopped after epoch %lld of %lld (--stop-after); continue with --resume\n",
                static_cast<long long>(last_epoch), static_cast<long long>(args.epochs));

  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  example::say("final test accuracy: %.2f%%\n", test_acc);
  if (!args.export_onnx.empty()) export_model(args.export_onnx, model, test);
  if (args.quantize) quantize_report(*args.quantize, model, test, device);  // converts the model: last
  example::say("total time: %.1f s\n", total);
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
    // "cpu", "cuda", "cuda:N"; throws on anything else. --dist: "cuda" is this rank's GPU.
    const Device device = example::usable_device("fashion_mnist", args.device);
    const int rc = run(args, device);
    dist::finalize();
    return rc;
  } catch (const ember::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
