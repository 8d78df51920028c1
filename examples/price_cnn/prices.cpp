// Readers for price_cnn's data (prices.h).
#include "prices.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>

#include "ember/core/error.h"
#include "npz.h"

namespace price_cnn {
namespace {

constexpr const char* kOp = "price_cnn";

int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

void civil_from_days(int64_t z, int64_t* y, int64_t* m, int64_t* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = yoe + era * 400 + (*m <= 2);
}

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::vector<std::string> split_cells(const std::string& line) {
  std::vector<std::string> cells;
  size_t start = 0;
  for (;;) {
    const size_t comma = line.find(',', start);
    cells.push_back(trim(line.substr(start, comma == std::string::npos ? std::string::npos : comma - start)));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return cells;
}

// A finite number filling the whole cell.
bool parse_number(const std::string& s, double* v) {
  if (s.empty()) return false;
  char* end = nullptr;
  *v = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && std::isfinite(*v);
}

// Fixed-width digits at s[pos, pos+n).
bool digits(const std::string& s, size_t pos, size_t n, int64_t* v) {
  if (pos + n > s.size()) return false;
  int64_t x = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    x = x * 10 + (s[i] - '0');
  }
  *v = x;
  return true;
}

}  // namespace

bool parse_time(const std::string& text, int64_t* seconds) {
  const std::string s = trim(text);
  int64_t y, m, d, hh = 0, mm = 0, ss = 0;
  if (!digits(s, 0, 4, &y) || s.size() < 10 || s[4] != '-' || !digits(s, 5, 2, &m) || s[7] != '-' ||
      !digits(s, 8, 2, &d))
    return false;
  if (m < 1 || m > 12 || d < 1) return false;
  static const int kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (d > kDays[m - 1] + (m == 2 && leap ? 1 : 0)) return false;
  if (s.size() > 10) {
    if ((s[10] != ' ' && s[10] != 'T') || !digits(s, 11, 2, &hh) || s.size() < 16 || s[13] != ':' ||
        !digits(s, 14, 2, &mm))
      return false;
    if (s.size() > 16 && (s.size() != 19 || s[16] != ':' || !digits(s, 17, 2, &ss))) return false;
    if (hh > 23 || mm > 59 || ss > 59) return false;
  }
  *seconds = days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss;
  return true;
}

std::string format_time(int64_t seconds) {
  const int64_t days = (seconds >= 0 ? seconds : seconds - 86399) / 86400;
  const int64_t rest = seconds - days * 86400;
  int64_t y, m, d;
  civil_from_days(days, &y, &m, &d);
  char buf[128];
  if (rest == 0)
    std::snprintf(buf, sizeof buf, "%04lld-%02lld-%02lld", static_cast<long long>(y), static_cast<long long>(m),
                  static_cast<long long>(d));
  else
    std::snprintf(buf, sizeof buf, "%04lld-%02lld-%02lld %02lld:%02lld:%02lld", static_cast<long long>(y),
                  static_cast<long long>(m), static_cast<long long>(d), static_cast<long long>(rest / 3600),
                  static_cast<long long>(rest / 60 % 60), static_cast<long long>(rest % 60));
  return buf;
}

std::vector<Series> read_price_csv(const std::string& path, const std::vector<std::string>& columns,
                                   bool allow_missing, CsvSummary* summary) {
  std::ifstream in(path);
  EMBER_CHECK(in.good(), kOp, "cannot open ", path);
  std::string line;
  size_t lineno = 0;
  std::vector<std::string> header;
  size_t header_line = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const std::string t = trim(line);
    if (t.empty() || t[0] == '#') continue;
    header = split_cells(line);
    header_line = lineno;
    break;
  }
  EMBER_CHECK(!header.empty(), kOp, path, ": no header row (expected e.g. \"date,close\")");
  std::optional<size_t> date_col;
  for (size_t c = 0; c < header.size(); ++c)
    if (lower(header[c]) == "date") date_col = c;
  EMBER_CHECK(date_col.has_value(), kOp, path, ":", header_line, ": no \"date\" column in the header \"", line, "\"");
  std::vector<size_t> cols;  // the value columns, in output order
  if (columns.empty()) {
    for (size_t c = 0; c < header.size(); ++c)
      if (c != *date_col) {
        EMBER_CHECK(!header[c].empty(), kOp, path, ":", header_line, ": column ", c + 1, " has no name");
        cols.push_back(c);
      }
    EMBER_CHECK(!cols.empty(), kOp, path, ":", header_line, ": no value columns besides the date");
  } else {
    for (const std::string& want : columns) {
      std::optional<size_t> found;
      for (size_t c = 0; c < header.size(); ++c)
        if (lower(header[c]) == lower(want)) found = c;
      EMBER_CHECK(found.has_value(), kOp, path, ":", header_line, ": no column \"", want, "\" in the header \"",
                  line, "\" (choose one with --column)");
      EMBER_CHECK(*found != *date_col, kOp, path, ":", header_line, ": \"", want, "\" is the date column");
      cols.push_back(*found);
    }
  }

