// The engine emulator: one of the three translation units that include Boost.Beast.
#include "eldr/emu/emulator.h"

#include <xxhash.h>

#include <boost/json.hpp>
#include <csignal>
#include <ctime>
#include <deque>
#include <fstream>
#include <functional>

#include "../net/http.h"
#include "eldr/net/wire.h"
#include "eldr/payload.h"

namespace eldr::emu {

namespace json = boost::json;

namespace {

constexpr std::string_view kEngines[] = {"vllm-0.22", "vllm-0.21", "sglang", "eldr-hooks"};

// vLLM's ErrorResponse: {"error":{"message","type","param","code"}}.
std::string VllmError(int status, std::string_view message, std::string_view type,
                      const json::value& param = nullptr) {
  return json::serialize(json::object{
      {"error",
       json::object{{"message", message}, {"type", type}, {"param", param}, {"code", status}}}});
}

Error BadField(std::string_view name, std::string_view want) {
  return InvalidArgument("'{}' must be {}", name, want);
}

Result<bool> OptBool(const json::object& o, std::string_view k) {
  const json::value* v = o.if_contains(k);
  if (!v || v->is_null()) return false;
  if (!v->is_bool()) return BadField(k, "a boolean");
  return v->get_bool();
}

Result<std::optional<int64_t>> OptInt(const json::object& o, std::string_view k) {
  const json::value* v = o.if_contains(k);
  if (!v || v->is_null()) return std::optional<int64_t>{};
  if (v->is_int64()) return std::optional<int64_t>{v->get_int64()};
  if (v->is_uint64() && v->get_uint64() <= INT64_MAX) {
    return std::optional<int64_t>{static_cast<int64_t>(v->get_uint64())};
  }
  return BadField(k, "an integer");
}

Status AppendText(const json::value& content, std::string* out) {
  if (content.is_null()) return Status::Ok();
  if (content.is_string()) {
    out->append(content.get_string());
    return Status::Ok();
  }
  if (!content.is_array()) return BadField("content", "a string or a list of parts");
  for (const auto& part : content.get_array()) {
    if (!part.is_object()) return BadField("content", "a list of objects");
    if (const auto* t = part.get_object().if_contains("text"); t && t->is_string()) {
      out->append(t->get_string());
      out->push_back('\n');
    }
  }
  return Status::Ok();
}

Result<std::vector<int32_t>> TokenIds(const json::array& a, std::string_view what) {
  std::vector<int32_t> ids;
  ids.reserve(a.size());
  for (const auto& t : a) {
    if (!t.is_int64() || t.get_int64() < 0 || t.get_int64() > INT32_MAX) {
      return BadField(what, "a list of token ids");
    }
    ids.push_back(static_cast<int32_t>(t.get_int64()));
  }
  return ids;
}

// Picks of prompt rows [start, T) laid out over `layers` payload layers: the MoE layers at their
// model index, dense layers 0 (the engines' capture buffers start zeroed and only MoE layers
// write them). The hidden-layer index of each MoE layer comes straight from the geometry's
// fields (not from the decoders' helpers, so that this stays an independent oracle).
std::vector<int32_t> Layered(const ModelGeometry& g, const std::vector<int32_t>& picks) {
  const size_t k = static_cast<size_t>(g.top_k);
  const size_t in_row = static_cast<size_t>(g.moe_layers) * k;
  const size_t out_row = static_cast<size_t>(g.total_layers) * k;
  const size_t rows = in_row ? picks.size() / in_row : 0;
  std::vector<int32_t> out(rows * out_row, 0);
  std::vector<size_t> at(g.moe_layers);  // item offset of MoE layer l in an output row
  for (int l = 0; l < g.moe_layers; ++l) {
    const int hidden = g.moe_layer_ids.empty() ? g.first_moe_layer + l : g.moe_layer_ids[l];
    at[l] = static_cast<size_t>(hidden) * k;
  }
  for (size_t t = 0; t < rows; ++t) {
    for (int l = 0; l < g.moe_layers; ++l) {
      std::copy_n(picks.begin() + t * in_row + l * k, k, out.begin() + t * out_row + at[l]);
    }
  }
  return out;
}

std::vector<int32_t> LayeredPicks(const EngineModel& m, std::span<const int32_t> tokens,
                                  int64_t start) {
  return Layered(m.geometry(), m.PromptPicks(tokens, start));
}

std::string NpyPayload(const EngineModel& m, std::span<const int32_t> tokens, int64_t start) {
  const ModelGeometry& g = m.geometry();
  const std::vector<int32_t> picks = LayeredPicks(m, tokens, start);
  const int item = g.experts <= 256 ? 1 : 2;
  std::vector<uint8_t> data(picks.size() * item);
  for (size_t i = 0; i < picks.size(); ++i) {
    data[i * item] = static_cast<uint8_t>(picks[i] & 0xFF);
    if (item == 2) data[i * item + 1] = static_cast<uint8_t>(picks[i] >> 8);
  }
  const int64_t shape[3] = {static_cast<int64_t>(tokens.size()) - start, g.total_layers, g.top_k};
  return Base64Encode(MakeNpy('u', item, shape, data));
}

std::string Int32Base64(const std::vector<int32_t>& picks) {
  std::vector<uint8_t> data(picks.size() * 4);
  for (size_t i = 0; i < picks.size(); ++i) {
    const auto v = static_cast<uint32_t>(picks[i]);
    for (int b = 0; b < 4; ++b) data[i * 4 + b] = static_cast<uint8_t>(v >> (8 * b));
  }
  return Base64Encode(data);
}

std::string Int32Payload(const EngineModel& m, std::span<const int32_t> tokens, int64_t start) {
  return Int32Base64(LayeredPicks(m, tokens, start));
}

// What a PD decode engine returns for SGLang's sglext.routed_experts: rows [start, T) of the
// prompt, which it never computed (its capture buffer holds zeros there), then one row per
// generated token but the last, over every hidden layer.
std::string DecodeInt32Payload(const EngineModel& m, int archetype, int64_t T, int64_t start,
                               int64_t generated) {
  const ModelGeometry& g = m.geometry();
  std::vector<int32_t> rows(static_cast<size_t>(T - start) * g.total_layers * g.top_k, 0);
  const std::vector<int32_t> gen =
      Layered(g, m.DecodePicks(archetype, std::max<int64_t>(generated - 1, 0)));
  rows.insert(rows.end(), gen.begin(), gen.end());
  return Int32Base64(rows);
}

// vLLM 0.21's choice-level routed_experts on a decode engine: nested lists of the generated
// tokens but the last, [generated - 1][num_hidden_layers][top_k].
std::string DecodeListPayload(const EngineModel& m, int archetype, int64_t generated) {
  const ModelGeometry& g = m.geometry();
  const int64_t n = std::max<int64_t>(generated - 1, 0);
  const std::vector<int32_t> picks = Layered(g, m.DecodePicks(archetype, n));
  const int L = g.total_layers, K = g.top_k;
  std::string out = "[";
  for (int64_t t = 0; t < n; ++t) {
    out += t ? ",[" : "[";
    for (int l = 0; l < L; ++l) {
      out += l ? ",[" : "[";
      for (int j = 0; j < K; ++j) {
        if (j) out += ',';
        out += std::to_string(picks[(t * L + l) * K + j]);
      }
      out += ']';
    }
    out += ']';
  }
  out += ']';
  return out;
}

std::string EldrSigPayload(const EngineModel& m, std::span<const int32_t> tokens) {
  const ModelGeometry& g = m.geometry();
  const std::vector<int32_t> picks = m.PromptPicks(tokens, 0);
  std::vector<int32_t> counts(static_cast<size_t>(g.moe_layers) * g.experts);
  const size_t row = static_cast<size_t>(g.moe_layers) * g.top_k;
  for (size_t i = 0; i < picks.size(); ++i) {
    const size_t l = (i % row) / g.top_k;
    ++counts[l * g.experts + picks[i]];
  }
  std::vector<uint8_t> data(counts.size() * 2);
  for (size_t i = 0; i < counts.size(); ++i) {
    const auto v = static_cast<uint16_t>(std::min<int32_t>(counts[i], INT16_MAX));
    data[2 * i] = static_cast<uint8_t>(v & 0xFF);
    data[2 * i + 1] = static_cast<uint8_t>(v >> 8);
  }
  return Base64Encode(data);
}

// Nested lists [T][total_layers][top_k], built as text (never a tree); the first `cached` rows
// are all -1.
std::string ListPayload(const EngineModel& m, std::span<const int32_t> tokens, int64_t cached) {
  const ModelGeometry& g = m.geometry();
  const std::vector<int32_t> picks = LayeredPicks(m, tokens, 0);
  const int L = g.total_layers, K = g.top_k;
  std::string out = "[";
  for (int64_t t = 0; t < static_cast<int64_t>(tokens.size()); ++t) {
    out += t ? ",[" : "[";
    for (int l = 0; l < L; ++l) {
      out += l ? ",[" : "[";
      for (int j = 0; j < K; ++j) {
        if (j) out += ',';
        out += t < cached ? std::string("-1") : std::to_string(picks[(t * L + l) * K + j]);
      }
      out += ']';
    }
    out += ']';
  }
  out += ']';
  return out;
}

// choices[0] of an answer (`stream` false: the whole text) or of a stream event, in the
// completions or the chat shape.
json::object Choice(bool chat, bool stream, std::string_view text, bool last) {
  json::object c{{"index", 0}};
  if (!chat) {
    c["text"] = text;
  } else if (stream) {
    c["delta"] = json::object{{"content", text}};
  } else {
    c["message"] = json::object{{"role", "assistant"}, {"content", text}};
  }
  if (!stream) c["logprobs"] = nullptr;
  if (last || !stream) {
    c["finish_reason"] = last ? json::value("length") : json::value(nullptr);
  }
  return c;
}

json::object Usage(int64_t prompt, int64_t completion) {
  return json::object{{"prompt_tokens", prompt},
                      {"completion_tokens", completion},
                      {"total_tokens", prompt + completion}};
}

}  // namespace

// ---- I/O-free parts ----------------------------------------------------------------------------

Result<EmuRequest> ParseEmuRequest(bool chat, std::string_view body, const EngineModel& model,
                                   int64_t default_max_tokens) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec) return InvalidArgument("request body is not valid JSON: {}", ec.message());
  if (!v.is_object()) return InvalidArgument("request body must be a JSON object");
  const json::object& o = v.get_object();
  EmuRequest r;
  r.chat = chat;
  ELDR_ASSIGN_OR_RETURN(r.stream, OptBool(o, "stream"));
  if (const auto* so = o.if_contains("stream_options"); so && so->is_object()) {
    ELDR_ASSIGN_OR_RETURN(r.include_usage, OptBool(so->get_object(), "include_usage"));
  }
  if (const auto* m = o.if_contains("model"); m && !m->is_null()) {
    if (!m->is_string()) return BadField("model", "a string");
    r.model = std::string(m->get_string());
  }
  std::string text;
  if (chat) {
    const auto* msgs = o.if_contains("messages");
    if (!msgs || !msgs->is_array() || msgs->get_array().empty()) {
      return BadField("messages", "a non-empty list");
    }
    for (const auto& msg : msgs->get_array()) {
      if (!msg.is_object()) return BadField("messages", "a list of objects");
      if (const auto* c = msg.get_object().if_contains("content")) {
        ELDR_RETURN_IF_ERROR(AppendText(*c, &text));
      }
      text.push_back('\n');
    }
    r.tokens = model.Tokenize(text);
  } else {
    const auto* p = o.if_contains("prompt");
    if (!p) return BadField("prompt", "given");
    if (p->is_string()) {
      r.tokens = model.Tokenize(p->get_string());
    } else if (p->is_array() && !p->get_array().empty()) {
      // One prompt only: a string, a list of token ids, or a one-element list of either.
      const json::array& a = p->get_array();
      if (a[0].is_string()) {
        r.tokens = model.Tokenize(a[0].get_string());
      } else if (a[0].is_array()) {
        ELDR_ASSIGN_OR_RETURN(r.tokens, TokenIds(a[0].get_array(), "prompt"));
      } else {
        ELDR_ASSIGN_OR_RETURN(r.tokens, TokenIds(a, "prompt"));
      }
    } else {
      return BadField("prompt", "a string or a non-empty list");
    }
  }
  if (r.tokens.empty()) r.tokens.push_back(0);
  r.max_tokens = default_max_tokens;
  for (std::string_view k : {"max_tokens", "max_completion_tokens"}) {
    ELDR_ASSIGN_OR_RETURN(std::optional<int64_t> mt, OptInt(o, k));
    if (mt) {
      if (*mt < 1) return BadField(k, "at least 1");
      r.max_tokens = *mt;
    }
  }
  ELDR_ASSIGN_OR_RETURN(r.return_token_ids, OptBool(o, "return_token_ids"));
  ELDR_ASSIGN_OR_RETURN(r.return_routed_experts, OptBool(o, "return_routed_experts"));
  ELDR_ASSIGN_OR_RETURN(r.routed_experts_prompt_start, OptInt(o, "routed_experts_prompt_start"));
  ELDR_ASSIGN_OR_RETURN(r.routed_experts_start_len, OptInt(o, "routed_experts_start_len"));
  if (r.routed_experts_prompt_start && *r.routed_experts_prompt_start < 0) {
    return BadField("routed_experts_prompt_start", ">= 0");
  }
  if (r.routed_experts_start_len && *r.routed_experts_start_len < 0) {
    return BadField("routed_experts_start_len", ">= 0");
  }
  r.bootstrap = o.contains("bootstrap_room");
  if (const auto* kv = o.if_contains("kv_transfer_params"); kv && kv->is_object()) {
    const json::object& k = kv->get_object();
    ELDR_ASSIGN_OR_RETURN(r.do_remote_decode, OptBool(k, "do_remote_decode"));
    ELDR_ASSIGN_OR_RETURN(r.do_remote_prefill, OptBool(k, "do_remote_prefill"));
    r.kv_has_eldr_sig = k.contains("eldr_sig");
    if (const auto* rr = k.if_contains("remote_request_id"); rr && rr->is_string()) {
      r.remote_request_id = std::string(rr->get_string());
    }
  }
  if (const auto* f = o.if_contains("emu_fault"); f && !f->is_null()) {
    if (!f->is_string() || !IsEmuFault(f->get_string())) {
      return BadField("emu_fault", "one of malformed, error500, error400, garbage");
    }
    r.fault = std::string(f->get_string());
  }
  return r;
}

