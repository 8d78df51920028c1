// Recording: one observer per thread (the hub) watches the op path and the kernel calls for
// every profiler alive on that thread, so profilers nest and may stop in any order, and an
// observer installed before them (a tracer, an exporter) still sees every call.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <iostream>
#include <optional>

#include "ember/core/alloc_counter.h"
#include "ember/core/error.h"
#include "ops/dispatch.h"
#include "ops/op_call.h"
#include "profiler/profiler_impl.h"

#if defined(EMBER_WITH_CUDA) && __has_include(<nvtx3/nvToolsExt.h>)
#include <nvtx3/nvToolsExt.h>
#define EMBER_PROFILER_NVTX 1
#endif

namespace ember {
namespace {

class Hub final : public OpObserver, public KernelObserver {
 public:
  void attach(Profiler::Impl* p) {
    if (active_.empty() && !op_guard_) {
      previous_op_ = detail::t_op.observer;
      op_guard_.emplace(*this);
      previous_kernel_ = backend::t_kernel_observer;
      kernel_guard_.emplace(*this);
    }
    active_.push_back(p);
  }
  void detach(Profiler::Impl* p) {
    active_.erase(std::remove(active_.begin(), active_.end(), p), active_.end());
    settle();
  }

  void before(const OpCall& call) override {
    if (active_.empty()) [[unlikely]] {
      settle();
      if (previous_op_ != nullptr) previous_op_->before(call);
      return;
    }
#ifdef EMBER_PROFILER_NVTX
    if (nvtx_wanted()) nvtxRangePushA(call.def->name);
#endif
    for (Profiler::Impl* p : active_) p->op_before(call);
    if (previous_op_ != nullptr) previous_op_->before(call);
  }
  void after(const OpCall& call) override {
    if (previous_op_ != nullptr) previous_op_->after(call);
    for (auto it = active_.rbegin(); it != active_.rend(); ++it) (*it)->op_after(call);
#ifdef EMBER_PROFILER_NVTX
    if (nvtx_wanted()) nvtxRangePop();
#endif
  }
  void before(const KernelCall& call) override {
    if (active_.empty()) [[unlikely]]
      settle();
    for (Profiler::Impl* p : active_) p->kernel_before(call);
    if (previous_kernel_ != nullptr) previous_kernel_->before(call);
  }
  void after(const KernelCall& call) override {
    if (previous_kernel_ != nullptr) previous_kernel_->after(call);
    for (auto it = active_.rbegin(); it != active_.rend(); ++it) (*it)->kernel_after(call);
  }

 private:
  // With no profiler left, gives the thread its observers back. Only from the top: an observer
  // installed after us (and still alive) restores us when it ends; until then, and until the
  // next call after that, we only forward. Calls in flight still reach us (the op path keeps
  // the observer it began with), and we forward them too.
  void settle() {
    if (!active_.empty()) return;
    if (kernel_guard_ && backend::t_kernel_observer == this) kernel_guard_.reset();
    if (op_guard_ && detail::t_op.observer == this) op_guard_.reset();
  }

#ifdef EMBER_PROFILER_NVTX
  // A push and its pop must agree even if a profiler ends between them: NVTX ranges follow
  // whether any profiler wants them, checked once per push; a pop without a push is harmless
  // to NVTX (it reports an error code we ignore).
  bool nvtx_wanted() const {
    for (const Profiler::Impl* p : active_)
      if (p->options.nvtx) return true;
    return false;
  }
#endif

