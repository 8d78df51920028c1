// A minimal reader for NumPy's .npz files (a zip archive of .npy arrays), enough for the
// price table matplotlib ships as goog.npz: zip entries stored or deflated (zlib's raw
// inflate), each checked against its CRC-32 and sizes; .npy versions 1-3 with a plain or a
// structured little-endian dtype of integers, floats and datetime64 fields, C order.
// Anything else (big-endian data, Fortran order, nested or sub-array fields, object arrays,
// streamed zip entries, encryption) is refused with an error naming the file, the entry and
// the problem.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace price_cnn {

// One field of a record (the whole element for a plain dtype, named "").
struct NpyField {
  std::string name;
  std::string descr;   // as written in the header, e.g. "<f8", "<M8[D]"
  char kind = 0;       // 'f' float, 'i' signed, 'u' unsigned, 'b' bool, 'M' datetime64
  int64_t size = 0;    // bytes
  int64_t offset = 0;  // within a record
  int64_t seconds_per_unit = 0;  // datetime64 only: D = 86400, s = 1; ms/us/ns are refused
};

struct NpyArray {
  std::string source;  // "file.npz:entry.npy", for messages
  std::vector<int64_t> shape;
  std::vector<NpyField> fields;
  int64_t itemsize = 0;
  int64_t count = 0;  // elements (product of shape)
  std::vector<unsigned char> data;

  const NpyField* field(const std::string& name) const;
  // A numeric field as doubles (datetime64 as seconds since 1970-01-01); throws naming the
  // array and the fields it has when there is no such field.
  std::vector<double> column(const std::string& name) const;
  // A datetime64 field as seconds since 1970-01-01 (NaT refused).
  std::vector<int64_t> times(const std::string& name) const;
  std::string describe() const;  // "shape (1047,), fields date <M8[D], open <f8, ..."
};

// The entries of a .npz file, by name ("price_data.npy" -> its array).
struct NpzEntry {
  std::string name;
  NpyArray array;
};
std::vector<NpzEntry> read_npz(const std::string& path);

// One .npy file held in memory (`source` names it in errors).
NpyArray parse_npy(const std::vector<unsigned char>& bytes, const std::string& source);

}  // namespace price_cnn