PrefixCache::PrefixCache(int max_blocks, int block_size)
    : max_blocks_(std::max(1, max_blocks)), block_size_(std::max(1, block_size)) {}

int64_t PrefixCache::LookupAndInsert(std::span<const int32_t> tokens) {
  const size_t blocks = tokens.size() / block_size_;
  // The last prompt token is always recomputed, so only blocks ending before it may hit.
  const size_t hittable = tokens.empty() ? 0 : (tokens.size() - 1) / block_size_;
  uint64_t h = 0;
  size_t hit = 0;
  bool prefix = true;
  for (size_t b = 0; b < blocks; ++b) {
    h = XXH3_64bits_withSeed(tokens.data() + b * block_size_, block_size_ * sizeof(int32_t), h);
    auto it = index_.find(h);
    if (it != index_.end()) {
      if (prefix && b < hittable) hit = b + 1;
      lru_.splice(lru_.begin(), lru_, it->second);
    } else {
      prefix = false;
      lru_.push_front(h);
      index_[h] = lru_.begin();
      if (static_cast<int>(lru_.size()) > max_blocks_) {
        index_.erase(lru_.back());
        lru_.pop_back();
      }
    }
  }
  return static_cast<int64_t>(hit) * block_size_;
}

bool IsEmuFault(std::string_view fault) {
  return fault == "malformed" || fault == "error500" || fault == "error400" || fault == "garbage";
}

