#include "eldr/server/pd.h"

#include <boost/json.hpp>
#include <charconv>
#include <cmath>
#include <limits>
#include <vector>

#include "eldr/server/json_scan.h"

namespace eldr::server {

namespace json = boost::json;

namespace {

void AppendContent(const json::value& content, std::string* out) {
  if (content.is_string()) {
    out->append(content.get_string());
  } else if (content.is_array()) {
    for (const auto& part : content.get_array()) {
      if (!part.is_object()) continue;
      if (const auto* t = part.get_object().if_contains("text"); t && t->is_string()) {
        out->append(t->get_string());
      }
    }
  }
}

std::string Serialize(const json::object& o) { return json::serialize(o); }

// boost::json reads a number past double's range (1e400) as infinity and writes it back as
// `Infinity`, which is not JSON: a leg body built from such a request would be refused by the
// engine, or worse, read as inf. Iterative, since client bodies may nest deeply.
bool HasNonFinite(const json::value& root) {
  std::vector<const json::value*> todo{&root};
  while (!todo.empty()) {
    const json::value* v = todo.back();
    todo.pop_back();
    if (v->is_double()) {
      if (!std::isfinite(v->get_double())) return true;
    } else if (v->is_array()) {
      for (const auto& e : v->get_array()) todo.push_back(&e);
    } else if (v->is_object()) {
      for (const auto& kv : v->get_object()) todo.push_back(&kv.value());
    }
  }
  return false;
}

}  // namespace

Result<ClientRequest> ParseClientRequest(Endpoint endpoint, std::string_view body) {
  json::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec) return InvalidArgument("request body is not valid JSON: {}", ec.message());
  if (!v.is_object()) return InvalidArgument("request body must be a JSON object");
  if (HasNonFinite(v))
    return InvalidArgument(
        "request body has a number with an exponent beyond a double's range (such as 1e400)");
  ClientRequest r;
  r.endpoint = endpoint;
  r.body = std::move(v.get_object());
  if (const auto* s = r.body.if_contains("stream"); s && !s->is_null()) {
    if (!s->is_bool()) return InvalidArgument("'stream' must be a boolean");
    r.stream = s->get_bool();
  }
  if (const auto* n = r.body.if_contains("n"); n && !n->is_null()) {
    if (!n->is_int64() || n->get_int64() < 1) {
      return InvalidArgument("'n' must be a positive integer");
    }
    r.n = n->get_int64();
  }
  if (const auto* m = r.body.if_contains("model"); m && !m->is_null()) {
    if (!m->is_string()) return InvalidArgument("'model' must be a string");
    r.model = std::string(m->get_string());
  }
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (const auto* mt = r.body.if_contains(key); mt && !mt->is_null()) {
      if (!mt->is_int64() || mt->get_int64() < 1) {
        return InvalidArgument("'{}' must be a positive integer", key);
      }
    }
  }
  if (endpoint == Endpoint::kCompletions) {
    const auto* p = r.body.if_contains("prompt");
    if (!p) return InvalidArgument("missing 'prompt'");
    if (p->is_string()) {
      r.prompt_text = std::string(p->get_string());
    } else if (p->is_array()) {
      const auto& a = p->get_array();
      if (a.empty()) return InvalidArgument("'prompt' is an empty list");
      if (a.size() > 1 && !a[0].is_int64()) {
        return InvalidArgument("batched prompts are not supported by the PD proxy: send one");
      }
      const json::array* toks = &a;
      if (a.size() == 1 && a[0].is_array()) toks = &a[0].get_array();
      if (a.size() == 1 && a[0].is_string()) {
        r.prompt_text = std::string(a[0].get_string());
      } else {
        for (const auto& t : *toks) {
          if (!t.is_int64() || t.get_int64() < 0 ||
              t.get_int64() > std::numeric_limits<int32_t>::max()) {
            return InvalidArgument("'prompt' token ids must be non-negative 32-bit integers");
          }
          r.prompt_tokens.push_back(static_cast<int32_t>(t.get_int64()));
        }
        if (r.prompt_tokens.empty()) return InvalidArgument("'prompt' is empty");
      }
    } else {
      return InvalidArgument("'prompt' must be a string or a list of token ids");
    }
  } else {
    const auto* m = r.body.if_contains("messages");
    if (!m || !m->is_array() || m->get_array().empty()) {
      return InvalidArgument("'messages' must be a non-empty list");
    }
    for (const auto& msg : m->get_array()) {
      if (!msg.is_object()) return InvalidArgument("each message must be an object");
      if (const auto* c = msg.get_object().if_contains("content")) {
        AppendContent(*c, &r.prompt_text);
        r.prompt_text.push_back('\n');
      }
    }
  }
  return r;
}

