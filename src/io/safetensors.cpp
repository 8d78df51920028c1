// .safetensors reading and writing (see include/ember/io/safetensors.h for the format, and
// docs/reliability.md for what the reader promises about hostile files).
#include "ember/io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <tuple>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "ember/core/error.h"
#include "ember/ops/ops.h"
#include "core/atomic_file.h"
#include "core/untrusted_text.h"

namespace ember::io {
namespace {

using nlohmann::json;
using detail::printable;
constexpr const char* kOp = "safetensors";
constexpr uint64_t kMaxHeader = 100u << 20;  // the format's own limit is 100 MB
constexpr size_t kMaxDims = 64;
// The format nests three levels (header, entry, shape); anything much deeper is hostile, and
// nlohmann's dump(), copy and compare recurse once per level.
constexpr int kMaxDepth = 16;
constexpr const char* kChecksumKey = "ember.checksum";
constexpr const char* kCrcKey = "ember.crc32";

const char* st_dtype(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::boolean: return "BOOL";
  }
  return "?";
}

bool parse_dtype(const std::string& s, DType& out) {
  static const std::pair<const char*, DType> table[] = {
      {"F32", DType::f32}, {"F64", DType::f64}, {"F16", DType::f16}, {"BF16", DType::bf16},
      {"I32", DType::i32}, {"I64", DType::i64}, {"BOOL", DType::boolean}};
  for (const auto& [name, t] : table)
    if (s == name) {
      out = t;
      return true;
    }
  return false;
}

uint32_t crc32_update(uint32_t crc, const char* data, size_t n) {
  uLong c = crc;
  // zlib takes uInt lengths: feed large buffers in pieces.
  for (size_t at = 0; at < n;) {
    const size_t piece = std::min<size_t>(n - at, 1u << 30);
    c = crc32(c, reinterpret_cast<const Bytef*>(data + at), static_cast<uInt>(piece));
    at += piece;
  }
  return static_cast<uint32_t>(c);
}
uint32_t crc32_of(const char* data, size_t n) { return crc32_update(static_cast<uint32_t>(crc32(0L, Z_NULL, 0)), data, n); }

std::string hex32(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

// The CRC-32 that "ember.checksum" records: the header as JSON without that entry, serialised
// by nlohmann's dump() (keys sorted, no whitespace: one text per header), then the data.
// Covering the parsed header rather than its bytes makes writer and reader agree by
// construction; a change to the bytes that parses to the same header (padding, whitespace)
// is refused separately (parse_header).
// data_crc is crc32_of(data, n); crc32_combine appends it without a second pass over the data.
uint32_t whole_checksum(const std::string& canonical_header, uint32_t data_crc, uint64_t n) {
  return static_cast<uint32_t>(crc32_combine(crc32_of(canonical_header.data(), canonical_header.size()), data_crc,
                                             static_cast<z_off_t>(n)));
}

const char* type_of(const json& v) { return v.type_name(); }

// The header's JSON: no NUL bytes (nlohmann stops at one), nesting at most kMaxDepth, nothing
// after the object but the format's space padding.
json parse_header(const std::string& h, const std::string& name) {
  EMBER_CHECK(h.find('\0') == std::string::npos, kOp, name,
              " has a corrupted header (a NUL byte in the JSON text)");
  const auto last = h.find_last_not_of(" \t\n\r");
  EMBER_CHECK(last != std::string::npos && h[last] == '}', kOp, name,
              " has a corrupted header (not a JSON object followed by nothing but padding)");
  json::parser_callback_t limit_depth = [&name](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= kMaxDepth)
      EMBER_FAIL(kOp, name, " has a corrupted header (JSON nested deeper than ", kMaxDepth, " levels)");
    return true;
  };
  try {
    return json::parse(h, limit_depth);
  } catch (const json::exception& e) {
    EMBER_FAIL(kOp, name, " has a corrupted header (not valid JSON: ", printable(e.what(), 160), ")");
  }
}

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

// One tensor's entry, checked alone: fields, dtype, shape (at most kMaxDims dims, each and
// the element and byte counts within int64 — with zero dims counted as one, so every stride
// of the shape fits too), and a byte range that matches the shape.
Entry read_entry(const std::string& key, const json& e, const std::string& name) {
  std::string tname = printable(key);  // appended, not "'" + ...: GCC 12 raises a false -Wrestrict on that
  tname.insert(tname.begin(), '\'');
  tname += '\'';
  EMBER_CHECK(e.is_object(), kOp, name, ": entry ", tname, " is a JSON ", type_of(e), ", not an object");
  // Fields through find(), not operator[] with a literal: a reference bound to operator[]'s
  // result trips GCC 13's -Wdangling-reference.
  auto field = [&](const char* f) -> const json& {
    const auto it = e.find(f);
    EMBER_CHECK(it != e.end(), kOp, name, ": entry ", tname, " needs dtype, shape and data_offsets (no ", f, ")");
    return *it;
  };
  const json& dt = field("dtype");
  const json& sh = field("shape");
  const json& off = field("data_offsets");
  Entry out{key, DType::f32, {}, 0, 0};
  EMBER_CHECK(dt.is_string(), kOp, name, ": tensor ", tname, " has a dtype that is a JSON ", type_of(dt),
              ", not a string");
  EMBER_CHECK(parse_dtype(dt.get_ref<const std::string&>(), out.dtype), kOp, name, ": tensor ", tname,
              " has unsupported dtype \"", printable(dt.get_ref<const std::string&>(), 32),
              "\" (ember reads F32, F64, F16, BF16, I32, I64, BOOL)");
  EMBER_CHECK(sh.is_array(), kOp, name, ": tensor ", tname, " has a malformed shape (a JSON ", type_of(sh),
              ", not an array)");
  EMBER_CHECK(sh.size() <= kMaxDims, kOp, name, ": tensor ", tname, " has ", sh.size(),
              " dimensions; ember reads at most ", kMaxDims);
  int64_t product = 1;  // of the dims, zeros counted as one
  bool empty_tensor = false;
  for (const json& d : sh) {
    EMBER_CHECK(d.is_number_unsigned(), kOp, name, ": tensor ", tname, " has a malformed shape (a dimension is a JSON ",
                type_of(d), ", not an unsigned integer)");
    const uint64_t v = d.get<uint64_t>();
    EMBER_CHECK(v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), kOp, name, ": tensor ", tname,
                " has a dimension of ", v, ", beyond int64");
    out.shape.push_back(static_cast<int64_t>(v));
    if (v == 0) empty_tensor = true;
    else
      EMBER_CHECK(!__builtin_mul_overflow(product, static_cast<int64_t>(v), &product), kOp, name, ": tensor ", tname,
                  " has shape ", shape_str(out.shape), "...: its element count overflows int64");
  }
  int64_t bytes = 0;
  EMBER_CHECK(!__builtin_mul_overflow(product, static_cast<int64_t>(dtype_size(out.dtype)), &bytes), kOp, name,
              ": tensor ", tname, " of shape ", shape_str(out.shape), " ", dtype_name(out.dtype),
              " has a byte count that overflows int64");
  if (empty_tensor) bytes = 0;
  EMBER_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(), kOp,
              name, ": tensor ", tname, " has malformed data_offsets (want [begin, end], unsigned integers)");
  out.begin = off[0].get<uint64_t>();
  out.end = off[1].get<uint64_t>();
  EMBER_CHECK(out.begin <= out.end, kOp, name, ": tensor ", tname, " has data_offsets [", out.begin, ", ", out.end,
              "] that end before they begin");
  EMBER_CHECK(out.end - out.begin == static_cast<uint64_t>(bytes), kOp, name, ": tensor ", tname, " of shape ",
              shape_str(out.shape), " ", dtype_name(out.dtype), " needs ", bytes, " bytes but spans ",
              out.end - out.begin);
  return out;
}