HttpAnswer BuildPrefillAnswer(const EmulatorOptions& o, const EngineModel& model,
                              const EmuRequest& r, const PrefillContext& c) {
  const std::string engine = o.ResolvedEngine();
  const auto T = static_cast<int64_t>(r.tokens.size());
  // The request's own fault (emu_fault) wins over the engine's.
  const std::string_view fault = r.fault.empty() ? std::string_view(o.fault) : r.fault;
  const bool malformed = fault == "malformed";
  if (fault == "error500") {
    return {500, VllmError(500, "emulated engine failure", "InternalServerError")};
  }
  if (fault == "garbage") return {200, "<html><body>502 Bad Gateway</body></html>"};
  if (fault == "error400") {
    const int64_t total = T + r.max_tokens;
    return {400, VllmError(400,
                           fmt::format("This model's maximum context length is 32768 tokens. "
                                       "However, you requested {} output tokens and your prompt "
                                       "contains {} input tokens, for a total of {} tokens. Please "
                                       "reduce the length of the input prompt or the number of "
                                       "requested output tokens.",
                                       r.max_tokens, T, total),
                           "BadRequestError", "input_tokens")};
  }
  int64_t start = 0;
  if (engine == "sglang" && r.return_routed_experts && r.routed_experts_start_len) {
    start = *r.routed_experts_start_len;
    if (start > T) {
      return {400, VllmError(400,
                             fmt::format("routed_experts_start_len ({}) is higher than the number "
                                         "of input tokens ({}).",
                                         start, T),
                             "BadRequestError")};
    }
  }
  if (engine == "vllm-0.22" && o.honour_prompt_start && r.routed_experts_prompt_start) {
    start = std::min(*r.routed_experts_prompt_start, T);
  }
  json::object choice = Choice(r.chat, false, " tok0", true);
  json::object res{{"id", c.id},
                   {"object", r.chat ? "chat.completion" : "text_completion"},
                   {"created", c.created},
                   {"model", c.model_name}};
  if (r.return_token_ids) {
    json::array ids;
    for (int32_t t : r.tokens) ids.push_back(t);
    // vLLM: completions carry the prompt ids on the choice, chat on the response.
    if (r.chat) {
      res["prompt_token_ids"] = std::move(ids);
    } else {
      choice["prompt_token_ids"] = std::move(ids);
    }
    choice["token_ids"] = json::array{model.Tokenize("tok0").front()};
  }
  // Payloads are spliced in as text after serialising the small object.
  std::string payload;
  if (!r.bootstrap) {
    json::array blocks;
    for (int64_t b = 0; b < (T + 15) / 16; ++b) blocks.push_back(b);
    json::object kv{{"do_remote_prefill", true},
                    {"do_remote_decode", false},
                    {"remote_block_ids", std::move(blocks)},
                    {"remote_engine_id", c.engine_id},
                    {"remote_request_id", c.id},
                    {"remote_host", c.host},
                    {"remote_port", c.port},
                    {"tp_size", 1}};
    if (engine == "eldr-hooks") {
      payload =
          malformed ? "\"!!! not base64 !!!\"" : "\"" + EldrSigPayload(model, r.tokens) + "\"";
      kv["eldr_sig"] = "@@PAYLOAD@@";
    }
    res["kv_transfer_params"] = std::move(kv);
  }
  if (engine == "vllm-0.22") {
    payload =
        malformed ? "\"!!! not base64 !!!\"" : "\"" + NpyPayload(model, r.tokens, start) + "\"";
    choice["routed_experts"] = "@@PAYLOAD@@";
  } else if (engine == "vllm-0.21") {
    payload = malformed ? "[[[\"x\"]]]" : ListPayload(model, r.tokens, c.cached_tokens);
    res["prompt_routed_experts"] = "@@PAYLOAD@@";
    choice["routed_experts"] = json::array{};  // one generated token: completion - 1 = 0 rows
  } else if (engine == "sglang" && r.return_routed_experts) {
    payload =
        malformed ? "\"!!! not base64 !!!\"" : "\"" + Int32Payload(model, r.tokens, start) + "\"";
    res["sglext"] = json::object{{"routed_experts", "@@PAYLOAD@@"}};
  }
  res["choices"] = json::array{std::move(choice)};
  res["usage"] = Usage(T, 1);
  std::string body = json::serialize(res);
  if (!payload.empty()) {
    static constexpr std::string_view kMarker = "\"@@PAYLOAD@@\"";
    body.replace(body.find(kMarker), kMarker.size(), payload);
  }
  return {200, std::move(body)};
}

