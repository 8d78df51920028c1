// Writing a whole file so that a reader, or a crash, never sees half of it: the bytes go to a
// temporary file beside `path` (same folder, so the rename stays on one file system), are
// flushed to disk, and the temporary is renamed onto `path`. Used by every writer of a file a
// run depends on (safetensors and checkpoints, ONNX models, profiler traces).
#pragma once
#include <initializer_list>
#include <string>
#include <string_view>

namespace ember::detail {

// Writes the concatenation of `pieces` to `path`. Throws ember::Error(op, ...) naming the file
// and the system's reason ("cannot open ... for writing", "writing ... failed", "cannot rename");
// on failure the temporary is removed and `path` is unchanged.
void write_file_atomically(const char* op, const std::string& path, std::initializer_list<std::string_view> pieces);

}  // namespace ember::detail