std::string VllmPrefillBody(const ClientRequest& req, int64_t routed_experts_start) {
  json::object o = req.body;
  o["stream"] = false;
  o["max_tokens"] = 1;
  if (o.contains("max_completion_tokens")) o["max_completion_tokens"] = 1;
  o.erase("stream_options");
  o.erase("min_tokens");
  o.erase("min_completion_tokens");
  o["return_token_ids"] = true;
  if (routed_experts_start > 0) o["routed_experts_prompt_start"] = routed_experts_start;
  o["kv_transfer_params"] = json::object{
      {"do_remote_decode", true},    {"do_remote_prefill", false}, {"remote_engine_id", nullptr},
      {"remote_block_ids", nullptr}, {"remote_host", nullptr},     {"remote_port", nullptr}};
  return Serialize(o);
}

std::string VllmDecodeBody(const ClientRequest& req, std::string_view kv_transfer_params,
                           std::span<const int32_t> prompt_token_ids) {
  json::object o = req.body;
  if (!prompt_token_ids.empty() && req.endpoint == Endpoint::kCompletions) {
    json::array ids;
    ids.reserve(prompt_token_ids.size());
    for (int32_t t : prompt_token_ids) ids.push_back(t);
    o["prompt"] = std::move(ids);
  }
  if (!kv_transfer_params.empty()) {
    json::error_code ec;
    json::value kv = json::parse(kv_transfer_params, ec);
    if (!ec) o["kv_transfer_params"] = std::move(kv);
  }
  return Serialize(o);
}

namespace {
void AddBootstrap(json::object& o, const Bootstrap& b) {
  o["bootstrap_host"] = b.host;
  o["bootstrap_port"] = b.port;
  o["bootstrap_room"] = static_cast<int64_t>(b.room & 0x7FFFFFFFFFFFFFFFull);
}
}  // namespace

std::string SglangPrefillBody(const ClientRequest& req, const Bootstrap& b) {
  json::object o = req.body;
  AddBootstrap(o, b);
  o["stream"] = false;
  o.erase("stream_options");
  o["return_routed_experts"] = true;
  return Serialize(o);
}

std::string SglangDecodeBody(const ClientRequest& req, const Bootstrap& b,
                             bool ask_routed_experts) {
  json::object o = req.body;
  AddBootstrap(o, b);
  if (ask_routed_experts) o["return_routed_experts"] = true;
  return Serialize(o);
}

bool ClientAsksRoutedExperts(const ClientRequest& req) {
  const auto* v = req.body.if_contains("return_routed_experts");
  return v != nullptr && v->is_bool() && v->get_bool();
}

namespace {

Result<std::vector<int32_t>> ParseTokenIds(std::string_view raw) {
  json::error_code ec;
  json::value v = json::parse(raw, ec);
  if (ec || !v.is_array()) return InvalidArgument("prompt_token_ids is not a list");
  std::vector<int32_t> out;
  out.reserve(v.get_array().size());
  for (const auto& t : v.get_array()) {
    if (!t.is_int64() || t.get_int64() < 0 || t.get_int64() > std::numeric_limits<int32_t>::max()) {
      return InvalidArgument("prompt_token_ids holds a value that is not a token id");
    }
    out.push_back(static_cast<int32_t>(t.get_int64()));
  }
  return out;
}

bool IsNull(std::string_view raw) { return raw.empty() || raw == "null"; }

}  // namespace

std::string_view SignatureSourceName(SignatureSource s) {
  switch (s) {
    case SignatureSource::kVllm:
      return "vllm";
    case SignatureSource::kVllmList:
      return "vllm-list";
    case SignatureSource::kVllm021:
      return "vllm-0.21";
    case SignatureSource::kSglang:
      return "sglang";
    case SignatureSource::kEldrHooks:
      return "eldr-hooks";
    default:
      return "none";
  }
}