// The pieces of a file: the padded header (with its length in front) and the data section.
struct Encoded {
  std::string head;  // 8-byte length + header JSON + padding
  std::string data;
};

Encoded encode(const StateDict& state, const std::string& where) {
  json header = json::object();
  std::vector<Tensor> host;
  uint64_t offset = 0;
  for (const auto& [name, t] : state.tensors) {
    EMBER_CHECK(!name.empty() && name != "__metadata__", kOp, "invalid tensor name '", name, "' for ", where);
    EMBER_CHECK(!header.contains(name), kOp, "tensor name '", name, "' appears twice (", where, ")");
    EMBER_CHECK(t.defined(), kOp, "tensor '", name, "' is undefined (", where, ")");
    Tensor c = contiguous(to_device(t.detach(), Device::cpu()));
    const uint64_t bytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", st_dtype(c.dtype())}, {"shape", c.shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    host.push_back(c);
  }
  Encoded out;
  out.data.assign(offset, '\0');
  for (size_t i = 0, at = 0; i < host.size(); ++i) {
    const size_t bytes = static_cast<size_t>(host[i].numel()) * host[i].element_size();
    if (bytes) std::memcpy(out.data.data() + at, host[i].data_ptr(), bytes);
    at += bytes;
  }
  json meta = json::object();
  for (const auto& [k, v] : state.meta)
    if (k != kChecksumKey && k != kCrcKey) meta[k] = v;  // ember's own are recomputed below
  const uint32_t data_crc = crc32_of(out.data.data(), out.data.size());
  meta[kCrcKey] = hex32(data_crc);
  header["__metadata__"] = meta;
  std::string h;
  try {
    const uint32_t whole = whole_checksum(header.dump(), data_crc, out.data.size());  // without the entry itself
    header["__metadata__"][kChecksumKey] = hex32(whole);
    h = header.dump();
  } catch (const json::exception& e) {  // JSON text must be UTF-8
    EMBER_FAIL(kOp, "cannot write ", where, ": a tensor name or metadata text is not valid UTF-8 (",
               printable(e.what(), 160), ")");
  }
  h.append((8 - h.size() % 8) % 8, ' ');  // pad so the data starts 8-byte aligned
  const uint64_t hlen = h.size();
  out.head.resize(8);
  for (int i = 0; i < 8; ++i) out.head[i] = static_cast<char>(static_cast<unsigned char>(hlen >> (8 * i)));
  out.head += h;
  return out;
}

}  // namespace

