// libFuzzer target: every engine payload decoder (payload.h), each compared with a slow reference
// decoder written here (fuzz_util.h). The first input byte picks the shape and the geometry; the
// rest is the payload, or the knobs of one built around the fuzzer's bytes so that the deep
// validation code is reached, not just the base64 and .npy layers:
//   0  base64 text                  Base64Decode vs a reference; Encode/Decode round trip
//   1  vLLM >= 0.22 routed_experts  .npy of a fuzzed dtype and shape around fuzzed items
//   2  SGLang sglext.routed_experts flat int32 rows, fuzzed payload_layers
//   3  vLLM list routed_experts     nested JSON lists, reference through boost::json
//   4  vLLM 0.21 prompt_routed_experts (-1 rows), reference through boost::json
//   5  kv_transfer_params.eldr_sig  int16 [L, E] counts, raw or as a .npy
// Invariants: the decoder accepts exactly what the reference accepts, with equal counts; a table
// holds rows x top_k picks per MoE layer; Pick() and AccumulateRows() agree with Counts().
#include <fuzzer/FuzzedDataProvider.h>

#include <boost/json.hpp>
#include <string>
#include <string_view>

#include "eldr/payload.h"
#include "fuzz_util.h"

namespace {

using eldr::ExpertCounts;
using eldr::ModelGeometry;
using eldr::PickTable;
using eldr::fuzz::RefCounts;
using eldr::fuzz::RefItems;

// RFC 4648 base64 with '=' padding, one character at a time. Like the production decoder it does
// not insist that the unused bits of the last character are zero.
std::optional<std::vector<uint8_t>> RefBase64(std::string_view s) {
  if (s.size() % 4 != 0) return std::nullopt;
  std::vector<uint8_t> out;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    int v;
    if (c >= 'A' && c <= 'Z') {
      v = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      v = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      v = c - '0' + 52;
    } else if (c == '+') {
      v = 62;
    } else if (c == '/') {
      v = 63;
    } else if (c == '=') {
      // Padding: only in the last two positions, and "x=y=" is not padding.
      const size_t from_end = s.size() - i;
      if (from_end > 2 || (from_end == 2 && s.back() != '=')) return std::nullopt;
      break;
    } else {
      return std::nullopt;
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>(acc >> bits));
      acc &= (1u << bits) - 1;
    }
  }
  return out;
}

void CheckTable(const PickTable& t, const ModelGeometry& g) {
  const ExpertCounts c = t.Counts();
  ELDR_FUZZ_CHECK(c.layers() == g.moe_layers && c.experts() == g.experts);
  ELDR_FUZZ_CHECK(c.Total() == static_cast<uint64_t>(t.tokens()) * g.moe_layers * g.top_k);
  ExpertCounts rows(g.moe_layers, g.experts);
  ELDR_FUZZ_CHECK(t.AccumulateRows(0, t.tokens(), &rows).ok());
  ELDR_FUZZ_CHECK(rows == c);
  ExpertCounts picks(g.moe_layers, g.experts);
  for (int64_t tok = 0; tok < t.tokens(); ++tok) {
    for (int l = 0; l < g.moe_layers; ++l) {
      for (int j = 0; j < g.top_k; ++j) {
        const int32_t id = t.Pick(tok, l, j);
        ELDR_FUZZ_CHECK(id >= 0 && id < g.experts);
        picks.at(l, id) += 1;
      }
    }
  }
  ELDR_FUZZ_CHECK(picks == c);
  ELDR_FUZZ_CHECK(!t.AccumulateRows(0, t.tokens() + 1, &rows).ok());
}

// Production result vs reference counts: same verdict, same counts.
void Compare(const eldr::Result<PickTable>& got, const std::optional<ExpertCounts>& want,
             const ModelGeometry& g) {
  ELDR_FUZZ_CHECK(got.has_value() == want.has_value());
  if (!got) return;
  CheckTable(*got, g);
  ELDR_FUZZ_CHECK(got->Counts() == *want);
}