Result<std::optional<SignatureSource>> ParseSignatureSourcePin(std::string_view name) {
  if (name.empty() || name == "auto") return std::optional<SignatureSource>();
  for (int i = 1; i < kSignatureSources; ++i) {
    const auto s = static_cast<SignatureSource>(i);
    if (name == SignatureSourceName(s)) return std::optional<SignatureSource>(s);
  }
  return InvalidArgument(
      "signature_source '{}': expected auto, vllm, vllm-list, vllm-0.21, sglang or eldr-hooks",
      name);
}

namespace {

// Rows returned for a prompt of `prompt` tokens when rows from `start` were asked for: the prompt
// token of row 0, or nullopt when the count matches neither the request nor an engine that
// ignored the start field (vLLM before PR #51906 ignores unknown request fields).
std::optional<int64_t> FitRows(int64_t rows, int64_t prompt, int64_t start) {
  if (prompt < 0) return start == 0 ? std::optional<int64_t>(0) : std::nullopt;
  if (rows == prompt - start) return start;
  if (start > 0 && rows == prompt) return 0;
  return std::nullopt;
}

std::string RowMismatch(int64_t rows, int64_t prompt, int64_t start) {
  if (prompt < 0) return fmt::format("{} rows from {}, prompt length unknown", rows, start);
  return fmt::format("{} rows for a prompt of {} tokens (asked from token {})", rows, prompt,
                     start);
}

Result<std::string> Base64Field(std::string_view raw, std::string_view what) {
  if (raw.empty() || raw.front() != '"') return InvalidArgument("{} is not a string", what);
  std::string_view b64 = raw.substr(1, raw.size() - 2);
  // Base64 never needs escaping; only an encoder that escapes '/' forces a copy.
  if (b64.find('\\') == std::string_view::npos) return std::string(b64);
  return JsonStringValue(raw);
}

Result<int64_t> UsagePromptTokens(std::string_view usage) {
  if (IsNull(usage) || usage.front() != '{') return int64_t{-1};
  ELDR_ASSIGN_OR_RETURN(std::string_view pt, JsonMember(usage, "prompt_tokens"));
  if (pt.empty()) return int64_t{-1};
  int64_t v = -1;
  auto [p, ec] = std::from_chars(pt.data(), pt.data() + pt.size(), v);
  if (ec != std::errc() || v < 0) return InvalidArgument("usage.prompt_tokens is not a count");
  return v;
}

// kv_transfer_params without its eldr_sig member: the decode engine must not receive the 16 KB
// blob (the ELDR authors' proxy pops it as well).
Result<std::string> WithoutEldrSig(std::string_view kv) {
  json::error_code ec;
  json::value v = json::parse(kv, ec);
  if (ec || !v.is_object()) return InvalidArgument("kv_transfer_params is not an object");
  v.get_object().erase("eldr_sig");
  return json::serialize(v);
}

}  // namespace