std::string_view ResponseModelName(std::string_view backend, const EmuRequest& r,
                                   std::string_view served_name) {
  if (!r.model.empty()) return r.model;
  return backend == "sglang" ? "default" : served_name;
}

std::string EmulatorOptions::ResolvedEngine() const {
  if (!engine.empty()) return engine;
  return backend == "sglang" ? "sglang" : "vllm-0.22";
}

Status EmulatorOptions::Validate() const {
  if (role != "prefill" && role != "decode")
    return InvalidArgument("role must be prefill or decode");
  if (backend != "vllm" && backend != "sglang")
    return InvalidArgument("backend must be vllm or sglang");
  const std::string e = ResolvedEngine();
  if (std::find(std::begin(kEngines), std::end(kEngines), e) == std::end(kEngines)) {
    return InvalidArgument("engine must be vllm-0.22, vllm-0.21, sglang or eldr-hooks");
  }
  if (e == "eldr-hooks" && backend != "vllm") {
    return InvalidArgument(
        "engine eldr-hooks needs backend vllm (its counts ride kv_transfer_params)");
  }
  for (const auto& n : served_model_names) {
    if (n.empty()) return InvalidArgument("served model names must not be empty");
  }
  if (prefix_cache_blocks < 1) return InvalidArgument("prefix_cache_blocks must be >= 1");
  if (!(time_scale >= 0) || !std::isfinite(time_scale))
    return InvalidArgument("time_scale must be >= 0");
  if (max_batch < 1) return InvalidArgument("max_batch must be >= 1");
  if (default_max_tokens < 1) return InvalidArgument("default_max_tokens must be >= 1");
  if (!fault.empty() && !IsEmuFault(fault)) {
    return InvalidArgument("fault must be malformed, error500, error400 or garbage");
  }
  if (port < 0 || port > 65535) return InvalidArgument("port out of range");
  return Status::Ok();
}