  std::vector<Profiler::Impl*> active_;
  OpObserver* previous_op_ = nullptr;
  KernelObserver* previous_kernel_ = nullptr;
  std::optional<ObserveOps> op_guard_;
  std::optional<ObserveKernels> kernel_guard_;
};

thread_local Hub t_hub;

Device first_device(const std::vector<Tensor>& ts, bool* found) {
  for (const Tensor& t : ts)
    if (t.defined()) {
      *found = true;
      return t.device();
    }
  *found = false;
  return Device::cpu();
}

}  // namespace

// ---- recording ---------------------------------------------------------------------------

void Profiler::Impl::op_before(const OpCall& call) {
  const int64_t now = now_ns();
  ProfileEvent e;
  e.kind = ProfileEvent::Kind::op;
  e.name = call.def->name;
  e.depth = call.depth;
  e.in_backward = call.in_backward;
  bool found = false;
  e.device = first_device(call.inputs, &found);
  e.parent = ops_open.empty() ? -1 : ops_open.back().index;
  e.start_ns = now;
  e.end_ns = now;
  if (options.record_shapes) {
    e.shapes.reserve(call.inputs.size());
    e.dtypes.reserve(call.inputs.size());
    for (const Tensor& t : call.inputs) {
      e.shapes.push_back(t.defined() ? t.shape() : Shape{-1});
      e.dtypes.push_back(t.defined() ? t.dtype() : DType::f32);
    }
  }
  ops_open.push_back({&call, static_cast<int>(events.size()), thread_allocated_bytes(), found});
  events.push_back(std::move(e));
}

void Profiler::Impl::op_after(const OpCall& call) {
  // A call begun before this profiler started has no frame: nothing to close.
  auto it = std::find_if(ops_open.rbegin(), ops_open.rend(), [&](const OpFrame& f) { return f.call == &call; });
  if (it == ops_open.rend()) return;
  const int64_t now = now_ns();
  const uint64_t bytes_now = thread_allocated_bytes();
  const size_t at = static_cast<size_t>(ops_open.rend() - it) - 1;
  close_kernels_above(ops_open[at].index, now);          // a kernel that threw
  while (ops_open.size() > at + 1) ops_open.pop_back();  // frames the op path never closed
  OpFrame f = ops_open.back();
  ops_open.pop_back();
  ProfileEvent& e = events[static_cast<size_t>(f.index)];
  e.end_ns = now;
  e.self_ns = std::max<int64_t>(0, (now - e.start_ns) - f.child_ns);
  e.bytes = bytes_now - f.bytes0;
  e.self_bytes = e.bytes >= f.child_bytes ? e.bytes - f.child_bytes : 0;
  e.threw = call.outputs.empty();
  if (!f.device_known) {
    bool found = false;
    e.device = first_device(call.outputs, &found);
  }  // a creation op: where it made its result
  if (!ops_open.empty()) {
    ops_open.back().child_ns += now - e.start_ns;
    ops_open.back().child_bytes += e.bytes;
  }
}

void Profiler::Impl::kernel_before(const KernelCall& call) {
  const int64_t now = now_ns();
  ProfileEvent e;
  e.kind = ProfileEvent::Kind::kernel;
  e.name = call.primitive;
  e.device = call.device;
  e.in_backward = detail::t_op.in_backward;
  if (!ops_open.empty()) {
    e.parent = ops_open.back().index;
    e.depth = events[static_cast<size_t>(e.parent)].depth + 1;
  }
  e.start_ns = now;
  e.end_ns = now;
  const int index = static_cast<int>(events.size());
  events.push_back(std::move(e));
  const bool timed = timer.begin(call.device, index, now);
  kernels_open.push_back({&call, index, thread_allocated_bytes(), timed});
}

void Profiler::Impl::kernel_after(const KernelCall& call) {
  if (kernels_open.empty() || kernels_open.back().call != &call) return;
  KernelFrame f = kernels_open.back();
  kernels_open.pop_back();
  if (f.timed) timer.end(f.index);
  ProfileEvent& e = events[static_cast<size_t>(f.index)];
  e.end_ns = now_ns();
  e.self_ns = e.end_ns - e.start_ns;
  e.bytes = e.self_bytes = thread_allocated_bytes() - f.bytes0;
}

void Profiler::Impl::close_kernels_above(int64_t events_floor, int64_t now) {
  while (!kernels_open.empty() && kernels_open.back().index > events_floor) {
    ProfileEvent& e = events[static_cast<size_t>(kernels_open.back().index)];
    e.end_ns = now;
    e.self_ns = now - e.start_ns;
    kernels_open.pop_back();
  }
}

void Profiler::Impl::gather(bool wait) {
  timer.poll(wait, [&](int64_t tag, double start_ms, double ms) {
    ProfileEvent& e = events[static_cast<size_t>(tag)];
    e.device_start_ms = start_ms;
    e.device_ms = e.self_device_ms = ms;
  });
}

void Profiler::Impl::finish() {
  const int64_t now = now_ns();
  stop_ns = now;
  // stop() inside an op: what is still open ends now.
  close_kernels_above(-1, now);
  for (auto it = ops_open.rbegin(); it != ops_open.rend(); ++it) {
    ProfileEvent& e = events[static_cast<size_t>(it->index)];
    e.end_ns = now;
    e.self_ns = std::max<int64_t>(0, (now - e.start_ns) - it->child_ns);
  }
  ops_open.clear();
  // Without step() the whole profile is one step; after the last step(), what ran since (an
  // evaluation, say) is a span of its own that does not count as a step.
  if (!events.empty() && (steps == 0 || events.size() > events_at_step_start)) {
    ProfileEvent s;
    s.kind = ProfileEvent::Kind::step;
    s.name = steps == 0 ? "step" : "after the last step";
    s.start_ns = step_start_ns;
    s.end_ns = now;
    s.self_ns = now - step_start_ns;
    s.depth = steps == 0 ? steps++ : steps;
    if (s.depth == 0 && steps_end_ns < 0) steps_end_ns = now;
    events.push_back(std::move(s));
  }
  gather(true);
  // Device time of an op: its own kernels', then its children's added up the tree (children
  // begin after their parent, so one backward pass visits every child before its parent).
  for (ProfileEvent& e : events)
    if (e.kind == ProfileEvent::Kind::op) e.self_device_ms = e.device_ms = -1;
  for (const ProfileEvent& k : events) {
    if (k.kind != ProfileEvent::Kind::kernel || k.device_ms < 0 || k.parent < 0) continue;
    ProfileEvent& op = events[static_cast<size_t>(k.parent)];
    op.self_device_ms = std::max(op.self_device_ms, 0.0) + k.device_ms;
  }
  for (ProfileEvent& e : events)
    if (e.kind == ProfileEvent::Kind::op) e.device_ms = e.self_device_ms;
  for (size_t i = events.size(); i-- > 0;) {
    const ProfileEvent& e = events[i];
    if (e.kind != ProfileEvent::Kind::op || e.device_ms < 0 || e.parent < 0) continue;
    ProfileEvent& p = events[static_cast<size_t>(e.parent)];
    p.device_ms = std::max(p.device_ms, 0.0) + e.device_ms;
  }
  gathered = true;
}

// ---- the public scope --------------------------------------------------------------------

Profiler::Profiler(ProfilerOptions options) : impl_(std::make_unique<Impl>()) {
  EMBER_CHECK(options.table_rows >= 0, "profiler", "table_rows must be >= 0, got ", options.table_rows);
  EMBER_CHECK(options.skip_steps >= 0 && options.max_steps >= 0, "profiler",
              "skip_steps and max_steps must be >= 0, got ", options.skip_steps, " and ", options.max_steps);
  impl_->options = std::move(options);
  if (impl_->options.skip_steps == 0) {
    t_hub.attach(impl_.get());
    impl_->recording = true;
  }
}

Profiler::~Profiler() {
  if (!impl_->running) return;
  try {
    stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ember profiler: %s\n", e.what());
  }
}

bool Profiler::running() const { return impl_->running; }
bool Profiler::recording() const { return impl_->recording; }

void Profiler::step() {
  Impl& m = *impl_;
  if (!m.running) return;
  EMBER_CHECK(std::this_thread::get_id() == m.thread, "profiler",
              "step() must be called on the thread that started the profiler");
  if (!m.recording) {
    if (++m.skipped < m.options.skip_steps) return;
    m.t0 = Impl::Clock::now();  // the profile starts here
    t_hub.attach(&m);
    m.recording = true;
    return;
  }
  const int64_t now = m.now_ns();
  ProfileEvent s;
  s.kind = ProfileEvent::Kind::step;
  s.name = "step";
  s.start_ns = m.step_start_ns;
  s.end_ns = now;
  s.self_ns = now - m.step_start_ns;
  s.depth = m.steps++;
  m.events.push_back(std::move(s));
  m.step_start_ns = now;
  m.steps_end_ns = now;
  m.events_at_step_start = m.events.size();
  m.gather(false);  // recycle the events of launches already complete; no wait
  if (m.options.max_steps > 0 && m.steps >= m.options.max_steps) stop();
}

void Profiler::stop() {
  Impl& m = *impl_;
  if (!m.running) return;
  EMBER_CHECK(std::this_thread::get_id() == m.thread, "profiler",
              "stop() must be called on the thread that started the profiler");
  m.running = false;
  if (m.recording) t_hub.detach(&m);
  m.recording = false;
  m.finish();
  if (m.options.print_table) std::cout << m.table(m.options.table_rows) << std::flush;
  if (!m.options.trace_path.empty()) {
    m.write_chrome_trace(m.options.trace_path);
    if (m.options.print_table)
      std::cout << "ember profiler: trace written to " << m.options.trace_path
                << " (open it in https://ui.perfetto.dev or chrome://tracing)\n"
                << std::flush;
  }
}

std::string Profiler::table(int rows) const { return impl_->table(rows); }
std::vector<ProfileRow> Profiler::rows() const { return impl_->rows(); }
void Profiler::write_chrome_trace(const std::string& path) const { impl_->write_chrome_trace(path); }
const std::vector<ProfileEvent>& Profiler::events() const { return impl_->events; }
double Profiler::wall_ms() const { return impl_->wall_ms(); }
int Profiler::steps() const { return impl_->steps; }

int64_t Profiler::count(const std::string& op_name) const {
  int64_t n = 0;
  for (const ProfileEvent& e : impl_->events)
    if (e.kind == ProfileEvent::Kind::op && op_name == e.name) ++n;
  return n;
}

}  // namespace ember
