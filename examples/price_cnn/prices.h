// Price series for price_cnn: readers for the CSV and .npz files it trains on, and the dates
// they carry. Every reader rejects damaged input with an ember::Error naming the file, the
// line (or record) and the problem.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace price_cnn {

// One instrument's closes in time order; t is seconds since 1970-01-01 (dates at 00:00).
struct Series {
  std::string name;
  std::vector<int64_t> t;
  std::vector<double> close;  // > 0
};

// "YYYY-MM-DD" or "YYYY-MM-DD HH:MM[:SS]" (also with 'T') -> seconds since 1970-01-01 (UTC);
// false when the text is not such a date (or not a real calendar day).
bool parse_time(const std::string& text, int64_t* seconds);
// "2004-08-19" (and " 15:30:00" when not midnight).
std::string format_time(int64_t seconds);

// What a CSV read kept and skipped.
struct CsvSummary {
  int64_t rows = 0;          // data rows (after the header, comments and blank lines)
  int64_t empty_rows = 0;    // rows whose every value cell was empty (skipped)
  int64_t repeated_rows = 0; // rows repeating the previous row's every value (skipped)
  std::vector<std::string> columns;  // value columns read
};

// A comma-separated file with a header row; lines starting with '#' and blank lines are
// ignored. One column is the date (named "date", any case), in strictly increasing order.
//   columns empty: every other column is a series (Stocks.csv); else exactly those columns
//   (names compared without case).
//   allow_missing: an empty cell is a missing value; a series runs from its first to its last
//   value and a gap inside it splits it into parts named NAME, NAME#2, ... Rows with every
//   cell empty are skipped, and so is a row that repeats the previous row's every value (a
//   copy under a new date). Without allow_missing an empty cell is an error.
// Errors name FILE:LINE: a missing date or value column, a row with another number of cells,
// a bad date, a date not after the previous row's, a value that is not a number or not > 0.
std::vector<Series> read_price_csv(const std::string& path, const std::vector<std::string>& columns,
                                   bool allow_missing, CsvSummary* summary = nullptr);

// The daily table in matplotlib's goog.npz (a structured array with date, open, high, low,
// close, volume, adj_close): field `column` against field "date". Prints nothing; `described`
// receives the array's shape and fields.
Series read_npz_prices(const std::string& path, const std::string& column, std::string* described = nullptr);

}  // namespace price_cnn