namespace {

using namespace eldr::net;  // NOLINT(google-build-using-namespace): Beast vocabulary

struct Seq {
  explicit Seq(asio::any_io_executor ex) : signal(ex) {}
  int archetype = 0;
  int64_t generated = 0, context = 0, max_tokens = 1;
  bool cancelled = false, done = false;
  asio::steady_timer signal;
};

// Notices a client that went away while its request is being worked on: the socket turns
// readable with nothing to read (EOF). Bytes of a pipelined next request end the watch instead.
struct PeerWatch {
  bool gone = false, finished = false;
  std::function<void()> on_gone;
};

awaitable<void> WatchPeer(tcp::socket& sock, std::shared_ptr<PeerWatch> w) {
  auto [ec] = co_await sock.async_wait(tcp::socket::wait_read, kTuple);
  if (ec || w->finished) co_return;
  boost::system::error_code aec;
  if (sock.available(aec) == 0) {
    w->gone = true;
    if (w->on_gone) w->on_gone();
  }
}

int64_t UnixNow() { return static_cast<int64_t>(std::time(nullptr)); }

class EmulatorImpl final : public Emulator {
 public:
  EmulatorImpl(EmulatorOptions o, std::shared_ptr<const EngineModel> m)
      : o_(std::move(o)),
        m_(std::move(m)),
        acceptor_(ioc_),
        wake_(ioc_),
        prefix_cache_(o_.prefix_cache_blocks) {}

  Status Init() {
    ELDR_RETURN_IF_ERROR(o_.Validate());
    o_.engine = o_.ResolvedEngine();
    if (o_.served_model_names.empty()) {
      accepted_ = {m_->geometry().name, m_->geometry().display_name};
    } else {
      accepted_ = o_.served_model_names;
    }
    ELDR_ASSIGN_OR_RETURN(tcp::endpoint ep, Resolve(o_.host, o_.port));
    boost::system::error_code ec;
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return Unavailable("cannot listen on {}:{}: {}", o_.host, o_.port, ec.message());
    port_ = acceptor_.local_endpoint().port();
    engine_id_ = fmt::format("emu-{}-{}", o_.role, port_);
    return Status::Ok();
  }

  int port() const override { return port_; }

  Status Run() override {
    asio::signal_set signals(ioc_, SIGINT, SIGTERM);
    signals.async_wait([this](boost::system::error_code ec, int) {
      if (!ec) Shutdown();
    });
    asio::co_spawn(ioc_, Accept(), asio::detached);
    asio::co_spawn(ioc_, BatchLoop(), asio::detached);
    ioc_.run();
    return Status::Ok();
  }

  void Shutdown() override {
    asio::post(ioc_, [this] { ioc_.stop(); });
  }

 private:
  double Scaled(double us) const { return us * o_.time_scale; }
  const std::string& ServedName() const { return accepted_.front(); }
  std::string_view ModelNameFor(const EmuRequest& r) const {
    return ResponseModelName(o_.backend, r, ServedName());
  }

  awaitable<void> Accept() {
    for (;;) {
      auto [ec, sock] = co_await acceptor_.async_accept(kTuple);
      if (ec) {
        if (ec == asio::error::operation_aborted) co_return;
        continue;
      }
      asio::co_spawn(ioc_, Session(std::move(sock)), asio::detached);
    }
  }

  awaitable<void> Session(tcp::socket sock) {
    beast::tcp_stream s(std::move(sock));
    SetNoDelay(s);
    beast::flat_buffer buf;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(uint64_t{64} << 20);
      auto [ec, n] = co_await http::async_read(s, buf, parser, kTuple);
      if (ec) break;
      auto req = parser.release();
      const bool keep = req.keep_alive();
      // Pipelined bytes already buffered mean the client is still there.
      auto watch = std::make_shared<PeerWatch>();
      if (buf.size() == 0) asio::co_spawn(ioc_, WatchPeer(s.socket(), watch), asio::detached);
      const bool ok = co_await Handle(s, req, *watch);
      watch->finished = true;
      watch->on_gone = nullptr;
      if (!ok || !keep || watch->gone) break;
      boost::system::error_code cec;
      s.socket().cancel(cec);
    }
    boost::system::error_code ec;
    s.socket().shutdown(tcp::socket::shutdown_both, ec);
  }

  awaitable<bool> Write(beast::tcp_stream& s, int status, std::string body,
                        std::string_view type = "application/json") {
    http::response<http::string_body> res{static_cast<http::status>(status), 11};
    res.set(http::field::content_type, type);
    res.keep_alive(true);
    res.body() = std::move(body);
    res.prepare_payload();
    auto [ec, n] = co_await http::async_write(s, res, kTuple);
    co_return !ec;
  }