Result<PrefillResult> ParsePrefillResponse(std::string_view body, const ModelGeometry& g,
                                           const PayloadOptions& opts,
                                           const PrefillRequestInfo& info) {
  PrefillResult r;
  // One pass over the body and one over the first choice: the payload string is scanned twice in
  // all, however many fields are looked up.
  static constexpr std::string_view kTop[] = {
      "error",    "kv_transfer_params",    "choices", "prompt_token_ids",
      "eldr_sig", "prompt_routed_experts", "sglext",  "usage"};
  std::string_view top[std::size(kTop)];
  ELDR_RETURN_IF_ERROR(JsonMembers(body, kTop, top));
  const std::string_view err = top[0];
  if (!IsNull(err)) {
    std::string msg(err.substr(0, 300));
    if (err.front() == '{') {
      if (auto m = JsonMember(err, "message"); m && !m->empty()) {
        if (auto s = JsonStringValue(*m)) msg = *s;
      }
    } else if (auto s = JsonStringValue(err)) {
      msg = *s;
    }
    return Unavailable("prefill returned an error: {}", msg);
  }
  std::string_view kv_sig;
  if (const std::string_view kv = top[1]; !IsNull(kv)) {
    if (kv.front() != '{') return InvalidArgument("kv_transfer_params is not an object");
    ELDR_ASSIGN_OR_RETURN(kv_sig, JsonMember(kv, "eldr_sig"));
    if (kv_sig.empty()) {
      // Forwarded to the decode leg as it came, so it must be JSON there: the scanner does not
      // check UTF-8 inside strings, and a decode body without its kv_transfer_params would be a
      // silent full prefill on the decoder (found by fuzz/prefill_fuzz.cc).
      json::error_code ec;
      (void)json::parse(kv, ec);
      if (ec) return InvalidArgument("kv_transfer_params is not valid JSON: {}", ec.message());
      r.kv_transfer_params = std::string(kv);
    } else {
      ELDR_ASSIGN_OR_RETURN(r.kv_transfer_params, WithoutEldrSig(kv));
    }
  }
  const std::string_view choices = top[2];
  if (choices.empty() || choices.front() != '[') {
    return InvalidArgument("prefill response has no 'choices' list");
  }
  ELDR_ASSIGN_OR_RETURN(std::string_view c0, JsonElement(choices, 0));
  if (c0.empty() || c0.front() != '{') {
    return InvalidArgument("prefill response has no choice object");
  }
  static constexpr std::string_view kChoice[] = {"finish_reason", "prompt_token_ids",
                                                 "routed_experts", "sgl_ext", "eldr_sig"};
  std::string_view ch[std::size(kChoice)];
  ELDR_RETURN_IF_ERROR(JsonMembers(c0, kChoice, ch));
  if (const std::string_view fr = ch[0]; !IsNull(fr) && fr.front() == '"') {
    if (auto s = JsonStringValue(fr)) r.finish_reason = *s;
  }
  // Token ids: vLLM puts prompt_token_ids on the choice (completions) or the response (chat).
  std::string_view ids = IsNull(ch[1]) ? top[3] : ch[1];
  if (!IsNull(ids)) {
    ELDR_ASSIGN_OR_RETURN(r.prompt_token_ids, ParseTokenIds(ids));
  }
  r.prompt_tokens = info.prompt_tokens;
  if (r.prompt_tokens < 0 && !r.prompt_token_ids.empty()) {
    r.prompt_tokens = static_cast<int64_t>(r.prompt_token_ids.size());
  }
  if (r.prompt_tokens < 0) {
    ELDR_ASSIGN_OR_RETURN(r.prompt_tokens, UsagePromptTokens(top[7]));
  }
  const int64_t start = info.routed_experts_start;
  const auto wants = [&](SignatureSource s) { return !info.pin || *info.pin == s; };
  // Accepts a decoded table whose rows fit the prompt; records why otherwise.
  const auto take = [&](PickTable t, SignatureSource s) {
    if (auto first = FitRows(t.tokens(), r.prompt_tokens, start)) {
      r.picks = std::move(t);
      r.picks_first_token = *first;
      r.source = s;
    } else {
      r.rejected = fmt::format("{}: {}", SignatureSourceName(s),
                               RowMismatch(t.tokens(), r.prompt_tokens, start));
    }
  };

  // vLLM 0.21: the prompt's rows at the response level (the choice's rows are generated tokens).
  if (const std::string_view pre = top[5]; wants(SignatureSource::kVllm021) && !IsNull(pre)) {
    if (pre.front() != '[') return InvalidArgument("prompt_routed_experts is not a list");
    auto l = ParsePromptPickListJson(pre, g, opts);
    if (!l) return tl::unexpected<Status>(l.error().WithContext("prompt_routed_experts"));
    if (r.prompt_tokens >= 0 && l->rows != r.prompt_tokens) {
      r.rejected = fmt::format("vllm-0.21: {}", RowMismatch(l->rows, r.prompt_tokens, 0));
      return r;
    }
    r.picks = std::move(l->picks);
    r.picks_first_token = l->leading_unknown;
    r.partial = l->other_unknown > 0;
    r.source = SignatureSource::kVllm021;
    return r;
  }
  if (const std::string_view re = ch[2];
      IsNull(top[5]) && !IsNull(re) &&
      (wants(SignatureSource::kVllm) || wants(SignatureSource::kVllmList))) {
    if (re.front() == '"' && wants(SignatureSource::kVllm)) {
      ELDR_ASSIGN_OR_RETURN(std::string b64, Base64Field(re, "routed_experts"));
      auto t = DecodeVllmRoutedExperts(b64, g, opts);
      if (!t) return tl::unexpected<Status>(t.error().WithContext("routed_experts"));
      take(std::move(*t), SignatureSource::kVllm);
      return r;
    }
    if (re.front() == '[' && wants(SignatureSource::kVllmList)) {
      auto t = ParsePickListJson(re, g, opts);
      if (!t) return tl::unexpected<Status>(t.error().WithContext("routed_experts"));
      take(std::move(*t), SignatureSource::kVllmList);
      return r;
    }
    if (re.front() != '"' && re.front() != '[') {
      return InvalidArgument("routed_experts is neither a base64 string nor a list");
    }
  }
  // SGLang: response-level sglext (PR #17648), or the per-choice sgl_ext of an early variant.
  std::string_view sre;
  for (const std::string_view ext : {top[6], ch[3]}) {
    if (IsNull(ext) || !wants(SignatureSource::kSglang)) continue;
    if (ext.front() != '{') return InvalidArgument("sglext is not an object");
    ELDR_ASSIGN_OR_RETURN(sre, JsonMember(ext, "routed_experts"));
    if (!IsNull(sre)) break;
  }
  if (!IsNull(sre)) {
    ELDR_ASSIGN_OR_RETURN(std::string b64, Base64Field(sre, "sglext.routed_experts"));
    // SGLang sends every hidden layer; a build that sent MoE layers only is accepted too. The row
    // count against the prompt decides when both shapes divide the payload.
    PayloadOptions o = opts;
    std::vector<int> shapes = {g.total_layers};
    if (g.moe_layers != g.total_layers) shapes.push_back(g.moe_layers);
    std::optional<Status> shape_error;
    for (const int layers : shapes) {
      o.payload_layers = layers;
      auto t = DecodeSglangRoutedExperts(b64, g, o);
      if (!t) {
        // Only a shape that does not divide the payload may be tried the other way.
        if (t.error().code() != StatusCode::kInvalidArgument || layers == shapes.back()) {
          return tl::unexpected<Status>(
              (shape_error ? *shape_error : t.error()).WithContext("sglext.routed_experts"));
        }
        shape_error = t.error();
        continue;
      }
      take(std::move(*t), SignatureSource::kSglang);
      if (r.picks) {
        r.rejected.clear();
        break;
      }
    }
    return r;
  }
  // ELDR hooks: counts in kv_transfer_params (or, in other revisions, the choice or response).
  std::string_view sig = kv_sig;
  if (IsNull(sig)) sig = IsNull(ch[4]) ? top[4] : ch[4];
  if (!IsNull(sig) && wants(SignatureSource::kEldrHooks)) {
    ELDR_ASSIGN_OR_RETURN(std::string s, JsonStringValue(sig));
    auto c = DecodeEldrSig(s, g);
    if (!c) return tl::unexpected<Status>(c.error().WithContext("eldr_sig"));
    r.counts = std::move(*c);
    r.source = SignatureSource::kEldrHooks;
  }
  return r;
}

std::string UpstreamPostHead(std::string_view path, std::string_view host, int port,
                             std::string_view request_id, int dp_rank, size_t content_length,
                             std::string_view api_key) {
  std::string h;
  h.reserve(160 + path.size() + host.size() + request_id.size());
  fmt::format_to(std::back_inserter(h),
                 "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n"
                 "X-Request-Id: {}\r\n",
                 path, net::HostHeaderValue(host, port), request_id);
  if (dp_rank >= 0) fmt::format_to(std::back_inserter(h), "X-data-parallel-rank: {}\r\n", dp_rank);
  if (!api_key.empty()) {
    fmt::format_to(std::back_inserter(h), "Authorization: Bearer {}\r\n", api_key);
  }
  fmt::format_to(std::back_inserter(h), "Content-Length: {}\r\n\r\n", content_length);
  return h;
}

}  // namespace eldr::server
