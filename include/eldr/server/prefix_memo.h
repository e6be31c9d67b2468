// -----------------------------------------------------------------------------
// File: server/prefix_memo.h
// -----------------------------------------------------------------------------
// PrefixMemo: predicted expert counts for flows that must choose the decode worker before
// prefill (SGLang bootstrap). The router has no tokenizer there, so prompts are
// keyed by the hashes of their text prefixes at a few fixed lengths (64, 256, 1024, 4096 bytes
// by default); a prompt's prediction is the counts last observed for the longest prefix it shares
// with an earlier prompt. Nothing known -> no prediction (the policy balances load).
//
// Entries are LRU-evicted under a byte budget. Thread-safety: all methods are thread-safe.
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "eldr/expert_counts.h"

namespace eldr::server {

class PrefixMemo {
 public:
  explicit PrefixMemo(size_t budget_bytes, std::vector<size_t> lengths = {64, 256, 1024, 4096});
  // Remembers `counts` for every prefix length the text reaches (and the whole text).
  void Observe(std::string_view text, const ExpertCounts& counts);
  // Counts of the longest remembered prefix of `text`, if any.
  std::optional<ExpertCounts> Predict(std::string_view text) const;
  size_t bytes() const;
  size_t entries() const;

 private:
  std::vector<uint64_t> Keys(std::string_view text) const;  // longest first
  size_t budget_;
  std::vector<size_t> lengths_;
  mutable std::mutex mu_;
  using Lru = std::list<std::pair<uint64_t, ExpertCounts>>;
  mutable Lru lru_;
  std::unordered_map<uint64_t, Lru::iterator> index_;
  size_t bytes_ = 0;
};

}  // namespace eldr::server