void FuzzBase64(std::string_view text) {
  std::vector<uint8_t> got;
  const eldr::Status s = eldr::Base64Decode(text, &got);
  const auto want = RefBase64(text);
  ELDR_FUZZ_CHECK(s.ok() == want.has_value());
  if (want) ELDR_FUZZ_CHECK(got == *want);
  const std::span<const uint8_t> raw(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  const std::string enc = eldr::Base64Encode(raw);
  ELDR_FUZZ_CHECK(enc.size() == (raw.size() + 2) / 3 * 4);
  ELDR_FUZZ_CHECK(eldr::Base64Decode(enc, &got).ok());
  ELDR_FUZZ_CHECK(std::equal(got.begin(), got.end(), raw.begin(), raw.end()));
}

// A dimension that is usually the geometry's and sometimes anything.
int64_t Dim(FuzzedDataProvider& in, std::initializer_list<int64_t> usual) {
  const uint8_t pick = in.ConsumeIntegral<uint8_t>();
  if (pick < 240) return *(usual.begin() + pick % usual.size());
  return in.ConsumeIntegralInRange<int64_t>(0, 9);
}

void FuzzVllm(FuzzedDataProvider& in, const ModelGeometry& g) {
  static constexpr int kSizes[] = {1, 2, 4, 8};
  const int size = kSizes[in.ConsumeIntegral<uint8_t>() % 4];
  const bool is_signed = in.ConsumeBool();
  const int64_t layers = Dim(in, {g.moe_layers, g.total_layers});
  const int64_t k = Dim(in, {g.top_k});
  const bool exact = in.ConsumeIntegral<uint8_t>() < 230;
  std::vector<uint8_t> data = in.ConsumeRemainingBytes<uint8_t>();
  const int64_t row = layers * k * size;
  const int64_t tokens = row == 0 ? 0 : static_cast<int64_t>(data.size()) / row;
  if (exact) data.resize(static_cast<size_t>(tokens * row));  // else the shape may not fit
  const int64_t shape[] = {tokens, layers, k};
  const auto npy = eldr::MakeNpy(is_signed ? 'i' : 'u', size, shape, data);
  auto got = eldr::DecodeVllmRoutedExperts(eldr::Base64Encode(npy), g);
  std::optional<ExpertCounts> want;
  if (k == g.top_k && static_cast<int64_t>(data.size()) == tokens * row) {
    want = RefCounts(RefItems(data, size, is_signed), tokens, layers, g);
  }
  Compare(got, want, g);
}

void FuzzSglang(FuzzedDataProvider& in, const ModelGeometry& g) {
  eldr::PayloadOptions o;
  o.payload_layers = static_cast<int>(Dim(in, {0, g.moe_layers, g.total_layers}));
  const std::vector<uint8_t> data = in.ConsumeRemainingBytes<uint8_t>();
  auto got = eldr::DecodeSglangRoutedExperts(eldr::Base64Encode(data), g, o);
  const int64_t layers = o.payload_layers > 0 ? o.payload_layers : g.moe_layers;
  const int64_t row = layers * g.top_k * 4;
  std::optional<ExpertCounts> want;
  if (data.size() % row == 0) {
    want = RefCounts(RefItems(data, 4, true), static_cast<int64_t>(data.size()) / row, layers, g);
  }
  Compare(got, want, g);
}

// Nested lists [tokens][layers][k] of JSON integers through boost::json; every row the same
// shape. nullopt when the text is not such a document.
struct RefList {
  std::vector<int64_t> items;
  int64_t tokens = 0, layers = 0, k = 0;
};
std::optional<RefList> RefParseList(std::string_view text, int64_t min_value) {
  boost::json::error_code ec;
  const boost::json::value v = boost::json::parse(text, ec);
  if (ec || !v.is_array()) return std::nullopt;
  RefList out;
  out.tokens = static_cast<int64_t>(v.get_array().size());
  out.layers = out.k = -1;
  for (const auto& tok : v.get_array()) {
    if (!tok.is_array()) return std::nullopt;
    if (out.layers >= 0 && out.layers != static_cast<int64_t>(tok.get_array().size())) {
      return std::nullopt;
    }
    out.layers = static_cast<int64_t>(tok.get_array().size());
    for (const auto& layer : tok.get_array()) {
      if (!layer.is_array()) return std::nullopt;
      if (out.k >= 0 && out.k != static_cast<int64_t>(layer.get_array().size())) {
        return std::nullopt;
      }
      out.k = static_cast<int64_t>(layer.get_array().size());
      for (const auto& id : layer.get_array()) {
        int64_t x;
        if (id.is_int64()) {
          x = id.get_int64();
        } else if (id.is_uint64()) {
          x = INT64_MAX;
        } else {
          return std::nullopt;
        }
        if (x < min_value || x > INT32_MAX) return std::nullopt;
        out.items.push_back(x);
      }
    }
  }
  return out;
}

// Whether boost::json accepts the text as a document: the pick-list scanner is compared only on
// JSON (it is laxer on number syntax such as leading zeros, which a JSON response never holds).
bool IsJson(std::string_view text) {
  boost::json::error_code ec;
  (void)boost::json::parse(text, ec);
  return !ec;
}

void FuzzList(std::string_view text, const ModelGeometry& g) {
  auto got = eldr::ParsePickListJson(text, g);
  if (got) CheckTable(*got, g);
  if (!IsJson(text)) return;
  std::optional<ExpertCounts> want;
  if (auto ref = RefParseList(text, 0)) {
    if (ref->tokens == 0) {
      want = ExpertCounts(g.moe_layers, g.experts);
    } else if (ref->k == g.top_k) {
      want = RefCounts(ref->items, ref->tokens, ref->layers, g);
    }
  }
  Compare(got, want, g);
}

void FuzzPromptList(std::string_view text, const ModelGeometry& g) {
  auto got = eldr::ParsePromptPickListJson(text, g);
  if (got) {
    CheckTable(got->picks, g);
    ELDR_FUZZ_CHECK(got->picks.tokens() + got->leading_unknown + got->other_unknown == got->rows);
  }
  if (!IsJson(text)) return;
  // Reference: a row is unknown when every MoE-layer entry is -1, an error when only some are;
  // the known rows are then an ordinary table.
  std::optional<eldr::PromptPickList> want_meta;
  std::optional<ExpertCounts> want;
  if (auto ref = RefParseList(text, -1); ref && (ref->tokens == 0 || ref->k == g.top_k)) {
    bool ok = true;
    int64_t leading = 0, other = 0, known = 0;
    std::vector<int64_t> kept;
    const int64_t row = ref->layers * ref->k;
    for (int64_t t = 0; t < ref->tokens && ok; ++t) {
      int64_t neg = 0, moe = 0;
      for (int l = 0; l < g.moe_layers; ++l) {
        const int64_t at = eldr::fuzz::RefLayerRow(g, ref->layers, l);
        if (at < 0) continue;
        for (int j = 0; j < g.top_k; ++j) {
          ++moe;
          neg += ref->items[t * row + at * g.top_k + j] == -1;
        }
      }
      if (moe > 0 && neg == moe) {
        (known > 0 ? other : leading) += 1;
      } else if (neg > 0) {
        ok = false;
      } else {
        ++known;
        kept.insert(kept.end(), ref->items.begin() + t * row, ref->items.begin() + (t + 1) * row);
      }
    }
    const int64_t layers = ref->tokens == 0 ? g.moe_layers : ref->layers;
    if (ok && eldr::fuzz::RefLayerRow(g, layers, 0) >= 0) {
      want = RefCounts(kept, known, layers, g);
      if (want) {
        want_meta.emplace();
        want_meta->rows = ref->tokens;
        want_meta->leading_unknown = leading;
        want_meta->other_unknown = other;
      }
    }
  }
  ELDR_FUZZ_CHECK(got.has_value() == want.has_value());
  if (!got) return;
  ELDR_FUZZ_CHECK(got->picks.Counts() == *want);
  ELDR_FUZZ_CHECK(got->rows == want_meta->rows);
  ELDR_FUZZ_CHECK(got->leading_unknown == want_meta->leading_unknown);
  ELDR_FUZZ_CHECK(got->other_unknown == want_meta->other_unknown);
}

void FuzzEldrSig(FuzzedDataProvider& in, const ModelGeometry& g) {
  const bool as_npy = in.ConsumeBool();
  static constexpr int kSizes[] = {1, 2, 4, 8};
  const int size = as_npy ? kSizes[in.ConsumeIntegral<uint8_t>() % 4] : 2;
  const bool is_signed = as_npy ? in.ConsumeBool() : true;
  const int64_t layers = as_npy ? Dim(in, {g.moe_layers, g.total_layers}) : 0;
  const int64_t experts = as_npy ? Dim(in, {g.experts}) : 0;
  std::vector<uint8_t> data = in.ConsumeRemainingBytes<uint8_t>();
  std::vector<uint8_t> payload = data;
  if (as_npy) {
    data.resize(static_cast<size_t>(layers * experts * size));
    const int64_t shape[] = {layers, experts};
    payload = eldr::MakeNpy(is_signed ? 'i' : 'u', size, shape, data);
  } else if (data.size() >= 2 && data[0] == 0x93 && data[1] == 'N') {
    return;  // would be read as a .npy header: the raw reference does not apply
  }
  auto got = eldr::DecodeEldrSig(eldr::Base64Encode(payload), g);
  // Reference: the [moe_layers, E] rows (taken from an all-layers table by the layer map), each
  // count in [0, 2^32).
  std::optional<ExpertCounts> want;
  const int64_t row = static_cast<int64_t>(g.experts) * size;
  const int64_t n = static_cast<int64_t>(data.size()) / row;
  const bool shape_ok = !as_npy || (experts == g.experts && layers == n);
  const bool fits =
      static_cast<int64_t>(data.size()) % row == 0 && eldr::fuzz::RefLayerRow(g, n, 0) >= 0;
  if (shape_ok && fits) {
    const auto items = RefItems(data, size, is_signed);
    ExpertCounts c(g.moe_layers, g.experts);
    bool ok = true;
    for (int l = 0; l < g.moe_layers && ok; ++l) {
      for (int e = 0; e < g.experts && ok; ++e) {
        const int64_t v = items[eldr::fuzz::RefLayerRow(g, n, l) * g.experts + e];
        ok = v >= 0 && v <= UINT32_MAX;
        if (ok) c.at(l, e) = static_cast<uint32_t>(v);
      }
    }
    if (ok) want = std::move(c);
  }
  ELDR_FUZZ_CHECK(got.has_value() == want.has_value());
  if (got) ELDR_FUZZ_CHECK(*got == *want);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int mode = data[0] % 6;
  const ModelGeometry g = eldr::fuzz::MakeGeometry(data[1]);
  const std::string_view text(reinterpret_cast<const char*>(data + 2), size - 2);
  FuzzedDataProvider in(data + 2, size - 2);
  switch (mode) {
    case 0:
      FuzzBase64(text);
      break;
    case 1:
      FuzzVllm(in, g);
      break;
    case 2:
      FuzzSglang(in, g);
      break;
    case 3:
      FuzzList(text, g);
      break;
    case 4:
      FuzzPromptList(text, g);
      break;
    default:
      FuzzEldrSig(in, g);
      break;
  }
  return 0;
}
