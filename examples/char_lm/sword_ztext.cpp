#include "sword_ztext.h"

#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace sword {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("sword: cannot open " + path);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

uint32_t u32(const std::string& s, size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data() + at);
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
uint16_t u16(const std::string& s, size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data() + at);
  return static_cast<uint16_t>(p[0] | p[1] << 8);
}

std::string inflate_block(const std::string& bzz, uint32_t offset, uint32_t csize, uint32_t usize,
                          const std::string& path) {
  if (uint64_t(offset) + csize > bzz.size())
    throw std::runtime_error("sword: " + path + " is truncated (block at " + std::to_string(offset) + " + " +
                             std::to_string(csize) + " bytes, file has " + std::to_string(bzz.size()) + ")");
  std::string out(usize, '\0');
  uLongf n = usize;
  int rc = uncompress(reinterpret_cast<Bytef*>(out.data()), &n, reinterpret_cast<const Bytef*>(bzz.data() + offset),
                      csize);
  if (rc != Z_OK || n != usize)
    throw std::runtime_error("sword: " + path + ": block at offset " + std::to_string(offset) +
                             " does not inflate to its " + std::to_string(usize) + " bytes (zlib code " +
                             std::to_string(rc) + ")");
  return out;
}

}  // namespace

std::vector<std::string> read_testament(const std::string& dir, const std::string& t) {
  const std::string base = dir + "/" + t;
  const std::string bzs = read_file(base + ".bzs"), bzv = read_file(base + ".bzv"), bzz = read_file(base + ".bzz");
  if (bzs.size() % 12 != 0) throw std::runtime_error("sword: " + base + ".bzs is not whole 12-byte records");
  if (bzv.size() % 10 != 0) throw std::runtime_error("sword: " + base + ".bzv is not whole 10-byte records");
  const size_t nblocks = bzs.size() / 12;
  std::vector<std::string> blocks(nblocks);  // inflated on first use
  std::vector<std::string> verses;
  for (size_t v = 0; v < bzv.size() / 10; ++v) {
    const uint32_t block = u32(bzv, v * 10), off = u32(bzv, v * 10 + 4);
    const uint16_t len = u16(bzv, v * 10 + 8);
    if (len == 0) continue;
    if (block >= nblocks)
      throw std::runtime_error("sword: " + base + ".bzv: verse " + std::to_string(v) + " names block " +
                               std::to_string(block) + " of " + std::to_string(nblocks));
    std::string& b = blocks[block];
    if (b.empty()) b = inflate_block(bzz, u32(bzs, block * 12), u32(bzs, block * 12 + 4), u32(bzs, block * 12 + 8), base + ".bzz");
    if (uint64_t(off) + len > b.size())
      throw std::runtime_error("sword: " + base + ".bzv: verse " + std::to_string(v) + " runs past its block");
    verses.push_back(b.substr(off, len));
  }
  return verses;
}

std::string to_plain(const std::string& osis) {
  std::string out;
  out.reserve(osis.size() / 2);
  int skip = 0;  // depth inside <note> / <title>, whose text is left out
  size_t i = 0;
  auto put_space = [&] {
    if (!out.empty() && out.back() != ' ') out += ' ';
  };
  while (i < osis.size()) {
    const char c = osis[i];
    if (c == '<') {
      const size_t end = osis.find('>', i);
      if (end == std::string::npos) break;  // a cut-off tag: drop the rest
      std::string tag = osis.substr(i + 1, end - i - 1);
      const bool closing = !tag.empty() && tag[0] == '/';
      const bool self_closing = !tag.empty() && tag.back() == '/';
      std::string name = tag.substr(closing ? 1 : 0);
      name = name.substr(0, name.find_first_of(" /"));
      if (name == "note" || name == "title") {
        if (closing) skip = skip > 0 ? skip - 1 : 0;
        else if (!self_closing) ++skip;
      }
      // Line breaks and milestones separate words; other inline tags (w, transChange) don't.
      if (name == "lb" || name == "l" || name == "div" || name == "milestone" || name == "chapter") put_space();
      i = end + 1;
      continue;
    }
    if (skip > 0) {
      ++i;
      continue;
    }
    if (c == '&') {
      static const std::pair<const char*, char> kEntities[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'},
                                                               {"&quot;", '"'}, {"&apos;", '\''}};
      bool done = false;
      for (const auto& [ent, ch] : kEntities)
        if (osis.compare(i, std::strlen(ent), ent) == 0) {
          out += ch;
          i += std::strlen(ent);
          done = true;
          break;
        }
      if (done) continue;
    }
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r') put_space();
    else out += c;
    ++i;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  size_t start = out.find_first_not_of(' ');
  return start == std::string::npos ? std::string() : out.substr(start);
}

std::vector<std::string> read_verses(const std::string& dir) {
  std::vector<std::string> verses;
  bool any = false;
  for (const char* t : {"ot", "nt"}) {
    if (!std::filesystem::exists(dir + "/" + t + ".bzs")) continue;
    any = true;
    for (const std::string& raw : read_testament(dir, t)) {
      std::string p = to_plain(raw);
      if (!p.empty()) verses.push_back(std::move(p));
    }
  }
  if (!any) throw std::runtime_error("sword: no zText module in " + dir + " (expected ot.bzs or nt.bzs)");
  return verses;
}

}  // namespace sword
