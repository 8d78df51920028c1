// Checkpoints as .safetensors files, readable by PyTorch's `safetensors` package.
//
// Layout (the format's own): an 8-byte little-endian header length, a JSON header mapping each
// tensor name to {dtype, shape, data_offsets}, then the raw little-endian tensor bytes. The
// StateDict's meta goes into the header's "__metadata__" (string to string). ember adds one
// entry, "ember.crc32", a CRC-32 of the data section, so a flipped bit is reported instead of
// silently loaded; files written by other tools (without it) load as well.
#pragma once
#include <string>

#include "ember/io/state_dict.h"

namespace ember::io {

// Writes atomically: to "<path>.tmp-<pid>", flushed, then renamed over path. Tensors may live
// on any device (they are copied to the CPU) and be non-contiguous; names must be unique.
void save_safetensors(const std::string& path, const StateDict& state);

// Reads a whole file into CPU tensors. Throws ember::Error naming the file and the problem for
// a missing or unreadable file, a truncated file, a header that is not valid JSON or lies about
// sizes, offsets outside the data, an unknown dtype, or a checksum mismatch.
StateDict load_safetensors(const std::string& path);

}  // namespace ember::io
