#include "eldr/sim/trace_import.h"

#include <algorithm>
#include <boost/json.hpp>
#include <charconv>

namespace eldr::sim {
namespace {

// Limits of the trace format (docs/formats.md) that ParseTrace enforces.
constexpr int kMaxTokens = 1 << 20;
constexpr int kMaxPrompt = 1 << 24;
constexpr size_t kMaxLabel = 0xFFFF;

}  // namespace

std::string DatasetFamily(std::string_view dataset) {
  for (std::string_view f : {"mmlu_pro", "mmlu", "gpqa", "sorry_bench", "Polyglot", "tulu3"}) {
    if (dataset.substr(0, f.size()) == f) {
      std::string s(f);
      std::transform(s.begin(), s.end(), s.begin(), ::tolower);
      return s;
    }
  }
  return std::string(dataset);
}

// A JSON value that is not an object with a 'router_data' member (an aggregate or other
// non-request file) is not a request.
Result<ImportedRequest> ImportFingerprintRequest(std::string_view text, const ModelGeometry& g,
                                                 int max_tokens) {
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec) return InvalidArgument("not valid JSON: {}", ec.message());
  ImportedRequest out;
  if (!v.is_object() || !v.get_object().contains("router_data")) return out;
  const auto& o = v.get_object();
  TraceRequest& r = out.request;
  if (const auto* d = o.if_contains("dataset"); d && d->is_string()) {
    r.label = DatasetFamily(std::string_view(d->get_string()));
    if (r.label.size() > kMaxLabel) {
      return InvalidArgument("dataset name of {} bytes is longer than the {} a trace stores",
                             r.label.size(), kMaxLabel);
    }
  }
  const auto* rd = o.if_contains("router_data");
  if (!rd->is_array()) return InvalidArgument("'router_data' is not an array");
  const size_t row = static_cast<size_t>(g.moe_layers) * g.top_k;
  for (const auto& entry : rd->get_array()) {
    if (max_tokens > 0 && r.tokens >= max_tokens) break;
    if (!entry.is_object() || entry.get_object().size() != 1) {
      return InvalidArgument("router_data entry {} is not a one-key object", r.tokens);
    }
    if (r.tokens >= kMaxTokens) {
      return InvalidArgument(
          "more than {} routed tokens (the trace format's limit); use "
          "--max-tokens",
          kMaxTokens);
    }
    const auto& [key, layers] = *entry.get_object().begin();
    const std::string_view k(key.data(), key.size());
    if (r.tokens == 0) {  // "token_<P>": the first routed position = the prompt length
      int p = -1;
      const auto [end, err] =
          std::from_chars(k.data() + std::min<size_t>(6, k.size()), k.data() + k.size(), p);
      if (k.substr(0, 6) != "token_" || err != std::errc() || end != k.data() + k.size() || p < 0) {
        return InvalidArgument("unexpected key '{}' (want token_<prompt length>)", k);
      }
      if (p > kMaxPrompt) {
        return InvalidArgument("'{}': prompt length above the trace format's {}", k, kMaxPrompt);
      }
      r.prompt_tokens = p;
    }
    if (!layers.is_object()) {
      return InvalidArgument("token {} ('{}'): layers are not an object", r.tokens, k);
    }
    // The token's shape first (every layer, top-k picks each), then the ids.
    std::vector<const boost::json::array*> sel(g.moe_layers);
    for (int l = 0; l < g.moe_layers; ++l) {
      const auto* layer = layers.get_object().if_contains(fmt::format("layer_{}", l));
      const auto* s = layer && layer->is_object()
                          ? layer->get_object().if_contains("selected_experts")
                          : nullptr;
      if (!s || !s->is_array() || s->get_array().size() != static_cast<size_t>(g.top_k)) {
        return InvalidArgument("token {} ('{}') layer {}: need {} selected_experts", r.tokens, k, l,
                               g.top_k);
      }
      sel[l] = &s->get_array();
    }
    const size_t base = r.picks.size();
    r.picks.resize(base + row);
    for (int l = 0; l < g.moe_layers; ++l) {
      uint16_t* p = r.picks.data() + base + static_cast<size_t>(l) * g.top_k;
      for (int j = 0; j < g.top_k; ++j) {
        const auto& e = (*sel[l])[j];
        if (!e.is_int64() || e.get_int64() < 0 || e.get_int64() >= g.experts) {
          return OutOfRange("token {} ('{}') layer {}: expert id {} outside [0, {})", r.tokens, k,
                            l, boost::json::serialize(e), g.experts);
        }
        p[j] = static_cast<uint16_t>(e.get_int64());
        for (int i = 0; i < j; ++i) {
          if (p[i] == p[j]) {
            return InvalidArgument("token {} ('{}') layer {}: expert {} repeated in the top-{}",
                                   r.tokens, k, l, p[j], g.top_k);
          }
        }
      }
    }
    ++r.tokens;
  }
  out.is_request = true;
  return out;
}

}  // namespace eldr::sim
