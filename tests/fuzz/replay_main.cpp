// Replays every file in the given directories (or the given files) through the fuzz target,
// with the normal compiler and no libFuzzer: CTest ember.fuzz_replay runs it over
// tests/fuzz/corpus, the seeds and every crash reproducer found so far. Fails (exit 1) when an
// input raises anything but ember::Error; a crash fails it by itself.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "ember/core/error.h"
#include "fuzz/fuzz_io.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    if (fs::is_directory(argv[i])) {
      for (const auto& e : fs::directory_iterator(argv[i]))
        if (e.is_regular_file()) files.push_back(e.path());
    } else {
      files.emplace_back(argv[i]);
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...: no inputs found\n", argv[0]);
    return 2;
  }
  int failures = 0, accepted = 0, refused = 0;
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    try {
      ember_fuzz::run_one(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      ++accepted;
    } catch (const ember::Error&) {
      ++refused;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "FAIL %s: not an ember::Error: %s\n", f.string().c_str(), e.what());
      ++failures;
    } catch (...) {
      std::fprintf(stderr, "FAIL %s: an unknown exception\n", f.string().c_str());
      ++failures;
    }
  }
  std::printf("replayed %zu inputs: %d accepted, %d refused with ember::Error, %d failures\n", files.size(), accepted,
              refused, failures);
  return failures ? 1 : 0;
}
