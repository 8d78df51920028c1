// The op-test harness runner (see op_harness.h for the modes).
#include "op_harness.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <sstream>
#include <utility>

#include "device_util.h"
#include "test_util.h"

namespace ember_test {

using ember::Device;
using ember::Generator;

OpCase device_case(std::string name, std::vector<ShapeSet> shape_sets, OpFn fn, std::vector<DType> dtypes,
                   std::vector<Dist> dists, Sum sum, double terms, unsigned flags) {
  OpCase c{std::move(name), std::move(shape_sets), std::move(fn), flags, std::move(dists)};
  c.dtypes = std::move(dtypes);
  c.sum = sum;
  c.terms = terms;
  return c;
}

std::vector<ShapeSet> unary_shapes() {
  return {{"(3, 4)", {{3, 4}}},          {"prime (7, 13)", {{7, 13}}}, {"size-1 (1, 7)", {{1, 7}}},
          {"1-D (13)", {{13}}},           {"3-D (2, 3, 5)", {{2, 3, 5}}}, {"0-D ()", {{}}}};
}

std::vector<ShapeSet> binary_shapes() {
  return {{"(3, 4) (3, 4)", {{3, 4}, {3, 4}}},
          {"prime (7, 13) (7, 13)", {{7, 13}, {7, 13}}},
          {"size-1 (1, 7) (1, 7)", {{1, 7}, {1, 7}}},
          {"broadcast (3, 1, 5) (4, 5)", {{3, 1, 5}, {4, 5}}},
          {"broadcast (5, 1) (1, 3)", {{5, 1}, {1, 3}}},
          {"broadcast (13) (3, 13)", {{13}, {3, 13}}},
          {"broadcast (3, 4) ()", {{3, 4}, {}}}};
}

std::vector<ShapeSet> reduce_shapes() {
  return {{"(3, 4, 5)", {{3, 4, 5}}},
          {"odd, size-1 (7, 1, 13)", {{7, 1, 13}}},
          {"prime (5, 3, 7)", {{5, 3, 7}}},
          {"size-1 (1, 5, 1)", {{1, 5, 1}}}};
}

static std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s) {
    if (ch == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else if (ch != ' ') {
      cur += ch;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

bool op_selected(const std::string& name) {
  const char* env = std::getenv("EMBER_TEST_OP");
  if (!env || !*env) return true;
  for (const std::string& tok : split_list(env)) {
    if (tok == name) return true;
    if (!tok.empty() && tok.back() == '*' && name.rfind(tok.substr(0, tok.size() - 1), 0) == 0) return true;
  }
  return false;
}

// FNV-1a: a seed per case that does not depend on the standard library's std::hash.
static uint64_t name_seed(const std::string& s, size_t set_index) {
  uint64_t h = 1469598103934665603ULL;
  for (char ch : s) h = (h ^ static_cast<unsigned char>(ch)) * 1099511628211ULL;
  return h ^ (set_index * 0x9e3779b97f4a7c15ULL);
}

static Tensor signed_uniform(const Shape& shape, double lo, double hi, Generator& g) {
  Tensor mag = ember::uniform(shape, lo, hi, DType::f64, &g);
  Tensor coin = ember::bernoulli(shape, 0.5, DType::f64, &g);  // 0 or 1
  return mag * (coin * 2.0 - 1.0);
}

std::vector<Tensor> make_inputs(const OpCase& c, const ShapeSet& s, uint64_t seed) {
  Generator g(seed);
  std::vector<Tensor> xs;
  for (size_t i = 0; i < s.shapes.size(); ++i) {
    Dist d = i < c.dists.size() ? c.dists[i] : Dist::normal;
    const Shape& shape = s.shapes[i];
    switch (d) {
      case Dist::normal: xs.push_back(ember::randn(shape, DType::f64, &g)); break;
      case Dist::positive: xs.push_back(ember::uniform(shape, 0.3, 2.0, DType::f64, &g)); break;
      case Dist::away_from_zero: xs.push_back(signed_uniform(shape, 0.25, 1.5, g)); break;
      case Dist::near_one: xs.push_back(signed_uniform(shape, 0.7, 1.3, g)); break;
    }
  }
  return xs;
}

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::contiguous: return "contiguous";
    case Layout::transposed: return "transposed view";
    case Layout::sliced: return "strided slice";
    case Layout::mixed: return "mixed transposed/sliced";
  }
  return "?";
}

static constexpr double kPoison = 777.25;

// v (1-D or more) through a transpose on `dev`.
static Tensor transposed_layout(const Tensor& v, Device dev) {
  if (v.dim() == 1) {  // column 1 of a (n, 3) buffer: stride 3, offset 1
    Tensor buf = ember::full({v.size(0), 3}, kPoison, v.dtype());
    ember::select(buf, 1, 1).copy_(v);
    return ember::select(buf.to(dev), 1, 1);
  }
  // A buffer holding v with its last two dims swapped, viewed back through a transpose.
  Tensor buf = ember::contiguous(ember::transpose(v, -2, -1));
  return ember::transpose(buf.to(dev), -2, -1);
}

// v (1-D or more) as a strided slice (step 2, offset 1 in every dim) of a larger buffer on `dev`.
static Tensor sliced_layout(const Tensor& v, Device dev) {
  Shape big;
  for (int64_t s : v.shape()) big.push_back(2 * s + 1);
  Tensor buf = ember::full(big, kPoison, v.dtype());
  auto slice_all = [&](Tensor t) {
    for (int64_t d = 0; d < v.dim(); ++d) t = ember::slice(t, d, 1, 1 + 2 * v.size(d), 2);
    return t;
  };
  slice_all(buf).copy_(v);
  return slice_all(buf.to(dev));
}

Tensor with_layout(const Tensor& v, Layout l, size_t input_index, Device dev) {
  if (l == Layout::mixed) l = input_index % 2 == 0 ? Layout::transposed : Layout::sliced;
  if (l == Layout::contiguous || v.dim() == 0 || v.numel() == 0) return dev.is_cpu() ? v.clone() : v.to(dev);
  return l == Layout::transposed ? transposed_layout(v, dev) : sliced_layout(v, dev);
}

Tensor random_index(int64_t bound, const Shape& shape, uint64_t seed) {
  Generator g(seed);
  return ember::randint(0, bound, shape, DType::i64, &g);
}

Tensor random_mask(const Shape& shape, uint64_t seed) {
  Generator g(seed);
  return ember::lt(ember::rand(shape, DType::f64, &g), ember::full(shape, 0.5, DType::f64));
}

static bool all_finite(const std::vector<double>& v) {
  for (double x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

// Forward on each layout against the contiguous result; gradcheck on each layout.
static void run_layouts_and_gradcheck(const OpCase& c, const ShapeSet& s, const std::vector<Tensor>& base) {
  Tensor ref;
  std::vector<double> ref_vals;
  try {
    ref = c.fn(base);
    ref_vals = vals(ref);
  } catch (const std::exception& e) {
    FAIL_CHECK(c.name << " [" << s.label << ", contiguous] forward threw: " << e.what());
    return;
  }
  CHECK_MESSAGE(all_finite(ref_vals), c.name << " [" << s.label << "]: forward gave non-finite values "
                                              << list_str(ref_vals) << " (bad test domain or a bug)");

  std::vector<Layout> layouts = {Layout::contiguous};
  if (!(c.flags & kNoLayouts)) {
    layouts.push_back(Layout::transposed);
    layouts.push_back(Layout::sliced);
    if (base.size() > 1) layouts.push_back(Layout::mixed);
  }
  for (Layout l : layouts) {
    std::ostringstream ctx;
    ctx << c.name << " [" << s.label << ", " << layout_name(l) << "]";
    try {
      std::vector<Tensor> xs;
      for (size_t i = 0; i < base.size(); ++i) {
        xs.push_back(with_layout(base[i], l, i));
        // the harness itself: the layout holds the same values, and a slice really is strided
        CHECK_MESSAGE(close_ratio(vals(xs[i]), vals(base[i]), 0, 0) <= 1.0, ctx.str() << ": layout changed values");
        bool sliced = l == Layout::sliced || (l == Layout::mixed && i % 2 == 1);
        if (sliced && base[i].numel() > 1)
          CHECK_MESSAGE((!xs[i].is_contiguous() && xs[i].offset() > 0), ctx.str() << ": input " << i << " is not strided");
      }
      if (l != Layout::contiguous) {
        Tensor out = c.fn(xs);
        CHECK_MESSAGE(out.shape() == ref.shape(), ctx.str() << ": shape " << to_string(out.shape())
                                                            << " != contiguous " << to_string(ref.shape()));
        if (out.shape() == ref.shape()) {
          std::vector<double> got = vals(out);
          CHECK_MESSAGE(close_ratio(got, ref_vals, 1e-9, 1e-12) <= 1.0,
                        ctx.str() << ": forward " << list_str(got) << " != contiguous " << list_str(ref_vals));
        }
        for (size_t i = 0; i < xs.size(); ++i)  // ops must not write their inputs
          CHECK_MESSAGE(close_ratio(vals(xs[i]), vals(base[i]), 0, 0) <= 1.0,
                        ctx.str() << ": input " << i << " was modified by the op");
      }
      if (!(c.flags & kNoGradcheck)) {
        for (Tensor& x : xs) x.requires_grad_(true);
        ember::GradcheckResult r = ember::gradcheck(c.fn, xs, c.grad_opts);
        CHECK_MESSAGE(r.ok, ctx.str() << ": gradcheck failed: " << r.message);
      }
    } catch (const std::exception& e) {
      FAIL_CHECK(ctx.str() << " threw: " << e.what());
    }
  }
}

// f16/bf16 inputs against f32 on the same rounded inputs.
static void run_low_precision(const OpCase& c, const ShapeSet& s, const std::vector<Tensor>& base) {
  struct Tol {
    DType dt;
    double rtol, atol;
  };
  // About two units in the last place of the result type, plus a little near zero.
  for (Tol tol : {Tol{DType::f16, 2e-3, 1e-4}, Tol{DType::bf16, 1.6e-2, 1e-3}}) {
    std::ostringstream ctx;
    ctx << c.name << " [" << s.label << ", " << ember::dtype_name(tol.dt) << " vs f32]";
    try {
      std::vector<Tensor> lo, hi;
      for (const Tensor& x : base) {
        Tensor r = ember::to_dtype(ember::to_dtype(x, DType::f32), tol.dt);
        lo.push_back(r);
        hi.push_back(ember::to_dtype(r, DType::f32));
      }
      Tensor out_lo = c.fn(lo);
      Tensor out_hi = c.fn(hi);
      CHECK_MESSAGE(out_lo.dtype() == tol.dt, ctx.str() << ": result dtype " << out_lo.dtype());
      CHECK_MESSAGE(out_hi.dtype() == DType::f32, ctx.str() << ": f32 result dtype " << out_hi.dtype());
      REQUIRE(out_lo.shape() == out_hi.shape());
      std::vector<double> got = vals(out_lo), want = vals(out_hi);
      CHECK_MESSAGE(close_ratio(got, want, tol.rtol, tol.atol) <= 1.0,
                    ctx.str() << ": " << list_str(got) << " != " << list_str(want));
    } catch (const std::exception& e) {
      FAIL_CHECK(ctx.str() << " threw: " << e.what());
    }
  }
}

// --- devices mode ----------------------------------------------------------------------------

std::vector<Device> available_devices() {
  std::vector<Device> out = {Device::fake(0)};
  if (ember::cuda::is_available()) out.push_back(Device::cuda(0));
  const Device chosen = test_device();
  if (!chosen.is_cpu() && std::find(out.begin(), out.end(), chosen) == out.end()) out.push_back(chosen);
  return out;
}

// The tolerance of the result dtype, widened for sums of many terms: the devices add in
// different orders.
static device::Tol device_tolerance(const OpCase& c, const std::vector<Tensor>& in, const Tensor& ref) {
  device::Tol t = device::base_tol(ref.dtype());
  if (t.rtol == 0) return t;
  double n = 0;
  if (c.sum == Sum::gemm && !in.empty()) n = in[0].dim() ? static_cast<double>(in[0].size(-1)) : 1.0;
  if (c.sum == Sum::reduce && !in.empty())
    n = static_cast<double>(in[0].numel()) / static_cast<double>(std::max<int64_t>(1, ref.numel()));
  if (c.sum == Sum::given) n = c.terms;
  if (n > 1) {
    t.atol += t.rtol * std::sqrt(n);
    t.rtol *= 4;  // summation order differs between the devices
  }
  return t;
}

// For each dtype: the CPU reference on contiguous inputs, then the op on each device and layout.
static void run_devices(const OpCase& c, const ShapeSet& s, const std::vector<Tensor>& base,
                        const std::vector<Device>& devices, const std::string& tag) {
  for (DType dt : c.dtypes) {
    std::ostringstream base_ctx;
    base_ctx << c.name << tag << " [" << s.label << ", " << ember::dtype_name(dt);
    std::vector<Tensor> cpu_in;
    Tensor ref;
    try {
      for (const Tensor& x : base) cpu_in.push_back(device::as_dtype(x, dt));
      ref = c.fn(cpu_in);
    } catch (const std::exception& e) {
      FAIL_CHECK(base_ctx.str() << "] the CPU reference threw: " << e.what());
      continue;
    }
    std::vector<Layout> layouts = {Layout::contiguous};
    if (!(c.flags & kNoLayouts)) {
      layouts.push_back(Layout::transposed);
      layouts.push_back(Layout::sliced);
      if (cpu_in.size() > 1) layouts.push_back(Layout::mixed);
    }
    const device::Tol tol = device_tolerance(c, cpu_in, ref);
    for (const Device& dev : devices) {
      for (Layout l : layouts) {
        const std::string ctx = base_ctx.str() + ", " + layout_name(l) + ", on " + dev.str() + "]";
        try {
          std::vector<Tensor> dev_in;
          for (size_t i = 0; i < cpu_in.size(); ++i) dev_in.push_back(with_layout(cpu_in[i], l, i, dev));
          const Tensor out = c.fn(dev_in);
          device::check_matches_on(dev, ctx, out, ref, tol);
          for (size_t i = 0; i < dev_in.size(); ++i)  // ops must not write their inputs
            CHECK_MESSAGE(close_ratio(device::host_f64(dev_in[i]), device::host_f64(cpu_in[i]), 0, 0) <= 1.0,
                          ctx << ": input " << i << " was modified on the device");
        } catch (const std::exception& e) {
          FAIL_CHECK(ctx << " threw: " << e.what());
        }
      }
    }
  }
}

namespace {
// The table op a row exercises: its name, or the longest table name it starts with followed
// by '_' or ' ' ("log_softmax_dim1" -> log_softmax, "max_all" -> max, "conv1d_backward_input
// [plain]" -> conv1d_backward_input). None for rows of sugar or
// methods without a row of their own ("t", "inplace_add_mul").
std::optional<ember::OpId> row_op(const std::string& name) {
  // Rows that compose several ops under the name of one of them.
  for (const char* suffix : {"_chain", "_then_math", "_reference"})
    if (const size_t n = std::strlen(suffix); name.size() > n && name.compare(name.size() - n, n, suffix) == 0)
      return std::nullopt;
  std::optional<ember::OpId> best;
  size_t best_len = 0;
  for (const ember::OpDef& d : ember::op_defs()) {
    const std::string n = d.name;
    const bool match = name == n || (name.size() > n.size() && name.compare(0, n.size(), n) == 0 &&
                                             (name[n.size()] == '_' || name[n.size()] == ' '));
    if (match && n.size() > best_len) {
      best = d.id;
      best_len = n.size();
    }
  }
  return best;
}

// Every row passes the op path: its op is seen by an op observer (at depth 0, or nested where
// the row reaches a backward primitive through autograd), every call that opens also closes
// (in order), and every call the row makes itself reports outputs.
struct PathWatch final : ember::OpObserver {
  ember::OpId want;
  int opened = 0, closed = 0, hits = 0, top = 0, top_with_outputs = 0;
  bool order_ok = true;
  std::vector<const ember::OpDef*> stack;
  explicit PathWatch(ember::OpId w) : want(w) {}
  void before(const ember::OpCall& c) override {
    ++opened;
    stack.push_back(c.def);
    if (c.def->id == want) ++hits;
    if (c.depth == 0) ++top;
  }
  void after(const ember::OpCall& c) override {
    ++closed;
    order_ok = order_ok && !stack.empty() && stack.back() == c.def;
    if (!stack.empty()) stack.pop_back();
    if (c.depth == 0 && !c.outputs.empty()) ++top_with_outputs;
  }
};

void check_op_path(const OpCase& c, const ShapeSet& s, const std::vector<Tensor>& inputs) {
  const std::optional<ember::OpId> id = row_op(c.name);
  if (!id) return;
  PathWatch w(*id);
  try {
    ember::ObserveOps watch(w);
    (void)c.fn(inputs);
  } catch (const std::exception& e) {
    FAIL_CHECK(c.name << " [" << s.label << "]: threw under an op observer: " << e.what());
    return;
  }
  INFO(c.name << " [" << s.label << "] op " << ember::op_def(*id).name);
  CHECK(w.hits >= 1);
  CHECK(w.top >= 1);
  CHECK(w.top_with_outputs == w.top);
  CHECK(w.opened == w.closed);
  CHECK(w.order_ok);
}
}  // namespace

void run_cases(const std::vector<OpCase>& cases, const RunOptions& options) {
  const bool on_devices = options.mode == Mode::devices;
  const std::vector<Device> devices =
      on_devices && options.devices.empty() ? available_devices() : options.devices;
  std::optional<device::PoisonGuard> poison;  // unwritten output elements read as NaN
  if (on_devices) poison.emplace();
  int ran = 0;
  for (const OpCase& c : cases) {
    if (!op_selected(c.name)) continue;
    ++ran;
    for (size_t si = 0; si < c.shape_sets.size(); ++si) {
      const ShapeSet& s = c.shape_sets[si];
      std::vector<Tensor> base;
      try {
        // the devices mode draws its own inputs (the seeds its table always had)
        base = make_inputs(c, s, on_devices ? name_seed(c.name, si) ^ 0xc0da : name_seed(c.name, si));
      } catch (const std::exception& e) {
        FAIL_CHECK(c.name << " [" << s.label << "]: making inputs threw: " << e.what());
        continue;
      }
      if (on_devices) {
        run_devices(c, s, base, devices, options.tag);
        continue;
      }
      if (si == 0) check_op_path(c, s, base);
      run_layouts_and_gradcheck(c, s, base);
      if (c.flags & kLowPrecision) run_low_precision(c, s, base);
    }
  }
  if (std::getenv("EMBER_TEST_OP")) MESSAGE("EMBER_TEST_OP: ran " << ran << " of " << cases.size() << " cases");
}

}  // namespace ember_test