  std::string ModelsJson() const {
    json::array data;
    for (const auto& name : o_.served_model_names.empty() ? std::vector<std::string>{ServedName()}
                                                          : o_.served_model_names) {
      data.push_back(json::object{{"id", name},
                                  {"object", "model"},
                                  {"created", UnixNow()},
                                  {"owned_by", "vllm"},
                                  {"root", m_->geometry().display_name},
                                  {"parent", nullptr},
                                  {"max_model_len", 32768}});
    }
    return json::serialize(json::object{{"object", "list"}, {"data", std::move(data)}});
  }

  void CountCancelled(bool* counted) {
    if (*counted) return;
    *counted = true;
    cancelled_++;
  }

  awaitable<bool> Handle(beast::tcp_stream& s, http::request<http::string_body>& req,
                         PeerWatch& watch) {
    std::string_view target(req.target().data(), req.target().size());
    target = target.substr(0, target.find('?'));
    if (target == "/health") co_return co_await Write(s, 200, "{\"status\":\"ok\"}");
    if (target == "/metrics") co_return co_await Write(s, 200, Metrics(), "text/plain");
    // vLLM's middleware guards every path under /v1 only.
    if (target.starts_with("/v1")) {
      std::string_view token;
      if (auto it = req.find(http::field::authorization); it != req.end()) {
        token = net::BearerToken(std::string_view(it->value().data(), it->value().size()));
      }
      if (token.empty()) missing_bearer_++;
      if (!o_.api_key.empty() && (token.empty() || !net::SecretEquals(token, o_.api_key))) {
        unauthorized_++;
        co_return co_await Write(s, 401, "{\"error\":\"Unauthorized\"}");
      }
    }
    if (target == "/v1/models") co_return co_await Write(s, 200, ModelsJson());
    if (target != "/v1/completions" && target != "/v1/chat/completions") {
      co_return co_await Write(s, 404, "{\"detail\":\"Not Found\"}");
    }
    requests_++;
    if (o_.fault == "error500") {
      co_return co_await Write(s, 500,
                               VllmError(500, "emulated engine failure", "InternalServerError"));
    }
    const bool chat = target == "/v1/chat/completions";
    auto parsed = ParseEmuRequest(chat, req.body(), *m_, o_.default_max_tokens);
    if (!parsed) {
      co_return co_await Write(s, 400, VllmError(400, parsed.error().message(), "BadRequestError"));
    }
    const EmuRequest& r = *parsed;
    if (!r.model.empty() &&
        std::find(accepted_.begin(), accepted_.end(), r.model) == accepted_.end()) {
      co_return co_await Write(
          s, 404,
          VllmError(404, fmt::format("The model `{}` does not exist.", r.model), "NotFoundError"));
    }
    if (r.kv_has_eldr_sig) eldr_sig_received_++;
    const bool prefill_leg = r.do_remote_decode || (r.bootstrap && o_.role == "prefill");
    // vLLM names a request after its X-Request-Id; the NIXL handoff pairs the legs by it, so a
    // decode leg whose id differs from the prefill's is refused, as a real pairing would fail.
    std::string rid;
    if (auto it = req.find("X-Request-Id"); it != req.end()) rid = std::string(it->value());
    if (prefill_leg) co_return co_await Prefill(s, r, rid, watch);
    if (r.do_remote_prefill && !rid.empty() && r.remote_request_id &&
        *r.remote_request_id != "cmpl-" + rid && *r.remote_request_id != "chatcmpl-" + rid) {
      co_return co_await Write(
          s, 400,
          VllmError(400, "X-Request-Id differs between prefill and decode legs",
                    "BadRequestError"));
    }
    co_return co_await Decode(s, r, r.do_remote_prefill || r.bootstrap, r.bootstrap, rid, watch);
  }

  std::string ResponseId(bool chat, const std::string& rid, uint64_t n) const {
    const std::string_view prefix = chat ? "chatcmpl-" : "cmpl-";
    if (!rid.empty()) return fmt::format("{}{}", prefix, rid);
    return fmt::format("{}{}-{}", prefix, engine_id_, n);
  }

  // Sleeps `us`, ending early (false) when the client goes away.
  awaitable<bool> Sleep(int64_t us, PeerWatch& watch) {
    if (watch.gone) co_return false;
    if (us <= 0) co_return true;
    asio::steady_timer t(ioc_);
    t.expires_after(std::chrono::microseconds(us));
    watch.on_gone = [&t] { t.cancel(); };
    co_await t.async_wait(kTuple);
    watch.on_gone = nullptr;
    co_return !watch.gone;
  }

  // ---- prefill ---------------------------------------------------------------------------------

  // One prefill at a time, FIFO: the engine's compute is the queue. Returns the wait.
  int64_t PrefillSlot(int64_t prompt_tokens) {
    const int64_t now = NowUs();
    prefill_free_us_ =
        std::max(prefill_free_us_, now) +
        static_cast<int64_t>(Scaled(m_->cost().PrefillUs(static_cast<int>(prompt_tokens))));
    return prefill_free_us_ - now;
  }

  awaitable<bool> Prefill(beast::tcp_stream& s, const EmuRequest& r, const std::string& rid,
                          PeerWatch& watch) {
    prefills_++;
    const uint64_t n = prefills_;
    if (!co_await Sleep(PrefillSlot(static_cast<int64_t>(r.tokens.size())), watch)) {
      cancelled_++;
      co_return false;
    }
    PrefillContext c;
    c.id = ResponseId(r.chat, rid, n);
    c.created = UnixNow();
    c.model_name = ModelNameFor(r);
    c.engine_id = engine_id_;
    c.host = o_.host;
    c.port = port_;
    if (o_.engine == "vllm-0.21") c.cached_tokens = prefix_cache_.LookupAndInsert(r.tokens);
    HttpAnswer a = BuildPrefillAnswer(o_, *m_, r, c);
    co_return co_await Write(s, a.status, std::move(a.body));
  }

