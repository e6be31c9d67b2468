#include "eldr/server/prompt_signal.h"

#include "eldr/block_hash.h"

namespace eldr::server {

PromptSignal::PromptSignal(std::unique_ptr<SignatureCache> cache, size_t memo_budget_bytes)
    : cache_(std::move(cache)), memo_(memo_budget_bytes) {}

PromptSignal::Prompt PromptSignal::Begin(const ClientRequest& req) const {
  Prompt p;
  // Token-id prompts have no text: their ids are the key, or every such prompt would share the
  // empty text's prefill worker and memo entry.
  if (!req.prompt_text.empty() || req.prompt_tokens.empty()) {
    p.key = req.prompt_text;
  } else {
    p.key = std::string_view(reinterpret_cast<const char*>(req.prompt_tokens.data()),
                             req.prompt_tokens.size() * sizeof(int32_t));
    p.hashes = ChainedBlockHashes(req.prompt_tokens, cache_->options().block_size);
    p.tokens = static_cast<int64_t>(req.prompt_tokens.size());
  }
  return p;
}

int64_t PromptSignal::KnownTokens(const Prompt& p) const {
  if (p.hashes.empty()) return 0;
  const int64_t known = cache_->Lookup(p.hashes).tokens;
  return known >= p.tokens ? 0 : known;
}

std::optional<ExpertCounts> PromptSignal::Predict(const Prompt& p) const {
  if (!p.hashes.empty()) {
    SignatureCache::Prefix known = cache_->Lookup(p.hashes);
    if (known.tokens > 0) return std::move(known.counts);
  }
  return memo_.Predict(p.key);
}

PromptSignal::Signal PromptSignal::FromPrefill(const Prompt& p, const PrefillResult& pr) {
  Signal s;
  if (pr.counts) {
    s.counts = *pr.counts;
    return s;
  }
  if (!pr.picks) return s;
  if (!pr.partial) {
    // The engine's ids when it returned them (they are what its blocks hold), else the client's.
    std::vector<uint64_t> own;
    const std::vector<uint64_t>* hashes = &p.hashes;
    int64_t tokens = p.tokens;
    if (!pr.prompt_token_ids.empty() &&
        static_cast<int64_t>(pr.prompt_token_ids.size()) != p.tokens) {
      own = ChainedBlockHashes(pr.prompt_token_ids, cache_->options().block_size);
      hashes = &own;
      tokens = static_cast<int64_t>(pr.prompt_token_ids.size());
    }
    if (!hashes->empty()) {
      if (auto r = cache_->Resolve(*hashes, tokens, *pr.picks, pr.picks_first_token)) {
        s.counts = std::move(*r);
        return s;
      }
    }
  }
  s.counts = pr.picks->Counts();
  s.partial = pr.partial || pr.picks_first_token > 0;
  return s;
}

void PromptSignal::Learn(const Prompt& p, const PrefillResult& pr) {
  if (pr.counts) memo_.Observe(p.key, *pr.counts);
  if (!pr.picks || pr.partial) return;
  if (pr.picks_first_token == 0) memo_.Observe(p.key, pr.picks->Counts());
  if (!p.hashes.empty()) (void)cache_->Insert(p.hashes, *pr.picks, pr.picks_first_token);
}

}  // namespace eldr::server
