#include "eldr/signature_cache.h"

#include <bit>

#include "eldr/mutex.h"

namespace eldr {

namespace {
// Per-entry bookkeeping beyond the counts: list node, hash-map node and bucket, Entry fields.
constexpr size_t kEntryOverhead = 112;
constexpr uint8_t kSpill = 255;
}  // namespace

Status SignatureCacheOptions::Validate() const {
  if (block_size <= 0) return InvalidArgument("cache: block_size must be positive").error();
  if (chunk_blocks <= 0) return InvalidArgument("cache: chunk_blocks must be positive").error();
  if (shards < 1 || shards > 256 || (shards & (shards - 1)) != 0) {
    return InvalidArgument("cache: shards must be a power of two in [1, 256]").error();
  }
  return Status::Ok();
}

struct SignatureCache::Entry {
  uint64_t key;
  int64_t tokens;
  size_t charge;
  std::unique_ptr<uint8_t[]> counts;                 // L*E, kSpill marks a spilled entry
  std::vector<std::pair<uint32_t, uint32_t>> spill;  // (index, count) for counts >= kSpill
};

struct SignatureCache::Shard {
  Mutex mu;
  std::list<Entry> lru ELDR_GUARDED_BY(mu);  // front = most recent
  std::unordered_map<uint64_t, std::list<Entry>::iterator> index ELDR_GUARDED_BY(mu);
  size_t bytes ELDR_GUARDED_BY(mu) = 0;
  size_t budget ELDR_GUARDED_BY(mu) = 0;  // set once, by the cache's constructor
  uint64_t tokens ELDR_GUARDED_BY(mu) = 0;
};

SignatureCache::SignatureCache(int layers, int experts, SignatureCacheOptions options)
    : layers_(layers), experts_(experts), options_(options) {
  shards_ = std::make_unique<Shard[]>(options_.shards);
  for (int i = 0; i < options_.shards; ++i) {
    shards_[i].budget = options_.memory_budget_bytes / options_.shards;
  }
  shard_shift_ = 64 - std::countr_zero(static_cast<unsigned>(options_.shards));
}

SignatureCache::~SignatureCache() = default;

Result<std::unique_ptr<SignatureCache>> SignatureCache::Create(int layers, int experts,
                                                               SignatureCacheOptions options) {
  if (Status s = options.Validate(); !s.ok()) return tl::unexpected<Status>(s);
  if (layers <= 0 || experts <= 0 || experts > 65535) {
    return InvalidArgument("cache: bad count shape {}x{}", layers, experts);
  }
  return std::make_unique<SignatureCache>(layers, experts, options);
}

size_t SignatureCache::ChunkBytes() const {
  return static_cast<size_t>(layers_) * experts_ + kEntryOverhead;
}

SignatureCache::Shard& SignatureCache::ShardFor(uint64_t key) const {
  return shards_[options_.shards == 1 ? 0 : (key >> shard_shift_)];
}

bool SignatureCache::Get(uint64_t key, ExpertCounts* add_to) const {
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  auto it = s.index.find(key);
  if (it == s.index.end()) return false;
  s.lru.splice(s.lru.begin(), s.lru, it->second);
  const Entry& e = *it->second;
  auto out = add_to->mutable_data();
  const size_t n = out.size();
  for (size_t i = 0; i < n; ++i) out[i] += e.counts[i] == kSpill ? 0 : e.counts[i];
  for (auto [idx, v] : e.spill) out[idx] += v;
  return true;
}

void SignatureCache::Put(uint64_t key, const ExpertCounts& c, int64_t tokens) {
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  if (auto it = s.index.find(key); it != s.index.end()) {
    s.lru.splice(s.lru.begin(), s.lru, it->second);
    return;
  }
  Entry e;
  e.key = key;
  e.tokens = tokens;
  const auto data = c.data();
  e.counts = std::make_unique<uint8_t[]>(data.size());
  for (size_t i = 0; i < data.size(); ++i) {
    if (data[i] >= kSpill) {
      e.counts[i] = kSpill;
      e.spill.emplace_back(static_cast<uint32_t>(i), data[i]);
    } else {
      e.counts[i] = static_cast<uint8_t>(data[i]);
    }
  }
  e.charge = data.size() + kEntryOverhead + e.spill.size() * sizeof(e.spill[0]);
  if (e.charge > s.budget) return;  // would never fit; caching nothing is always correct
  while (s.bytes + e.charge > s.budget && !s.lru.empty()) {
    Entry& victim = s.lru.back();
    s.bytes -= victim.charge;
    s.tokens -= victim.tokens;
    s.index.erase(victim.key);
    s.lru.pop_back();
    evicted_.fetch_add(1, std::memory_order_relaxed);
  }
  s.bytes += e.charge;
  s.tokens += tokens;
  s.lru.push_front(std::move(e));
  s.index.emplace(key, s.lru.begin());
  inserted_.fetch_add(1, std::memory_order_relaxed);
}

SignatureCache::Prefix SignatureCache::Lookup(std::span<const uint64_t> hashes) const {
  Prefix p;
  p.counts = ExpertCounts(layers_, experts_);
  lookups_.fetch_add(1, std::memory_order_relaxed);
  const size_t cb = options_.chunk_blocks;
  for (size_t end = cb; end <= hashes.size(); end += cb) {
    if (!Get(hashes[end - 1], &p.counts)) break;
    ++p.chunks;
    p.tokens += chunk_tokens();
  }
  hit_chunks_.fetch_add(p.chunks, std::memory_order_relaxed);
  hit_tokens_.fetch_add(p.tokens, std::memory_order_relaxed);
  return p;
}

Status SignatureCache::Insert(std::span<const uint64_t> hashes, const PickTable& picks,
                              int64_t first_token) {
  if (picks.layers() != layers_ || picks.experts() != experts_) {
    return InvalidArgument("cache holds {}x{} counts, picks are {}x{}", layers_, experts_,
                           picks.layers(), picks.experts())
        .error();
  }
  if (first_token < 0) return InvalidArgument("negative first token").error();
  const int64_t ct = chunk_tokens();
  const int64_t last = first_token + picks.tokens();
  ExpertCounts chunk(layers_, experts_);
  for (size_t c = 0;
       (static_cast<int64_t>(c) + 1) * options_.chunk_blocks <= static_cast<int64_t>(hashes.size());
       ++c) {
    const int64_t begin = static_cast<int64_t>(c) * ct, end = begin + ct;
    if (begin < first_token) continue;
    if (end > last) break;
    chunk.Clear();
    if (Status s = picks.AccumulateRows(begin - first_token, end - first_token, &chunk); !s.ok()) {
      return s;
    }
    Put(hashes[(c + 1) * options_.chunk_blocks - 1], chunk, ct);
  }
  return Status::Ok();
}

Result<ExpertCounts> SignatureCache::Resolve(std::span<const uint64_t> hashes,
                                             int64_t prompt_tokens, const PickTable& picks,
                                             int64_t first_token) {
  if (picks.layers() != layers_ || picks.experts() != experts_) {
    return InvalidArgument("cache holds {}x{} counts, picks are {}x{}", layers_, experts_,
                           picks.layers(), picks.experts());
  }
  if (first_token + picks.tokens() < prompt_tokens) {
    return FailedPrecondition("picks cover tokens [{}, {}) but the prompt has {} tokens",
                              first_token, first_token + picks.tokens(), prompt_tokens);
  }
  Prefix p = Lookup(hashes);
  if (first_token > p.tokens) {
    return FailedPrecondition(
        "picks start at token {} but only {} prompt tokens are cached: counts for the tokens in "
        "between are unknown",
        first_token, p.tokens);
  }
  ExpertCounts out;
  if (p.tokens == first_token && first_token + picks.tokens() == prompt_tokens) {
    // Nothing cached beyond what the engine omitted and no extra rows: the table's own counts
    // (computed while it was validated) are the answer; no second pass over the picks.
    out = picks.Counts();
    if (Status s = out.Add(p.counts); !s.ok()) return tl::unexpected<Status>(s);
  } else {
    out = std::move(p.counts);
    if (Status s = picks.AccumulateRows(p.tokens - first_token, prompt_tokens - first_token, &out);
        !s.ok()) {
      return tl::unexpected<Status>(s);
    }
  }
  if (Status s = Insert(hashes, picks, first_token); !s.ok()) return tl::unexpected<Status>(s);
  return out;
}

SignatureCacheStats SignatureCache::Stats() const {
  SignatureCacheStats st;
  st.lookups = lookups_.load();
  st.hit_chunks = hit_chunks_.load();
  st.hit_tokens = hit_tokens_.load();
  st.inserted_chunks = inserted_.load();
  st.evicted_chunks = evicted_.load();
  for (int i = 0; i < options_.shards; ++i) {
    Shard& s = shards_[i];
    MutexLock lock(&s.mu);
    st.entries += s.lru.size();
    st.bytes += s.bytes;
    st.cached_tokens += s.tokens;
  }
  return st;
}

}  // namespace eldr
