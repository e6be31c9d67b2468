// libFuzzer target: ParsePrefillResponse (server/pd.h), the proxy's reader of a prefill engine's
// answer in every shape docs/serve.md lists (vLLM >= 0.22 base64 .npy choices[i].routed_experts,
// vLLM 0.21 prompt_routed_experts, nested-list routed_experts, SGLang sglext.routed_experts,
// kv_transfer_params.eldr_sig). The last 4 input bytes choose the geometry, the signature_source
// pin, the known prompt length and routed_experts_start; the rest is the response body.
// Invariants on an accepted response:
//   * picks hold rows x top_k picks per MoE layer and fit inside the prompt (starting at
//     picks_first_token; ending at its last token except for vLLM 0.21's -1 rows);
//   * eldr_sig counts have the model's [L, E] shape; exactly one of picks / counts per source;
//   * a pinned source is the only one ever used;
//   * kv_transfer_params is empty or a JSON object without eldr_sig (it is forwarded to decode).
#include <boost/json.hpp>
#include <string_view>

#include "eldr/server/pd.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using eldr::server::SignatureSource;
  if (size < 4) return 0;
  const uint8_t* knobs = data + size - 4;
  const eldr::ModelGeometry g = eldr::fuzz::MakeGeometry(knobs[0]);
  eldr::server::PrefillRequestInfo info;
  if (knobs[1] % 8 < eldr::server::kSignatureSources) {
    info.pin = static_cast<SignatureSource>(knobs[1] % 8);
  }
  info.prompt_tokens = knobs[2] < 128 ? -1 : knobs[2] - 128;
  info.routed_experts_start = knobs[3] % 8;
  const std::string_view body(reinterpret_cast<const char*>(data), size - 4);
  eldr::PayloadOptions opts;
  opts.max_decoded_bytes = 1 << 20;
  auto r = eldr::server::ParsePrefillResponse(body, g, opts, info);
  if (!r) return 0;
  if (info.pin) ELDR_FUZZ_CHECK(r->source == SignatureSource::kNone || r->source == *info.pin);
  switch (r->source) {
    case SignatureSource::kNone:
      ELDR_FUZZ_CHECK(!r->picks && !r->counts);
      break;
    case SignatureSource::kEldrHooks:
      ELDR_FUZZ_CHECK(!r->picks && r->counts);
      ELDR_FUZZ_CHECK(r->counts->layers() == g.moe_layers && r->counts->experts() == g.experts);
      break;
    default:
      ELDR_FUZZ_CHECK(r->picks && !r->counts);
      break;
  }
  if (r->picks) {
    const auto& t = *r->picks;
    ELDR_FUZZ_CHECK(t.Counts().Total() ==
                    static_cast<uint64_t>(t.tokens()) * g.moe_layers * g.top_k);
    ELDR_FUZZ_CHECK(r->picks_first_token >= 0);
    if (r->prompt_tokens >= 0) {
      ELDR_FUZZ_CHECK(r->picks_first_token + t.tokens() <= r->prompt_tokens);
      if (r->source != SignatureSource::kVllm021) {
        ELDR_FUZZ_CHECK(r->picks_first_token + t.tokens() == r->prompt_tokens);
      }
    }
    if (r->source != SignatureSource::kVllm021) ELDR_FUZZ_CHECK(!r->partial);
  }
  if (info.prompt_tokens >= 0) ELDR_FUZZ_CHECK(r->prompt_tokens == info.prompt_tokens);
  if (!r->kv_transfer_params.empty()) {
    boost::json::error_code ec;
    const auto v = boost::json::parse(r->kv_transfer_params, ec);
    ELDR_FUZZ_CHECK(!ec && v.is_object());
    ELDR_FUZZ_CHECK(!v.get_object().contains("eldr_sig"));
  }
  return 0;
}
