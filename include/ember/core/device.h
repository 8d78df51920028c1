// Where a tensor's memory lives: the CPU, CUDA device N, or the stand-in device "fake:N".
//
// The stand-in (`fake`) is the test device that runs everywhere: its memory is host memory and
// its kernels are the CPU backend's, but it is a device of its own. Ops refuse to mix it with
// `cpu` exactly as they refuse to mix `cuda:0` with `cpu`, copies to and from it take the
// cross-device path, and modules, optimizers and checkpoints treat it as a separate device, so
// a device-placement bug (a backward that allocates on the CPU, a copy that forgets its
// destination's device) fails on a machine without a GPU. Every fresh allocation on it is
// filled with 0xFF bytes (NaN for floats), so a kernel that leaves an output unwritten shows.
#pragma once
#include <cstdint>
#include <ostream>
#include <string>

namespace ember {

enum class DeviceType : uint8_t { cpu, cuda, fake };
inline constexpr int kNumDeviceTypes = 3;

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  constexpr Device() = default;
  constexpr Device(DeviceType t, int i = 0) : type(t), index(i) {}
  // "cpu", "cuda", "cuda:1", "fake", "fake:2"; throws ember::Error on anything else.
  explicit Device(const std::string& spec);

  static constexpr Device cpu() { return Device(DeviceType::cpu, 0); }
  static constexpr Device cuda(int i = 0) { return Device(DeviceType::cuda, i); }
  static constexpr Device fake(int i = 0) { return Device(DeviceType::fake, i); }
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  bool is_fake() const { return type == DeviceType::fake; }
  // Memory the host can address directly (the CPU and the stand-in): the CPU backend's
  // kernels run on it.
  bool is_host_memory() const { return type != DeviceType::cuda; }
  std::string str() const;
  friend bool operator==(const Device&, const Device&) = default;
};

inline std::ostream& operator<<(std::ostream& os, const Device& d) { return os << d.str(); }

}  // namespace ember
