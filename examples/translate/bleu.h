// Corpus BLEU as sacrebleu computes it by default (BLEU-4, one reference, "exp" smoothing, the
// "13a" tokeniser, case-sensitive), written here from the definitions:
//
// tokenize_13a (mteval-v13a's tokeniser, as sacrebleu's tokenizer_13a applies it):
//   1. drop "<skipped>", join "-\n" line breaks, newlines become spaces, and the entities
//      &quot; &amp; &lt; &gt; become " & < >;
//   2. put spaces around every ASCII punctuation or symbol character except the apostrophe,
//      '-' , '.' and ',' (that is { | } ~ [ \ ] ^ _ ` ! " # $ % & ( ) * + : ; < = > ? @ /);
//   3. split '.' and ',' off unless they sit between digits: a '.' or ',' after a non-digit
//      gets a space before and after, then one before a non-digit gets a space before it
//      (two left-to-right passes, non-overlapping matches, exactly like re.sub);
//   4. split '-' off after a digit ("1990-2000" -> "1990 - 2000");
//   5. split on whitespace.
// Non-ASCII characters (’ “ ä) are never split off. Works on UTF-8 bytes: the rules only look
// at ASCII bytes, and a multi-byte character never contains one, so the result is the same as
// on code points. Whitespace is ASCII whitespace (Python's split() also splits on U+00A0 and
// other Unicode spaces; the Ding data has none).
//
// corpus_bleu: clipped n-gram matches (n = 1..4) and n-gram totals summed over the corpus,
// p_n = 100 * matches_n / total_n; where matches_n = 0, p_n = 100 / (2^k * total_n) for the
// k-th such order ("exp" smoothing, as sacrebleu); brevity penalty exp(1 - r/c) when the
// hypothesis length c is below the reference length r; BLEU = BP * exp(mean of log p_n), on
// sacrebleu's 0-100 scale. An order with total_n = 0 ends the product (its p_n counts as 0).
#pragma once
#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace bleu {

namespace detail {
inline bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
inline bool is_13a_punct(unsigned char c) {
  return (c >= 0x7B && c <= 0x7E) || (c >= 0x5B && c <= 0x60) || (c >= 0x20 && c <= 0x26) ||
         (c >= 0x28 && c <= 0x2B) || (c >= 0x3A && c <= 0x40) || c == '/';
}
inline void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
}
}  // namespace detail

inline std::vector<std::string> tokenize_13a(const std::string& text) {
  using detail::is_digit;
  std::string line = text;
  detail::replace_all(line, "<skipped>", "");
  detail::replace_all(line, "-\n", "");
  for (char& c : line)
    if (c == '\n') c = ' ';
  if (line.find('&') != std::string::npos) {
    detail::replace_all(line, "&quot;", "\"");
    detail::replace_all(line, "&amp;", "&");
    detail::replace_all(line, "&lt;", "<");
    detail::replace_all(line, "&gt;", ">");
  }
  line = " " + line + " ";
  // Rule 2: a space on each side of a punctuation character.
  std::string a;
  for (unsigned char c : line) {
    if (detail::is_13a_punct(c)) a += ' ', a += static_cast<char>(c), a += ' ';
    else a += static_cast<char>(c);
  }
  // Rule 3a: ([^0-9])([.,]) -> "\1 \2 ", non-overlapping, left to right.
  std::string b;
  for (size_t i = 0; i < a.size();) {
    const auto c = static_cast<unsigned char>(a[i]);
    if (i + 1 < a.size() && !is_digit(c) && (a[i + 1] == '.' || a[i + 1] == ',')) {
      b += a[i], b += ' ', b += a[i + 1], b += ' ';
      i += 2;
    } else {
      b += a[i++];
    }
  }
  // Rule 3b: ([.,])([^0-9]) -> " \1 \2".
  std::string d;
  for (size_t i = 0; i < b.size();) {
    if (i + 1 < b.size() && (b[i] == '.' || b[i] == ',') && !is_digit(static_cast<unsigned char>(b[i + 1]))) {
      d += ' ', d += b[i], d += ' ', d += b[i + 1];
      i += 2;
    } else {
      d += b[i++];
    }
  }
  // Rule 4: ([0-9])(-) -> "\1 \2 ".
  std::string e;
  for (size_t i = 0; i < d.size();) {
    if (i + 1 < d.size() && is_digit(static_cast<unsigned char>(d[i])) && d[i + 1] == '-') {
      e += d[i], e += ' ', e += '-', e += ' ';
      i += 2;
    } else {
      e += d[i++];
    }
  }
  std::vector<std::string> out;
  std::string cur;
  for (char c : e) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
      if (!cur.empty()) out.push_back(std::move(cur)), cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

// The sufficient statistics sacrebleu sums over a corpus, and the score they give.
struct Stats {
  std::array<int64_t, 4> matches{}, totals{};
  int64_t hyp_len = 0, ref_len = 0;

  void add(const std::vector<std::string>& hyp, const std::vector<std::string>& ref) {
    hyp_len += static_cast<int64_t>(hyp.size());
    ref_len += static_cast<int64_t>(ref.size());
    for (size_t n = 1; n <= 4; ++n) {
      std::map<std::vector<std::string>, int64_t> ref_counts;
      for (size_t i = 0; i + n <= ref.size(); ++i) ++ref_counts[{ref.begin() + i, ref.begin() + i + n}];
      std::map<std::vector<std::string>, int64_t> hyp_counts;
      for (size_t i = 0; i + n <= hyp.size(); ++i) ++hyp_counts[{hyp.begin() + i, hyp.begin() + i + n}];
      for (const auto& [g, c] : hyp_counts) {
        const auto it = ref_counts.find(g);
        if (it != ref_counts.end()) matches[n - 1] += std::min(c, it->second);
      }
      if (hyp.size() >= n) totals[n - 1] += static_cast<int64_t>(hyp.size() - n + 1);
    }
  }

  double brevity_penalty() const {
    if (hyp_len >= ref_len) return 1.0;
    if (hyp_len == 0) return 0.0;
    return std::exp(1.0 - static_cast<double>(ref_len) / static_cast<double>(hyp_len));
  }
  // The precisions p_1..p_4 in percent, smoothed as described above.
  std::array<double, 4> precisions() const {
    std::array<double, 4> p{};
    double smooth = 1.0;
    for (size_t n = 0; n < 4; ++n) {
      if (totals[n] == 0) break;
      if (matches[n] == 0) {
        smooth *= 2;
        p[n] = 100.0 / (smooth * static_cast<double>(totals[n]));
      } else {
        p[n] = 100.0 * static_cast<double>(matches[n]) / static_cast<double>(totals[n]);
      }
    }
    return p;
  }
  double score() const {
    if (hyp_len == 0) return 0.0;
    const std::array<double, 4> p = precisions();
    double logs = 0;
    for (double x : p) logs += x > 0 ? std::log(x) : -9999999999.0;
    return brevity_penalty() * std::exp(logs / 4.0);
  }
};

// Corpus BLEU (0-100) of detokenised hypothesis strings against one reference string each.
inline Stats corpus_stats(const std::vector<std::string>& hyps, const std::vector<std::string>& refs) {
  Stats s;
  for (size_t i = 0; i < hyps.size() && i < refs.size(); ++i) s.add(tokenize_13a(hyps[i]), tokenize_13a(refs[i]));
  return s;
}
inline double corpus_bleu(const std::vector<std::string>& hyps, const std::vector<std::string>& refs) {
  return corpus_stats(hyps, refs).score();
}

}  // namespace bleu
