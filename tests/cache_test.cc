#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <thread>

#include "eldr/block_hash.h"
#include "eldr/signature_cache.h"
#include "status_matchers.h"
#include "test_util.h"

namespace eldr {
namespace {

using ::testing::HasSubstr;

std::vector<int32_t> Tokens(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng.Uniform(50000));
  return t;
}

TEST(BlockHashTest, ChainsOnlyFullBlocksAndDependsOnThePrefix) {
  auto a = Tokens(100, 1);
  auto ha = ChainedBlockHashes(a, 16);
  EXPECT_EQ(ha.size(), 6u);
  auto b = a;
  b[3] += 1;  // change block 0: every later hash changes too
  auto hb = ChainedBlockHashes(b, 16);
  for (size_t i = 0; i < ha.size(); ++i) EXPECT_NE(ha[i], hb[i]);
  auto c = a;
  c[40] += 1;  // change block 2 only
  auto hc = ChainedBlockHashes(c, 16);
  EXPECT_EQ(ha[0], hc[0]);
  EXPECT_EQ(ha[1], hc[1]);
  EXPECT_NE(ha[2], hc[2]);
  EXPECT_NE(ChainedBlockHashes(a, 16, 7)[0], ha[0]);  // seeded
  EXPECT_TRUE(ChainedBlockHashes(a, 0).empty());
}

// The property the cache exists for: for any prompt, any shared prefix and any chunking, counts
// assembled from cached chunks plus fresh picks equal the counts computed cold.
RC_GTEST_PROP(SignatureCacheProperty, CachedPlusFreshEqualsCold, ()) {
  ModelGeometry g = *FindModel("gpt-oss-20b");
  SignatureCacheOptions o;
  o.block_size = *rc::gen::element(1, 4, 16);
  o.chunk_blocks = *rc::gen::inRange(1, 5);
  o.shards = *rc::gen::element(1, 4, 16);
  SignatureCache cache(g.moe_layers, g.experts, o);
  const int64_t len_a = *rc::gen::inRange<int64_t>(0, 300);
  const int64_t shared = *rc::gen::inRange<int64_t>(0, len_a + 1);
  const int64_t len_b = shared + *rc::gen::inRange<int64_t>(0, 200);
  const uint64_t seed = *rc::gen::arbitrary<uint64_t>();
  Rng rng(seed);
  auto tok_a = Tokens(len_a, seed);
  auto tok_b = Tokens(len_b, seed + 1);
  std::copy(tok_a.begin(), tok_a.begin() + shared, tok_b.begin());
  auto picks_a = testing::RandomPicks(g, len_a, rng);
  auto picks_b = testing::RandomPicks(g, len_b, rng);
  // Identical prefixes route identically (deterministic gating).
  const size_t row = static_cast<size_t>(g.moe_layers) * g.top_k;
  std::copy(picks_a.begin(), picks_a.begin() + shared * row, picks_b.begin());
  auto ha = ChainedBlockHashes(tok_a, o.block_size);
  auto hb = ChainedBlockHashes(tok_b, o.block_size);
  auto ta = MakePickTable(picks_a, g);
  auto tb = MakePickTable(picks_b, g);
  RC_ASSERT(ta.has_value() && tb.has_value());
  RC_ASSERT(cache.Insert(ha, *ta, 0).ok());
  // Request B: the engine reports only the tokens after the cached prefix.
  SignatureCache::Prefix p = cache.Lookup(hb);
  // Every whole chunk inside the shared prefix is found, and nothing beyond it.
  RC_ASSERT(p.tokens == (shared / cache.chunk_tokens()) * cache.chunk_tokens());
  auto suffix = MakePickTable(
      std::span<const int32_t>(picks_b.data() + p.tokens * row, (len_b - p.tokens) * row), g);
  RC_ASSERT(suffix.has_value());
  auto got = cache.Resolve(hb, len_b, *suffix, p.tokens);
  RC_ASSERT(got.has_value());
  RC_ASSERT(*got == tb->Counts());
}

TEST(SignatureCacheTest, ResolveRefusesPicksThatLeaveAGap) {
  ModelGeometry g = *FindModel("gpt-oss-20b");
  SignatureCache cache(g.moe_layers, g.experts, {});
  Rng rng(2);
  auto tok = Tokens(600, 3);
  auto picks = testing::RandomPicks(g, 100, rng);
  auto t = MakePickTable(picks, g);
  ASSERT_TRUE(t.has_value());
  auto h = ChainedBlockHashes(tok, 16);
  auto r = cache.Resolve(h, 600, *t, 500);  // nothing cached, picks start at 500
  ASSERT_THAT(r,
              StatusIs(StatusCode::kFailedPrecondition,
                       HasSubstr("picks start at token 500 but only 0 prompt tokens are cached")));
  auto short_picks = cache.Resolve(h, 600, *t, 0);  // picks end at 100 < 600
  ASSERT_THAT(short_picks,
              StatusIs(StatusCode::kFailedPrecondition,
                       HasSubstr("picks cover tokens [0, 100) but the prompt has 600 tokens")));
  EXPECT_EQ(cache.Stats().entries, 0u);
}

TEST(SignatureCacheTest, StaysWithinBudgetAndEvictsLeastRecentlyUsed) {
  ModelGeometry g = *FindModel("qwen3-30b-a3b");
  SignatureCacheOptions o;
  o.shards = 1;
  SignatureCache probe(g.moe_layers, g.experts, o);
  o.memory_budget_bytes = probe.ChunkBytes() * 3 + 10;  // room for exactly three chunks
  SignatureCache cache(g.moe_layers, g.experts, o);
  Rng rng(4);
  std::vector<std::vector<uint64_t>> hashes;
  for (int i = 0; i < 5; ++i) {
    auto tok = Tokens(256, 100 + i);
    hashes.push_back(ChainedBlockHashes(tok, 16));
    auto t = MakePickTable(testing::RandomPicks(g, 256, rng), g);
    ASSERT_TRUE(cache.Insert(hashes.back(), *t, 0).ok());
    if (i == 2) {
      EXPECT_EQ(cache.Lookup(hashes[0]).chunks, 1);  // touch prompt 0
    }
    EXPECT_LE(cache.Stats().bytes, o.memory_budget_bytes);
  }
  const auto st = cache.Stats();
  EXPECT_EQ(st.entries, 3u);
  EXPECT_EQ(st.evicted_chunks, 2u);
  EXPECT_EQ(cache.Lookup(hashes[0]).chunks, 1);  // recently used: kept
  EXPECT_EQ(cache.Lookup(hashes[1]).chunks, 0);  // least recently used: evicted
  EXPECT_EQ(cache.Lookup(hashes[4]).chunks, 1);
}

TEST(SignatureCacheTest, DefaultsCostAtMost64BytesPerCachedTokenForEveryPreset) {
  for (const auto& g : ModelPresets()) {
    SignatureCacheOptions o;
    o.block_size = g.kv_block_size;
    o.chunk_blocks = std::max(1, 256 / g.kv_block_size);
    SignatureCache cache(g.moe_layers, g.experts, o);
    Rng rng(5);
    auto tok = Tokens(1024, 6);
    auto t = MakePickTable(testing::RandomPicks(g, 1024, rng), g);
    ASSERT_TRUE(t.has_value());
    ASSERT_TRUE(cache.Insert(ChainedBlockHashes(tok, o.block_size), *t, 0).ok());
    const auto st = cache.Stats();
    ASSERT_EQ(st.cached_tokens, 1024u) << g.name;
    const double per_token = static_cast<double>(st.bytes) / st.cached_tokens;
    EXPECT_LE(per_token, 64.0) << g.name << ": " << per_token << " bytes per cached token";
  }
}

TEST(SignatureCacheTest, CountsAbove254SpillExactly) {
  ModelGeometry g = *FindModel("mixtral-8x7b");  // top-2 of 8: counts pile up fast
  SignatureCacheOptions o;
  o.chunk_blocks = 64;  // 1024-token chunks
  SignatureCache cache(g.moe_layers, g.experts, o);
  std::vector<int32_t> picks;
  for (int t = 0; t < 1024; ++t)
    for (int l = 0; l < g.moe_layers; ++l) {
      picks.push_back(0);  // expert 0 every time: count 1024 > 255
      picks.push_back(1 + t % 7);
    }
  auto table = MakePickTable(picks, g);
  ASSERT_TRUE(table.has_value());
  auto tok = Tokens(1024, 9);
  auto h = ChainedBlockHashes(tok, 16);
  ASSERT_TRUE(cache.Insert(h, *table, 0).ok());
  auto p = cache.Lookup(h);
  EXPECT_EQ(p.tokens, 1024);
  EXPECT_EQ(p.counts, table->Counts());
  EXPECT_EQ(p.counts.at(5, 0), 1024u);
}

TEST(SignatureCacheTest, ConcurrentInsertsAndLookupsAreSafeAndExact) {
  ModelGeometry g = *FindModel("gpt-oss-20b");
  SignatureCacheOptions o;
  o.chunk_blocks = 2;
  SignatureCache cache(g.moe_layers, g.experts, o);
  Rng rng(11);
  const int kPrompts = 16;
  std::vector<std::vector<uint64_t>> hashes;
  std::vector<PickTable> tables;
  for (int i = 0; i < kPrompts; ++i) {
    hashes.push_back(ChainedBlockHashes(Tokens(128, 500 + i), 16));
    tables.push_back(*MakePickTable(testing::RandomPicks(g, 128, rng), g));
  }
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int th = 0; th < 4; ++th) {
    threads.emplace_back([&, th] {
      for (int rep = 0; rep < 50; ++rep) {
        const int i = (th * 7 + rep) % kPrompts;
        if (!cache.Insert(hashes[i], tables[i], 0).ok()) ++mismatches;
        auto p = cache.Lookup(hashes[i]);
        ExpertCounts want(g.moe_layers, g.experts);
        (void)tables[i].AccumulateRows(0, p.tokens, &want);
        if (!(p.counts == want)) ++mismatches;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(cache.Stats().entries, static_cast<uint64_t>(kPrompts) * 4);
}

TEST(SignatureCacheTest, CreateValidatesOptions) {
  SignatureCacheOptions o;
  o.shards = 3;
  EXPECT_THAT(SignatureCache::Create(4, 4, o),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("shards must be a power of two")));
  o.shards = 4;
  o.chunk_blocks = 0;
  EXPECT_THAT(SignatureCache::Create(4, 4, o),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("chunk_blocks must be positive")));
  EXPECT_THAT(SignatureCache::Create(0, 4, {}),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("bad count shape 0x4")));
  EXPECT_TRUE(SignatureCache::Create(4, 4, {}).has_value());
}

}  // namespace
}  // namespace eldr
