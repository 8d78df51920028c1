#include "ember/core/device.h"

#include <cstdlib>

#include "ember/core/error.h"

namespace ember {

Device::Device(const std::string& spec) {
  if (spec == "cpu") {
    *this = Device::cpu();
    return;
  }
  if (spec.rfind("cuda", 0) == 0) {
    if (spec.size() == 4) {
      *this = Device::cuda(0);
      return;
    }
    if (spec[4] == ':' && spec.size() > 5) {
      char* end = nullptr;
      long i = std::strtol(spec.c_str() + 5, &end, 10);
      if (*end == '\0' && i >= 0 && i < 1024) {
        *this = Device::cuda(static_cast<int>(i));
        return;
      }
    }
  }
  EMBER_FAIL("device", "cannot parse device '", spec, "': expected 'cpu', 'cuda' or 'cuda:N'");
}

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

}  // namespace ember