  // ---- decode ----------------------------------------------------------------------------------

  awaitable<void> BatchLoop() {
    asio::steady_timer step(ioc_);
    std::vector<DecodeSeq> batch;
    for (;;) {
      std::erase_if(waiting_, [](const auto& q) { return q->cancelled; });
      while (!waiting_.empty() && static_cast<int>(active_.size()) < o_.max_batch) {
        active_.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
      }
      std::erase_if(active_, [](const auto& q) { return q->cancelled; });
      if (active_.empty()) {
        wake_.expires_at(asio::steady_timer::time_point::max());
        co_await wake_.async_wait(kTuple);
        continue;
      }
      batch.clear();
      for (const auto& q : active_) batch.push_back({q->archetype, q->generated, q->context});
      const double us = Scaled(m_->StepUs(batch));
      step_us_sum_ += us;
      batch_sum_ += static_cast<double>(batch.size());
      steps_++;
      step.expires_after(std::chrono::microseconds(static_cast<int64_t>(us)));
      co_await step.async_wait(kTuple);
      for (auto& q : active_) {
        if (q->cancelled) continue;
        q->generated++;
        q->context++;
        if (q->generated >= q->max_tokens) q->done = true;
        q->signal.cancel();
      }
      std::erase_if(active_, [](const auto& q) { return q->done || q->cancelled; });
    }
  }

