#include "ember/core/storage.h"

#include <cstdlib>
#include <new>

#include "ember/core/error.h"

namespace ember {

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  EMBER_CHECK(device.is_cpu(), "storage", "cannot allocate ", nbytes, " bytes on ", device.str(),
              ": this build of ember has no CUDA backend");
  size_t rounded = (std::max<size_t>(nbytes, 1) + 63) / 64 * 64;
  data_ = std::aligned_alloc(64, rounded);
  EMBER_CHECK(data_ != nullptr, "storage", "out of memory allocating ", nbytes, " bytes on cpu");
}

Storage::~Storage() { std::free(data_); }

}  // namespace ember