std::string serialize_safetensors(const StateDict& state, const std::string& name) {
  Encoded e = encode(state, name);
  return e.head + e.data;
}

void save_safetensors(const std::string& path, const StateDict& state) {
  const Encoded e = encode(state, path);
  ember::detail::write_file_atomically(kOp, path, {e.head, e.data});
}

StateDict load_safetensors(const std::string& path, SafetensorsChecks* checks) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EMBER_CHECK(fd >= 0, kOp, "cannot open ", path, ": ", std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  EMBER_CHECK(::fstat(fd, &st) == 0, kOp, "cannot stat ", path, ": ", std::strerror(errno));
  EMBER_CHECK(!S_ISDIR(st.st_mode), kOp, "cannot load ", path, ": it is a directory, not a .safetensors file");
  EMBER_CHECK(S_ISREG(st.st_mode), kOp, "cannot load ", path, ": not a regular file");
  const size_t size = static_cast<size_t>(st.st_size);
  std::unique_ptr<char[]> bytes(new char[size ? size : 1]);
  for (size_t at = 0; at < size;) {
    const ssize_t n = ::read(fd, bytes.get() + at, size - at);
    if (n < 0 && errno == EINTR) continue;
    EMBER_CHECK(n > 0, kOp, "reading ", path, " failed after ", at, " of ", size, " bytes: ",
                n == 0 ? "the file shrank while reading" : std::strerror(errno));
    at += static_cast<size_t>(n);
  }
  return parse_safetensors(bytes.get(), size, path, checks);
}

