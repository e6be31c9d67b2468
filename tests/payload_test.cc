#include "eldr/payload.h"

#include <gtest/gtest.h>

#include "status_matchers.h"
#include "test_util.h"

namespace eldr {
namespace {

using testing::AsBytes;
using ::testing::HasSubstr;
using testing::RandomPicks;

ExpertCounts Reference(const ModelGeometry& g, const std::vector<int32_t>& picks) {
  ExpertCounts c(g.moe_layers, g.experts);
  const size_t row = static_cast<size_t>(g.moe_layers) * g.top_k;
  for (size_t t = 0; t < picks.size() / row; ++t) {
    std::span<const int32_t> tok(picks.data() + t * row, row);
    EXPECT_TRUE(c.AddToken(tok, g.top_k).ok());
  }
  return c;
}

std::string VllmPayload(const ModelGeometry& g, const std::vector<int32_t>& picks, char kind,
                        int size, int layers = 0) {
  if (layers == 0) layers = g.moe_layers;
  const int64_t tokens = picks.size() / (static_cast<size_t>(layers) * g.top_k);
  std::vector<uint8_t> data = size == 1   ? AsBytes<uint8_t>(picks)
                              : size == 2 ? AsBytes<uint16_t>(picks)
                                          : AsBytes<int32_t>(picks);
  std::vector<int64_t> shape = {tokens, layers, g.top_k};
  return Base64Encode(MakeNpy(kind, size, shape, data));
}

TEST(Base64Test, RoundTripsEveryLength) {
  Rng rng(1);
  for (size_t n = 0; n < 70; ++n) {
    std::vector<uint8_t> in(n);
    for (auto& b : in) b = static_cast<uint8_t>(rng.Next());
    std::vector<uint8_t> out;
    ASSERT_TRUE(Base64Decode(Base64Encode(in), &out).ok());
    EXPECT_EQ(out, in);
  }
  std::vector<uint8_t> out;
  ASSERT_TRUE(Base64Decode("aGVsbG8=", &out).ok());
  EXPECT_EQ(std::string(out.begin(), out.end()), "hello");
}

// Long inputs go through the vectorised decoder (32 characters a step) where the CPU has AVX2;
// lengths around its block edges and invalid characters anywhere must behave exactly as the
// scalar definition says.
TEST(Base64Test, LongInputsRoundTripAndReportTheFirstBadCharacterExactly) {
  Rng rng(12);
  std::vector<uint8_t> out;
  for (size_t n : {45u, 47u, 48u, 49u, 71u, 72u, 95u, 96u, 97u, 1000u, 4095u, 4096u, 65537u}) {
    std::vector<uint8_t> in(n);
    for (auto& b : in) b = static_cast<uint8_t>(rng.Next());
    std::string text = Base64Encode(in);
    ASSERT_TRUE(Base64Decode(text, &out).ok()) << n;
    ASSERT_EQ(out, in) << n;
    for (int trial = 0; trial < 20; ++trial) {
      std::string bad = text;
      const size_t at = rng.Uniform(bad.size() - 4);  // before the final quad
      const char junk[] = {'*', '-', '_', ' ', '\n', '=', '\x80', '\xff', '.', ':'};
      bad[at] = junk[rng.Uniform(sizeof(junk))];
      ASSERT_THAT(Base64Decode(bad, &out),
                  StatusIs(StatusCode::kInvalidArgument, HasSubstr(fmt::format("offset {}", at))))
          << "n=" << n << " at=" << at;
    }
  }
}

TEST(Base64Test, RejectsBadInputWithOffset) {
  std::vector<uint8_t> out;
  EXPECT_THAT(Base64Decode("aGVs*G8=", &out),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("offset 4")));
  EXPECT_THAT(Base64Decode("aGVsbG8", &out),
              StatusIs(StatusCode::kInvalidArgument,
                       HasSubstr("length 7 is not a multiple of 4")));  // truncated
  EXPECT_THAT(Base64Decode("aG=sbG8=", &out),
              StatusIs(StatusCode::kInvalidArgument,
                       HasSubstr("invalid character 0x3d at offset 2")));  // '=' inside
  EXPECT_THAT(
      Base64Decode("aGVsbG\n8", &out),
      StatusIs(StatusCode::kInvalidArgument, HasSubstr("invalid character 0x0a at offset 6")));
}

class VllmDecodeTest : public ::testing::TestWithParam<std::pair<char, int>> {};

TEST_P(VllmDecodeTest, CountsEqualReferenceForEveryDtype) {
  const auto [kind, size] = GetParam();
  ModelGeometry g = *FindModel("qwen3-30b-a3b");
  Rng rng(size);
  auto picks = RandomPicks(g, 37, rng);
  auto t = DecodeVllmRoutedExperts(VllmPayload(g, picks, kind, size), g);
  ASSERT_TRUE(t.has_value()) << t.error().ToString();
  EXPECT_EQ(t->tokens(), 37);
  EXPECT_EQ(t->Counts(), Reference(g, picks));
  EXPECT_EQ(t->Counts().Total(), 37u * 48 * 8);
  EXPECT_EQ(t->Pick(5, 3, 2), picks[(5 * 48 + 3) * 8 + 2]);
}
INSTANTIATE_TEST_SUITE_P(Dtypes, VllmDecodeTest,
                         ::testing::Values(std::pair{'u', 1}, std::pair{'u', 2},
                                           std::pair{'i', 4}));

TEST(VllmDecodeTest, AccumulateRowsSplitsAdditively) {
  ModelGeometry g = *FindModel("gpt-oss-20b");
  Rng rng(3);
  auto picks = RandomPicks(g, 50, rng);
  auto t = DecodeVllmRoutedExperts(VllmPayload(g, picks, 'u', 1), g);
  ASSERT_TRUE(t.has_value());
  ExpertCounts a(g.moe_layers, g.experts);
  ASSERT_TRUE(t->AccumulateRows(0, 17, &a).ok());
  ASSERT_TRUE(t->AccumulateRows(17, 50, &a).ok());
  EXPECT_EQ(a, t->Counts());
  EXPECT_EQ(t->AccumulateRows(10, 51, &a).code(), StatusCode::kOutOfRange);
  ExpertCounts wrong(3, 3);
  EXPECT_EQ(t->AccumulateRows(0, 1, &wrong).code(), StatusCode::kInvalidArgument);
}

TEST(VllmDecodeTest, AllLayerPayloadSkipsDenseLayers) {
  ModelGeometry g = *FindModel("deepseek-v3");  // 61 layers, the first 3 dense
  Rng rng(4);
  auto moe = RandomPicks(g, 6, rng);
  // Build a 61-layer payload: 3 dense rows of junk (zeros) before the 58 MoE rows per token.
  std::vector<int32_t> all;
  const size_t row = static_cast<size_t>(g.moe_layers) * g.top_k;
  for (int t = 0; t < 6; ++t) {
    all.insert(all.end(), static_cast<size_t>(g.first_moe_layer) * g.top_k, 0);
    all.insert(all.end(), moe.begin() + t * row, moe.begin() + (t + 1) * row);
  }
  auto t = DecodeVllmRoutedExperts(VllmPayload(g, all, 'u', 2, g.total_layers), g);
  ASSERT_TRUE(t.has_value()) << t.error().ToString();
  EXPECT_EQ(t->Counts(), Reference(g, moe));
}

TEST(VllmDecodeTest, RejectsMalformedPayloadsClearly) {
  ModelGeometry g = *FindModel("gpt-oss-20b");
  Rng rng(5);
  auto picks = RandomPicks(g, 4, rng);
  auto expect_error = [&](const std::string& payload, StatusCode code, std::string_view needle) {
    auto t = DecodeVllmRoutedExperts(payload, g);
    EXPECT_THAT(t, StatusIs(code, HasSubstr(std::string(needle))));
  };
  expect_error("not base64!", StatusCode::kInvalidArgument, "base64");
  expect_error(Base64Encode(AsBytes<uint8_t>(picks)), StatusCode::kInvalidArgument, "magic");
  // Wrong top_k (shape [4, 24, 2] with the same bytes count differently).
  {
    std::vector<int64_t> shape = {8, 24, 2};
    auto bytes = AsBytes<uint8_t>(picks);
    expect_error(Base64Encode(MakeNpy('u', 1, shape, bytes)), StatusCode::kInvalidArgument,
                 "top_k");
  }
  // Another model's layer count.
  {
    std::vector<int64_t> shape = {2, 48, 4};
    auto bytes = AsBytes<uint8_t>(picks);
    expect_error(Base64Encode(MakeNpy('u', 1, shape, bytes)), StatusCode::kInvalidArgument,
                 "another geometry");
  }
  // Expert id out of range.
  {
    auto bad = picks;
    bad[17] = 32;
    expect_error(VllmPayload(g, bad, 'u', 1), StatusCode::kOutOfRange, "outside [0, 32)");
  }
  // Negative id in a signed payload.
  {
    auto bad = picks;
    bad[3] = -1;
    expect_error(VllmPayload(g, bad, 'i', 4), StatusCode::kOutOfRange, "outside");
  }
  // Duplicate id in one token's top-k.
  {
    auto bad = picks;
    bad[1] = bad[0];
    expect_error(VllmPayload(g, bad, 'u', 1), StatusCode::kInvalidArgument, "repeated");
  }
  // Truncated data (shape promises more bytes than present).
  {
    auto npy = MakeNpy('u', 1, std::vector<int64_t>{4, 24, 4}, AsBytes<uint8_t>(picks));
    npy.resize(npy.size() - 5);
    expect_error(Base64Encode(npy), StatusCode::kInvalidArgument, "data bytes");
  }
  // Float dtype.
  {
    auto npy = MakeNpy('u', 1, std::vector<int64_t>{4, 24, 4}, AsBytes<uint8_t>(picks));
    const std::string from = "'|u1'";
    std::string s(npy.begin(), npy.end());
    s.replace(s.find(from), from.size(), "'<f4'");
    expect_error(Base64Encode(std::vector<uint8_t>(s.begin(), s.end())),
                 StatusCode::kInvalidArgument, "dtype");
  }
  // Fortran order.
  {
    auto npy = MakeNpy('u', 1, std::vector<int64_t>{4, 24, 4}, AsBytes<uint8_t>(picks));
    std::string s(npy.begin(), npy.end());
    s.replace(s.find("False"), 5, "True ");
    expect_error(Base64Encode(std::vector<uint8_t>(s.begin(), s.end())),
                 StatusCode::kInvalidArgument, "fortran");
  }
  // Over the size limit.
  {
    PayloadOptions o;
    o.max_decoded_bytes = 16;
    auto t = DecodeVllmRoutedExperts(VllmPayload(g, picks, 'u', 1), g, o);
    EXPECT_THAT(t,
                StatusIs(StatusCode::kResourceExhausted, HasSubstr("exceeds the 16 byte limit")));
  }
}

TEST(SglangDecodeTest, FlatInt32MatchesReferenceAndRejectsPartialRows) {
  ModelGeometry g = *FindModel("qwen3-30b-a3b");
  Rng rng(6);
  auto picks = RandomPicks(g, 9, rng);
  auto bytes = AsBytes<int32_t>(picks);
  auto t = DecodeSglangRoutedExperts(Base64Encode(bytes), g);
  ASSERT_TRUE(t.has_value()) << t.error().ToString();
  EXPECT_EQ(t->tokens(), 9);
  EXPECT_EQ(t->Counts(), Reference(g, picks));
  bytes.resize(bytes.size() - 4 * 3 + 3);  // not a whole number of int32 rows
  while (bytes.size() % 3) bytes.push_back(0);
  auto bad = DecodeSglangRoutedExperts(Base64Encode(bytes), g);
  ASSERT_THAT(bad, StatusIs(StatusCode::kInvalidArgument, HasSubstr("whole number")));
}

TEST(PickListTest, NestedListsMatchReferenceAndRejectMalformed) {
  ModelGeometry g = *FindModel("mixtral-8x7b");  // 32 layers, top-2 of 8
  Rng rng(8);
  auto picks = RandomPicks(g, 3, rng);
  std::string json = "[";
  for (int t = 0; t < 3; ++t) {
    json += t ? ", [" : "[";
    for (int l = 0; l < 32; ++l) {
      json += l ? "," : "";
      json += fmt::format("[{}, {}]", picks[(t * 32 + l) * 2], picks[(t * 32 + l) * 2 + 1]);
    }
    json += "]";
  }
  json += "]";
  auto t = ParsePickListJson(json, g);
  ASSERT_TRUE(t.has_value()) << t.error().ToString();
  EXPECT_EQ(t->Counts(), Reference(g, picks));
  EXPECT_TRUE(ParsePickListJson("[]", g).has_value());
  const std::pair<const char*, const char*> refused[] = {
      {"", "expected '[' at offset 0"},
      {"[", "expected '[' at offset 1"},
      {"[[[1,2]]", "expected ',' or ']' at offset 8"},
      {"[[[1,2],[3]]]", "ragged top-k lists"},
      {"[[[1.5,2]]]", "expert ids must be integers"},
      {"[[[1,2]]] x", "trailing characters"},
      {"{\"a\":1}", "expected '[' at offset 0"},
      {"[[[1,2],[3,4]],[[1,2]]]", "ragged layer lists"},
  };
  for (const auto& [bad, why] : refused) {
    EXPECT_THAT(ParsePickListJson(bad, g), StatusIs(StatusCode::kInvalidArgument, HasSubstr(why)))
        << bad;
  }
  // A negative id is out of range, like an id past the model's experts.
  EXPECT_THAT(ParsePickListJson("[[[1,-2]]]", g),
              StatusIs(StatusCode::kOutOfRange, HasSubstr("expert id -2 out of range at offset")));
  // Right nesting, wrong layer count for this model.
  auto wrong = ParsePickListJson("[[[1,2],[3,4]]]", g);
  ASSERT_THAT(wrong, StatusIs(StatusCode::kInvalidArgument, HasSubstr("layers")));
}

TEST(EldrSigTest, RawAndNpyInt16CountsDecode) {
  ModelGeometry g = *FindModel("gpt-oss-20b");
  std::vector<int32_t> counts(g.CountEntries());
  Rng rng(9);
  for (auto& c : counts) c = static_cast<int32_t>(rng.Uniform(300));
  auto raw = DecodeEldrSig(Base64Encode(AsBytes<int16_t>(counts)), g);
  ASSERT_TRUE(raw.has_value()) << raw.error().ToString();
  for (int i = 0; i < g.CountEntries(); ++i)
    EXPECT_EQ(raw->data()[i], static_cast<uint32_t>(counts[i]));
  std::vector<int64_t> shape = {g.moe_layers, g.experts};
  auto npy = DecodeEldrSig(Base64Encode(MakeNpy('i', 2, shape, AsBytes<int16_t>(counts))), g);
  ASSERT_TRUE(npy.has_value());
  EXPECT_EQ(*npy, *raw);
  // Another model's table size, and a negative count.
  ModelGeometry other = *FindModel("qwen3-30b-a3b");
  auto mism = DecodeEldrSig(Base64Encode(AsBytes<int16_t>(counts)), other);
  ASSERT_THAT(mism, StatusIs(StatusCode::kInvalidArgument, HasSubstr("another model")));
  counts[5] = -3;
  EXPECT_EQ(DecodeEldrSig(Base64Encode(AsBytes<int16_t>(counts)), g).error().code(),
            StatusCode::kOutOfRange);
}

// Fuzz smoke: random mutations of valid payloads never crash, and whatever is accepted is a
// complete, consistent table. (The libFuzzer targets in fuzz/ run the same entry points.)
TEST(PayloadFuzzSmokeTest, MutatedPayloadsNeverCrashAndAcceptedOnesAreConsistent) {
  ModelGeometry g = *FindModel("gpt-oss-20b");
  Rng rng(10);
  auto picks = RandomPicks(g, 6, rng);
  const std::string seeds[] = {VllmPayload(g, picks, 'u', 1), VllmPayload(g, picks, 'u', 2),
                               Base64Encode(AsBytes<int32_t>(picks))};
  std::vector<uint8_t> bytes;
  for (int iter = 0; iter < 3000; ++iter) {
    const std::string& seed = seeds[iter % 3];
    ASSERT_TRUE(Base64Decode(seed, &bytes).ok());
    const int edits = 1 + static_cast<int>(rng.Uniform(4));
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng.Uniform(bytes.size());
      switch (rng.Uniform(3)) {
        case 0:
          bytes[at] = static_cast<uint8_t>(rng.Next());
          break;
        case 1:
          bytes.erase(bytes.begin() + at);
          break;
        default:
          bytes.insert(bytes.begin() + at, static_cast<uint8_t>(rng.Next()));
          break;
      }
    }
    const std::string b64 = Base64Encode(bytes);
    for (auto r : {DecodeVllmRoutedExperts(b64, g), DecodeSglangRoutedExperts(b64, g)}) {
      if (r.has_value()) {
        EXPECT_EQ(r->Counts().Total(), static_cast<uint64_t>(r->tokens()) * g.moe_layers * g.top_k);
      } else {
        EXPECT_FALSE(r.error().message().empty());
      }
    }
    (void)DecodeEldrSig(b64, g);
    std::string text(bytes.begin(), bytes.end());
    (void)ParsePickListJson(text, g);
  }
}

