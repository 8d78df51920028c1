#include "ember/core/device.h"

#include <cctype>
#include <cstdlib>

#include "ember/core/error.h"

namespace ember {

namespace {
// "name" or "name:N" (N a decimal index below 1024) -> index, or -1 when spec is not that.
int parse_indexed(const std::string& spec, const std::string& name) {
  if (spec.rfind(name, 0) != 0) return -1;
  if (spec.size() == name.size()) return 0;
  if (spec[name.size()] != ':' || spec.size() == name.size() + 1) return -1;
  char* end = nullptr;
  const long i = std::strtol(spec.c_str() + name.size() + 1, &end, 10);
  if (*end != '\0' || i < 0 || i >= 1024 || !std::isdigit(static_cast<unsigned char>(spec[name.size() + 1])))
    return -1;
  return static_cast<int>(i);
}
}  // namespace

Device::Device(const std::string& spec) {
  if (spec == "cpu") {
    *this = Device::cpu();
    return;
  }
  if (const int i = parse_indexed(spec, "cuda"); i >= 0) {
    *this = Device::cuda(i);
    return;
  }
  if (const int i = parse_indexed(spec, "fake"); i >= 0) {
    *this = Device::fake(i);
    return;
  }
  EMBER_FAIL("device", "cannot parse device '", spec, "': expected 'cpu', 'cuda', 'cuda:N', 'fake' or 'fake:N'");
}

std::string Device::str() const {
  switch (type) {
    case DeviceType::cpu: return "cpu";
    case DeviceType::cuda: return "cuda:" + std::to_string(index);
    case DeviceType::fake: return "fake:" + std::to_string(index);
  }
  return "?";
}

}  // namespace ember
