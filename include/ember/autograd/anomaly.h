// Anomaly detection: find the op whose backward first produced a NaN or an infinity.
//
// While a DetectAnomalyGuard is alive on a thread, every backward pass that thread runs checks
// each gradient a node's backward produces before routing it on, and throws an ember::Error
// named after that node (the op whose backward made it) with the input index and the
// gradient's shape, dtype and device. Without it a NaN in one layer's backward reaches every
// parameter's .grad and, one optimizer step later, every parameter.
//
// The flag is per thread (like NoGradGuard); guards nest and each restores the state it found.
// Cost: one reduction per gradient, and for a gradient on a GPU a device-to-host copy of its
// result, which waits for the GPU (a host synchronisation per node). Use it to find a fault,
// not in production training. Unlike PyTorch's anomaly mode it records no forward traces: the
// node's name is what identifies the op.
#pragma once

namespace ember::autograd {

bool anomaly_detection_enabled();  // on the calling thread
void set_anomaly_detection_enabled(bool on);

class DetectAnomalyGuard {
 public:
  explicit DetectAnomalyGuard(bool on = true) : prev_(anomaly_detection_enabled()) {
    set_anomaly_detection_enabled(on);
  }
  ~DetectAnomalyGuard() { set_anomaly_detection_enabled(prev_); }
  DetectAnomalyGuard(const DetectAnomalyGuard&) = delete;
  DetectAnomalyGuard& operator=(const DetectAnomalyGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace ember::autograd
