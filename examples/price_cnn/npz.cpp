// .npz / .npy reading (see npz.h). The zip side walks the local file headers from the start
// of the file; the .npy side parses the header's Python dict literal with a small recursive
// parser (strings, integers, True/False, tuples, lists, dicts) and checks the data size.
#include "npz.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <sstream>
#include <utility>

#include "ember/core/error.h"

namespace price_cnn {
namespace {

constexpr const char* kOp = "price_cnn";

// --- zip ----------------------------------------------------------------------------------

uint32_t le16(const unsigned char* p) { return uint32_t{p[0]} | (uint32_t{p[1]} << 8); }
uint32_t le32(const unsigned char* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}
uint64_t le64(const unsigned char* p) { return uint64_t{le32(p)} | (uint64_t{le32(p + 4)} << 32); }

// Raw deflate (no zlib header: windowBits -15) of `in` into exactly `out_size` bytes.
std::vector<unsigned char> inflate_raw(const unsigned char* in, size_t in_size, size_t out_size,
                                       const std::string& where) {
  std::vector<unsigned char> out(out_size);
  z_stream z{};
  EMBER_CHECK(inflateInit2(&z, -15) == Z_OK, kOp, where, ": zlib inflateInit2 failed");
  z.next_in = const_cast<unsigned char*>(in);
  z.avail_in = static_cast<uInt>(in_size);
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out_size);
  const int rc = inflate(&z, Z_FINISH);
  const std::string msg = z.msg != nullptr ? z.msg : "";
  const uLong produced = z.total_out;
  inflateEnd(&z);
  EMBER_CHECK(rc == Z_STREAM_END, kOp, where, ": damaged deflate data (zlib: ",
              rc == Z_BUF_ERROR ? std::string("data ends early or is longer than the stored size")
                                : msg.empty() ? std::string("error ") + std::to_string(rc) : msg,
              ")");
  EMBER_CHECK(produced == out_size, kOp, where, ": inflated to ", produced, " bytes, the zip header says ",
              out_size, ": the file is damaged");
  return out;
}

// --- the .npy header: a Python literal ----------------------------------------------------

struct PyValue {
  enum Kind { str, integer, boolean, none, seq, dict } kind = none;
  std::string s;
  int64_t i = 0;
  std::vector<PyValue> items;                          // seq
  std::vector<std::pair<std::string, PyValue>> keyed;  // dict
};

class PyParser {
 public:
  PyParser(const std::string& text, const std::string& source) : t_(text), src_(source) {}

