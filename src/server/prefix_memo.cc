#include "eldr/server/prefix_memo.h"

#include <xxhash.h>

namespace eldr::server {

namespace {
// Accounted bytes of one entry: the counts plus list and index overhead.
size_t EntryBytes(const ExpertCounts& c) { return c.data().size() * sizeof(uint32_t) + 64; }
}  // namespace

PrefixMemo::PrefixMemo(size_t budget_bytes, std::vector<size_t> lengths)
    : budget_(budget_bytes), lengths_(std::move(lengths)) {}

std::vector<uint64_t> PrefixMemo::Keys(std::string_view text) const {
  std::vector<uint64_t> keys;
  // The whole text first (an exact repeat), then the fixed prefixes from longest to shortest.
  keys.push_back(XXH3_64bits_withSeed(text.data(), text.size(), 1));
  for (auto it = lengths_.rbegin(); it != lengths_.rend(); ++it) {
    if (text.size() >= *it) keys.push_back(XXH3_64bits_withSeed(text.data(), *it, 2));
  }
  return keys;
}

void PrefixMemo::Observe(std::string_view text, const ExpertCounts& counts) {
  const size_t cost = EntryBytes(counts);
  if (cost > budget_) return;
  MutexLock lock(&mu_);
  for (uint64_t k : Keys(text)) {
    if (auto it = index_.find(k); it != index_.end()) {
      it->second->second = counts;
      lru_.splice(lru_.begin(), lru_, it->second);
      continue;
    }
    lru_.emplace_front(k, counts);
    index_[k] = lru_.begin();
    bytes_ += cost;
    while (bytes_ > budget_ && !lru_.empty()) {
      index_.erase(lru_.back().first);
      bytes_ -= EntryBytes(lru_.back().second);
      lru_.pop_back();
    }
  }
}

std::optional<ExpertCounts> PrefixMemo::Predict(std::string_view text) const {
  const auto keys = Keys(text);
  MutexLock lock(&mu_);
  for (uint64_t k : keys) {
    if (auto it = index_.find(k); it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->second;
    }
  }
  return std::nullopt;
}

size_t PrefixMemo::bytes() const {
  MutexLock lock(&mu_);
  return bytes_;
}

size_t PrefixMemo::entries() const {
  MutexLock lock(&mu_);
  return index_.size();
}

}  // namespace eldr::server
