#include "core/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "ember/core/error.h"

namespace ember::detail {

void write_file_atomically(const char* op, const std::string& path, std::initializer_list<std::string_view> pieces) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  EMBER_CHECK(f != nullptr, op, "cannot open ", tmp, " for writing: ", std::strerror(errno));
  bool ok = true;
  for (std::string_view p : pieces) ok = ok && std::fwrite(p.data(), 1, p.size(), f) == p.size();
  ok = std::fflush(f) == 0 && ok;
  ok = ::fsync(::fileno(f)) == 0 && ok;
  const int err = errno;
  ok = std::fclose(f) == 0 && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    EMBER_FAIL(op, "writing ", tmp, " failed: ", std::strerror(err), "; ", path, " is unchanged");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    EMBER_FAIL(op, "cannot rename ", tmp, " to ", path, ": ", why, "; ", path, " is unchanged");
  }
}

}  // namespace ember::detail
