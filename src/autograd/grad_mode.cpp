#include "ember/autograd/grad_mode.h"

#include "ember/autograd/anomaly.h"

namespace ember {
namespace {
thread_local bool g_grad_enabled = true;
thread_local bool g_detect_anomaly = false;
}  // namespace
bool grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool on) { g_grad_enabled = on; }

namespace autograd {
bool anomaly_detection_enabled() { return g_detect_anomaly; }
void set_anomaly_detection_enabled(bool on) { g_detect_anomaly = on; }
}  // namespace autograd
}  // namespace ember