  // One stream event's object, every field up to the choices.
  json::object Chunk(const EmuRequest& r, const std::string& id, int64_t created,
                     json::array choices) const {
    json::object e{{"id", id},
                   {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
                   {"created", created},
                   {"model", ModelNameFor(r)},
                   {"choices", std::move(choices)}};
    // SGLang's completion stream events are model_dump_json() of CompletionStreamResponse, whose
    // serializer drops only a None sglext, so they carry "usage": null until the usage event
    // fills it. (Its chat stream is not checked, so it keeps vLLM's shape.)
    if (o_.backend == "sglang" && !r.chat) e["usage"] = nullptr;
    return e;
  }

  std::string Event(const EmuRequest& r, const std::string& id, int64_t created,
                    json::object choice) const {
    return "data: " + json::serialize(Chunk(r, id, created, json::array{std::move(choice)})) +
           "\n\n";
  }

  awaitable<bool> Decode(beast::tcp_stream& s, const EmuRequest& r, bool kv_from_remote,
                         bool rendezvous, const std::string& rid, PeerWatch& watch) {
    decodes_++;
    const uint64_t n = decodes_;
    const int64_t T = static_cast<int64_t>(r.tokens.size());
    const int64_t start = std::clamp<int64_t>(r.routed_experts_start_len.value_or(0), 0, T);
    int64_t wait_us = 0;
    if (kv_from_remote) {
      // SGLang's decode leg starts with the prefill (rendezvous): its KV arrives after an
      // (unqueued) prefill plus the transfer. vLLM's NIXL decode leg starts after the prefill.
      double us = m_->cost().KvUs(static_cast<int>(T));
      if (rendezvous) us += m_->cost().PrefillUs(static_cast<int>(T));
      wait_us = static_cast<int64_t>(Scaled(us));
    } else {
      wait_us = PrefillSlot(T);
    }
    if (!co_await Sleep(wait_us, watch)) {
      cancelled_++;
      co_return false;
    }
    auto q = std::make_shared<Seq>(ioc_.get_executor());
    q->archetype = m_->Archetype(r.tokens);
    q->context = T;
    q->max_tokens = std::max<int64_t>(1, r.max_tokens);
    waiting_.push_back(q);
    wake_.cancel();
    bool counted = false;
    watch.on_gone = [this, q, &counted] {
      q->cancelled = true;
      q->signal.cancel();
      CountCancelled(&counted);
    };
    const std::string id = ResponseId(r.chat, rid, n);
    const int64_t created = UnixNow();
    if (!r.stream) {
      while (!q->done && !q->cancelled) {
        q->signal.expires_at(asio::steady_timer::time_point::max());
        co_await q->signal.async_wait(kTuple);
      }
      watch.on_gone = nullptr;
      if (q->cancelled) co_return false;
      std::string text;
      for (int64_t i = 0; i < q->generated; ++i) text += fmt::format(" tok{}", i);
      json::object choice = Choice(r.chat, false, text, true);
      std::string payload;
      if (o_.engine == "vllm-0.21") {
        payload = DecodeListPayload(*m_, q->archetype, q->generated);
        choice["routed_experts"] = "@@PAYLOAD@@";
      }
      json::object res{{"id", id},
                       {"object", r.chat ? "chat.completion" : "text_completion"},
                       {"created", created},
                       {"model", ModelNameFor(r)},
                       {"choices", json::array{std::move(choice)}},
                       {"usage", Usage(T, q->generated)}};
      if (o_.engine == "sglang" && r.return_routed_experts) {
        payload = "\"" + DecodeInt32Payload(*m_, q->archetype, T, start, q->generated) + "\"";
        res["sglext"] = json::object{{"routed_experts", "@@PAYLOAD@@"}};
      }
      std::string body = json::serialize(res);
      if (!payload.empty()) {
        static constexpr std::string_view kMarker = "\"@@PAYLOAD@@\"";
        body.replace(body.find(kMarker), kMarker.size(), payload);
      }
      co_return co_await Write(s, 200, std::move(body));
    }
    http::response<http::empty_body> res{http::status::ok, 11};
    res.set(http::field::content_type, "text/event-stream");
    res.chunked(true);
    res.keep_alive(true);
    http::response_serializer<http::empty_body> sr{res};
    auto [hec, hn] = co_await http::async_write_header(s, sr, kTuple);
    bool ok = !hec;
    std::string out;
    if (r.chat) {
      // vLLM's first chat chunk announces the role, with empty content.
      json::object c{{"index", 0},
                     {"delta", json::object{{"role", "assistant"}, {"content", ""}}},
                     {"logprobs", nullptr},
                     {"finish_reason", nullptr}};
      out = Event(r, id, created, std::move(c));
    }
    int64_t sent = 0;
    bool ended = false;  // [DONE] is in `out`
    while (ok && !q->cancelled) {
      for (; sent < q->generated; ++sent) {
        out += Event(r, id, created,
                     Choice(r.chat, true, fmt::format(" tok{}", sent), sent + 1 == q->max_tokens));
      }
      if (q->done) {
        if (o_.engine == "sglang" && r.return_routed_experts) {
          // SGLang streams sglext in an event of its own, with no choices, before the usage
          // event (serving_completions.py, serving_chat.py).
          json::object x = Chunk(r, id, created, json::array{});
          x["sglext"] = json::object{
              {"routed_experts", DecodeInt32Payload(*m_, q->archetype, T, start, q->generated)}};
          out += "data: " + json::serialize(x) + "\n\n";
        }
        if (r.include_usage) {
          json::object u = Chunk(r, id, created, json::array{});
          u["usage"] = Usage(T, q->generated);
          out += "data: " + json::serialize(u) + "\n\n";
        }
        out += "data: [DONE]\n\n";
        ended = true;
      }
      if (!out.empty()) {
        auto [ec, wn] = co_await asio::async_write(s, http::make_chunk(asio::buffer(out)), kTuple);
        if (ec) ok = false;
        out.clear();
      }
      if (ended || !ok) break;
      // Tokens made (or the end reached) while the write was under way signalled no one: send
      // them before waiting again, or the stream would lose its last events and [DONE].
      if (sent < q->generated || q->done) continue;
      q->signal.expires_at(asio::steady_timer::time_point::max());
      co_await q->signal.async_wait(kTuple);
    }
    watch.on_gone = nullptr;
    if (!ok || q->cancelled) {
      q->cancelled = true;
      CountCancelled(&counted);
      co_return false;
    }
    auto [lec, ln] = co_await asio::async_write(s, http::make_chunk_last(), kTuple);
    co_return !lec;
  }

  std::string Metrics() const {
    return fmt::format(
        "# TYPE eldr_emu_requests_total counter\neldr_emu_requests_total {}\n"
        "# TYPE eldr_emu_prefills_total counter\neldr_emu_prefills_total {}\n"
        "# TYPE eldr_emu_decodes_total counter\neldr_emu_decodes_total {}\n"
        "# TYPE eldr_emu_cancelled_total counter\neldr_emu_cancelled_total {}\n"
        "# TYPE eldr_emu_eldr_sig_received_total counter\neldr_emu_eldr_sig_received_total {}\n"
        "# TYPE eldr_emu_missing_bearer_total counter\neldr_emu_missing_bearer_total {}\n"
        "# TYPE eldr_emu_unauthorized_total counter\neldr_emu_unauthorized_total {}\n"
        "# TYPE eldr_emu_running gauge\neldr_emu_running {}\n"
        "# TYPE eldr_emu_waiting gauge\neldr_emu_waiting {}\n"
        "# TYPE eldr_emu_steps_total counter\neldr_emu_steps_total {}\n"
        "# TYPE eldr_emu_step_seconds_total counter\neldr_emu_step_seconds_total {}\n"
        "# TYPE eldr_emu_batch_sum counter\neldr_emu_batch_sum {}\n",
        requests_, prefills_, decodes_, cancelled_, eldr_sig_received_, missing_bearer_,
        unauthorized_, active_.size(), waiting_.size(), steps_, step_us_sum_ * 1e-6, batch_sum_);
  }

  EmulatorOptions o_;
  std::shared_ptr<const EngineModel> m_;
  std::vector<std::string> accepted_;  // model names a request may give; front() answers a
                                       // request that names none
  asio::io_context ioc_{1};
  tcp::acceptor acceptor_;
  asio::steady_timer wake_;
  int port_ = 0;
  std::string engine_id_;
  int64_t prefill_free_us_ = 0;
  PrefixCache prefix_cache_;
  std::vector<std::shared_ptr<Seq>> active_;
  std::deque<std::shared_ptr<Seq>> waiting_;
  uint64_t requests_ = 0, prefills_ = 0, decodes_ = 0, cancelled_ = 0, steps_ = 0;
  uint64_t eldr_sig_received_ = 0, missing_bearer_ = 0, unauthorized_ = 0;
  double step_us_sum_ = 0, batch_sum_ = 0;
};

}  // namespace

Result<std::unique_ptr<Emulator>> Emulator::Create(const EmulatorOptions& options,
                                                   std::shared_ptr<const EngineModel> model) {
  if (!model) return InvalidArgument("no engine model");
  auto e = std::make_unique<EmulatorImpl>(options, std::move(model));
  ELDR_RETURN_IF_ERROR(e->Init());
  return std::unique_ptr<Emulator>(std::move(e));
}

}  // namespace eldr::emu
