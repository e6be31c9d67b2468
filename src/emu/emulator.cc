// The engine emulator: one of the three translation units that include Boost.Beast.
#include "eldr/emu/emulator.h"

#include <boost/json.hpp>
#include <csignal>
#include <deque>
#include <fstream>

#include "../net/http.h"
#include "eldr/net/wire.h"
#include "eldr/payload.h"
#include "eldr/server/pd.h"

namespace eldr::emu {
namespace {

using namespace eldr::net;  // NOLINT(google-build-using-namespace): Beast vocabulary
namespace json = boost::json;

struct Seq {
  explicit Seq(asio::any_io_executor ex) : signal(ex) {}
  int archetype = 0;
  int64_t generated = 0, context = 0, max_tokens = 1;
  bool cancelled = false, done = false;
  asio::steady_timer signal;
};

class EmulatorImpl final : public Emulator {
 public:
  EmulatorImpl(EmulatorOptions o, std::shared_ptr<const EngineModel> m)
      : o_(std::move(o)), m_(std::move(m)), acceptor_(ioc_), wake_(ioc_) {}

  Status Init() {
    ELDR_RETURN_IF_ERROR(o_.Validate());
    if (o_.experts_format == "auto") {
      o_.experts_format = o_.backend == "sglang" ? "sglang" : "vllm-npy";
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
      const bool ok = co_await Handle(s, req);
      if (!ok || !keep) break;
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
    json::object m{{"id", m_->geometry().name}, {"object", "model"}, {"owned_by", "eldr-emu"}};
    return json::serialize(json::object{{"object", "list"}, {"data", json::array{m}}});
  }

  awaitable<bool> Handle(beast::tcp_stream& s, http::request<http::string_body>& req) {
    std::string_view target(req.target().data(), req.target().size());
    target = target.substr(0, target.find('?'));
    if (target == "/health") co_return co_await Write(s, 200, "{\"status\":\"ok\"}");
    if (target == "/metrics") co_return co_await Write(s, 200, Metrics(), "text/plain");
    if (target == "/v1/models") co_return co_await Write(s, 200, ModelsJson());
    if (target != "/v1/completions" && target != "/v1/chat/completions") {
      co_return co_await Write(s, 404, net::OpenAiErrorBody(404, "not found", "not_found"));
    }
    requests_++;
    if (o_.fault == "error500") {
      co_return co_await Write(
          s, 500, net::OpenAiErrorBody(500, "emulated engine failure", "server_error"));
    }
    const auto ep =
        target == "/v1/completions" ? server::Endpoint::kCompletions : server::Endpoint::kChat;
    auto parsed = server::ParseClientRequest(ep, req.body());
    if (!parsed) {
      co_return co_await Write(
          s, 400, net::OpenAiErrorBody(400, parsed.error().message(), "invalid_request_error"));
    }
    const server::ClientRequest& r = *parsed;
    std::vector<int32_t> tokens =
        r.prompt_tokens.empty() ? m_->Tokenize(r.prompt_text) : r.prompt_tokens;
    if (tokens.empty()) tokens.push_back(0);
    int64_t max_tokens = o_.default_max_tokens;
    static constexpr std::string_view kMaxKeys[] = {"max_tokens", "max_completion_tokens"};
    for (std::string_view k : kMaxKeys) {
      if (const auto* v = r.body.if_contains(k); v && v->is_int64()) max_tokens = v->get_int64();
    }
    const json::value* kv = r.body.if_contains("kv_transfer_params");
    const bool remote_decode = kv && kv->is_object() &&
                               kv->get_object().contains("do_remote_decode") &&
                               kv->get_object().at("do_remote_decode") == true;
    const bool remote_prefill = kv && kv->is_object() &&
                                kv->get_object().contains("do_remote_prefill") &&
                                kv->get_object().at("do_remote_prefill") == true;
    const bool bootstrap = r.body.contains("bootstrap_room");
    const bool prefill_leg = remote_decode || (bootstrap && o_.role == "prefill");
    // vLLM names a request after its X-Request-Id; the NIXL handoff pairs the legs by it, so a
    // decode leg whose id differs from the prefill's is refused, as a real pairing would fail.
    std::string rid;
    if (auto it = req.find("X-Request-Id"); it != req.end()) rid = std::string(it->value());
    if (prefill_leg) co_return co_await Prefill(s, r, tokens, rid);
    if (remote_prefill && !rid.empty()) {
      const auto& kvo = kv->get_object();
      if (const auto* rr = kvo.if_contains("remote_request_id");
          rr && rr->is_string() && *rr != json::value("cmpl-" + rid)) {
        co_return co_await Write(
            s, 400,
            net::OpenAiErrorBody(400, "X-Request-Id differs between prefill and decode legs",
                                    "invalid_request_error"));
      }
    }
    co_return co_await Decode(s, r, tokens, max_tokens, remote_prefill || bootstrap, bootstrap,
                              rid);
  }

  // ---- prefill ---------------------------------------------------------------------------------

  awaitable<void> PrefillWait(int64_t prompt_tokens) {
    // One prefill at a time, FIFO: the engine's compute is the queue.
    const int64_t now = NowUs();
    prefill_free_us_ =
        std::max(prefill_free_us_, now) +
        static_cast<int64_t>(Scaled(m_->cost().PrefillUs(static_cast<int>(prompt_tokens))));
    const int64_t wait = prefill_free_us_ - now;
    if (wait > 0) {
      asio::steady_timer t(ioc_);
      t.expires_after(std::chrono::microseconds(wait));
      co_await t.async_wait(kTuple);
    }
  }

  std::string ExpertsPayload(std::span<const int32_t> tokens, int64_t start) {
    const ModelGeometry& g = m_->geometry();
    const int L = g.moe_layers, K = g.top_k;
    if (o_.fault == "malformed") return "!!! not base64 !!!";
    std::vector<int32_t> picks = m_->PromptPicks(tokens, start);
    const int64_t rows = static_cast<int64_t>(picks.size()) / (L * K);
    const std::string& f = o_.experts_format;
    if (f == "vllm-npy") {
      std::vector<uint8_t> data(picks.size());
      for (size_t i = 0; i < picks.size(); ++i) data[i] = static_cast<uint8_t>(picks[i]);
      if (g.experts > 255) {
        data.resize(picks.size() * 2);
        for (size_t i = 0; i < picks.size(); ++i) {
          data[2 * i] = static_cast<uint8_t>(picks[i] & 0xFF);
          data[2 * i + 1] = static_cast<uint8_t>(picks[i] >> 8);
        }
      }
      const int64_t shape[3] = {rows, L, K};
      return Base64Encode(MakeNpy('u', g.experts > 255 ? 2 : 1, shape, data));
    }
    if (f == "sglang") {
      std::vector<uint8_t> data(picks.size() * 4);
      std::memcpy(data.data(), picks.data(), data.size());
      return Base64Encode(data);
    }
    if (f == "eldr_sig") {
      std::vector<int16_t> counts(static_cast<size_t>(L) * g.experts);
      for (int64_t t = 0; t < rows; ++t) {
        for (int l = 0; l < L; ++l) {
          for (int j = 0; j < K; ++j) {
            auto& c = counts[static_cast<size_t>(l) * g.experts + picks[(t * L + l) * K + j]];
            if (c < INT16_MAX) ++c;
          }
        }
      }
      std::vector<uint8_t> data(counts.size() * 2);
      std::memcpy(data.data(), counts.data(), data.size());
      return Base64Encode(data);
    }
    // vllm-list: nested JSON lists, built as text (never a tree).
    std::string out = "[";
    for (int64_t t = 0; t < rows; ++t) {
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

  awaitable<bool> Prefill(beast::tcp_stream& s, const server::ClientRequest& r,
                          const std::vector<int32_t>& tokens, const std::string& rid) {
    prefills_++;
    co_await PrefillWait(static_cast<int64_t>(tokens.size()));
    int64_t start = 0;
    if (const auto* v = r.body.if_contains("routed_experts_prompt_start"); v && v->is_int64()) {
      start = std::clamp<int64_t>(v->get_int64(), 0, static_cast<int64_t>(tokens.size()));
    }
    const bool chat = r.endpoint == server::Endpoint::kChat;
    json::object choice = Choice(chat, false, " tok0", true);
    json::object res{{"id", rid.empty() ? fmt::format("cmpl-{}", prefills_) : "cmpl-" + rid},
                     {"object", chat ? "chat.completion" : "text_completion"},
                     {"created", 0},
                     {"model", m_->geometry().name}};
    json::array ids;
    if (const auto* v = r.body.if_contains("return_token_ids"); v && *v == true) {
      for (int32_t t : tokens) ids.push_back(t);
    }
    if (!r.body.contains("bootstrap_room")) {
      json::array blocks;
      for (int64_t b = 0; b < (static_cast<int64_t>(tokens.size()) + 15) / 16; ++b) {
        blocks.push_back(b);
      }
      res["kv_transfer_params"] = json::object{{"do_remote_prefill", true},
                                               {"do_remote_decode", false},
                                               {"remote_block_ids", std::move(blocks)},
                                               {"remote_engine_id", engine_id_},
                                               {"remote_request_id", res["id"]},
                                               {"remote_host", o_.host},
                                               {"remote_port", port_},
                                               {"tp_size", 1}};
    }
    // The payload is spliced in as text after serialising the small object.
    const std::string& f = o_.experts_format;
    std::string payload;
    std::string field;
    if (f != "none") {
      const bool want = o_.backend != "sglang" || (r.body.contains("return_routed_experts") &&
                                                   r.body.at("return_routed_experts") == true);
      if (want) {
        payload = ExpertsPayload(tokens, f == "eldr_sig" ? 0 : start);
        field = f == "sglang" ? "sgl_ext" : f == "eldr_sig" ? "eldr_sig" : "routed_experts";
        choice[field] = "@@PAYLOAD@@";
      }
    }
    if (!ids.empty()) {
      if (chat) {
        res["prompt_token_ids"] = std::move(ids);
      } else {
        choice["prompt_token_ids"] = std::move(ids);
      }
    }
    res["choices"] = json::array{std::move(choice)};
    res["usage"] = json::object{{"prompt_tokens", tokens.size()},
                                {"completion_tokens", 1},
                                {"total_tokens", tokens.size() + 1}};
    std::string body = json::serialize(res);
    if (!field.empty()) {
      const std::string marker = "\"@@PAYLOAD@@\"";
      std::string value;
      if (f == "sglang") {
        value = "{\"routed_experts\":\"" + payload + "\"}";
      } else if (f == "vllm-list") {
        value = payload;
      } else {
        value = "\"" + payload + "\"";
      }
      body.replace(body.find(marker), marker.size(), value);
    }
    co_return co_await Write(s, 200, std::move(body));
  }

  // ---- decode ----------------------------------------------------------------------------------

  awaitable<void> BatchLoop() {
    asio::steady_timer step(ioc_);
    std::vector<DecodeSeq> batch;
    for (;;) {
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

  // choices[0] of an answer (`stream` false: the whole text) or of a stream event, in the
  // completions or the chat shape.
  static json::object Choice(bool chat, bool stream, std::string_view text, bool last) {
    json::object c{{"index", 0}, {"logprobs", nullptr}};
    if (!chat) {
      c["text"] = text;
    } else if (stream) {
      c["delta"] = json::object{{"content", text}};
    } else {
      c["message"] = json::object{{"role", "assistant"}, {"content", text}};
    }
    c["finish_reason"] = last ? json::value("length") : json::value(nullptr);
    return c;
  }

  std::string Event(const server::ClientRequest& r, const std::string& id, int64_t i,
                    bool last) const {
    const bool chat = r.endpoint == server::Endpoint::kChat;
    json::object c = Choice(chat, true, fmt::format(" tok{}", i), last);
    json::object e{{"id", id},
                   {"object", chat ? "chat.completion.chunk" : "text_completion"},
                   {"created", 0},
                   {"model", m_->geometry().name},
                   {"choices", json::array{std::move(c)}}};
    return "data: " + json::serialize(e) + "\n\n";
  }

  awaitable<bool> Decode(beast::tcp_stream& s, const server::ClientRequest& r,
                         const std::vector<int32_t>& tokens, int64_t max_tokens,
                         bool kv_from_remote, bool rendezvous, const std::string& rid) {
    decodes_++;
    const int64_t T = static_cast<int64_t>(tokens.size());
    if (kv_from_remote) {
      // SGLang's decode leg starts with the prefill (rendezvous): its KV arrives after an
      // (unqueued) prefill plus the transfer. vLLM's NIXL decode leg starts after the prefill.
      double us = m_->cost().KvUs(static_cast<int>(T));
      if (rendezvous) us += m_->cost().PrefillUs(static_cast<int>(T));
      asio::steady_timer t(ioc_);
      t.expires_after(std::chrono::microseconds(static_cast<int64_t>(Scaled(us))));
      co_await t.async_wait(kTuple);
    } else {
      co_await PrefillWait(T);
    }
    auto q = std::make_shared<Seq>(ioc_.get_executor());
    q->archetype = m_->Archetype(tokens);
    q->context = T;
    q->max_tokens = std::max<int64_t>(1, max_tokens);
    waiting_.push_back(q);
    wake_.cancel();
    const std::string id =
        rid.empty() ? fmt::format("cmpl-{}-{}", engine_id_, decodes_) : "cmpl-" + rid;
    int64_t sent = 0;
    if (!r.stream) {
      while (!q->done) {
        q->signal.expires_at(asio::steady_timer::time_point::max());
        co_await q->signal.async_wait(kTuple);
      }
      const bool chat = r.endpoint == server::Endpoint::kChat;
      std::string text;
      for (int64_t i = 0; i < q->generated; ++i) text += fmt::format(" tok{}", i);
      json::object c = Choice(chat, false, text, true);
      json::object res{{"id", id},
                       {"object", chat ? "chat.completion" : "text_completion"},
                       {"created", 0},
                       {"model", m_->geometry().name},
                       {"choices", json::array{std::move(c)}},
                       {"usage", json::object{{"prompt_tokens", T},
                                              {"completion_tokens", q->generated},
                                              {"total_tokens", T + q->generated}}}};
      co_return co_await Write(s, 200, json::serialize(res));
    }
    http::response<http::empty_body> res{http::status::ok, 11};
    res.set(http::field::content_type, "text/event-stream");
    res.chunked(true);
    res.keep_alive(true);
    http::response_serializer<http::empty_body> sr{res};
    auto [hec, hn] = co_await http::async_write_header(s, sr, kTuple);
    bool ok = !hec;
    std::string out;
    while (ok) {
      out.clear();
      for (; sent < q->generated; ++sent) out += Event(r, id, sent, sent + 1 == q->max_tokens);
      if (q->done) out += "data: [DONE]\n\n";
      if (!out.empty()) {
        auto [ec, n] = co_await asio::async_write(s, http::make_chunk(asio::buffer(out)), kTuple);
        if (ec) ok = false;
      }
      if (q->done || !ok) break;
      q->signal.expires_at(asio::steady_timer::time_point::max());
      co_await q->signal.async_wait(kTuple);
    }
    if (!ok) {
      q->cancelled = true;
      cancelled_++;
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
        "# TYPE eldr_emu_running gauge\neldr_emu_running {}\n"
        "# TYPE eldr_emu_waiting gauge\neldr_emu_waiting {}\n"
        "# TYPE eldr_emu_steps_total counter\neldr_emu_steps_total {}\n"
        "# TYPE eldr_emu_step_seconds_total counter\neldr_emu_step_seconds_total {}\n"
        "# TYPE eldr_emu_batch_sum counter\neldr_emu_batch_sum {}\n",
        requests_, prefills_, decodes_, cancelled_, active_.size(), waiting_.size(), steps_,
        step_us_sum_ * 1e-6, batch_sum_);
  }

  EmulatorOptions o_;
  std::shared_ptr<const EngineModel> m_;
  asio::io_context ioc_{1};
  tcp::acceptor acceptor_;
  asio::steady_timer wake_;
  int port_ = 0;
  std::string engine_id_;
  int64_t prefill_free_us_ = 0;
  std::vector<std::shared_ptr<Seq>> active_;
  std::deque<std::shared_ptr<Seq>> waiting_;
  uint64_t requests_ = 0, prefills_ = 0, decodes_ = 0, cancelled_ = 0, steps_ = 0;
  double step_us_sum_ = 0, batch_sum_ = 0;
};

}  // namespace

Status EmulatorOptions::Validate() const {
  if (role != "prefill" && role != "decode")
    return InvalidArgument("role must be prefill or decode");
  if (backend != "vllm" && backend != "sglang")
    return InvalidArgument("backend must be vllm or sglang");
  static const char* kFormats[] = {"auto", "vllm-npy", "vllm-list", "sglang", "eldr_sig", "none"};
  if (std::find(std::begin(kFormats), std::end(kFormats), experts_format) == std::end(kFormats)) {
    return InvalidArgument(
        "experts format must be auto, vllm-npy, vllm-list, sglang, eldr_sig or none");
  }
  if (!(time_scale >= 0) || !std::isfinite(time_scale))
    return InvalidArgument("time_scale must be >= 0");
  if (max_batch < 1) return InvalidArgument("max_batch must be >= 1");
  if (default_max_tokens < 1) return InvalidArgument("default_max_tokens must be >= 1");
  if (!fault.empty() && fault != "malformed" && fault != "error500") {
    return InvalidArgument("fault must be malformed or error500");
  }
  if (port < 0 || port > 65535) return InvalidArgument("port out of range");
  return Status::Ok();
}

Result<std::unique_ptr<Emulator>> Emulator::Create(const EmulatorOptions& options,
                                                   std::shared_ptr<const EngineModel> model) {
  if (!model) return InvalidArgument("no engine model");
  auto e = std::make_unique<EmulatorImpl>(options, std::move(model));
  ELDR_RETURN_IF_ERROR(e->Init());
  return std::unique_ptr<Emulator>(std::move(e));
}

}  // namespace eldr::emu
