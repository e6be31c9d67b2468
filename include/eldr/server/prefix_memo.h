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
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "eldr/expert_counts.h"
#include "eldr/mutex.h"

namespace eldr::server {

class PrefixMemo {
 public:
  explicit PrefixMemo(size_t budget_bytes, std::vector<size_t> lengths = {64, 256, 1024, 4096});
  // Remembers `counts` for every prefix length the text reaches (and the whole text).
  void Observe(std::string_view text, const ExpertCounts& counts) ELDR_EXCLUDES(mu_);
  // Counts of the longest remembered prefix of `text`, if any.
  std::optional<ExpertCounts> Predict(std::string_view text) const ELDR_EXCLUDES(mu_);
  size_t bytes() const ELDR_EXCLUDES(mu_);
  size_t entries() const ELDR_EXCLUDES(mu_);

 private:
  std::vector<uint64_t> Keys(std::string_view text) const;  // longest first
  size_t budget_;
  std::vector<size_t> lengths_;
  mutable Mutex mu_;
  using Lru = std::list<std::pair<uint64_t, ExpertCounts>>;
  mutable Lru lru_ ELDR_GUARDED_BY(mu_);  // most recent first; Predict() reorders it
  std::unordered_map<uint64_t, Lru::iterator> index_ ELDR_GUARDED_BY(mu_);
  size_t bytes_ ELDR_GUARDED_BY(mu_) = 0;
};

}  // namespace eldr::server