  // Per column: the open part (values since the last gap) and the finished parts.
  struct Acc {
    std::vector<Series> parts;
    Series cur;
    bool gap = false;  // a missing value since the last one seen
  };
  std::vector<Acc> acc(cols.size());
  for (size_t k = 0; k < cols.size(); ++k) acc[k].cur.name = header[cols[k]];
  CsvSummary sum;
  for (size_t c : cols) sum.columns.push_back(header[c]);
  std::optional<int64_t> prev_t;
  std::string prev_date;
  std::vector<std::optional<double>> prev_vals;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const std::string t = trim(line);
    if (t.empty() || t[0] == '#') continue;
    const std::vector<std::string> cells = split_cells(line);
    EMBER_CHECK(cells.size() == header.size(), kOp, path, ":", lineno, ": ", cells.size(), " cells, the header has ",
                header.size());
    ++sum.rows;
    int64_t when = 0;
    EMBER_CHECK(parse_time(cells[*date_col], &when), kOp, path, ":", lineno, ": \"", cells[*date_col],
                "\" is not a date (expected YYYY-MM-DD, optionally with HH:MM[:SS])");
    EMBER_CHECK(!prev_t || when > *prev_t, kOp, path, ":", lineno, ": date ", cells[*date_col],
                " is not after the previous row's ", prev_date, " (rows must be in time order, one per date)");
    prev_t = when;
    prev_date = cells[*date_col];
    std::vector<std::optional<double>> vals(cols.size());
    bool any = false;
    for (size_t k = 0; k < cols.size(); ++k) {
      const std::string& cell = cells[cols[k]];
      if (cell.empty()) {
        EMBER_CHECK(allow_missing, kOp, path, ":", lineno, ": column \"", header[cols[k]], "\" is empty (this format has no missing values: drop the row or fill it in)");
        continue;
      }
      double v = 0;
      EMBER_CHECK(parse_number(cell, &v), kOp, path, ":", lineno, ": column \"", header[cols[k]], "\": \"", cell,
                  "\" is not a number");
      EMBER_CHECK(v > 0, kOp, path, ":", lineno, ": column \"", header[cols[k]], "\": price ", cell,
                  " is not > 0 (log returns need positive prices)");
      vals[k] = v;
      any = true;
    }
    if (!any) {
      ++sum.empty_rows;
      continue;
    }
    if (allow_missing && vals == prev_vals) {
      ++sum.repeated_rows;
      continue;
    }
    prev_vals = vals;
    for (size_t k = 0; k < cols.size(); ++k) {
      Acc& a = acc[k];
      if (!vals[k]) {
        if (!a.cur.t.empty() || !a.parts.empty()) a.gap = true;
        continue;
      }
      if (a.gap && !a.cur.t.empty()) {
        a.parts.push_back(std::move(a.cur));
        a.cur = Series{};
        a.cur.name = header[cols[k]] + "#" + std::to_string(a.parts.size() + 1);
      }
      a.gap = false;
      a.cur.t.push_back(when);
      a.cur.close.push_back(*vals[k]);
    }
  }
  EMBER_CHECK(sum.rows > 0, kOp, path, ": no data rows after the header");
  std::vector<Series> out;
  for (Acc& a : acc) {
    if (!a.cur.t.empty()) a.parts.push_back(std::move(a.cur));
    for (Series& s : a.parts) out.push_back(std::move(s));
  }
  if (summary != nullptr) *summary = sum;
  return out;
}

Series read_npz_prices(const std::string& path, const std::string& column, std::string* described) {
  const std::vector<NpzEntry> entries = read_npz(path);
  const NpzEntry* e = nullptr;
  for (const NpzEntry& x : entries)
    if (x.array.field("date") != nullptr) e = &x;
  if (e == nullptr) {
    std::string what;
    for (const NpzEntry& x : entries) what += (what.empty() ? "" : "; ") + x.name + ": " + x.array.describe();
    EMBER_FAIL(kOp, path, ": no array with a \"date\" field (found ", what, ")");
  }
  const NpyArray& a = e->array;
  if (described != nullptr) *described = e->name + ": " + a.describe();
  EMBER_CHECK(a.shape.size() == 1, kOp, a.source, ": expected a 1-D table of records, got ", a.describe());
  const std::vector<int64_t> t = a.times("date");
  const NpyField* f = a.field(column);
  EMBER_CHECK(f != nullptr && f->kind != 'M', kOp, a.source, ": no numeric field \"", column, "\" (", a.describe(),
              "); choose one with --column");
  const std::vector<double> v = a.column(column);
  Series s;
  s.name = column;
  for (size_t r = 0; r < t.size(); ++r) {
    EMBER_CHECK(r == 0 || t[r] > t[r - 1], kOp, a.source, ": record ", r, ": date ", format_time(t[r]),
                " is not after the previous record's ", format_time(t[r - 1]));
    EMBER_CHECK(std::isfinite(v[r]) && v[r] > 0, kOp, a.source, ": record ", r, " (", format_time(t[r]), "): ",
                column, " = ", v[r], " is not a positive number");
    s.t.push_back(t[r]);
    s.close.push_back(v[r]);
  }
  return s;
}

}  // namespace price_cnn
