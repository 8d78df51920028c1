// The example's tokenisers: bytes (ids 0..255) and a simple byte-pair encoding learned from the
// training text. Header-only, no ember dependency.
//
// BPE here: the text is first cut into pieces (an optional leading space plus a run of letters,
// a run of digits, or any other single byte), so merges never cross a word boundary; then, N
// times, the most frequent adjacent pair of tokens inside pieces (counted over the piece
// frequency table; ties to the smaller pair) becomes a new token 256 + i. Encoding applies the
// learned merges to each piece, lowest rank first, as training did. Decoding concatenates each
// token's bytes. The merges are a list of (left, right) id pairs, saved as text in checkpoints.
#pragma once
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace gpt {

class Tokenizer {
 public:
  // Bytes only.
  Tokenizer() { reset({}); }
  // Bytes plus `merges` in order (token 256 + i = merges[i]); throws std::invalid_argument when
  // a merge names a token not yet defined.
  explicit Tokenizer(const std::vector<std::pair<int32_t, int32_t>>& merges) { reset(merges); }

  // Learns up to `n` merges from `text` (fewer when no pair occurs twice).
  static Tokenizer train(const std::string& text, int64_t n) {
    std::unordered_map<std::string, int64_t> freq;
    for_each_piece(text, [&](size_t b, size_t e) { ++freq[text.substr(b, e - b)]; });
    std::vector<std::vector<int32_t>> words;
    std::vector<int64_t> counts;
    words.reserve(freq.size());
    for (const auto& [w, c] : freq) {
      if (w.size() < 2) continue;  // nothing to merge inside
      words.emplace_back(w.begin(), w.end());
      for (int32_t& t : words.back()) t = static_cast<unsigned char>(t);
      counts.push_back(c);
    }
    std::vector<std::pair<int32_t, int32_t>> merges;
    std::vector<int64_t> pair_count;
    for (int64_t m = 0; m < n; ++m) {
      const int64_t cur = 256 + m;
      pair_count.assign(static_cast<size_t>(cur * cur), 0);
      for (size_t w = 0; w < words.size(); ++w)
        for (size_t i = 0; i + 1 < words[w].size(); ++i)
          pair_count[static_cast<size_t>(words[w][i] * cur + words[w][i + 1])] += counts[w];
      const auto best = std::max_element(pair_count.begin(), pair_count.end());  // first max: smallest pair
      if (*best < 2) break;
      const auto k = static_cast<int64_t>(best - pair_count.begin());
      const int32_t a = static_cast<int32_t>(k / cur), b = static_cast<int32_t>(k % cur);
      merges.emplace_back(a, b);
      for (auto& word : words) merge_in(word, a, b, static_cast<int32_t>(cur));
    }
    return Tokenizer(merges);
  }

  int64_t vocab_size() const { return static_cast<int64_t>(bytes_.size()); }
  const std::vector<std::pair<int32_t, int32_t>>& merges() const { return merges_; }
  const std::string& bytes_of(int64_t id) const { return bytes_.at(static_cast<size_t>(id)); }

  std::vector<int32_t> encode(const std::string& text) const {
    std::vector<int32_t> out;
    out.reserve(text.size());
    std::unordered_map<std::string, std::vector<int32_t>> cache;
    for_each_piece(text, [&](size_t b, size_t e) {
      if (merges_.empty() || e - b == 1) {
        for (size_t i = b; i < e; ++i) out.push_back(static_cast<unsigned char>(text[i]));
        return;
      }
      std::string piece = text.substr(b, e - b);
      auto it = cache.find(piece);
      if (it == cache.end()) it = cache.emplace(piece, encode_piece(piece)).first;
      out.insert(out.end(), it->second.begin(), it->second.end());
    });
    return out;
  }

  std::string decode(const std::vector<int32_t>& ids) const {
    std::string s;
    for (int32_t id : ids) s += bytes_of(id);
    return s;
  }

  // "a,b;a,b;..." and back (checkpoint text).
  std::string merges_text() const {
    std::string s;
    for (const auto& [a, b] : merges_) {
      if (!s.empty()) s.push_back(';');
      s.append(std::to_string(a)).push_back(',');
      s.append(std::to_string(b));
    }
    return s;
  }
  static Tokenizer from_merges_text(const std::string& s) {
    std::vector<std::pair<int32_t, int32_t>> merges;
    size_t pos = 0;
    while (pos < s.size()) {
      const size_t end = std::min(s.find(';', pos), s.size());
      const std::string item = s.substr(pos, end - pos);
      const size_t comma = item.find(',');
      if (comma == std::string::npos) throw std::invalid_argument("bad merge \"" + item.substr(0, 20) + "\"");
      size_t used_a = 0, used_b = 0;
      int a = -1, b = -1;
      try {
        a = std::stoi(item.substr(0, comma), &used_a);
        b = std::stoi(item.substr(comma + 1), &used_b);
      } catch (const std::exception&) {
        throw std::invalid_argument("bad merge \"" + item.substr(0, 20) + "\"");
      }
      if (used_a != comma || used_b != item.size() - comma - 1)
        throw std::invalid_argument("bad merge \"" + item.substr(0, 20) + "\"");
      merges.emplace_back(a, b);
      pos = end + 1;
    }
    return Tokenizer(merges);
  }

 private:
  void reset(const std::vector<std::pair<int32_t, int32_t>>& merges) {
    merges_ = merges;
    bytes_.clear();
    rank_.clear();
    for (int b = 0; b < 256; ++b) bytes_.emplace_back(1, static_cast<char>(b));
    for (size_t i = 0; i < merges.size(); ++i) {
      const auto [a, b] = merges[i];
      const auto n = static_cast<int32_t>(bytes_.size());
      if (a < 0 || b < 0 || a >= n || b >= n)
        throw std::invalid_argument("merge " + std::to_string(i) + " (" + std::to_string(a) + ", " + std::to_string(b) +
                                    ") names a token not defined before it");
      bytes_.push_back(bytes_[static_cast<size_t>(a)] + bytes_[static_cast<size_t>(b)]);
      rank_[key(a, b)] = static_cast<int32_t>(i);
    }
  }

  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  static void merge_in(std::vector<int32_t>& w, int32_t a, int32_t b, int32_t to) {
    size_t o = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      if (i + 1 < w.size() && w[i] == a && w[i + 1] == b) {
        w[o++] = to;
        ++i;
      } else {
        w[o++] = w[i];
      }
    }
    w.resize(o);
  }

  // Lowest-rank pair first, all its occurrences at once: the order training merged in.
  std::vector<int32_t> encode_piece(const std::string& piece) const {
    std::vector<int32_t> w(piece.begin(), piece.end());
    for (int32_t& t : w) t = static_cast<unsigned char>(t);
    for (;;) {
      int32_t best = -1;
      for (size_t i = 0; i + 1 < w.size(); ++i) {
        const auto it = rank_.find(key(w[i], w[i + 1]));
        if (it != rank_.end() && (best < 0 || it->second < best)) best = it->second;
      }
      if (best < 0) return w;
      merge_in(w, merges_[static_cast<size_t>(best)].first, merges_[static_cast<size_t>(best)].second, 256 + best);
    }
  }

  // Calls f(begin, end) for each piece of `text` in order (see the top of the file).
  template <class F>
  static void for_each_piece(const std::string& text, F f) {
    auto letter = [](unsigned char c) { return std::isalpha(c) || c >= 0x80; };
    auto digit = [](unsigned char c) { return std::isdigit(c) != 0; };
    size_t i = 0;
    const size_t n = text.size();
    while (i < n) {
      size_t j = i;
      if (text[j] == ' ' && j + 1 < n && (letter(text[j + 1]) || digit(text[j + 1]))) ++j;
      const auto c = static_cast<unsigned char>(text[j]);
      if (letter(c)) {
        while (j < n && letter(static_cast<unsigned char>(text[j]))) ++j;
      } else if (digit(c)) {
        while (j < n && digit(static_cast<unsigned char>(text[j]))) ++j;
      } else {
        ++j;
      }
      f(i, j);
      i = j;
    }
  }

  std::vector<std::pair<int32_t, int32_t>> merges_;
  std::vector<std::string> bytes_;
  std::unordered_map<uint64_t, int32_t> rank_;
};

}  // namespace gpt
