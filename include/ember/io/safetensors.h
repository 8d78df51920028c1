// Checkpoints as .safetensors files, readable by PyTorch's `safetensors` package.
//
// Layout (the format's own): an 8-byte little-endian header length, a JSON header mapping each
// tensor name to {dtype, shape, data_offsets}, then the raw little-endian tensor bytes. The
// StateDict's meta goes into the header's "__metadata__" (string to string). ember adds two
// entries (docs/checkpoints.md): "ember.checksum", a CRC-32 of the whole header (every entry
// and all metadata but this one, serialised canonically) and the data, so any flipped bit is
// reported instead of silently loaded; and "ember.crc32", a CRC-32 of the data alone, which
// older ember versions check. Files written by other tools (without them) load as well.
//
// Files are untrusted input (docs/reliability.md): a reader never crashes and never accepts a
// file the format forbids; it throws one ember::Error naming the file, the tensor and the
// problem.
#pragma once
#include <cstddef>
#include <string>

#include "ember/io/state_dict.h"

namespace ember::io {

// Which of ember's checksums a file carried. The readers verify every one present (a mismatch
// throws), so these say what a successful read has proven.
struct SafetensorsChecks {
  bool data_crc32 = false;  // "ember.crc32": the data section
  bool checksum = false;    // "ember.checksum": the header (all but this entry) and the data
};

// Writes atomically: to "<path>.tmp-<pid>", flushed, then renamed over path. Tensors may live
// on any device (they are copied to the CPU) and be non-contiguous; names must be unique.
void save_safetensors(const std::string& path, const StateDict& state);

// The bytes save_safetensors writes, in memory. `name` is for error messages.
std::string serialize_safetensors(const StateDict& state, const std::string& name = "safetensors data");

// Reads a whole file into CPU tensors: parse_safetensors on the file's bytes, after checking
// that path names a regular file that can be read.
StateDict load_safetensors(const std::string& path, SafetensorsChecks* checks = nullptr);

// Parses a safetensors file held in memory (`name` names it in error messages). Throws
// ember::Error for anything the format forbids or ember cannot read: a truncated buffer, a
// header that is not a JSON object, nests deeper than the format does or lies about sizes, an
// unknown dtype, a shape with more than 64 dimensions or too many elements, data ranges that
// overlap, leave gaps or do not end at the end of the buffer (they must tile the data section),
// BOOL bytes other than 0 and 1, or a checksum mismatch. The checksum entries are verified and
// removed from the returned meta; `checks`, when given, says which there were.
StateDict parse_safetensors(const void* data, size_t size, const std::string& name,
                            SafetensorsChecks* checks = nullptr);

}  // namespace ember::io
