// The emulated engine's model: deterministic in the prompt, prefix-consistent, valid picks, and a
// step time equal to the cost model applied to the exact distinct experts of the batch.
#include <gtest/gtest.h>

#include <set>

#include "eldr/emu/model.h"
#include "eldr/payload.h"

namespace eldr::emu {
namespace {

std::shared_ptr<const EngineModel> Model() {
  static std::shared_ptr<const EngineModel> m = [] {
    const ModelGeometry g = *FindModel("gpt-oss-20b");
    sim::WorkloadOptions wo;
    wo.requests = 32;
    wo.calibration = 0;
    wo.output_tokens = 64;
    sim::CostParams c;
    c.t0_us = 1000;
    c.layer_us = 10;
    c.expert_us = 3;
    c.token_us = 7;
    c.ctx_us = 0.01;
    c.prefill_fixed_us = 100;
    c.prefill_token_us = 2;
    return *EngineModel::Create(*sim::MakeSyntheticWorkload(g, wo), c, {});
  }();
  return m;
}

TEST(EngineModelTest, TokenizerAndArchetypesAreDeterministic) {
  auto m = Model();
  const auto t1 = m->Tokenize("the quick  brown\nfox");
  EXPECT_EQ(t1.size(), 4u);
  EXPECT_EQ(t1, m->Tokenize("the quick brown fox"));
  EXPECT_EQ(m->Archetype(t1), m->Archetype(m->Tokenize("the quick brown fox")));
  std::set<int> seen;
  for (int i = 0; i < 400; ++i) seen.insert(m->Archetype(m->Tokenize(fmt::format("p{} x", i))));
  EXPECT_GT(seen.size(), 25u);  // prompts spread over the 32 archetypes
}

TEST(EngineModelTest, IdenticalPrefixesGiveIdenticalPicks) {
  auto m = Model();
  const ModelGeometry& g = m->geometry();
  const size_t row = static_cast<size_t>(g.moe_layers) * g.top_k;
  std::vector<int32_t> a = m->Tokenize(
      "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
      "sixteen seventeen eighteen");
  std::vector<int32_t> b = a;
  b.push_back(12345);
  b.push_back(99);
  const auto pa = m->PromptPicks(a), pb = m->PromptPicks(b);
  ASSERT_EQ(pa.size(), a.size() * row);
  ASSERT_EQ(pb.size(), b.size() * row);
  EXPECT_TRUE(std::equal(pa.begin(), pa.end(), pb.begin()));
  // Rows from an offset are the suffix of the full table.
  const auto tail = m->PromptPicks(b, 5);
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), pb.begin() + 5 * row));
  // A different first token changes the picks.
  std::vector<int32_t> c = a;
  c[0] ^= 1;
  EXPECT_NE(m->PromptPicks(c), pa);
  // Picks are valid: in range and distinct within a layer.
  auto table = MakePickTable(pb, g);
  ASSERT_TRUE(table) << table.error().ToString();
}

TEST(EngineModelTest, StepTimeIsTheCostModelOfTheExactDistinctExperts) {
  auto m = Model();
  const auto& w = m->workload();
  const int L = m->geometry().moe_layers, E = m->geometry().experts;
  std::vector<DecodeSeq> batch;
  for (int i = 0; i < 9; ++i) batch.push_back({i % m->archetypes(), i * 3, 100 + i});
  // Reference: a set of expert ids per layer.
  std::vector<int> distinct(L);
  for (int l = 0; l < L; ++l) {
    std::set<int> ids;
    for (const auto& s : batch) {
      const uint64_t* b =
          w.Bits(w.requests[s.archetype], static_cast<int>(s.generated % w.token_patterns), l);
      for (int e = 0; e < E; ++e) {
        if (b[e >> 6] >> (e & 63) & 1) ids.insert(e);
      }
    }
    distinct[l] = static_cast<int>(ids.size());
  }
  int64_t ctx = 0;
  for (const auto& s : batch) ctx += s.context;
  EXPECT_DOUBLE_EQ(m->StepUs(batch), m->cost().StepUs(9, ctx, distinct));
  EXPECT_EQ(m->StepUs({}), 0);
  // One sequence alone selects exactly top_k experts per layer.
  std::vector<int> one(L);
  m->StepDistinct(std::span<const DecodeSeq>(batch.data(), 1), one);
  for (int d : one) EXPECT_EQ(d, m->geometry().top_k);
}

}  // namespace
}  // namespace eldr::emu
