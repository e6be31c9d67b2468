// PromptSignal: the one prompt key of both PD flows, and counts that are the same whether they
// come whole from the engine or from cached chunks plus the engine's remaining rows.
#include "eldr/server/prompt_signal.h"

#include <gtest/gtest.h>

#include "eldr/geometry.h"
#include "eldr/payload.h"
#include "eldr/rng.h"
#include "test_util.h"

namespace eldr::server {
namespace {

struct Fixture {
  ModelGeometry g = *FindModel("gpt-oss-20b");
  std::unique_ptr<PromptSignal> signal;
  Fixture() {
    SignatureCacheOptions o;
    o.block_size = 16;
    o.chunk_blocks = 1;
    signal = std::make_unique<PromptSignal>(
        std::move(*SignatureCache::Create(g.moe_layers, g.experts, o)), size_t{1} << 20);
  }
  ClientRequest TokenPrompt(int64_t n, int32_t base) const {
    ClientRequest r;
    for (int64_t i = 0; i < n; ++i) r.prompt_tokens.push_back(base + static_cast<int32_t>(i));
    return r;
  }
  PrefillResult Picks(std::span<const int32_t> picks, int64_t first) const {
    PrefillResult pr;
    pr.picks = *MakePickTable(picks, g);
    pr.picks_first_token = first;
    pr.source = SignatureSource::kVllm;
    return pr;
  }
};

TEST(PromptSignalTest, TokenIdPromptsAreKeyedByTheirIds) {
  Fixture f;
  const ClientRequest a = f.TokenPrompt(40, 1), b = f.TokenPrompt(40, 1000);
  ClientRequest text;
  text.prompt_text = "hello";
  const auto pa = f.signal->Begin(a), pb = f.signal->Begin(b), pt = f.signal->Begin(text);
  EXPECT_NE(pa.key, pb.key);  // the empty text used to key every token-id prompt alike
  EXPECT_FALSE(pa.key.empty());
  EXPECT_EQ(pa.tokens, 40);
  EXPECT_EQ(pa.hashes.size(), 2u);  // whole 16-token blocks
  EXPECT_EQ(pt.key, "hello");
  EXPECT_TRUE(pt.hashes.empty());
}

TEST(PromptSignalTest, CachedPrefixPlusFreshRowsEqualsCold) {
  Fixture f;
  Rng rng(7);
  const int64_t T = 50;
  const auto picks = testing::RandomPicks(f.g, T, rng);
  const size_t row = static_cast<size_t>(f.g.moe_layers) * f.g.top_k;
  const ExpertCounts cold = MakePickTable(picks, f.g)->Counts();
  const ClientRequest req = f.TokenPrompt(T, 5);
  const auto prompt = f.signal->Begin(req);
  EXPECT_EQ(f.signal->KnownTokens(prompt), 0);
  auto s = f.signal->FromPrefill(prompt, f.Picks(picks, 0));
  ASSERT_TRUE(s.counts);
  EXPECT_FALSE(s.partial);
  EXPECT_EQ(*s.counts, cold);
  // The repeat asks from the cached prefix (three whole blocks of the 50 tokens) and gets the
  // same counts from the cache plus the engine's rows after it.
  const int64_t start = f.signal->KnownTokens(prompt);
  EXPECT_EQ(start, 48);
  s = f.signal->FromPrefill(
      prompt, f.Picks(std::span(picks).subspan(static_cast<size_t>(start) * row), start));
  ASSERT_TRUE(s.counts);
  EXPECT_FALSE(s.partial);
  EXPECT_EQ(*s.counts, cold);
}

TEST(PromptSignalTest, RowsAfterAnUnknownPrefixArePartialAndNeverStored) {
  Fixture f;
  Rng rng(8);
  const int64_t T = 40;
  const auto picks = testing::RandomPicks(f.g, T, rng);
  const size_t row = static_cast<size_t>(f.g.moe_layers) * f.g.top_k;
  const ClientRequest req = f.TokenPrompt(T, 9);
  const auto prompt = f.signal->Begin(req);
  // vLLM 0.21 sent -1 for the first 16 positions of a prompt this router never saw.
  auto s = f.signal->FromPrefill(prompt, f.Picks(std::span(picks).subspan(16 * row), 16));
  ASSERT_TRUE(s.counts);
  EXPECT_TRUE(s.partial);
  EXPECT_EQ(s.counts->Total(), static_cast<uint64_t>((T - 16) * f.g.moe_layers * f.g.top_k));
  // Payload-level partial (unknown rows inside the prompt): used, never cached.
  PrefillResult inside = f.Picks(picks, 0);
  inside.partial = true;
  s = f.signal->FromPrefill(prompt, inside);
  EXPECT_TRUE(s.partial);
  EXPECT_EQ(f.signal->KnownTokens(prompt), 0);
  EXPECT_EQ(f.signal->cache().Stats().inserted_chunks, 0u);
  // Learn, which the flows call with every prefill answer, stores a partial one nowhere either:
  // neither in the block cache nor in the prompt memo, so no later request is routed on it.
  f.signal->Learn(prompt, inside);
  EXPECT_EQ(f.signal->cache().Stats().inserted_chunks, 0u);
  EXPECT_EQ(f.signal->KnownTokens(prompt), 0);
  EXPECT_FALSE(f.signal->Predict(prompt));
  // No payload: no signature.
  EXPECT_FALSE(f.signal->FromPrefill(prompt, PrefillResult{}).counts);
}

TEST(PromptSignalTest, PredictionsComeFromTheCacheOrTheTextMemo) {
  Fixture f;
  Rng rng(9);
  const auto picks = testing::RandomPicks(f.g, 32, rng);
  ClientRequest text;
  text.prompt_text = std::string(300, 'x');
  const auto pt = f.signal->Begin(text);
  EXPECT_FALSE(f.signal->Predict(pt));
  f.signal->Learn(pt, f.Picks(picks, 0));
  ASSERT_TRUE(f.signal->Predict(pt));
  EXPECT_EQ(*f.signal->Predict(pt), MakePickTable(picks, f.g)->Counts());
  const ClientRequest toks = f.TokenPrompt(32, 77);
  const auto pk = f.signal->Begin(toks);
  EXPECT_FALSE(f.signal->Predict(pk));
  f.signal->Learn(pk, f.Picks(picks, 0));
  ASSERT_TRUE(f.signal->Predict(pk));
  EXPECT_EQ(*f.signal->Predict(pk), MakePickTable(picks, f.g)->Counts());
  // Another token-id prompt learns nothing from it.
  EXPECT_FALSE(f.signal->Predict(f.signal->Begin(f.TokenPrompt(32, 500))));
}

}  // namespace
}  // namespace eldr::server
