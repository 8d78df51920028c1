// .safetensors reading and writing (see include/ember/io/safetensors.h for the format).
#include "ember/io/safetensors.h"

#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ember/core/error.h"
#include "ember/ops/ops.h"

namespace ember::io {
namespace {

using nlohmann::json;
constexpr const char* kOp = "safetensors";
constexpr uint64_t kMaxHeader = 100u << 20;  // the format's own limit is 100 MB

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

uint32_t crc32_of(const char* data, size_t n) {
  uLong c = crc32(0L, Z_NULL, 0);
  // zlib takes uInt lengths: feed large buffers in pieces.
  for (size_t at = 0; at < n;) {
    const size_t piece = std::min<size_t>(n - at, 1u << 30);
    c = crc32(c, reinterpret_cast<const Bytef*>(data + at), static_cast<uInt>(piece));
    at += piece;
  }
  return static_cast<uint32_t>(c);
}

std::string hex32(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

}  // namespace

void save_safetensors(const std::string& path, const StateDict& state) {
  json header = json::object();
  std::vector<Tensor> host;
  uint64_t offset = 0;
  for (const auto& [name, t] : state.tensors) {
    EMBER_CHECK(!name.empty() && name != "__metadata__", kOp, "invalid tensor name '", name, "' for ", path);
    EMBER_CHECK(!header.contains(name), kOp, "tensor name '", name, "' appears twice (", path, ")");
    EMBER_CHECK(t.defined(), kOp, "tensor '", name, "' is undefined (", path, ")");
    Tensor c = contiguous(to_device(t.detach(), Device::cpu()));
    const uint64_t bytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", st_dtype(c.dtype())}, {"shape", c.shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    host.push_back(c);
  }
  std::string data(offset, '\0');
  for (size_t i = 0, at = 0; i < host.size(); ++i) {
    const size_t bytes = static_cast<size_t>(host[i].numel()) * host[i].element_size();
    if (bytes) std::memcpy(data.data() + at, host[i].data_ptr(), bytes);
    at += bytes;
  }
  json meta = json::object();
  for (const auto& [k, v] : state.meta) meta[k] = v;
  meta["ember.crc32"] = hex32(crc32_of(data.data(), data.size()));
  header["__metadata__"] = meta;
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // pad so the data starts 8-byte aligned
  const uint64_t hlen = h.size();
  unsigned char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(hlen >> (8 * i));

  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  {
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    EMBER_CHECK(f != nullptr, kOp, "cannot open ", tmp, " for writing: ", std::strerror(errno));
    bool ok = std::fwrite(len_bytes, 1, 8, f) == 8 && std::fwrite(h.data(), 1, h.size(), f) == h.size() &&
              std::fwrite(data.data(), 1, data.size(), f) == data.size();
    ok = std::fflush(f) == 0 && ok;
    ok = ::fsync(::fileno(f)) == 0 && ok;
    ok = std::fclose(f) == 0 && ok;
    if (!ok) {
      std::remove(tmp.c_str());
      EMBER_FAIL(kOp, "writing ", tmp, " failed: ", std::strerror(errno));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    EMBER_FAIL(kOp, "cannot rename ", tmp, " to ", path, ": ", why);
  }
}

StateDict load_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EMBER_CHECK(in.good(), kOp, "cannot open ", path, ": ", std::strerror(errno));
  in.seekg(0, std::ios::end);
  const uint64_t size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  EMBER_CHECK(size >= 8, kOp, path, " is truncated: ", size, " bytes, shorter than the 8-byte header length");
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t hlen = 0;
  for (int i = 0; i < 8; ++i) hlen |= static_cast<uint64_t>(len_bytes[i]) << (8 * i);
  EMBER_CHECK(hlen <= kMaxHeader, kOp, path, " declares a header of ", hlen, " bytes (limit ", kMaxHeader,
              "): not a safetensors file or corrupted");
  EMBER_CHECK(8 + hlen <= size, kOp, path, " is truncated: the header needs ", hlen, " bytes, the file has ",
              size - 8, " after the length");
  std::string h(hlen, '\0');
  in.read(h.data(), static_cast<std::streamsize>(hlen));
  json header;
  try {
    header = json::parse(h);
  } catch (const json::exception& e) {
    EMBER_FAIL(kOp, path, " has a corrupted header (not valid JSON: ", e.what(), ")");
  }
  EMBER_CHECK(header.is_object(), kOp, path, " has a corrupted header (not a JSON object)");
  const uint64_t data_size = size - 8 - hlen;
  std::string data(data_size, '\0');
  in.read(data.data(), static_cast<std::streamsize>(data_size));
  EMBER_CHECK(static_cast<uint64_t>(in.gcount()) == data_size, kOp, "reading ", path, " failed");

  StateDict out;
  if (header.contains("__metadata__")) {
    const json& meta = header["__metadata__"];
    EMBER_CHECK(meta.is_object(), kOp, path, ": __metadata__ is not an object");
    for (auto it = meta.begin(); it != meta.end(); ++it) {
      EMBER_CHECK(it.value().is_string(), kOp, path, ": metadata '", it.key(), "' is not a string");
      out.meta[it.key()] = it.value().get<std::string>();
    }
  }
  // A short data section is truncation, whatever the checksum says.
  uint64_t max_end = 0;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__" || !it.value().is_object() || !it.value().contains("data_offsets")) continue;
    const json& off = it.value()["data_offsets"];
    if (off.is_array() && off.size() == 2 && off[1].is_number_unsigned()) max_end = std::max(max_end, off[1].get<uint64_t>());
  }
  EMBER_CHECK(max_end <= data_size, kOp, path, " is truncated: its tensors need ", max_end,
              " bytes of data, the file has ", data_size);
  if (auto it = out.meta.find("ember.crc32"); it != out.meta.end()) {
    const std::string actual = hex32(crc32_of(data.data(), data.size()));
    EMBER_CHECK(actual == it->second, kOp, path, " is corrupted: the data checksum is ", actual,
                " but the file recorded ", it->second);
    out.meta.erase(it);
  }
  // Tensors in file order (by offset), which is the order they were saved in.
  std::vector<std::pair<uint64_t, std::string>> order;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const json& e = it.value();
    EMBER_CHECK(e.is_object() && e.contains("dtype") && e.contains("shape") && e.contains("data_offsets"), kOp,
                path, ": entry '", it.key(), "' needs dtype, shape and data_offsets");
    EMBER_CHECK(e["data_offsets"].is_array() && e["data_offsets"].size() == 2 &&
                    e["data_offsets"][0].is_number_unsigned() && e["data_offsets"][1].is_number_unsigned(),
                kOp, path, ": entry '", it.key(), "' has malformed data_offsets");
    order.emplace_back(e["data_offsets"][0].get<uint64_t>(), it.key());
  }
  std::sort(order.begin(), order.end());
  for (const auto& [begin_unused, name] : order) {
    const json& e = header[name];
    DType dt;
    EMBER_CHECK(e["dtype"].is_string() && parse_dtype(e["dtype"].get<std::string>(), dt), kOp, path,
                ": tensor '", name, "' has unsupported dtype ", e["dtype"].dump());
    EMBER_CHECK(e["shape"].is_array(), kOp, path, ": tensor '", name, "' has a malformed shape");
    Shape shape;
    for (const auto& d : e["shape"]) {
      EMBER_CHECK(d.is_number_unsigned(), kOp, path, ": tensor '", name, "' has a malformed shape ", e["shape"].dump());
      shape.push_back(d.get<int64_t>());
    }
    const uint64_t b = e["data_offsets"][0].get<uint64_t>(), end = e["data_offsets"][1].get<uint64_t>();
    EMBER_CHECK(b <= end && end <= data_size, kOp, path, " is truncated or corrupted: tensor '", name,
                "' spans bytes [", b, ", ", end, ") but the data section has ", data_size);
    const uint64_t want = static_cast<uint64_t>(numel_of(shape)) * dtype_size(dt);
    EMBER_CHECK(end - b == want, kOp, path, ": tensor '", name, "' of shape ", shape_str(shape), " ",
                dtype_name(dt), " needs ", want, " bytes but spans ", end - b);
    Tensor t = empty(shape, dt);
    if (want) std::memcpy(t.data_ptr(), data.data() + b, want);
    out.tensors.emplace_back(name, t);
  }
  return out;
}

}  // namespace ember::io