// Regression (fuzz/npy_fuzz.cc): a .npy whose header length leaves the items at an odd offset
// decodes like an aligned one. The scan read them through a misaligned pointer, undefined
// behaviour that UBSan reports in the asan preset.
TEST(VllmDecodeTest, UnalignedNpyItemsDecodeLikeAlignedOnes) {
  const ModelGeometry g = *FindModel("gpt-oss-20b");
  Rng rng(5);
  const std::vector<int32_t> picks = RandomPicks(g, 3, rng);
  const std::vector<int64_t> shape = {3, g.moe_layers, g.top_k};
  std::vector<uint8_t> npy = MakeNpy('u', 2, shape, AsBytes<uint16_t>(picks));
  // One more space before the header's final '\n' (v1: the header length is bytes 8-9).
  const size_t header_len = npy[8] | (size_t{npy[9]} << 8);
  npy.insert(npy.begin() + static_cast<std::ptrdiff_t>(10 + header_len - 1), ' ');
  npy[8] = static_cast<uint8_t>((header_len + 1) & 0xFF);
  npy[9] = static_cast<uint8_t>((header_len + 1) >> 8);
  ASSERT_EQ((10 + header_len + 1) % 2, 1u);  // the items now start at an odd offset
  auto t = DecodeVllmRoutedExperts(Base64Encode(npy), g);
  ASSERT_TRUE(t) << t.error().ToString();
  EXPECT_EQ(t->Counts(), Reference(g, picks));
  EXPECT_EQ(t->Pick(2, 5, 1), picks[(2 * g.moe_layers + 5) * g.top_k + 1]);
}

}  // namespace
}  // namespace eldr
