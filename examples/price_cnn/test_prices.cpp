// Tests of price_cnn's readers: dates; .npy arrays built in memory (structured and plain,
// and damaged or unsupported headers); .npz archives written here (stored and deflated, a
// flipped CRC, a truncated file) and the real goog.npz when the data is fetched; the CSV
// reader's missing values, gaps and errors. Every damaged input must raise an error that names
// the file and the problem.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "npz.h"
#include "prices.h"

namespace fs = std::filesystem;
using namespace price_cnn;

namespace {

using Bytes = std::vector<unsigned char>;

fs::path tmp(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("price_cnn_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir / name;
}

void write(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }
void write(const fs::path& p, const Bytes& b) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

void put16(Bytes& b, uint32_t v) {
  b.push_back(static_cast<unsigned char>(v));
  b.push_back(static_cast<unsigned char>(v >> 8));
}
void put32(Bytes& b, uint32_t v) {
  put16(b, v & 0xFFFF);
  put16(b, v >> 16);
}
template <class T>
void put(Bytes& b, T v) {
  unsigned char raw[sizeof(T)];
  std::memcpy(raw, &v, sizeof(T));
  b.insert(b.end(), raw, raw + sizeof(T));
}

// A version 1.0 .npy: magic, header padded to a multiple of 64 bytes, then `data`.
Bytes npy(const std::string& dict, const Bytes& data) {
  Bytes b = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  std::string h = dict;
  while ((10 + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  put16(b, static_cast<uint32_t>(h.size()));
  b.insert(b.end(), h.begin(), h.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

// A two-record table: dates 2004-08-19 and 2004-08-20 (days 12649, 12650), closes 100.34, 108.31.
Bytes table_npy() {
  Bytes data;
  put<int64_t>(data, 12649);
  put<double>(data, 100.34);
  put<int64_t>(data, 12650);
  put<double>(data, 108.31);
  return npy("{'descr': [('date', '<M8[D]'), ('close', '<f8')], 'fortran_order': False, 'shape': (2,), }", data);
}

// A zip with one entry (local header, data, central directory, end record); method 0 or 8.
Bytes zip_one(const std::string& name, const Bytes& content, int method) {
  Bytes payload = content;
  if (method == 8) {
    z_stream z{};
    REQUIRE(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    payload.assign(deflateBound(&z, static_cast<uLong>(content.size())), 0);
    z.next_in = const_cast<unsigned char*>(content.data());
    z.avail_in = static_cast<uInt>(content.size());
    z.next_out = payload.data();
    z.avail_out = static_cast<uInt>(payload.size());
    REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
    payload.resize(z.total_out);
    deflateEnd(&z);
  }
  const uint32_t crc = static_cast<uint32_t>(crc32(0, content.data(), static_cast<uInt>(content.size())));
  Bytes b;
  put32(b, 0x04034b50);
  put16(b, 20), put16(b, 0), put16(b, static_cast<uint32_t>(method)), put16(b, 0), put16(b, 0);
  put32(b, crc), put32(b, static_cast<uint32_t>(payload.size())), put32(b, static_cast<uint32_t>(content.size()));
  put16(b, static_cast<uint32_t>(name.size())), put16(b, 0);
  b.insert(b.end(), name.begin(), name.end());
  b.insert(b.end(), payload.begin(), payload.end());
  const uint32_t cd_at = static_cast<uint32_t>(b.size());
  put32(b, 0x02014b50);
  put16(b, 20), put16(b, 20), put16(b, 0), put16(b, static_cast<uint32_t>(method)), put16(b, 0), put16(b, 0);
  put32(b, crc), put32(b, static_cast<uint32_t>(payload.size())), put32(b, static_cast<uint32_t>(content.size()));
  put16(b, static_cast<uint32_t>(name.size())), put16(b, 0), put16(b, 0), put16(b, 0), put16(b, 0), put32(b, 0), put32(b, 0);
  b.insert(b.end(), name.begin(), name.end());
  const uint32_t cd_size = static_cast<uint32_t>(b.size()) - cd_at;
  put32(b, 0x06054b50);
  put16(b, 0), put16(b, 0), put16(b, 1), put16(b, 1);
  put32(b, cd_size), put32(b, cd_at), put16(b, 0);
  return b;
}

const char* kGoog =
    EMBER_DATA_ROOT "/python-matplotlib-data/usr/share/matplotlib/mpl-data/sample_data/goog.npz";

}  // namespace

TEST_CASE("dates") {
  int64_t s = 0;
  CHECK(parse_time("2004-08-19", &s));
  CHECK(s == 12649 * int64_t{86400});
  CHECK(format_time(s) == "2004-08-19");
  CHECK(parse_time("2020-02-29", &s));
  CHECK(format_time(s) == "2020-02-29");
  CHECK(parse_time("1969-12-31 23:59:30", &s));
  CHECK(s == -30);
  CHECK(format_time(s) == "1969-12-31 23:59:30");
  CHECK(parse_time("2021-03-04T09:30", &s));
  CHECK(format_time(s) == "2021-03-04 09:30:00");
  for (const char* bad : {"2021-02-29", "2020-13-01", "2020-1-1", "20200101", "2020-01-01x", "2020-01-01 25:00", ""})
    CHECK_MESSAGE(!parse_time(bad, &s), bad);
}

TEST_CASE("npy: a structured table") {
  const NpyArray a = parse_npy(table_npy(), "t.npy");
  CHECK(a.count == 2);
  CHECK(a.itemsize == 16);
  REQUIRE(a.times("date").size() == 2);
  CHECK(a.times("date")[1] == 12650 * int64_t{86400});
  CHECK(a.column("close")[1] == doctest::Approx(108.31));
  CHECK(error_of([&] { a.column("volume"); }).find("no field \"volume\" (it has: date, close)") != std::string::npos);
}

TEST_CASE("npy: a plain array") {
  Bytes data;
  put<float>(data, 1.5f);
  put<float>(data, -2.0f);
  put<float>(data, 3.0f);
  const NpyArray a = parse_npy(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", data), "p.npy");
  CHECK(a.column("")[2] == 3.0);
  CHECK(a.describe() == "shape (3,), dtype <f4");
}

TEST_CASE("npy: damaged or unsupported arrays are refused with the problem named") {
  Bytes eight(8, 0);
  const auto err = [](const Bytes& b) { return error_of([&] { parse_npy(b, "x.npy"); }); };
  CHECK(err({'n', 'o', 't', ' ', 'n', 'p', 'y', '!', 0, 0, 0}).find("x.npy: not a .npy array") != std::string::npos);
  CHECK(err(npy("{'descr': '>f8', 'fortran_order': False, 'shape': (1,), }", eight)).find("big-endian") != std::string::npos);
  CHECK(err(npy("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }", Bytes(32, 0))).find("Fortran") != std::string::npos);
  CHECK(err(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", eight)).find("but 8 bytes of data follow") != std::string::npos);
  CHECK(err(npy("{'descr': '<U4', 'fortran_order': False, 'shape': (1,), }", Bytes(16, 0))).find("x.npy: the dtype has dtype \"<U4\"") != std::string::npos);
  CHECK(err(npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", eight)).find("\"|O\"") != std::string::npos);
  CHECK(err(npy("{'descr': [('a', '<f8', (2,))], 'fortran_order': False, 'shape': (1,), }", Bytes(16, 0))).find("sub-array") != std::string::npos);
  CHECK(err(npy("{'descr': '<f8', 'shape': (1,), }", eight)).find("lacks 'fortran_order'") != std::string::npos);
  CHECK(err(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,)", eight)).find("cannot read the .npy header") != std::string::npos);
  CHECK(err(npy("{'descr': '<M8[ns]', 'fortran_order': False, 'shape': (1,), }", eight)).find("unit \"[ns]\"") != std::string::npos);
  Bytes cut = table_npy();
  cut.resize(20);
  CHECK(err(cut).find("the .npy header claims") != std::string::npos);
}

TEST_CASE("npz: stored and deflated entries; damaged archives") {
  for (int method : {0, 8}) {
    const fs::path p = tmp("ok" + std::to_string(method) + ".npz");
    write(p, zip_one("price_data.npy", table_npy(), method));
    const Series s = read_npz_prices(p.string(), "close");
    REQUIRE(s.close.size() == 2);
    CHECK(format_time(s.t[0]) == "2004-08-19");
    CHECK(s.close[0] == doctest::Approx(100.34));
    CHECK(error_of([&] { read_npz_prices(p.string(), "open"); }).find("no numeric field \"open\"") != std::string::npos);
  }
  const Bytes good = zip_one("price_data.npy", table_npy(), 8);
  Bytes bad_crc = good;
  bad_crc[14] ^= 0x01;
  write(tmp("crc.npz"), bad_crc);
  CHECK(error_of([&] { read_npz(tmp("crc.npz").string()); }).find("crc.npz:price_data.npy: CRC-32 mismatch") != std::string::npos);
  Bytes cut(good.begin(), good.begin() + 50);
  write(tmp("cut.npz"), cut);
  CHECK(error_of([&] { read_npz(tmp("cut.npz").string()); }).find("the file ends inside this entry") != std::string::npos);
  Bytes method = zip_one("price_data.npy", table_npy(), 0);
  method[8] = 12;  // bzip2
  write(tmp("m.npz"), method);
  CHECK(error_of([&] { read_npz(tmp("m.npz").string()); }).find("compression method 12") != std::string::npos);
  write(tmp("text.npz"), std::string("date,close\n"));
  CHECK(error_of([&] { read_npz(tmp("text.npz").string()); }).find("text.npz: not a .npz file") != std::string::npos);
  // Dates out of order in the table.
  Bytes data;
  put<int64_t>(data, 12650), put<double>(data, 1.0), put<int64_t>(data, 12650), put<double>(data, 2.0);
  write(tmp("order.npz"), zip_one("p.npy", npy("{'descr': [('date', '<M8[D]'), ('close', '<f8')], 'fortran_order': False, 'shape': (2,), }", data), 0));
  CHECK(error_of([&] { read_npz_prices(tmp("order.npz").string(), "close"); }).find("record 1: date 2004-08-20 is not after") != std::string::npos);
}

TEST_CASE("npz: matplotlib's goog.npz") {
  if (!fs::exists(kGoog)) {
    MESSAGE("skipped: ", kGoog, " not fetched");
    return;
  }
  std::string described;
  const Series s = read_npz_prices(kGoog, "close", &described);
  CHECK(described ==
        "price_data.npy: shape (1047,), fields date <M8[D], open <f8, high <f8, low <f8, close <f8, volume <i8, adj_close <f8");
  REQUIRE(s.close.size() == 1047);
  CHECK(format_time(s.t.front()) == "2004-08-19");
  CHECK(format_time(s.t.back()) == "2008-10-14");
  CHECK(s.close.front() == doctest::Approx(100.34));
  CHECK(s.close.back() == doctest::Approx(362.71));
}

TEST_CASE("csv: missing values, gaps, skipped rows") {
  const fs::path p = tmp("multi.csv");
  write(p,
        "# a comment\n"
        "Date,A,B\n"
        "2000-01-01,1,\n"
        "2000-02-01,2,\n"
        "2000-02-05,,\n"          // no values: skipped
        "2000-03-01,,5\n"         // A has a gap from here
        "2000-04-01,4,6\r\n"      // CRLF
        "2000-04-20,4,6\n"        // repeats the previous row: skipped
        "\n"
        "2000-05-01,5,7\n");
  CsvSummary sum;
  const std::vector<Series> s = read_price_csv(p.string(), {}, true, &sum);
  REQUIRE(s.size() == 3);
  CHECK(s[0].name == "A");
  CHECK(s[0].close == std::vector<double>{1, 2});
  CHECK(s[1].name == "A#2");
  CHECK(s[1].close == std::vector<double>{4, 5});
  CHECK(s[2].name == "B");
  CHECK(s[2].close == std::vector<double>{5, 6, 7});
  CHECK(sum.rows == 7);
  CHECK(sum.empty_rows == 1);
  CHECK(sum.repeated_rows == 1);
  const std::vector<Series> b = read_price_csv(p.string(), {"b"}, true);
  REQUIRE(b.size() == 1);
  CHECK(b[0].name == "B");
}

TEST_CASE("csv: the plain format's errors name file and line") {
  const auto err = [](const std::string& name, const std::string& text, const std::string& col = "close") {
    write(tmp(name), text);
    return error_of([&] { read_price_csv(tmp(name).string(), {col}, false); });
  };
  CHECK(err("a.csv", "date,close\n2020-01-01,1\n2020-01-02,x\n").find("a.csv:3: column \"close\": \"x\" is not a number") != std::string::npos);
  CHECK(err("b.csv", "date,close\n2020-01-02,1\n2020-01-01,2\n").find("b.csv:3: date 2020-01-01 is not after the previous row's 2020-01-02") != std::string::npos);
  CHECK(err("c.csv", "date,price\n2020-01-01,1\n").find("c.csv:1: no column \"close\"") != std::string::npos);
  CHECK(err("d.csv", "day,close\n2020-01-01,1\n").find("d.csv:1: no \"date\" column") != std::string::npos);
  CHECK(err("e.csv", "date,close\n2020-01-01,1,2\n").find("e.csv:2: 3 cells, the header has 2") != std::string::npos);
  CHECK(err("f.csv", "date,close\n2020-01-01,\n").find("f.csv:2: column \"close\" is empty") != std::string::npos);
  CHECK(err("g.csv", "date,close\n2020-01-01,-3\n").find("g.csv:2: column \"close\": price -3 is not > 0") != std::string::npos);
  CHECK(err("h.csv", "date,close\n01/02/2020,3\n").find("h.csv:2: \"01/02/2020\" is not a date") != std::string::npos);
  CHECK(err("i.csv", "date,close\n2020-01-01,inf\n").find("i.csv:2: column \"close\": \"inf\" is not a number") != std::string::npos);
  CHECK(err("j.csv", "").find("j.csv: no header row") != std::string::npos);
  CHECK(err("k.csv", "date,close\n").find("k.csv: no data rows") != std::string::npos);
  CHECK(err("l.csv", "date,close,open\n2020-01-01,1,2\n", "open").empty());
  CHECK(error_of([] { read_price_csv("/nonexistent/p.csv", {}, false); }).find("cannot open /nonexistent/p.csv") != std::string::npos);
  fs::remove_all(tmp("x").parent_path());
}