  PyValue parse() {
    PyValue v = value(0);
    skip();
    if (pos_ != t_.size()) fail("unexpected text after the header dict");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    EMBER_FAIL(kOp, src_, ": cannot read the .npy header (", what, " at character ", pos_, "): \"",
               t_.substr(0, 120), "\"");
  }
  void skip() {
    while (pos_ < t_.size() && std::isspace(static_cast<unsigned char>(t_[pos_]))) ++pos_;
  }
  bool eat(char c) {
    skip();
    if (pos_ < t_.size() && t_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  PyValue value(int depth) {
    if (depth > 16) fail("nested too deeply");
    skip();
    if (pos_ >= t_.size()) fail("header ends early");
    const char c = t_[pos_];
    PyValue v;
    if (c == '\'' || c == '"') {
      v.kind = PyValue::str;
      ++pos_;
      while (pos_ < t_.size() && t_[pos_] != c) {
        if (t_[pos_] == '\\') fail("escapes in strings are not supported");
        v.s += t_[pos_++];
      }
      if (pos_ >= t_.size()) fail("unterminated string");
      ++pos_;
      return v;
    }
    if (c == '(' || c == '[') {
      const char close = c == '(' ? ')' : ']';
      ++pos_;
      v.kind = PyValue::seq;
      while (!eat(close)) {
        v.items.push_back(value(depth + 1));
        if (eat(close)) break;
        if (!eat(',')) fail("expected ',' or a closing bracket");
      }
      return v;
    }
    if (c == '{') {
      ++pos_;
      v.kind = PyValue::dict;
      while (!eat('}')) {
        PyValue k = value(depth + 1);
        if (k.kind != PyValue::str) fail("a dict key that is not a string");
        if (!eat(':')) fail("expected ':'");
        v.keyed.emplace_back(k.s, value(depth + 1));
        if (eat('}')) break;
        if (!eat(',')) fail("expected ',' or '}'");
      }
      return v;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '-') {
      size_t end = pos_ + 1;
      while (end < t_.size() && std::isdigit(static_cast<unsigned char>(t_[end]))) ++end;
      if (end < t_.size() && t_[end] == 'L') ++end;  // Python 2 long
      try {
        v.i = std::stoll(t_.substr(pos_, end - pos_));
      } catch (const std::exception&) {
        fail("a bad integer");
      }
      v.kind = PyValue::integer;
      pos_ = end;
      return v;
    }
    for (const auto& [word, kind, val] : {std::tuple{"True", PyValue::boolean, 1}, std::tuple{"False", PyValue::boolean, 0},
                                          std::tuple{"None", PyValue::none, 0}}) {
      const size_t n = std::strlen(word);
      if (t_.compare(pos_, n, word) == 0) {
        pos_ += n;
        v.kind = kind;
        v.i = val;
        return v;
      }
    }
    fail("an unsupported value");
  }

  const std::string& t_;
  const std::string& src_;
  size_t pos_ = 0;
};

// One field's dtype string: "<f8", "|u1", "<M8[D]" ...
NpyField parse_descr(const std::string& name, const std::string& d, const std::string& src) {
  NpyField f;
  f.name = name;
  f.descr = d;
  const std::string what = name.empty() ? std::string("the dtype") : "field \"" + name + "\"";
  EMBER_CHECK(d.size() >= 3, kOp, src, ": ", what, " has dtype \"", d, "\", which this reader does not know");
  EMBER_CHECK(d[0] != '>', kOp, src, ": ", what, " is big-endian (\"", d, "\"); only little-endian data is read");
  EMBER_CHECK(d[0] == '<' || d[0] == '|' || d[0] == '=', kOp, src, ": ", what, " has dtype \"", d,
              "\", which this reader does not know");
  f.kind = d[1];
  size_t pos = 0;
  int size = 0;
  try {
    size = std::stoi(d.substr(2), &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  const std::string rest = d.substr(2 + pos);
  EMBER_CHECK(pos > 0, kOp, src, ": ", what, " has dtype \"", d, "\", which this reader does not know");
  f.size = size;
  if (f.kind == 'M') {
    EMBER_CHECK(size == 8, kOp, src, ": ", what, ": datetime64 of ", size, " bytes");
    if (rest == "[D]") f.seconds_per_unit = 86400;
    else if (rest == "[s]") f.seconds_per_unit = 1;
    else
      EMBER_FAIL(kOp, src, ": ", what, " is datetime64 in unit \"", rest,
                 "\"; this reader takes days [D] and seconds [s]");
    return f;
  }
  EMBER_CHECK(rest.empty(), kOp, src, ": ", what, " has dtype \"", d, "\", which this reader does not know");
  const bool ok = (f.kind == 'f' && (size == 4 || size == 8)) ||
                  ((f.kind == 'i' || f.kind == 'u') && (size == 1 || size == 2 || size == 4 || size == 8)) ||
                  (f.kind == 'b' && size == 1);
  EMBER_CHECK(ok, kOp, src, ": ", what, " has dtype \"", d,
              "\"; this reader takes floats (f4, f8), integers (i/u 1-8 bytes), bool and datetime64");
  return f;
}

double read_scalar(const unsigned char* p, const NpyField& f) {
  switch (f.kind) {
    case 'f':
      if (f.size == 4) {
        float v;
        std::memcpy(&v, p, 4);
        return v;
      } else {
        double v;
        std::memcpy(&v, p, 8);
        return v;
      }
    case 'b':
      return *p != 0;
    case 'u': {
      uint64_t v = 0;
      for (int64_t k = 0; k < f.size; ++k) v |= uint64_t{p[k]} << (8 * k);
      return static_cast<double>(v);
    }
    default: {  // 'i', 'M': little-endian two's complement, sign-extended
      uint64_t v = 0;
      for (int64_t k = 0; k < f.size; ++k) v |= uint64_t{p[k]} << (8 * k);
      if (f.size < 8 && (v >> (8 * f.size - 1)) & 1) v |= ~uint64_t{0} << (8 * f.size);
      int64_t s;
      std::memcpy(&s, &v, 8);
      return static_cast<double>(s);
    }
  }
}

}  // namespace

// --- NpyArray -------------------------------------------------------------------------------

const NpyField* NpyArray::field(const std::string& name) const {
  for (const NpyField& f : fields)
    if (f.name == name) return &f;
  return nullptr;
}

std::string NpyArray::describe() const {
  std::ostringstream os;
  os << "shape (";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << (shape.size() == 1 ? ",)" : ")") << ", " << (fields.size() == 1 && fields[0].name.empty() ? "dtype " : "fields ");
  for (size_t i = 0; i < fields.size(); ++i) os << (i ? ", " : "") << fields[i].name << (fields[i].name.empty() ? "" : " ") << fields[i].descr;
  return os.str();
}

std::vector<double> NpyArray::column(const std::string& name) const {
  const NpyField* f = field(name);
  if (f == nullptr) {
    std::string have;
    for (const NpyField& g : fields) have += (have.empty() ? "" : ", ") + g.name;
    EMBER_FAIL(kOp, source, ": no field \"", name, "\" (it has: ", have, ")");
  }
  std::vector<double> out(static_cast<size_t>(count));
  for (int64_t r = 0; r < count; ++r) {
    const double v = read_scalar(data.data() + r * itemsize + f->offset, *f);
    out[static_cast<size_t>(r)] = f->kind == 'M' ? v * static_cast<double>(f->seconds_per_unit) : v;
  }
  return out;
}

std::vector<int64_t> NpyArray::times(const std::string& name) const {
  const NpyField* f = field(name);
  EMBER_CHECK(f != nullptr, kOp, source, ": no field \"", name, "\" (", describe(), ")");
  EMBER_CHECK(f->kind == 'M', kOp, source, ": field \"", name, "\" is ", f->descr, ", not a datetime64");
  std::vector<int64_t> out(static_cast<size_t>(count));
  for (int64_t r = 0; r < count; ++r) {
    int64_t v;
    std::memcpy(&v, data.data() + r * itemsize + f->offset, 8);
    EMBER_CHECK(v != std::numeric_limits<int64_t>::min(), kOp, source, ": record ", r, " has no ", name, " (NaT)");
    out[static_cast<size_t>(r)] = v * f->seconds_per_unit;
  }
  return out;
}

NpyArray parse_npy(const std::vector<unsigned char>& b, const std::string& src) {
  static const unsigned char kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  EMBER_CHECK(b.size() >= 10 && std::memcmp(b.data(), kMagic, 6) == 0, kOp, src,
              ": not a .npy array (no \\x93NUMPY magic at its start)");
  const int major = b[6];
  EMBER_CHECK(major >= 1 && major <= 3, kOp, src, ": .npy format version ", major, ".", int{b[7]},
              " (this reader takes 1.0 to 3.0)");
  size_t header_len = 0, start = 0;
  if (major == 1) {
    header_len = le16(b.data() + 8);
    start = 10;
  } else {
    EMBER_CHECK(b.size() >= 12, kOp, src, ": truncated .npy header");
    header_len = le32(b.data() + 8);
    start = 12;
  }
  EMBER_CHECK(header_len <= b.size() - start, kOp, src, ": the .npy header claims ", header_len,
              " bytes but only ", b.size() - start, " follow");
  const std::string header(reinterpret_cast<const char*>(b.data() + start), header_len);
  const PyValue h = PyParser(header, src).parse();
  EMBER_CHECK(h.kind == PyValue::dict, kOp, src, ": the .npy header is not a dict: \"", header.substr(0, 120), "\"");
  const PyValue *descr = nullptr, *fortran = nullptr, *shape = nullptr;
  for (const auto& [k, v] : h.keyed) {
    if (k == "descr") descr = &v;
    else if (k == "fortran_order") fortran = &v;
    else if (k == "shape") shape = &v;
  }
  EMBER_CHECK(descr && fortran && shape, kOp, src, ": the .npy header lacks ", !descr ? "'descr'" : !fortran ? "'fortran_order'" : "'shape'",
              ": \"", header.substr(0, 120), "\"");
  EMBER_CHECK(fortran->kind == PyValue::boolean, kOp, src, ": 'fortran_order' is not True or False");
  EMBER_CHECK(shape->kind == PyValue::seq, kOp, src, ": 'shape' is not a tuple");

  NpyArray a;
  a.source = src;
  a.count = 1;
  for (const PyValue& d : shape->items) {
    EMBER_CHECK(d.kind == PyValue::integer && d.i >= 0 && d.i < (int64_t{1} << 40), kOp, src, ": a bad dimension in 'shape'");
    a.shape.push_back(d.i);
    EMBER_CHECK(a.count <= (int64_t{1} << 40) / std::max<int64_t>(d.i, 1), kOp, src, ": 'shape' is absurdly large");
    a.count *= d.i;
  }
  EMBER_CHECK(fortran->i == 0 || a.shape.size() <= 1, kOp, src,
              ": Fortran-order (column-major) arrays of 2 or more dimensions are not read");
  if (descr->kind == PyValue::str) {
    a.fields.push_back(parse_descr("", descr->s, src));
  } else {
    EMBER_CHECK(descr->kind == PyValue::seq && !descr->items.empty(), kOp, src, ": 'descr' is neither a dtype string nor a list of fields");
    int64_t off = 0;
    for (const PyValue& fd : descr->items) {
      EMBER_CHECK(fd.kind == PyValue::seq && fd.items.size() >= 2 && fd.items[0].kind == PyValue::str, kOp, src,
                  ": a field in 'descr' is not a (name, dtype) pair");
      EMBER_CHECK(fd.items.size() == 2 && fd.items[1].kind == PyValue::str, kOp, src, ": field \"", fd.items[0].s,
                  "\" is a nested record or a sub-array, which this reader does not take");
      NpyField f = parse_descr(fd.items[0].s, fd.items[1].s, src);
      EMBER_CHECK(!f.name.empty(), kOp, src, ": an unnamed field (padding) in 'descr' is not supported");
      f.offset = off;
      off += f.size;
      a.fields.push_back(f);
    }
  }
  for (const NpyField& f : a.fields) a.itemsize = std::max(a.itemsize, f.offset + f.size);
  const size_t data_at = start + header_len;
  const uint64_t want = static_cast<uint64_t>(a.count) * static_cast<uint64_t>(a.itemsize);
  EMBER_CHECK(b.size() - data_at == want, kOp, src, ": the header says ", a.count, " elements of ", a.itemsize,
              " bytes (", want, " bytes) but ", b.size() - data_at, " bytes of data follow");
  a.data.assign(b.begin() + static_cast<std::ptrdiff_t>(data_at), b.end());
  return a;
}

std::vector<NpzEntry> read_npz(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EMBER_CHECK(in.good(), kOp, "cannot open ", path);
  const std::vector<unsigned char> z((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EMBER_CHECK(z.size() >= 4 && le32(z.data()) == 0x04034b50u, kOp, path,
              ": not a .npz file (it does not start with a zip local file header, PK\\3\\4)");
  std::vector<NpzEntry> out;
  size_t pos = 0;
  while (pos + 4 <= z.size() && le32(z.data() + pos) == 0x04034b50u) {
    const std::string at = path + " (zip entry at byte " + std::to_string(pos) + ")";
    EMBER_CHECK(z.size() - pos >= 30, kOp, at, ": truncated local file header");
    const unsigned char* h = z.data() + pos;
    const uint32_t flags = le16(h + 6), method = le16(h + 8), crc = le32(h + 14);
    uint64_t csize = le32(h + 18), usize = le32(h + 22);
    const size_t name_len = le16(h + 26), extra_len = le16(h + 28);
    EMBER_CHECK(z.size() - pos - 30 >= name_len + extra_len, kOp, at, ": truncated file name or extra field");
    const std::string name(reinterpret_cast<const char*>(h + 30), name_len);
    const std::string where = path + ":" + name;
    EMBER_CHECK((flags & 1u) == 0, kOp, where, ": the entry is encrypted");
    EMBER_CHECK((flags & 8u) == 0, kOp, where,
                ": the entry's sizes follow its data (a streamed zip); this reader needs them in the local header");
    if (csize == 0xFFFFFFFFu || usize == 0xFFFFFFFFu) {  // zip64: the sizes are in extra field 0x0001
      bool found = false;
      for (size_t e = 0; e + 4 <= extra_len;) {
        const unsigned char* x = h + 30 + name_len + e;
        const size_t len = le16(x + 2);
        if (le16(x) == 0x0001 && len >= 16) {
          usize = le64(x + 4);
          csize = le64(x + 12);
          found = true;
        }
        e += 4 + len;
      }
      EMBER_CHECK(found, kOp, where, ": zip64 sizes announced but no zip64 extra field");
    }
    const size_t data_at = pos + 30 + name_len + extra_len;
    EMBER_CHECK(csize <= z.size() - data_at, kOp, where, ": the file ends inside this entry (", z.size() - data_at,
                " of ", csize, " compressed bytes present): truncated download?");
    EMBER_CHECK(usize < (uint64_t{1} << 32), kOp, where, ": ", usize, " bytes uncompressed is more than this reader takes");
    std::vector<unsigned char> raw;
    if (method == 0) {
      EMBER_CHECK(csize == usize, kOp, where, ": a stored entry with different compressed (", csize,
                  ") and uncompressed (", usize, ") sizes");
      raw.assign(z.begin() + static_cast<std::ptrdiff_t>(data_at), z.begin() + static_cast<std::ptrdiff_t>(data_at + csize));
    } else if (method == 8) {
      raw = inflate_raw(z.data() + data_at, static_cast<size_t>(csize), static_cast<size_t>(usize), where);
    } else {
      EMBER_FAIL(kOp, where, ": compression method ", method, " (this reader takes 0 stored and 8 deflate)");
    }
    const uLong got = crc32(crc32(0L, Z_NULL, 0), raw.data(), static_cast<uInt>(raw.size()));
    EMBER_CHECK(got == crc, kOp, where, ": CRC-32 mismatch (the header says ", crc, ", the data gives ", got,
                "): the file is damaged");
    EMBER_CHECK(name.size() > 4 && name.compare(name.size() - 4, 4, ".npy") == 0, kOp, where,
                ": not a .npy entry");
    out.push_back({name, parse_npy(raw, where)});
    pos = data_at + static_cast<size_t>(csize);
  }
  EMBER_CHECK(!out.empty(), kOp, path, ": no arrays in this .npz file");
  EMBER_CHECK(pos + 4 <= z.size() && (le32(z.data() + pos) == 0x02014b50u || le32(z.data() + pos) == 0x06054b50u),
              kOp, path, ": unexpected bytes after the last zip entry (at byte ", pos,
              "; expected the central directory): damaged or truncated file");
  return out;
}

}  // namespace price_cnn