StateDict parse_safetensors(const void* bytes, size_t size, const std::string& name, SafetensorsChecks* checks) {
  const char* p = static_cast<const char*>(bytes);
  EMBER_CHECK(size >= 8, kOp, name, " is truncated: ", size, " bytes, shorter than the 8-byte header length");
  uint64_t hlen = 0;
  for (int i = 0; i < 8; ++i) hlen |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  EMBER_CHECK(hlen <= kMaxHeader, kOp, name, " declares a header of ", hlen, " bytes (limit ", kMaxHeader,
              "): not a safetensors file or corrupted");
  EMBER_CHECK(hlen <= size - 8, kOp, name, " is truncated: the header needs ", hlen, " bytes, the file has ",
              size - 8, " after the length");
  json header = parse_header(std::string(p + 8, hlen), name);
  EMBER_CHECK(header.is_object(), kOp, name, " has a corrupted header (a JSON ", type_of(header),
              ", not an object)");
  const char* data = p + 8 + hlen;
  const uint64_t data_size = size - 8 - hlen;

  StateDict out;
  if (const auto found_meta = header.find("__metadata__"); found_meta != header.end()) {
    const json& meta = *found_meta;
    EMBER_CHECK(meta.is_object(), kOp, name, ": __metadata__ is a JSON ", type_of(meta), ", not an object");
    for (auto it = meta.begin(); it != meta.end(); ++it) {
      EMBER_CHECK(it.value().is_string(), kOp, name, ": metadata '", printable(it.key()), "' is a JSON ",
                  type_of(it.value()), ", not a string");
      out.meta[it.key()] = it.value().get<std::string>();
    }
  }
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it)
    if (it.key() != "__metadata__") entries.push_back(read_entry(it.key(), it.value(), name));

  // The data ranges tile the data section: in offset order each begins where the last ended,
  // and the last ends at the end of the file. Anything else is overlap (two tensors on the
  // same bytes), a gap, truncation or trailing bytes.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t at = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    EMBER_CHECK(e.begin >= at, kOp, name, " is corrupted: tensor '", printable(e.name), "' [", e.begin, ", ", e.end,
                ") overlaps tensor '", printable(prev ? prev->name : ""), "', which ends at ", at,
                " (the format needs disjoint data ranges)");
    EMBER_CHECK(e.begin == at, kOp, name, " is corrupted: ", e.begin - at, " bytes before tensor '",
                printable(e.name), "' [", e.begin, ", ", e.end, ") belong to no tensor (a gap in the data)");
    at = e.end;
    prev = &e;
  }
  EMBER_CHECK(at <= data_size, kOp, name, " is truncated: its tensors need ", at, " bytes of data, the file has ",
              data_size);
  EMBER_CHECK(at == data_size, kOp, name, " is corrupted: its tensors end at byte ", at, " of a data section of ",
              data_size, " (trailing bytes that belong to no tensor)");

  SafetensorsChecks found;
  const bool has_crc = out.meta.count(kCrcKey), has_checksum = out.meta.count(kChecksumKey);
  const uint32_t data_crc = has_crc || has_checksum ? crc32_of(data, data_size) : 0;
  if (auto it = out.meta.find(kCrcKey); it != out.meta.end()) {
    const std::string actual = hex32(data_crc);
    EMBER_CHECK(actual == it->second, kOp, name, " is corrupted: the data checksum is ", actual,
                " but the file recorded ", printable(it->second, 16));
    out.meta.erase(it);
    found.data_crc32 = true;
  }
  if (auto it = out.meta.find(kChecksumKey); it != out.meta.end()) {
    header["__metadata__"].erase(kChecksumKey);
    std::string canonical;
    try {
      canonical = header.dump();  // the nesting is bounded, so this cannot run out of stack
    } catch (const json::exception& e) {
      EMBER_FAIL(kOp, name, " has a corrupted header (", printable(e.what(), 160), ")");
    }
    const std::string actual = hex32(whole_checksum(canonical, data_crc, data_size));
    EMBER_CHECK(actual == it->second, kOp, name, " is corrupted: the checksum of header and data is ", actual,
                " but the file recorded ", printable(it->second, 16));
    out.meta.erase(it);
    found.checksum = true;
  }

  for (const Entry& e : entries) {
    const size_t n = static_cast<size_t>(e.end - e.begin);
    if (e.dtype == DType::boolean) {
      for (size_t i = 0; i < n; ++i) {
        const auto b = static_cast<unsigned char>(data[e.begin + i]);
        EMBER_CHECK(b <= 1, kOp, name, ": BOOL tensor '", printable(e.name), "' of shape ", shape_str(e.shape),
                    " holds byte ", static_cast<int>(b), " at element ", i, " (a bool is 0 or 1)");
      }
    }
    Tensor t = empty(e.shape, e.dtype);
    if (n) std::memcpy(t.data_ptr(), data + e.begin, n);
    out.tensors.emplace_back(e.name, t);
  }
  if (checks) *checks = found;
  return out;
}

}  // namespace ember::io
