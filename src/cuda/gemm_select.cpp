#include "cuda/gemm_select.h"

namespace ember::cuda {

int ceil_log2(int64_t x) {
  int r = 0;
  while ((int64_t(1) << r) < x && r < 62) ++r;
  return r;
}

GemmKey gemm_key(int device, DType dtype, bool a_row_major, bool b_row_major, int64_t batches, int64_t m, int64_t n,
                 int64_t k, bool bias, bool tf32) {
  GemmKey key;
  key.device = device;
  key.dtype = dtype;
  key.a_row_major = a_row_major;
  key.b_row_major = b_row_major;
  key.batched = batches > 1;
  key.bias = bias;
  key.tf32 = tf32 && dtype == DType::f32;
  key.log2_m = ceil_log2(m);
  key.log2_n = ceil_log2(n);
  key.log2_k = ceil_log2(k);
  return key;
}

GemmBackend GemmChooser::choose(const GemmKey& key, const std::function<double(GemmBackend)>& time_ms) {
  GemmBackend known;
  if (lookup(key, &known)) return known;
  const double ember_ms = time_ms(GemmBackend::ember);
  const double cublas_ms = time_ms(GemmBackend::cublas);
  const GemmBackend pick = ember_ms < cublas_ms ? GemmBackend::ember : GemmBackend::cublas;
  std::lock_guard<std::mutex> lock(mu_);
  return decided_.emplace(key, pick).first->second;
}

bool GemmChooser::lookup(const GemmKey& key, GemmBackend* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = decided_.find(key);
  if (it == decided_.end()) return false;
  *out = it->second;
  return true;
}

std::size_t GemmChooser::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return decided_.size();
}

void GemmChooser::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  decided_.clear();
}

GemmChooser& gemm_chooser() {
  static GemmChooser chooser;
  return chooser;
}

namespace {
thread_local const char* t_last_kernel = "none";
}
void note_gemm_kernel(const char* name) { t_last_kernel = name; }
const char* last_gemm_kernel() { return t_last_kernel; }

void reset_gemm_choices() { gemm_chooser().clear(); }
std::size_t gemm_choice_count() { return gemm_chooser().size(); }

}  // namespace ember::cuda
