// libFuzzer entry (EMBER_FUZZ=ON, clang): scripts/fuzz.sh builds and runs it.
#include "ember/core/error.h"
#include "fuzz/fuzz_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    ember_fuzz::run_one(data, size);
  } catch (const ember::Error&) {
    // a refused input: the expected outcome for most of them
  }
  return 0;  // any other exception escapes: std::terminate, which libFuzzer reports as a crash
}
